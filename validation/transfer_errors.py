"""Measure how wrong a profile is away from its own device and dtype, and write the table runs use.

    python -m validation.transfer_errors          # writes hardware_specs/profiles/transfer-errors.yaml
    python -m validation.transfer_errors --print  # only prints the tables (markdown)

A run on a device without a profile of its own transfers another device's profile, and a run
in a dtype its profile did not measure scales a measured one (`simulator/perf/profile_use.py`).
Their uncertainty bands need the error of doing so, measured:

- **transferred**: every shipped GPU profile predicts every other profiled GPU's shipped
  measurements of the same op, through the route a run takes (`AppliedProfile.candidate_route`
  and `predict_route`: the source's fitted efficiencies on the target spec's peaks, bandwidth
  and units). No target measurement is used.
- **scaled**: a profile with an op measured in two dtypes on one device (the H100 GEMMs,
  bf16 and fp8) predicts each dtype from the other alone, as a run would.

Per op, |error| statistics pool the pairs with equal weight (each pair's rows weigh 1 / its
row count), so one large file does not stand for all; bias is the weighted median of the
signed error. Runs use p90_pct. The device pairs and their own numbers are kept in the file.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simulator.hardware.loader import load_system
from simulator.perf.calibration import Calibration
from simulator.perf.measurements import read_all
from simulator.perf.profile_use import ERRORS_FILE, ERRORS_SCHEMA, SCALED, TRANSFERRED, AppliedProfile

from . import require_data
from .build_profiles import OUT, PROFILES

GPUS = ("h100-sxm", "a100-80gb-sxm", "rtx4090", "rtx-pro-6000")  # profiled GPUs with measurements
COMPUTE = ("gemm", "attn_prefill", "attn_decode")


def _measurements(name: str, tmp: Path) -> pd.DataFrame:
    frame = read_all(PROFILES[name](tmp))
    return frame[frame["op"].isin(COMPUTE)].reset_index(drop=True)


def _pair(applied: AppliedProfile, rows: pd.DataFrame, kind: str) -> dict | None:
    """Signed relative errors of one (op, dtype) group predicted along its `kind` route."""
    op, dtype = str(rows["op"].iloc[0]), str(rows["dtype"].iloc[0])
    route = applied.candidate_route(op, dtype)
    if route is None or route.kind != kind:
        return None
    predicted, _ = applied.predict_route(route, rows)
    measured = rows["time_us"].to_numpy(float)
    return {"op": op, "dtype": dtype, "from_dtype": route.measured_dtype, "errors": predicted / measured - 1.0}


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q * cumulative[-1])])


def _summary(pairs: list[dict]) -> dict:
    """Per-op pooled statistics (pairs weighted equally) and each pair's own."""
    out: dict[str, dict] = {}
    for op in COMPUTE:
        mine = [p for p in pairs if p["op"] == op]
        if not mine:
            continue
        errors = np.concatenate([p["errors"] for p in mine])
        weights = np.concatenate([np.full(len(p["errors"]), 1.0 / len(p["errors"])) for p in mine])
        out[op] = {
            "median_pct": round(100 * _weighted_quantile(np.abs(errors), weights, 0.5), 2),
            "p90_pct": round(100 * _weighted_quantile(np.abs(errors), weights, 0.9), 2),
            "bias_pct": round(100 * _weighted_quantile(errors, weights, 0.5), 2),
            "pairs": [{key: p[key] for key in ("from", "to", "dtype", "from_dtype")}
                      | {"rows": len(p["errors"]), "median_pct": round(100 * float(np.median(np.abs(p["errors"]))), 2),
                         "p90_pct": round(100 * float(np.percentile(np.abs(p["errors"]), 90)), 2),
                         "bias_pct": round(100 * float(np.median(p["errors"])), 2)} for p in mine],
        }
    return out


def measure() -> dict:
    profiles = {name: Calibration.load(OUT / f"{name}.yaml") for name in GPUS}
    with tempfile.TemporaryDirectory() as tmp:
        data = {name: _measurements(name, Path(tmp)) for name in GPUS}
    transferred, scaled = [], []
    for target in GPUS:
        system = load_system(target)
        for (op, dtype), rows in data[target].groupby(["op", "dtype"], sort=True):
            rows = rows.reset_index(drop=True)
            for source in GPUS:
                if source == target:
                    continue
                pair = _pair(AppliedProfile(profiles[source], system), rows, TRANSFERRED)
                if pair is not None:
                    transferred.append(pair | {"from": source, "to": target})
            own = profiles[target]
            if (op, dtype) in own.ops and len([d for (o, d) in own.ops if o == op]) > 1:
                without = Calibration(own.device, own.hardware, own.sources, own.fitted_on, own.source_sha256,
                                      {k: v for k, v in own.ops.items() if k != (op, dtype)}, own.path)
                pair = _pair(AppliedProfile(without, system), rows, SCALED)
                if pair is not None:
                    scaled.append(pair | {"from": target, "to": target})
    return {
        "schema": ERRORS_SCHEMA,
        "created": _dt.date.today().isoformat(),
        "created_by": "python -m validation.transfer_errors",
        "method": "pooled |predicted/measured - 1| over device pairs weighted equally; see validation/transfer_errors.py",
        "transfer_device_kinds": ["gpu"],
        TRANSFERRED: _summary(transferred),
        SCALED: _summary(scaled),
    }


def markdown(table: dict) -> str:
    lines = []
    for kind in (TRANSFERRED, SCALED):
        lines += [f"{kind}:", "", "| op | from | to | dtype | rows | median \\|err\\| % | p90 % | bias % |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for op, entry in table[kind].items():
            for p in entry["pairs"]:
                lines.append(f"| {op} | {p['from']} ({p['from_dtype']}) | {p['to']} | {p['dtype']} | {p['rows']:,} "
                             f"| {p['median_pct']:.1f} | {p['p90_pct']:.1f} | {p['bias_pct']:+.1f} |")
            lines.append(f"| **{op}, pairs pooled** | | | | | **{entry['median_pct']:.1f}** | **{entry['p90_pct']:.1f}** "
                         f"| **{entry['bias_pct']:+.1f}** |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--print", action="store_true", help="print the tables only, write nothing")
    args = parser.parse_args(argv)
    require_data()
    table = measure()
    print(markdown(table))
    if not args.print:
        ERRORS_FILE.write_text(yaml.safe_dump(table, sort_keys=False, width=120))
        print(f"wrote {ERRORS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
