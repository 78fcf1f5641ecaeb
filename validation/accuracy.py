"""Held-out accuracy of the calibration fits on the shipped measurements, as a markdown table.

    python -m validation.accuracy            # every file, every row (about 3-4 min on 2 cores)
    python -m validation.accuracy --quick    # the fixed subsets the tests use (under a minute)

For every (file, op, dtype, device) group: the rows, the median and p90 of |error| of
`simulator.perf.fitting.kfold_errors` (5 folds; a shape is only ever predicted by a fit that
never saw it), and the median |error| of the uncalibrated roofline (`kernels.roofline_us`,
the spec's default efficiencies). Then the transfer lines: efficiency curves fitted on the
A100 GEMMs (Vidur) applied to the H100 spec with no H100 measurement, against the roofline,
on the H100 GEMM data. `--quick` replaces each large group by its fixed deterministic subset
(`subset`), the one `tests/test_fitting.py` enforces.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from simulator.hardware.loader import load_system
from simulator.models.op_kinds import TABLE_AXES
from simulator.perf.fitting import fit_op, kfold_errors, transfer
from simulator.perf.kernels import roofline_us
from simulator.perf.measurements import read_measurements

from . import DATA, require_data

# (file, device filter, catalogue system)
GROUPS = [
    ("h100-sxm-gemm.csv", None, "h100-sxm"),
    ("h100-sxm-attn-prefill.csv", None, "h100-sxm"),
    ("h100-sxm-attn-decode.csv", None, "h100-sxm"),
    ("a100-sxm-gemm-vidur.csv", None, "a100-80gb-sxm"),
    ("llmcompass-gemm-a100.csv", None, "a100-80gb-sxm"),
    *[("a100-dgx-allreduce-vidur.csv", f"devices_per_node={n}", "dgx-a100") for n in (1, 2, 4, 8)],
    ("epyc-genoa-2vcpu.csv", None, "epyc-genoa-2vcpu"),
    ("epyc-genoa-2vcpu-memcpy.csv", None, "epyc-genoa-2vcpu"),
]
# layer-table folders (converted to contract rows by validation.layer_tables) and their system:
# the RTX 4090's Llama-3.1-8B layers, and the RTX PRO 6000's fused-MoE layer of Qwen3-30B-A3B
LAYER_TABLES = [("rtx4090-llama-3.1-8b", "rtx4090"), ("rtxpro6000-qwen3-30b-a3b", "rtx-pro-6000")]

# The fixed subsets of `--quick` and of the tests: dense slices of the measured grids (every
# measured m, or batch and length, on a few lines of the other axes) rather than random rows,
# so the held-out neighbours of a row are as near as in the full file.
GEMM_NK = (2048, 2560, 3072, 3584, 4096, 5120, 6144)  # H100: ~1,800 rows per dtype
ATTENTION_HEADS = (24, 32)  # H100: every kv_heads and head_dim of 24 and 32 heads, ~1,200 rows each


def subset(frame: pd.DataFrame) -> pd.DataFrame:
    """The fixed deterministic subset of one (op, dtype) group used by `--quick` and the tests."""
    op = frame["op"].iloc[0]
    if op == "gemm" and len(frame) > 2000:
        keep = frame["n"].isin(GEMM_NK) & frame["k"].isin(GEMM_NK)
    elif op in ("attn_prefill", "attn_decode") and len(frame) > 2000:
        keep = frame["heads"].isin(ATTENTION_HEADS)
    else:
        return frame.reset_index(drop=True)
    return frame[keep].reset_index(drop=True)


def evaluate(frame: pd.DataFrame, system, folds: int = 5) -> dict:
    """Held-out and roofline |error| statistics of one (op, dtype) group."""
    held = kfold_errors(frame, system, k=folds, seed=0)
    err = held["error_pct"].abs()
    roof = np.abs(100.0 * (roofline_us(frame, system) - frame["time_us"].to_numpy()) / frame["time_us"].to_numpy())
    return {"rows": len(frame), "median": float(err.median()), "p90": float(err.quantile(0.9)),
            "roofline_median": float(np.median(roof)),
            "inside_pct": 100.0 * float((held["source"] == "calibrated-interpolation").mean())}


def transfer_errors(h100: pd.DataFrame, quick: bool) -> list[dict]:
    """A100-fitted efficiencies applied to the H100 spec, vs the roofline, per H100 dtype."""
    a100 = load_system("a100-80gb-sxm")
    target = load_system("h100-sxm")
    source = read_measurements(DATA / "a100-sxm-gemm-vidur.csv")
    predict = transfer(fit_op(source, a100), target)
    out = []
    for dtype, rows in h100.groupby("dtype", sort=True):
        rows = subset(rows) if quick else rows.reset_index(drop=True)
        meas = rows["time_us"].to_numpy()
        err = np.abs(100.0 * (predict(rows) - meas) / meas)
        roof = np.abs(100.0 * (roofline_us(rows, target) - meas) / meas)
        out.append({"dtype": dtype, "rows": len(rows), "median": float(np.median(err)),
                    "p90": float(np.percentile(err, 90)), "roofline_median": float(np.median(roof)),
                    "roofline_p90": float(np.percentile(roof, 90))})
    return out


def _groups(quick: bool):
    for name, device, system in GROUPS:
        frame = read_measurements(DATA / name, device)
        for (op, dtype), rows in frame.groupby(["op", "dtype"], sort=True):
            rows = subset(rows) if quick else rows.reset_index(drop=True)
            yield name, device or str(rows["device"].iloc[0]), op, dtype, rows, load_system(system)
    from .layer_tables import convert

    for folder, system in LAYER_TABLES:
        try:
            frame = convert(DATA / folder)
        except Exception as exc:  # noqa: BLE001 - optional: report and go on
            print(f"note: {folder} skipped ({exc})", file=sys.stderr)
            continue
        for (op, dtype), rows in frame[frame["op"].isin(list(TABLE_AXES))].groupby(["op", "dtype"], sort=True):
            rows = subset(rows) if quick else rows.reset_index(drop=True)
            yield folder + "/", str(rows["device"].iloc[0]), op, dtype, rows, load_system(system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the fixed subsets of the tests (under a minute)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    require_data()
    start = time.time()
    print("| file | device | op | dtype | rows | held-out median \\|err\\| % | held-out p90 \\|err\\| % "
          "| roofline median \\|err\\| % | inside grid % |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for name, device, op, dtype, rows, system in _groups(args.quick):
        r = evaluate(rows, system, args.folds)
        print(f"| {name} | {device} | {op} | {dtype} | {r['rows']:,} | {r['median']:.2f} | {r['p90']:.2f} "
              f"| {r['roofline_median']:.1f} | {r['inside_pct']:.1f} |", flush=True)
    print()
    print("Transfer: GEMM efficiencies fitted on the A100 (a100-sxm-gemm-vidur.csv, fp16) applied to the "
          "H100 SXM spec with no H100 measurement, on h100-sxm-gemm.csv:")
    print()
    print("| dtype | rows | transfer median \\|err\\| % | transfer p90 % | roofline median \\|err\\| % | roofline p90 % |")
    print("|---|---:|---:|---:|---:|---:|")
    h100 = read_measurements(DATA / "h100-sxm-gemm.csv")
    for r in transfer_errors(h100, args.quick):
        print(f"| {r['dtype']} | {r['rows']:,} | {r['median']:.1f} | {r['p90']:.1f} | {r['roofline_median']:.1f} "
              f"| {r['roofline_p90']:.1f} |")
    print()
    print(f"({'--quick: fixed subsets' if args.quick else 'all rows'}, {args.folds}-fold held-out, "
          f"{time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
