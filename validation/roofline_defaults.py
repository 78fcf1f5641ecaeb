"""Derive the uncalibrated roofline's default efficiencies from the shipped measurements.

    python -m validation.roofline_defaults    # about 20 s: per-group fits, the medians, the errors

The roofline of `simulator/perf/roofline.py` (no profile) is t = max(FLOPs / (peak x e_c),
(bytes + small_bytes_half) / (bandwidth x memory_max)), e_c = compute_max x wave efficiency
for GEMMs and attention_compute_max for attention. Its defaults (`Efficiency` in
`simulator/hardware/spec.py`) are derived here, across devices rather than from one:

1. Every shipped measurement group (file or layer-table set x op x dtype: H100 GEMMs bf16 and
   fp8, H100 prefill and decode attention, A100 GEMMs, RTX 4090 and RTX PRO 6000 GEMMs and
   attention) is fitted on its own: compute_max, memory_max and attention_compute_max
   minimising the mean |log(predicted / measured)| of its rows of at least 20 us. Shorter
   kernels are set by fixed per-kernel costs, which the roofline has no term for (the cost
   model adds launch and graph gaps; a profile fits them). small_bytes_half stays at 2 MB,
   what the elementwise kernels of the RTX layer tables need (activation, norms, rotary at one
   token: 1.9-2.7 us measured; 2.2 and 1.5 us predicted on the RTX 4090 and RTX PRO 6000).
   LLMCompass's A100 GEMMs are left out (30 us of framework overhead in every time).
2. Each default is the median over the groups it governs: compute_max over the GEMM groups,
   attention_compute_max over the prefill groups, memory_max over the GEMM and decode groups.

It then prints every group's median and signed median error with the current defaults (all
rows, and rows of at least 20 us), which `tests/test_roofline_defaults.py` bounds.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from simulator.hardware.loader import load_system
from simulator.hardware.spec import Efficiency
from simulator.perf.fit_inputs import features, work
from simulator.perf.kernels import roofline_us
from simulator.perf.measurements import read_measurements

from . import DATA, require_data
from .layer_tables import convert

LONG_US = 20.0  # rows at least this long are throughput-bound enough to fit efficiencies on
# (name, catalogue device, loader) of every shipped measurement set of compute kernels
SETS = [
    ("h100-sxm-gemm.csv", "h100-sxm", lambda: read_measurements(DATA / "h100-sxm-gemm.csv")),
    ("h100-sxm-attn-prefill.csv", "h100-sxm", lambda: read_measurements(DATA / "h100-sxm-attn-prefill.csv")),
    ("h100-sxm-attn-decode.csv", "h100-sxm", lambda: read_measurements(DATA / "h100-sxm-attn-decode.csv")),
    ("a100-sxm-gemm-vidur.csv", "a100-80gb-sxm", lambda: read_measurements(DATA / "a100-sxm-gemm-vidur.csv")),
    ("llmcompass-gemm-a100.csv", "a100-80gb-sxm", lambda: read_measurements(DATA / "llmcompass-gemm-a100.csv")),
    ("rtx4090-llama-3.1-8b/", "rtx4090", lambda: convert(DATA / "rtx4090-llama-3.1-8b")),
    ("rtxpro6000-*/", "rtx-pro-6000", lambda: pd.concat([convert(DATA / "rtxpro6000-llama-3.1-8b"),
                                                         convert(DATA / "rtxpro6000-qwen3-32b")], ignore_index=True)),
]
EXCLUDED = ("llmcompass-gemm-a100.csv",)  # from the derivation, not from the check


def groups():
    """(set name, op, dtype, rows, system) of every compute-kernel group of the shipped data."""
    for name, device, load in SETS:
        frame = load()
        system = load_system(device)
        for (op, dtype), rows in frame.groupby(["op", "dtype"], sort=True):
            if op in ("gemm", "attn_prefill", "attn_decode"):
                yield name, str(op), str(dtype), rows.reset_index(drop=True), system


def _roofline(op: str, dtype: str, rows: pd.DataFrame, system):
    """A vectorised `roofline_us` of the group as a function of the three efficiencies."""
    device = system.accelerator
    f = features(op, rows)
    flops, nbytes = work(op, dtype, f)
    peak = device.peak_flops(dtype if op == "gemm" else (dtype if dtype in ("bf16", "fp16") else "bf16"))
    eff = device.efficiency
    if op == "gemm":
        tiles = np.ceil(f["m"] / eff.tile_m) * np.ceil(f["n"] / eff.tile_n)
        wave = tiles / (np.ceil(tiles / device.compute.units) * device.compute.units)
    else:
        wave = np.ones(len(rows))

    def predict(compute_max: float, memory_max: float, attention_compute_max: float) -> np.ndarray:
        e_c = compute_max * wave if op == "gemm" else attention_compute_max
        memory = (nbytes + eff.small_bytes_half) / (device.main_memory.bandwidth * memory_max)
        return np.maximum(flops / (peak * e_c), memory) * 1e6

    return predict


def fit_group(op: str, dtype: str, rows: pd.DataFrame, system) -> dict[str, float]:
    """The three efficiencies that best fit the group's rows of at least LONG_US."""
    long = rows[rows["time_us"] >= LONG_US].reset_index(drop=True)
    predict = _roofline(op, dtype, long, system)
    measured = long["time_us"].to_numpy(float)

    def loss(x: np.ndarray) -> float:
        return float(np.mean(np.abs(np.log(predict(*x) / measured))))

    best = min((minimize(loss, start, method="Nelder-Mead", bounds=[(0.02, 1.0)] * 3, options={"maxiter": 4000})
                for start in ([0.7, 0.85, 0.5], [0.5, 0.6, 0.3], [0.9, 0.95, 0.8])), key=lambda r: r.fun)
    return dict(zip(("compute_max", "memory_max", "attention_compute_max"), map(float, best.x)))


