"""Derive the uncalibrated collectives' `network_efficiency` from the shipped all-reduce times.

    python -m validation.collective_defaults

The alpha-beta ring model of `simulator/perf/collectives.py` costs an all-reduce of S bytes
over p devices 2(p - 1) alpha + 2(p - 1)/p x S / (beta x network_efficiency), alpha and beta
the link's latency and per-direction bandwidth. The shipped measurements of collectives are
Vidur's NCCL all-reduces on a DGX A100 (`a100-dgx-allreduce-vidur.csv`: 2, 4 and 8 GPUs of
one node on NVSwitch, NVLink 3 at 300 GB/s per direction and 2 us; 2 KiB to 64 MiB).

For every intra-node row of at least `BANDWIDTH_BYTES` (where the bandwidth term dominates)
the efficiency that would reproduce it is
    e = 2(p - 1)/p x S / ((t - 2(p - 1) alpha) x beta),
and the default is their median (0.41: NCCL reaches under half the NVLink figure at these
sizes, 0.28-0.56 between the 10th and 90th percentiles). Smaller messages cost NCCL a few
tens of microseconds of launch and synchronisation that the model has no term for; vLLM runs
them through its own custom all-reduce inside CUDA graphs, for which no measurement ships,
so they are left as the model has them (`tests/test_roofline_defaults.py` states both).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from simulator.hardware.loader import load_system
from simulator.hardware.spec import Efficiency
from simulator.perf.collectives import allreduce_time_s

from . import DATA, require_data

BANDWIDTH_BYTES = 2**20
SYSTEM = "dgx-a100"


def intra_node_allreduce() -> pd.DataFrame:
    """The all-reduce rows measured with every device in one node."""
    raw = pd.read_csv(DATA / "a100-dgx-allreduce-vidur.csv")
    rows = raw[raw["op"] == "allreduce"].copy()
    rows["per_node"] = rows["device"].str.extract(r"devices_per_node=(\d+)", expand=False).astype(int)
    return rows[rows["world_size"] <= rows["per_node"]].reset_index(drop=True)


def implied_efficiency(rows: pd.DataFrame) -> np.ndarray:
    link = load_system(SYSTEM).fabric
    p, nbytes, t = rows["world_size"].to_numpy(), rows["bytes"].to_numpy(), rows["time_us"].to_numpy() * 1e-6
    steps = 2 * (p - 1)
    return steps / p * nbytes / ((t - steps * link.latency) * link.bandwidth)


def derive() -> float:
    rows = intra_node_allreduce()
    return float(np.median(implied_efficiency(rows[rows["bytes"] >= BANDWIDTH_BYTES])))


def errors(efficiency: float | None = None) -> pd.DataFrame:
    """Per row: the model's prediction with `efficiency` (default: the spec default) and its error."""
    rows = intra_node_allreduce()
    link = load_system(SYSTEM).fabric
    eff = Efficiency().network_efficiency if efficiency is None else efficiency
    predicted = np.array([allreduce_time_s(s, int(p), link, eff) for s, p in zip(rows["bytes"], rows["world_size"])])
    return rows.assign(predicted_us=predicted * 1e6, error_pct=100 * (predicted * 1e6 / rows["time_us"] - 1))


def main() -> None:
    require_data()
    efficiency = derive()
    frame = errors()
    print(f"derived network_efficiency {efficiency:.3f} (spec default {Efficiency().network_efficiency})")
    for large, rows in frame.groupby(frame["bytes"] >= BANDWIDTH_BYTES):
        label = f">= {BANDWIDTH_BYTES} B" if large else f"< {BANDWIDTH_BYTES} B"
        print(f"  {label:>12}: {len(rows)} rows, median |error| {rows['error_pct'].abs().median():.1f} %, "
              f"median signed error {rows['error_pct'].median():+.1f} %")


if __name__ == "__main__":
    main()
