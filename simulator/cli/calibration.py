"""The commands that work with measured kernel timings: `simulate calibrate` (fit a calibration
profile and print each op group's held-out error) and `simulate validate` (predict the measured
rows with a profile or the bare roofline, write the predictions and a plot, print the error
table).

Only argument handling and output are here; the fitting and predicting are `perf`'s.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .progress import ProgressBar


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..hardware.loader import load_system
    from ..perf.calibration import calibrate

    system = load_system(args.hardware)
    progress = ProgressBar(enabled=sys.stderr.isatty(), label="fitting")
    try:
        calib = calibrate(system, args.measured, args.device, args.folds, progress, force=args.force)
    finally:
        progress.close()
    calib.save(args.output)
    print(f"wrote {args.output}: {calib.device}, {len(calib.ops)} op groups")
    for (op, dtype), profile in calib.ops.items():
        err = profile.heldout_error_pct
        print(f"  {op:13} {dtype:5} {profile.model.n_rows:6} rows  held-out |error| median {err['median']:.2f} % "
              f"p90 {err['p90']:.2f} %  ({profile.model.method})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from ..api import check_out_dir
    from ..hardware.loader import load_system
    from ..perf.calibration import error_table, in_sample, predict_rows
    from ..perf.measurements import read_all
    from ..perf.profile_use import resolve_calibration
    from ..report.validation_plot import plot_predictions

    system = load_system(args.hardware)
    calib = resolve_calibration(system, args.calibration)
    frame = read_all(args.measured, args.device)
    out = Path(args.out or f"runs/validate-{Path(system.source_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_out_dir(out, ("predictions.csv", "predicted_vs_measured.png"))
    predicted, source = predict_rows(frame, system, calib)
    frame["predicted_us"] = predicted
    frame["error_pct"] = 100.0 * (predicted - frame["time_us"]) / frame["time_us"]
    # `source` is where each prediction came from; the measurement's own origin moves to measurement_source
    frame = frame.rename(columns={"source": "measurement_source"})
    frame["source"] = source
    # rows the profile was fitted on: their error is in-sample, not a held-out one
    frame["in_sample"] = in_sample(frame, args.measured, calib.profile if calib is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "predictions.csv", index=False)
    which = f"calibration {calib.use}" if calib is not None else "uncalibrated roofline"
    plot_predictions(frame, out / "predicted_vs_measured.png", f"{system.name}: {which}")
    table = error_table(frame)
    print(f"{system.name} vs {frame['device'].iloc[0]} ({which})")
    print(f"{'op':14} {'rows':>7} {'in-sample':>9} {'median |err| %':>15} {'p90 |err| %':>12} {'MAPE %':>8}")
    for row in table.itertuples(index=False):
        print(f"{row.op:14} {row.rows:7d} {row.in_sample:9d} {row.median_pct:15.2f} {row.p90_pct:12.2f} "
              f"{row.mape_pct:8.2f}")
    if frame["in_sample"].any():
        print(f"in-sample: {int(frame['in_sample'].sum())} of {len(frame)} rows come from the files the profile was "
              "fitted on, so their errors are not held out (the profile's held-out errors: `simulate calibrate`)")
    print(f"outputs in {out}")
    return 0