def derive() -> tuple[dict[str, float], list[dict]]:
    """The medians of the per-group fits (see the module docstring) and the fits themselves."""
    fits = [{"set": name, "op": op, "dtype": dtype, **fit_group(op, dtype, rows, system)}
            for name, op, dtype, rows, system in groups() if name not in EXCLUDED]
    table = pd.DataFrame(fits)
    gemm, prefill = table["op"] == "gemm", table["op"] == "attn_prefill"
    medians = {"compute_max": float(table.loc[gemm, "compute_max"].median()),
               "memory_max": float(table.loc[~prefill, "memory_max"].median()),
               "attention_compute_max": float(table.loc[prefill, "attention_compute_max"].median())}
    return medians, fits


def errors(rows: pd.DataFrame, system) -> dict[str, float]:
    """Median |error| and signed median error (percent) of the uncalibrated roofline on the
    group, over all rows and over rows of at least LONG_US."""
    signed = roofline_us(rows, system) / rows["time_us"].to_numpy(float) - 1.0
    long = rows["time_us"].to_numpy(float) >= LONG_US
    return {"median": 100 * float(np.median(np.abs(signed))), "bias": 100 * float(np.median(signed)),
            "long_median": 100 * float(np.median(np.abs(signed[long]))), "long_bias": 100 * float(np.median(signed[long]))}


def main() -> int:
    require_data()
    medians, fits = derive()
    print("| set | op | dtype | compute_max | memory_max | attention_compute_max |\n|---|---|---|---:|---:|---:|")
    for f in fits:
        print(f"| {f['set']} | {f['op']} | {f['dtype']} | {f['compute_max']:.3f} | {f['memory_max']:.3f} "
              f"| {f['attention_compute_max']:.3f} |")
    print("\nmedians: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    default = Efficiency()
    print(f"defaults: compute_max {default.compute_max}, memory_max {default.memory_max}, attention_compute_max "
          f"{default.attention_compute_max}, small_bytes_half {default.small_bytes_half:.3g}")
    assert all(math.isclose(getattr(default, k), round(v, 2), abs_tol=0.011) for k, v in medians.items()), \
        "the defaults in spec.py are not the derived medians"
    print("\n| set | op | dtype | rows | median \\|err\\| % | bias % | rows >= 20 us: median \\|err\\| % | bias % |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, op, dtype, rows, system in groups():
        e = errors(rows, system)
        print(f"| {name} | {op} | {dtype} | {len(rows):,} | {e['median']:.1f} | {e['bias']:+.1f} "
              f"| {e['long_median']:.1f} | {e['long_bias']:+.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
