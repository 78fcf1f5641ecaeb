"""Fitting measured kernel timings: the methods behind `simulate calibrate` (docs/contracts.md, section 6).

`fit_op(rows, system)` turns the measurement rows of one (op, dtype) into an `OpModel` with
two parts, `kfold_errors` measures it on shapes it never saw, and `transfer` carries its
efficiencies to another device's spec.

1. A **roofline-with-efficiency fit**, used outside the measured grid and as the prior the
   table below is filled from. For compute kernels

       t = smax(flops / (peak * e_c(shape)), (bytes + small_bytes_half) / (bandwidth * memory_max), ...)
           + overhead_us

   smax is a soft maximum (p-norm, exponent `sharpness`: the overlap of compute and memory
   traffic), and the memory term is bytes / (bandwidth * e_m) with the saturating
   e_m = memory_max * bytes / (bytes + small_bytes_half). For a GEMM, e_c = compute_max *
   padded-wave efficiency (`tile_m` x `tile_n` output tiles in waves over the device's compute
   units: m n / (waves * units * tile_m * tile_n)) * k / (k + k_half), and unaligned shapes
   (a dimension not a multiple of 16 bytes) pay `unaligned_penalty`. Attention adds a third
   term, the fixed cost of the waves of thread blocks (`block_us`): prefill has e_c =
   attention_compute_max * occupancy(batch x heads x query tiles) * padding * kv / (kv +
   kv_half) * a head_dim saturation d / (d + head_dim_half) scaled to 1 at d = 128; decode
   is memory bound with the bandwidth scaled by occupancy(batch x kv_heads x KV
   splits)^occupancy_power. The handful of parameters are
   fitted by robust least squares on log(time) (scipy.optimize.least_squares, soft-L1 loss,
   bounded to physical ranges; discrete tiles by trying each). Collectives fit latency +
   bytes / bandwidth per measured world size and the ring model's latency per step and
   network efficiency across them; memcpy fits latency + bytes / bandwidth per direction.
   `OpModel.efficiencies()` are ratios to the spec (compute_max, memory_max, ...), sizes
   (tiles, k_half, small_bytes_half) and overheads, so `transfer` can apply them to
   another device's peak, bandwidth, units and links.

2. An **interpolation table** on the measured grid, used inside it. Its axes are the unique
   measured values of each shape feature (m, n, k; batch, seq_len, context = kv_len -
   seq_len, heads, kv_heads, head_dim; bytes, world_size, direction) on a log scale; grids of
   more than 250k nodes are thinned to quantile knots. A measured node holds the mean
   measured log(time). An unmeasured node holds the fit times exp(residual): the residual
   log(measured / fit) is first explained by one offset per axis value (ridge fit; kernel
   selection often singles out one m or one k for every other dimension), and what is left
   is spread from the measured nodes by a harmonic (graph-Laplacian) fill whose edge weight
   between two neighbouring axis values is 1 / (how much the residual changes between
   measured neighbours across that step)^2, with a weak pull back to the fit far from data.
   The grid is then made non-decreasing along the size axes (`MONOTONE`) by weighted
   isotonic regression along each axis (twice round) and a running maximum, and stored as
   log(time) rounded to 0.001 (0.05 %). Queries are answered by multilinear interpolation
   of log(time) in the log features.

**Guarantees.** Within the box of measured ranges the prediction is the table, and it is
non-decreasing in every size axis (gemm m, n, k; attention batch, seq_len, context, kv_len,
heads; collective and memcpy bytes): the grid is non-decreasing along every axis and
multilinear interpolation (done as successive clamped linear steps) keeps that, exactly at
nodes and on flat stretches. It passes through the measured nodes except where the data
themselves decrease with size (GEMM kernel selection does that: an fp8 GEMM with m = 257
can be slower than with m = 512), where the isotonic fit takes a weighted mean. The fit
alone is non-decreasing in m, n and k between aligned GEMM shapes (an unaligned one pays
`unaligned_penalty`, so m = 513 may cost more than m = 528). Outside the box, the
prediction is the fit times the table's correction at the nearest point of the box,
decaying by a factor e per factor `_DECAY` of distance in the log features, so it is
continuous at the box but not guaranteed monotone there. Heads/kv_heads/head_dim, world
size and direction are not forced monotone (GQA packing and split-KV kernels can make more KV heads faster).

**Sources.** A row is "calibrated-interpolation" when it is inside the measured hull: within
the box (categorical features and axes with a single measured value matching exactly) and
every grid corner its interpolation uses is measured, next to a measured node, or between two
measured nodes along some axis. Every other row is "calibrated-fit": the fit, corrected by
the nearest measurements with a weight that fades with distance.
"""
from __future__ import annotations

import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..hardware.loader import System
from .measurements import OP_PARAMS

INTERPOLATION, FIT = "calibrated-interpolation", "calibrated-fit"
COMPUTE_OPS = ("gemm", "attn_prefill", "attn_decode")
COLLECTIVE_OPS = ("allreduce", "allgather", "reducescatter", "alltoall")
DIRECTIONS = ("h2d", "d2h", "d2d")
_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

# table axes per op: (feature, log offset, kind) with kind "mono" (size axis, forced
# non-decreasing), "free" (interpolated, not forced) or "cat" (categorical: exact match)
AXES: dict[str, tuple[tuple[str, float, str], ...]] = {
    "gemm": (("m", 0.0, "mono"), ("n", 0.0, "mono"), ("k", 0.0, "mono")),
    "attn_prefill": (("batch", 0.0, "mono"), ("seq_len", 0.0, "mono"), ("context", 1.0, "mono"),
                     ("heads", 0.0, "mono"), ("kv_heads", 0.0, "free"), ("head_dim", 0.0, "free")),
    "attn_decode": (("batch", 0.0, "mono"), ("kv_len", 0.0, "mono"), ("heads", 0.0, "mono"),
                    ("kv_heads", 0.0, "free"), ("head_dim", 0.0, "free")),
    **{op: (("bytes", 0.0, "mono"), ("world_size", 0.0, "cat")) for op in COLLECTIVE_OPS},
    "memcpy": (("bytes", 0.0, "mono"), ("direction", 0.0, "cat")),
}
MONOTONE = {op: tuple(name for name, _, kind in axes if kind == "mono") for op, axes in AXES.items()}

_MAX_NODES = 250_000  # a larger grid is thinned to quantile knots per axis
_PICK_ROWS, _FIT_ROWS = 2000, 5000  # rows used to pick the tiles, and to fit the parameters
_STEP_PRIOR = 10.0  # pairs of measured neighbours a step's own spread needs to count as much as its axis's
_DECAY = 4.0  # outside the box, the table's correction decays by e per factor 4 of distance
_ROUND = 3  # table log(time_us) kept to 3 decimals (0.05 % at most)


# ---------------------------------------------------------------------------------------
# shape features, FLOPs and bytes (vectorised; the same formulas as kernels.operator_for)

def features(op: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The table features of each row (raw values; `context` = kv_len - seq_len)."""
    if op == "attn_prefill":
        seq = frame["seq_len"].to_numpy(float)
        out = {c: frame[c].to_numpy(float) for c in ("batch", "heads", "kv_heads", "head_dim")}
        out["seq_len"] = seq
        out["context"] = np.maximum(frame["kv_len"].to_numpy(float) - seq, 0.0)
        return out
    if op == "memcpy":
        codes = frame["direction"].map({d: i for i, d in enumerate(DIRECTIONS)})
        return {"bytes": frame["bytes"].to_numpy(float), "direction": codes.to_numpy(float)}
    return {name: frame[name].to_numpy(float) for name, _, _ in AXES[op]}


def work(op: str, dtype: str, f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, bytes) of each row, as `kernels.operator_for` computes them."""
    if op == "gemm":
        m, n, k = f["m"], f["n"], f["k"]
        b = _BYTES.get(dtype, 2.0)
        out_b = 2.0 if b < 2 else b
        return 2.0 * m * n * k, (m * k + k * n) * b + m * n * out_b
    ab = _BYTES[dtype] if dtype in ("bf16", "fp16") else 2.0  # attention runs in 16-bit
    h, kvh, d, batch = f["heads"], f["kv_heads"], f["head_dim"], f["batch"]
    if op == "attn_prefill":
        seq, ctx = f["seq_len"], f["context"]
        flops = 4.0 * h * d * batch * seq * (ctx + (seq + 1) / 2.0)
        return flops, 2 * batch * seq * h * d * ab + 2 * batch * (ctx + seq) * kvh * d * ab
    if op == "attn_decode":
        kv = f["kv_len"]
        return 4.0 * h * d * batch * kv, 2 * batch * kv * kvh * d * ab + 2 * batch * h * d * ab
    raise ValueError(f"{op} is not a compute kernel")


def _device_numbers(system: System, op: str, dtype: str) -> dict[str, float]:
    """What the fit needs of the hardware: peak of the dtype, memory bandwidth, units, links."""
    dev = system.accelerator
    out = {"bandwidth": float(dev.main_memory.bandwidth), "units": float(dev.compute.units)}
    if dev.compute.clock is not None:
        out["clock_hz"] = float(dev.compute.clock)
    if op in COMPUTE_OPS:
        out["peak_flops"] = float(dev.peak_flops(dtype if op == "gemm" else (dtype if dtype in ("bf16", "fp16")
                                                                           else "bf16")))
    if system.fabric is not None:
        out["fabric_bandwidth"] = float(system.fabric.bandwidth)
        out["fabric_latency_us"] = system.fabric.latency * 1e6
    if system.network is not None:
        out["network_bandwidth"] = float(system.network.bandwidth)
        out["network_latency_us"] = system.network.latency * 1e6
    if system.host_link is not None:
        out["host_bandwidth"] = float(system.host_link.bandwidth)
        out["host_latency_us"] = system.host_link.latency * 1e6
    out["devices_per_node"] = float(system.devices_per_node)
    out["memory_max"] = float(dev.efficiency.memory_max)  # the spec's defaults, for what was not measured
    out["network_efficiency"] = float(dev.efficiency.network_efficiency)
    return out


# ---------------------------------------------------------------------------------------
# the roofline-with-efficiency fits

def _smax(*terms: np.ndarray, p: float) -> np.ndarray:
    """Soft maximum (p-norm) of positive arrays; p -> infinity is the hard max."""
    hi = np.maximum.reduce(terms)
    return hi * sum((t / hi) ** p for t in terms) ** (1.0 / p)


def _occupancy(blocks: np.ndarray, units: float) -> np.ndarray:
    """Fraction of units busy over the waves of `blocks` equal thread blocks."""
    return blocks / (np.ceil(blocks / units) * units)


@dataclass
class _Param:
    name: str
    start: float
    lo: float
    hi: float
    log: bool = True  # fitted as log(value) (positive scale parameters)


def _robust_fit(residual: Callable[[dict[str, float]], np.ndarray], spec: list[_Param],
                starts: list[dict[str, float]] | None = None) -> tuple[dict[str, float], float]:
    """Bounded soft-L1 least squares over named parameters; the best of a few starts."""
    from scipy.optimize import least_squares  # imported here: runs only need predictions

    def unpack(x):
        return {p.name: (math.exp(v) if p.log else v) for p, v in zip(spec, x)}

    def pack(vals):
        return [math.log(vals[p.name]) if p.log else vals[p.name] for p in spec]

    lo = [math.log(p.lo) if p.log else p.lo for p in spec]
    hi = [math.log(p.hi) if p.log else p.hi for p in spec]
    best, best_cost = None, np.inf
    for start in [{p.name: p.start for p in spec}] + list(starts or []):
        x0 = np.clip(pack({**{p.name: p.start for p in spec}, **start}), lo, hi)
        try:
            res = least_squares(lambda x: residual(unpack(x)), x0, bounds=(lo, hi), loss="soft_l1",
                                f_scale=0.05, max_nfev=100, tr_solver="lsmr")
        except ValueError:
            continue
        if res.cost < best_cost:
            best, best_cost = unpack(res.x), res.cost
    if best is None:
        best = {p.name: p.start for p in spec}
    return best, float(best_cost)


def _unaligned(f, dtype: str) -> np.ndarray:
    """1 where a GEMM dimension is not a multiple of 16 bytes (no vectorised/TMA loads), else 0."""
    step = max(1, int(round(16 / _BYTES.get(dtype, 2.0))))
    return ((f["m"] % step != 0) | (f["n"] % step != 0) | (f["k"] % step != 0)).astype(float)


def _gemm_time(f, flops, nbytes, q: dict[str, float], dev: dict[str, float], dtype: str) -> np.ndarray:
    units = dev["units"]
    tm, tn = q["tile_m"], q["tile_n"]
    waves = np.ceil(np.ceil(f["m"] / tm) * np.ceil(f["n"] / tn) / units)
    # padded waves of tiles: 2 * waves * units * tm * tn * k flops at compute_max, K loop saturating
    t_c = 2.0 * waves * units * tm * tn * (f["k"] + q["k_half"]) / (dev["peak_flops"] * q["compute_max"])
    t_c = t_c * (1.0 + q["unaligned_penalty"] * _unaligned(f, dtype))
    t_m = (nbytes + q["small_bytes_half"]) / (dev["bandwidth"] * q["memory_max"])
    return _smax(t_c, t_m, p=q["sharpness"]) * 1e6 + q["overhead_us"]


def _prefill_time(f, flops, nbytes, q, dev, dtype):
    """FlashAttention prefill: (batch x heads x query tiles) blocks over the units."""
    tq, units = q["tile_q"], dev["units"]
    qtiles = np.ceil(f["seq_len"] / tq)
    blocks = f["batch"] * f["heads"] * qtiles
    occ = _occupancy(blocks, units)
    pad = f["seq_len"] / (qtiles * tq)
    kv = f["seq_len"] + f["context"]
    # head_dim saturation normalised to 1 at head_dim 128: attention_compute_max is the large-shape
    # efficiency of the common head size
    d, dh = f["head_dim"], q["head_dim_half"]
    e_c = q["attention_compute_max"] * occ * pad * kv / (kv + q["kv_half"]) * d * (128.0 + dh) / (128.0 * (d + dh))
    t_c = flops / (dev["peak_flops"] * e_c)
    t_m = (nbytes + q["small_bytes_half"]) / (dev["bandwidth"] * q["memory_max"])
    t_b = np.ceil(blocks / units) * q["block_us"] * 1e-6  # fixed cost of every wave of blocks
    return _smax(t_c, t_m, t_b, p=q["sharpness"]) * 1e6 + q["overhead_us"]


def _decode_time(f, flops, nbytes, q, dev, dtype):
    """Split-KV paged decode: (batch x kv_heads x KV splits) blocks over the units."""
    units = dev["units"]
    splits = np.ceil(f["kv_len"] / q["split_tokens"])
    blocks = f["batch"] * f["kv_heads"] * splits
    occ = _occupancy(blocks, units) ** q["occupancy_power"]
    t_c = flops / (dev["peak_flops"] * q["attention_compute_max"])
    t_m = (nbytes + q["small_bytes_half"]) / (dev["bandwidth"] * q["memory_max"] * occ)
    t_b = blocks / units * q["block_us"] * 1e-6 * (f["head_dim"] / 128.0) ** q["block_dim_power"]
    return _smax(t_c, t_m, t_b, p=q["sharpness"]) * 1e6 + q["overhead_us"]


_COMPUTE_SPECS: dict[str, list[_Param]] = {
    "gemm": [_Param("compute_max", 0.8, 0.05, 1.0), _Param("memory_max", 0.85, 0.05, 1.0),
             _Param("overhead_us", 3.0, 0.05, 200.0), _Param("k_half", 128.0, 1.0, 1e5),
             _Param("small_bytes_half", 1e6, 1e3, 1e9), _Param("sharpness", 4.0, 1.0, 30.0),
             _Param("unaligned_penalty", 0.05, 0.0, 3.0, log=False)],
    "attn_prefill": [_Param("attention_compute_max", 0.6, 0.02, 1.0), _Param("memory_max", 0.85, 0.05, 1.0),
                     _Param("overhead_us", 5.0, 0.05, 500.0), _Param("kv_half", 256.0, 1.0, 1e6),
                     _Param("head_dim_half", 16.0, 0.1, 1e4), _Param("block_us", 1.0, 1e-3, 1e3),
                     _Param("small_bytes_half", 1e6, 1e3, 1e9), _Param("sharpness", 4.0, 1.0, 30.0)],
    "attn_decode": [_Param("attention_compute_max", 0.3, 0.005, 1.0), _Param("memory_max", 0.8, 0.05, 1.0),
                    _Param("overhead_us", 5.0, 0.05, 500.0), _Param("split_tokens", 512.0, 16.0, 1e6),
                    _Param("occupancy_power", 0.5, 0.01, 1.0), _Param("block_us", 1.0, 1e-3, 1e3),
                    _Param("block_dim_power", 0.5, 0.0, 2.0, log=False),
                    _Param("small_bytes_half", 1e6, 1e3, 1e9), _Param("sharpness", 4.0, 1.0, 30.0)],
}
_COMPUTE_TIME = {"gemm": _gemm_time, "attn_prefill": _prefill_time, "attn_decode": _decode_time}
_DISCRETE = {"gemm": [{"tile_m": a, "tile_n": b} for a in (64.0, 128.0) for b in (64.0, 128.0)],
             "attn_prefill": [{"tile_q": 64.0}, {"tile_q": 128.0}],
             "attn_decode": [{}]}


# a second start from a soft, inefficient corner: the fits have a few local minima
_STARTS = [{"sharpness": 2.0, "compute_max": 0.5, "attention_compute_max": 0.3, "memory_max": 0.6}]


def _compute_predict(op, dtype, f, q, dev) -> np.ndarray:
    flops, nbytes = work(op, dtype, f)
    return _COMPUTE_TIME[op](f, flops, nbytes, q, dev, dtype)


def _fit_compute(op: str, dtype: str, f: dict[str, np.ndarray], log_t: np.ndarray, dev: dict[str, float],
                 seed: int = 0) -> dict[str, float]:
    """Fit the op's efficiency parameters; discrete knobs (tiles) by trying each.

    A model of a handful of parameters needs a few thousand rows, not tens of thousands:
    the discrete knobs are chosen on a seeded subsample of at most `_PICK_ROWS` rows and
    the continuous parameters refitted on at most `_FIT_ROWS`.
    """
    flops, nbytes = work(op, dtype, f)
    spec = _COMPUTE_SPECS[op]
    choices = _DISCRETE[op]
    order = np.random.default_rng(seed).permutation(len(log_t))

    def fit_on(rows, fixed, starts):
        fs = {k: v[rows] for k, v in f.items()}
        fl, nb, lt = flops[rows], nbytes[rows], log_t[rows]

        def residual(q):
            return np.log(_COMPUTE_TIME[op](fs, fl, nb, {**q, **fixed}, dev, dtype)) - lt

        return _robust_fit(residual, spec, starts=starts)

    best, best_cost, fixed_best = None, np.inf, {}
    pick = order[:_PICK_ROWS]
    for fixed in choices:
        q, cost = fit_on(pick, fixed, _STARTS)
        if cost < best_cost:
            best, best_cost, fixed_best = q, cost, fixed
    if len(log_t) > len(pick) or len(choices) > 1:
        best, _ = fit_on(order[:_FIT_ROWS], fixed_best, [best])
    return {**best, **fixed_best}


def _link_for(dev: dict[str, float], world: float) -> tuple[float, float]:
    """(bandwidth B/s, latency us) of the link a `world`-device collective uses."""
    if world <= dev.get("devices_per_node", 1) or "network_bandwidth" not in dev:
        return dev.get("fabric_bandwidth", dev["bandwidth"]), dev.get("fabric_latency_us", 0.0)
    return dev["network_bandwidth"], dev.get("network_latency_us", 0.0)


def _ring_factors(op: str, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latency steps, bandwidth factor) of a ring collective over `world` devices."""
    if op == "allreduce":
        return 2.0 * (world - 1), 2.0 * (world - 1) / world
    return world - 1.0, (world - 1.0) / world


def _fit_alpha_beta(x: np.ndarray, log_t: np.ndarray) -> tuple[float, float]:
    """latency_us + bytes / bytes_per_us, fitted in log space."""
    spec = [_Param("latency_us", max(float(np.exp(log_t.min())), 0.1), 1e-3, 1e6),
            _Param("bytes_per_us", max(float(x.max() / np.exp(log_t.max())), 1.0), 1e-3, 1e9)]
    q, _ = _robust_fit(lambda q: np.log(q["latency_us"] + x / q["bytes_per_us"]) - log_t, spec)
    return q["latency_us"], q["bytes_per_us"]


def _fit_collective(op, f, log_t, dev) -> dict[str, float]:
    """Alpha-beta per measured world size, and the ring-model link efficiencies over all."""
    q: dict[str, float] = {}
    steps_lat, busbw = [], []
    for w in np.unique(f["world_size"]):
        rows = f["world_size"] == w
        lat, bpu = _fit_alpha_beta(f["bytes"][rows], log_t[rows])
        q[f"latency_us@{int(w)}"], q[f"bytes_per_us@{int(w)}"] = lat, bpu
        steps, factor = _ring_factors(op, np.array([w]))
        link_bw, _ = _link_for(dev, w)
        steps_lat.append(lat / max(float(steps[0]), 1.0))
        busbw.append(bpu * 1e6 * float(factor[0]) / link_bw)
    q["latency_per_step_us"] = float(np.median(steps_lat))
    q["network_efficiency"] = float(np.median(busbw))
    return q


def _collective_predict(op, f, q, dev) -> np.ndarray:
    world, nbytes = f["world_size"], f["bytes"]
    out = np.empty(len(nbytes))
    for w in np.unique(world):
        rows = world == w
        key = f"latency_us@{int(w)}"
        if key in q:
            lat, bpu = q[key], q[f"bytes_per_us@{int(w)}"]
        else:  # an unmeasured world size: the ring model with the fitted link efficiencies
            steps, factor = _ring_factors(op, np.array([w]))
            link_bw, _ = _link_for(dev, w)
            lat = q["latency_per_step_us"] * float(steps[0])
            bpu = link_bw * q["network_efficiency"] / float(factor[0]) / 1e6
        out[rows] = lat + nbytes[rows] / bpu
    return out


def _copy_link(dev: dict[str, float], direction: str) -> tuple[float, float]:
    """(bytes/s, latency us) a copy streams at: the host link, or for d2d half the memory
    bandwidth (a device copy reads and writes every byte)."""
    if direction == "d2d":
        return dev["bandwidth"] / 2.0, 0.0
    return dev.get("host_bandwidth", dev["bandwidth"]), dev.get("host_latency_us", 0.0)


def _fit_memcpy(f, log_t, dev) -> dict[str, float]:
    """latency + bytes / bandwidth per direction; the bandwidth kept as a fraction of the link's."""
    q = {}
    for code in np.unique(f["direction"]):
        rows = f["direction"] == code
        lat, bpu = _fit_alpha_beta(f["bytes"][rows], log_t[rows])
        name = DIRECTIONS[int(code)]
        q[f"latency_us@{name}"] = lat
        q[f"efficiency@{name}"] = bpu * 1e6 / _copy_link(dev, name)[0]
    return q


def _memcpy_predict(f, q, dev) -> np.ndarray:
    out = np.empty(len(f["bytes"]))
    for code in np.unique(f["direction"]):
        rows = f["direction"] == code
        name = DIRECTIONS[int(code)]
        link_bw, link_lat = _copy_link(dev, name)
        # an unmeasured direction: the link's own latency and the spec's default efficiencies
        default = dev["memory_max"] if name == "d2d" else dev["network_efficiency"]
        lat = q.get(f"latency_us@{name}", link_lat)
        eff = q.get(f"efficiency@{name}", default)
        out[rows] = lat + f["bytes"][rows] / (link_bw * eff / 1e6)
    return out


def _family(op: str, dtype: str) -> tuple[Callable, Callable]:
    """The op family's (fit, predict) functions, bound to the op (and a compute op's dtype):
    fit(features, log_t, dev) -> params and predict(features, params, dev) -> microseconds."""
    if op in COMPUTE_OPS:
        return partial(_fit_compute, op, dtype), partial(_compute_predict, op, dtype)
    if op in COLLECTIVE_OPS:
        return partial(_fit_collective, op), partial(_collective_predict, op)
    if op == "memcpy":
        return _fit_memcpy, _memcpy_predict
    raise ValueError(f"unknown op {op}")


def _fit_predict(op: str, dtype: str, f: dict[str, np.ndarray], q: dict[str, float],
                 dev: dict[str, float]) -> np.ndarray:
    """The fit's time in microseconds."""
    return _family(op, dtype)[1](f, q, dev)


def _fit_params(op: str, dtype: str, f: dict[str, np.ndarray], log_t: np.ndarray,
                dev: dict[str, float]) -> dict[str, float]:
    return _family(op, dtype)[0](f, log_t, dev)


# ---------------------------------------------------------------------------------------
# the interpolation table

def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) regression of one line, pool-adjacent-violators."""
    vals, wts, lens = [], [], []
    for yi, wi in zip(y.tolist(), w.tolist()):
        vals.append(yi)
        wts.append(wi)
        lens.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w2 = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w2
            n = lens[-2] + lens[-1]
            del vals[-1], wts[-1], lens[-1]
            vals[-1], wts[-1], lens[-1] = v, w2, n
    return np.repeat(vals, lens)


def _isotonic_along(values: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    v = np.moveaxis(values, axis, -1)
    w = np.moveaxis(weights, axis, -1)
    flat_v, flat_w = v.reshape(-1, v.shape[-1]), w.reshape(-1, v.shape[-1])
    out = flat_v.copy()
    bad = np.flatnonzero((np.diff(flat_v, axis=1) < 0).any(axis=1))
    for i in bad:
        out[i] = _pav(flat_v[i], flat_w[i])
    return np.moveaxis(out.reshape(v.shape), -1, axis)


def _knots(values: np.ndarray, most: int) -> np.ndarray:
    """Unique values, thinned to `most` quantile knots (every so many unique values)."""
    u = np.unique(values)
    if len(u) <= most:
        return u
    pick = np.unique(np.round(np.linspace(0, len(u) - 1, most)).astype(int))
    return u[pick]


@dataclass
class Table:
    """log(time_us) on the grid of measured feature values; see the module docstring."""

    names: tuple[str, ...]
    offsets: tuple[float, ...]
    kinds: tuple[str, ...]
    axes: list[np.ndarray]  # raw feature values per axis, sorted
    values: np.ndarray  # log(time_us), shape = axis lengths
    support: np.ndarray  # bool, same shape: measured or bracketed by measured nodes

    def coords(self, i: int, x: np.ndarray) -> np.ndarray:
        return np.log(x + self.offsets[i])

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, op: str, f: dict[str, np.ndarray], log_t: np.ndarray,
              baseline: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Table:
        spec = AXES[op]
        names = tuple(s[0] for s in spec)
        offsets = tuple(s[1] for s in spec)
        kinds = tuple(s[2] for s in spec)
        axes = [np.unique(f[n]) for n in names]
        most = max(len(a) for a in axes)
        while int(np.prod([len(a) for a in axes])) > _MAX_NODES and most > 4:
            most = int(most * 0.8)
            axes = [a if kinds[i] == "cat" else _knots(f[names[i]], most) for i, a in enumerate(axes)]
        shape = tuple(len(a) for a in axes)
        # each row on its nearest node (exact when the axes are not thinned)
        idx = []
        for i, a in enumerate(axes):
            if kinds[i] == "cat":
                idx.append(np.searchsorted(a, f[names[i]]))
                continue
            c = np.log(a + offsets[i])
            x = np.log(f[names[i]] + offsets[i])
            j = np.clip(np.searchsorted(c, x), 1, max(len(c) - 1, 1))
            if len(c) > 1:
                j = np.where(np.abs(x - c[j - 1]) <= np.abs(c[j] - x), j - 1, j)
            else:
                j = np.zeros(len(x), dtype=int)
            idx.append(j)
        flat = np.ravel_multi_index(idx, shape)
        n_nodes = int(np.prod(shape))
        count = np.bincount(flat, minlength=n_nodes).astype(float)
        known = count > 0
        grid = np.meshgrid(*axes, indexing="ij")
        node_f = {n: g.ravel() for n, g in zip(names, grid)}
        base = np.log(baseline(node_f))
        # a node's value: the fit there times the mean ratio measured / fit of its rows (the
        # mean measured time when the axes are the measured values; on thinned axes this
        # keeps the fit's shape between a row and its node)
        ratio = np.bincount(flat, weights=log_t - np.log(baseline(f)), minlength=n_nodes)
        mean = base.copy()
        mean[known] += ratio[known] / count[known]
        base = base + _main_effects(mean - base, known, shape, kinds)
        residual = np.zeros(n_nodes)
        residual[known] = mean[known] - base[known]
        residual = _harmonic_fill(residual, known, shape, kinds)
        values = (base + residual).reshape(shape)
        support = _support(known.reshape(shape), kinds)
        # measured nodes weigh their row count, filled nodes near data 1, far ones 0.01
        weights = np.where(known, count, np.where(support.ravel(), 1.0, 0.01)).reshape(shape)
        mono = [i for i, k in enumerate(kinds) if k == "mono" and shape[i] > 1]
        for _ in range(2):
            for i in mono:
                values = _isotonic_along(values, weights, i)
        for i in mono:
            values = np.maximum.accumulate(values, axis=i)
        values = np.round(values, _ROUND)
        for i in mono:  # rounding keeps order, but be exact
            values = np.maximum.accumulate(values, axis=i)
        return cls(names, offsets, kinds, axes, values, support)

    # -- querying -----------------------------------------------------------------------------
    def _corners(self, f: dict[str, np.ndarray]):
        """Per axis: lower index, weight of the upper index, and whether the value is in the box."""
        n = len(next(iter(f.values())))
        lows, ups, ok = [], [], np.ones(n, dtype=bool)
        for i, name in enumerate(self.names):
            a = self.axes[i]
            x = f[name]
            if self.kinds[i] == "cat" or len(a) == 1:
                j = np.clip(np.searchsorted(a, x), 0, len(a) - 1)
                ok &= np.isclose(a[j], x, rtol=1e-9, atol=1e-9)
                lows.append(j)
                ups.append(np.zeros(n))
                continue
            c = self.coords(i, a)
            xc = self.coords(i, x)
            ok &= (x >= a[0] * (1 - 1e-9)) & (x <= a[-1] * (1 + 1e-9))
            j = np.clip(np.searchsorted(c, xc, side="right") - 1, 0, len(a) - 2)
            t = np.clip((xc - c[j]) / (c[j + 1] - c[j]), 0.0, 1.0)
            lows.append(j)
            ups.append(t)
        return lows, ups, ok

    def lookup(self, f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(interpolated log time, in the box, in the measured hull) for every query.

        Values outside the box are clamped to it (use `clamp` and the fit there instead)."""
        lows, ups, ok = self._corners(f)
        n = len(ok)
        supported = np.ones(n, dtype=bool)
        live = [i for i in range(len(self.names)) if self.kinds[i] != "cat" and len(self.axes[i]) > 1]
        vflat, sflat = self.values.ravel(), self.support.ravel()
        corners = np.empty((n,) + (2,) * len(live))
        for corner in range(1 << len(live)):
            idx, w, pos = list(lows), np.ones(n), []
            for b, i in enumerate(live):
                bit = corner >> b & 1
                pos.append(bit)
                if bit:
                    idx[i] = lows[i] + 1
                w = w * (ups[i] if bit else 1.0 - ups[i])
            flat = np.ravel_multi_index(idx, self.values.shape)
            corners[(slice(None), *pos)] = vflat[flat]
            supported &= (w <= 1e-12) | sflat[flat]
        # successive linear interpolations, last axis first: exact at the nodes and on flat
        # stretches, and monotone in each coordinate
        for b in reversed(range(len(live))):
            t = ups[live[b]].reshape((n,) + (1,) * b)
            lo, hi = corners[..., 0], corners[..., 1]
            corners = np.where(t >= 1.0, hi, np.clip(lo + t * (hi - lo), np.minimum(lo, hi), np.maximum(lo, hi)))
        out = corners.reshape(n)
        return out, ok, ok & supported

    def clamp(self, f: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Queries moved to the nearest point of the box, and the log distance moved."""
        g, dist2 = {}, 0.0
        for i, name in enumerate(self.names):
            a, x = self.axes[i], f[name]
            if self.kinds[i] == "cat":
                g[name] = x
                continue
            y = np.clip(x, a[0], a[-1])
            g[name] = y
            dist2 = dist2 + (self.coords(i, x) - self.coords(i, y)) ** 2
        return g, np.sqrt(dist2) * np.ones(len(next(iter(f.values()))))

    # -- YAML ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": {n: [float(v) if not float(v).is_integer() else int(v) for v in a]
                     for n, a in zip(self.names, self.axes)},
            "log_time_us": " ".join(_fmt(v) for v in self.values.ravel()),
            "support_bits": base64.b64encode(np.packbits(self.support.ravel()).tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, op: str, d: dict[str, Any]) -> Table:
        spec = AXES[op]
        names = tuple(s[0] for s in spec)
        axes = [np.asarray(d["axes"][n], dtype=float) for n in names]
        shape = tuple(len(a) for a in axes)
        values = np.array(d["log_time_us"].split(), dtype=float).reshape(shape)
        bits = np.frombuffer(base64.b64decode(d["support_bits"]), dtype=np.uint8)
        support = np.unpackbits(bits)[: values.size].astype(bool).reshape(shape)
        return cls(names, tuple(s[1] for s in spec), tuple(s[2] for s in spec), axes, values, support)


def _fmt(v: float) -> str:
    text = f"{v:.{_ROUND}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _support(known: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
    """Nodes measured, next to a measured node, or between two measured nodes, along an axis."""
    out = known.copy()
    for i, kind in enumerate(kinds):
        if kind == "cat" or known.shape[i] < 2:
            continue
        before = np.maximum.accumulate(known, axis=i)
        after = np.flip(np.maximum.accumulate(np.flip(known, axis=i), axis=i), axis=i)
        out |= before & after
        lo, hi = [slice(None)] * known.ndim, [slice(None)] * known.ndim
        lo[i], hi[i] = slice(0, -1), slice(1, None)
        out[tuple(lo)] |= known[tuple(hi)]
        out[tuple(hi)] |= known[tuple(lo)]
    return out


def _main_effects(residual: np.ndarray, known: np.ndarray, shape: tuple[int, ...],
                  kinds: tuple[str, ...], damp: float = 1.0) -> np.ndarray:
    """Per-axis-value offsets of the residual (r ~ sum_i a_i[index_i]), ridge-fitted on the
    measured nodes and evaluated on every node.

    Kernel selection often depends on one dimension alone (an m that is a multiple of the
    tile, an unaligned k): such a value is slower or faster for every other dimension, which
    this additive term carries to the unmeasured nodes of the same row, column or slab.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import lsqr
    kn = np.flatnonzero(known)
    if kn.size < 10:
        return np.zeros(known.size)
    index = np.unravel_index(np.arange(known.size), shape)
    columns, offset = [], 0
    for i in range(len(kinds)):
        if shape[i] < 2:
            continue
        columns.append(index[i] + offset)
        offset += shape[i]
    if not columns:
        return np.zeros(known.size)
    cols = np.stack(columns, axis=1)

    def design(rows):
        n = len(rows)
        per_row = cols.shape[1]
        return sp.csr_matrix((np.ones(n * per_row), (np.repeat(np.arange(n), per_row), cols[rows].ravel())),
                             shape=(n, offset))
    mu = float(residual[kn].mean())
    coef = lsqr(design(kn), residual[kn] - mu, damp=damp, atol=1e-6, btol=1e-6, iter_lim=2000)[0]
    return mu + design(np.arange(known.size)) @ coef


def _cg(A, b, M) -> np.ndarray:
    from scipy.sparse.linalg import cg
    try:
        solution, _ = cg(A, b, rtol=1e-7, maxiter=3000, M=M)
    except TypeError:  # scipy < 1.12 calls it tol
        solution, _ = cg(A, b, tol=1e-7, maxiter=3000, M=M)
    return solution


def _harmonic_fill(residual: np.ndarray, known: np.ndarray, shape: tuple[int, ...],
                   kinds: tuple[str, ...]) -> np.ndarray:
    """Residuals of unmeasured nodes: the graph-harmonic extension of the measured ones.

    Edges join neighbours along every non-categorical axis. The edges between axis values j
    and j + 1 weigh 1 / s^2, s being the typical change of the residual between measured
    neighbours across that step (1.48 x median |difference|, a robust standard deviation,
    shrunk toward the whole axis's value with the weight of `_STEP_PRIOR` pairs): the
    residual spreads along the axes and steps where it is smooth and not across the jumps
    of kernel selection (m = 512 -> 513, say). A small pull to zero (`eps`) makes nodes far
    from any measurement decay back to the fit.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve
    n = int(np.prod(shape))
    if known.all() or not known.any():
        return residual
    index = np.arange(n).reshape(shape)
    r_grid, k_grid = residual.reshape(shape), known.reshape(shape)
    rows, cols, wts, spreads, steps = [], [], [], [], []
    for i, kind in enumerate(kinds):
        if kind == "cat" or shape[i] < 2:
            continue
        lo, hi = np.arange(shape[i] - 1), np.arange(1, shape[i])
        both = np.take(k_grid, lo, axis=i) & np.take(k_grid, hi, axis=i)
        diff = np.abs(np.take(r_grid, hi, axis=i) - np.take(r_grid, lo, axis=i))
        spread = 1.4826 * float(np.median(diff[both])) if both.sum() >= 5 else np.nan
        # per step along the axis: how much the residual changes from value j to j + 1
        moved = np.moveaxis(np.where(both, diff, np.nan), i, 0).reshape(shape[i] - 1, -1)
        counts = np.isfinite(moved).sum(axis=1)
        with np.errstate(all="ignore"):
            per_step = 1.4826 * np.nanmedian(np.where(counts[:, None] > 0, moved, 0.0), axis=1)
        spreads.append(spread)
        steps.append((per_step, counts))
        rows.append(np.take(index, lo, axis=i))
        cols.append(np.take(index, hi, axis=i))
    if not rows:
        return residual
    known_spreads = [v for v in spreads if np.isfinite(v)]
    fallback = float(np.median(known_spreads)) if known_spreads else 0.05
    for j, (a, spread, (per_step, counts)) in enumerate(zip(rows, spreads, steps)):
        spread = spread if np.isfinite(spread) else fallback
        # shrink each step's spread toward the axis's (weight: pairs seen at that step)
        shrunk = (counts * per_step ** 2 + _STEP_PRIOR * spread ** 2) / (counts + _STEP_PRIOR)
        local = np.where(counts >= 3, shrunk, spread ** 2)
        local = np.maximum(np.sqrt(local), 0.005)
        w = 1.0 / local ** 2
        axis = [k for k, kind in enumerate(kinds) if kind != "cat" and shape[k] >= 2][j]
        w = np.broadcast_to(np.expand_dims(w, [d for d in range(len(shape)) if d != axis]), a.shape)
        wts.append(w.ravel())
        rows[j], cols[j] = a.ravel(), cols[j].ravel()
    rows, cols, wts = rows + cols, cols + rows, wts + wts
    if not rows:
        return residual
    W = sp.csr_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    deg = np.asarray(W.sum(axis=1)).ravel()
    eps = 1e-3 * float(np.median(np.concatenate(wts)))
    unknown = np.flatnonzero(~known)
    kn = np.flatnonzero(known)
    diag = deg[unknown] + eps
    A = (sp.diags(diag) - W[unknown][:, unknown]).tocsr()
    rhs = W[unknown][:, kn] @ residual[kn]
    out = residual.copy()
    if len(unknown) <= 5000:
        out[unknown] = spsolve(A.tocsc(), rhs)
    else:  # symmetric, strictly diagonally dominant: Jacobi-preconditioned conjugate gradients
        out[unknown] = _cg(A, rhs, sp.diags(1.0 / diag))
    return out


# ---------------------------------------------------------------------------------------
# the model

@dataclass
class OpModel:
    """A fitted (op, dtype) group: interpolation inside the measured grid, the fit outside."""

    op: str
    dtype: str
    method: str
    ranges: dict[str, list[float]]
    n_rows: int
    params: dict[str, float]
    device: dict[str, float]
    table: Table | None = None

    # -- prediction -------------------------------------------------------------------------
    def _rows(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(frame) and "op" in frame.columns and (frame["op"] != self.op).any():
            raise ValueError(f"rows of {sorted(set(frame['op']) - {self.op})} given to the {self.op} model")
        return features(self.op, frame)

    def fit_us(self, frame: pd.DataFrame) -> np.ndarray:
        """The roofline-with-efficiency fit alone, in microseconds."""
        return _fit_predict(self.op, self.dtype, self._rows(frame), self.params, self.device)

    def inside(self, frame: pd.DataFrame) -> np.ndarray:
        if self.table is None or len(frame) == 0:
            return np.zeros(len(frame), dtype=bool)
        return self.table.lookup(self._rows(frame))[2]

    def source_of(self, frame: pd.DataFrame) -> np.ndarray:
        return np.where(self.inside(frame), INTERPOLATION, FIT).astype(object)

    def predict_us(self, frame: pd.DataFrame) -> np.ndarray:
        f = self._rows(frame)
        fit = _fit_predict(self.op, self.dtype, f, self.params, self.device)
        if self.table is None or len(frame) == 0:
            return fit
        value, in_box, _ = self.table.lookup(f)
        out = np.where(in_box, np.exp(value), fit)
        if (~in_box).any():  # outside the box: the fit, corrected by the table's residual at its edge
            out_rows = np.flatnonzero(~in_box)
            g = {k: v[out_rows] for k, v in f.items()}
            near, dist = self.table.clamp(g)
            v_near, in_near, _ = self.table.lookup(near)
            fit_near = _fit_predict(self.op, self.dtype, near, self.params, self.device)
            corr = np.where(in_near, v_near - np.log(fit_near), 0.0) * np.exp(-dist / math.log(_DECAY))
            out[out_rows] = fit[out_rows] * np.exp(corr)
        return out

    def efficiencies(self) -> dict[str, float]:
        """The fitted roofline parameters: what transfers to another device."""
        return {k: float(v) for k, v in self.params.items()}

    # -- YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "dtype": self.dtype, "method": self.method, "n_rows": int(self.n_rows),
            "ranges": {k: [float(a), float(b)] for k, (a, b) in self.ranges.items()},
            "params": {k: float(v) for k, v in self.params.items()},
            "device": {k: float(v) for k, v in self.device.items()},
            "table": self.table.to_dict() if self.table is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpModel:
        op = str(d["op"])
        if op not in AXES:
            raise ValueError(f"unknown op {op!r}")
        table = Table.from_dict(op, d["table"]) if d.get("table") else None
        return cls(op, str(d["dtype"]), str(d["method"]),
                   {k: [float(a), float(b)] for k, (a, b) in d["ranges"].items()}, int(d["n_rows"]),
                   {k: float(v) for k, v in d["params"].items()}, {k: float(v) for k, v in d["device"].items()},
                   table)


_INSIDE = "monotone log-log interpolation of the measured grid (unmeasured nodes: fit x harmonic fill of residuals); "
_METHOD = {
    "gemm": _INSIDE + "outside, the roofline fit smax(flops / (peak compute_max waves(tile_m, tile_n) k/(k + k_half)), "
                      "bytes / (bandwidth memory_max)) + overhead",
    "attn_prefill": _INSIDE + "outside, the roofline fit smax(flops / (peak attention_compute_max occupancy "
                              "kv/(kv + kv_half)), bytes / (bandwidth memory_max), block waves) + overhead",
    "attn_decode": _INSIDE + "outside, the roofline fit smax(flops / (peak attention_compute_max), bytes / "
                             "(bandwidth memory_max occupancy^p), blocks) + overhead",
    "memcpy": "monotone log-log interpolation per direction; outside, latency + bytes / (link bandwidth efficiency)",
}
_COLLECTIVE_METHOD = ("monotone log-log interpolation per world size; outside, latency + bytes / bandwidth per "
                      "world size, unmeasured world sizes by the ring model with the fitted per-step latency and "
                      "network efficiency")


def _check_group(frame: pd.DataFrame) -> tuple[str, str]:
    if frame.empty:
        raise ValueError("no measurement rows to fit")
    ops, dtypes = frame["op"].unique(), frame["dtype"].astype(str).unique()
    if len(ops) != 1 or len(dtypes) != 1:
        raise ValueError(f"fit_op needs rows of one op and one dtype, got ops {list(ops)} dtypes {list(dtypes)}")
    op = str(ops[0])
    if op not in AXES:
        raise ValueError(f"unknown op {op!r}")
    return op, str(dtypes[0])


def fit_op(frame: pd.DataFrame, system: System) -> OpModel:
    """Fit one (op, dtype) group of measurement rows on `system` (see the module docstring)."""
    op, dtype = _check_group(frame)
    f = features(op, frame)
    log_t = np.log(frame["time_us"].to_numpy(float))
    dev = _device_numbers(system, op, dtype)
    params = _fit_params(op, dtype, f, log_t, dev)
    table = Table.build(op, f, log_t, lambda g: _fit_predict(op, dtype, g, params, dev))
    ranges = {p: [float(frame[p].min()), float(frame[p].max())] for p in OP_PARAMS[op] if p != "direction"}
    method = _COLLECTIVE_METHOD if op in COLLECTIVE_OPS else _METHOD[op]
    return OpModel(op, dtype, method, ranges, len(frame), params, dev, table)


def _shape_keys(frame: pd.DataFrame) -> np.ndarray:
    op = str(frame["op"].iloc[0])
    cols = [p for p in OP_PARAMS[op] if p in frame.columns]
    return frame.groupby(cols, sort=False, dropna=False).ngroup().to_numpy()


def kfold_errors(frame: pd.DataFrame, system: System, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Held-out errors: every row predicted by a fit that never saw its shape.

    Shapes (unique parameter tuples) are dealt into k folds at random (seeded); all rows of a
    shape share a fold. Returns the rows with `predicted_us`, `error_pct` (signed,
    100 * (pred - meas) / meas), `fold` and `source`.
    """
    _check_group(frame)
    frame = frame.reset_index(drop=True)
    keys = _shape_keys(frame)
    n_shapes = int(keys.max()) + 1
    if n_shapes < 2:
        raise ValueError("held-out errors need at least two distinct shapes")
    k = max(2, min(k, n_shapes))
    fold_of_shape = np.random.default_rng(seed).permutation(n_shapes) % k
    fold = fold_of_shape[keys]
    predicted = np.empty(len(frame))
    source = np.empty(len(frame), dtype=object)
    for i in range(k):
        test = fold == i
        if not test.any():
            continue
        model = fit_op(frame[~test], system)
        predicted[test] = model.predict_us(frame[test])
        source[test] = model.source_of(frame[test])
    out = frame.copy()
    out["predicted_us"] = predicted
    out["error_pct"] = 100.0 * (predicted - out["time_us"].to_numpy(float)) / out["time_us"].to_numpy(float)
    out["fold"] = fold
    out["source"] = source
    return out


def transfer(model_or_efficiencies: OpModel | dict[str, float], target_system: System,
             op: str | None = None) -> Callable[[pd.DataFrame], np.ndarray]:
    """A predictor (frame -> microseconds) that applies fitted efficiencies to another device.

    Only the fit's device-independent parameters travel (compute_max, memory_max, tiles,
    saturation constants, overheads; network efficiency and latency per step for
    collectives); the target's peak for each row's dtype, its memory bandwidth, compute units
    and links come from `target_system`. No measurement of the target is used. A GEMM's fixed
    cost (overhead_us: prologue, epilogue, tile scheduling) counts clock cycles, so it is
    scaled by the source's clock over the target's when the model knows its device's clock:
    on the shipped GEMM measurements that lowers the transfer's median error in 10 of the 12
    device pairs and raises it in one (A100 to H100: 20.1 % to 19.0 %); attention, where it
    raised it in most pairs, keeps its overheads. Pass `op` when giving a bare efficiencies
    dict (default gemm; no clock scaling, the dict knows no device).
    """
    if isinstance(model_or_efficiencies, OpModel):
        params, op = model_or_efficiencies.efficiencies(), model_or_efficiencies.op
        source_clock = model_or_efficiencies.device.get("clock_hz")
    else:
        params, op, source_clock = dict(model_or_efficiencies), op or "gemm", None
    target_clock = target_system.accelerator.compute.clock
    if op == "gemm" and source_clock and target_clock:
        params["overhead_us"] *= source_clock / target_clock
    if op in COLLECTIVE_OPS:  # per-world-size fits are device specific; keep the link model
        params = {k: v for k, v in params.items() if "@" not in k}
    elif op == "memcpy":  # efficiencies of the link travel, latencies are the target link's
        params = {k: v for k, v in params.items() if k.startswith("efficiency@")}

    def predict(frame: pd.DataFrame) -> np.ndarray:
        if "dtype" not in frame.columns:
            raise ValueError("transfer needs a dtype column (the target's peak depends on it)")
        dtypes = frame["dtype"].astype(str).to_numpy()
        out = np.empty(len(frame))
        for dtype in np.unique(dtypes):
            where = np.flatnonzero(dtypes == dtype)
            dev = _device_numbers(target_system, op, str(dtype))
            out[where] = _fit_predict(op, str(dtype), features(op, frame.iloc[where]), params, dev)
        return out

    return predict
