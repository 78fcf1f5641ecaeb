"""The roofline-with-efficiency model of compute kernels (GEMM, attention prefill and decode)
and its fit to measured times.

For compute kernels

    t = smax(flops / (peak * e_c(shape)), (bytes + small_bytes_half) / (bandwidth * memory_max), ...)
        + overhead_us

smax is a soft maximum (p-norm, exponent `sharpness`: the overlap of compute and memory
traffic), and the memory term is bytes / (bandwidth * e_m) with the saturating
e_m = memory_max * bytes / (bytes + small_bytes_half). For a GEMM, e_c = compute_max *
padded-wave efficiency (`tile_m` x `tile_n` output tiles in waves over the device's compute
units: m n / (waves * units * tile_m * tile_n)) * k / (k + k_half), and unaligned shapes
(a row of n or k elements not a multiple of 16 bytes) pay `unaligned_penalty`. Attention adds a third
term, the fixed cost of the waves of thread blocks (`block_us`): prefill has e_c =
attention_compute_max * occupancy(batch x heads x query tiles) * padding * kv / (kv +
kv_half) * a head_dim saturation d / (d + head_dim_half) scaled to 1 at d = 128; decode
is memory bound with the bandwidth scaled by occupancy(batch x kv_heads x KV
splits)^occupancy_power. A fused-MoE layer (`moe`: its two grouped GEMMs and the activation)
pads every reached expert's rows to whole tiles of `tile_m` rows (the kernel's BLOCK_SIZE_M),
so its compute term is its FLOPs times padded rows / rows at `compute_max`; its memory term
reads the reached experts' weights.

The handful of parameters (`_COMPUTE_SPECS`, bounded to physical ranges) are fitted by
`fit_least_squares.robust_fit` on log(time); the discrete ones (tiles) by trying each. The
model is kept in its own module because its parameters are what a calibration transfers to
another device: ratios to the spec's peak and bandwidth, sizes and overheads.
"""
from __future__ import annotations

from typing import cast

import numpy as np

from .fit_inputs import DTYPE_BYTES, work
from .fit_least_squares import Param, robust_fit

_PICK_ROWS, _FIT_ROWS = 2000, 5000  # rows used to pick the tiles, and to fit the parameters


def _smax(*terms: np.ndarray, p: float) -> np.ndarray:
    """Soft maximum (p-norm) of positive arrays; p -> infinity is the hard max."""
    hi = np.maximum.reduce(terms)
    return hi * sum((t / hi) ** p for t in terms) ** (1.0 / p)


def _occupancy(blocks: np.ndarray, units: float) -> np.ndarray:
    """Fraction of units busy over the waves of `blocks` equal thread blocks."""
    return blocks / (np.ceil(blocks / units) * units)


def _unaligned(f, dtype: str) -> np.ndarray:
    """1 where a row of an operand is not a multiple of 16 bytes (no vectorised/TMA loads), else 0.
    In nn.Linear's layout the rows are k long (activations and weights) and n long (the output);
    m, the token count, is how many rows there are, which sets no alignment."""
    step = max(1, int(round(16 / DTYPE_BYTES.get(dtype, 2.0))))
    return ((f["n"] % step != 0) | (f["k"] % step != 0)).astype(float)


def _gemm_time(f, flops, nbytes, q: dict[str, float], dev: dict[str, float], dtype: str) -> np.ndarray:
    units = dev["units"]
    tm, tn = q["tile_m"], q["tile_n"]
    waves = np.ceil(np.ceil(f["m"] / tm) * np.ceil(f["n"] / tn) / units)
    # padded waves of tiles: 2 * waves * units * tm * tn * k flops at compute_max, K loop saturating
    t_c = 2.0 * waves * units * tm * tn * (f["k"] + q["k_half"]) / (dev["peak_flops"] * q["compute_max"])
    t_c = t_c * (1.0 + q["unaligned_penalty"] * _unaligned(f, dtype))
    t_m = (nbytes + q["small_bytes_half"]) / (dev["bandwidth"] * q["memory_max"])
    return _smax(t_c, t_m, p=q["sharpness"]) * 1e6 + q["overhead_us"]


def grouped_gemm_us(q: dict[str, float], dev: dict[str, float], dtype: str, m: float, n: int, k: int, groups: int,
                    nbytes: float) -> float:
    """A grouped GEMM (one launch over `groups` weight matrices of [k -> n], m rows each on
    average) under a GEMM fit's parameters `q`: every group's rows padded to whole tiles of
    tile_m and their tiles scheduled in waves together, the K loop of one GEMM, the bytes of
    all the groups' weights, one fixed cost. What the fit says of a dense GEMM is what it
    says of each group; only the launch is shared."""
    rows = groups * np.ceil(m / q["tile_m"]) * q["tile_m"]
    f = {"m": np.array([rows]), "n": np.array([float(n)]), "k": np.array([float(k)])}
    return float(_gemm_time(f, None, np.array([nbytes]), q, dev, dtype)[0])


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


def _moe_time(f, flops, nbytes, q, dev, dtype):
    """vLLM's fused-MoE layer: the rows routed to each reached expert padded to whole tiles."""
    rows, reached = f["tokens"] * f["top_k"], f["experts_reached"]
    padded = reached * np.ceil(rows / (reached * q["tile_m"])) * q["tile_m"]
    t_c = flops * padded / rows / (dev["peak_flops"] * q["compute_max"])
    t_m = (nbytes + q["small_bytes_half"]) / (dev["bandwidth"] * q["memory_max"])
    return _smax(t_c, t_m, p=q["sharpness"]) * 1e6 + q["overhead_us"]


_COMPUTE_SPECS: dict[str, list[Param]] = {
    "gemm": [Param("compute_max", 0.8, 0.05, 1.0), Param("memory_max", 0.85, 0.05, 1.0),
             Param("overhead_us", 3.0, 0.05, 200.0), Param("k_half", 128.0, 1.0, 1e5),
             Param("small_bytes_half", 1e6, 1e3, 1e9), Param("sharpness", 4.0, 1.0, 30.0),
             Param("unaligned_penalty", 0.05, 0.0, 3.0, log=False)],
    "attn_prefill": [Param("attention_compute_max", 0.6, 0.02, 1.0), Param("memory_max", 0.85, 0.05, 1.0),
                     Param("overhead_us", 5.0, 0.05, 500.0), Param("kv_half", 256.0, 1.0, 1e6),
                     Param("head_dim_half", 16.0, 0.1, 1e4), Param("block_us", 1.0, 1e-3, 1e3),
                     Param("small_bytes_half", 1e6, 1e3, 1e9), Param("sharpness", 4.0, 1.0, 30.0)],
    "attn_decode": [Param("attention_compute_max", 0.3, 0.005, 1.0), Param("memory_max", 0.8, 0.05, 1.0),
                    Param("overhead_us", 5.0, 0.05, 500.0), Param("split_tokens", 512.0, 16.0, 1e6),
                    Param("occupancy_power", 0.5, 0.01, 1.0), Param("block_us", 1.0, 1e-3, 1e3),
                    Param("block_dim_power", 0.5, 0.0, 2.0, log=False),
                    Param("small_bytes_half", 1e6, 1e3, 1e9), Param("sharpness", 4.0, 1.0, 30.0)],
    "moe": [Param("compute_max", 0.6, 0.05, 1.0), Param("memory_max", 0.85, 0.05, 1.0),
            Param("overhead_us", 10.0, 0.05, 500.0), Param("small_bytes_half", 1e6, 1e3, 1e9),
            Param("sharpness", 4.0, 1.0, 30.0)],
}
_COMPUTE_TIME = {"gemm": _gemm_time, "attn_prefill": _prefill_time, "attn_decode": _decode_time, "moe": _moe_time}
_DISCRETE: dict[str, list[dict[str, float]]] = {
    "gemm": [{"tile_m": a, "tile_n": b} for a in (64.0, 128.0) for b in (64.0, 128.0)],
    "attn_prefill": [{"tile_q": 64.0}, {"tile_q": 128.0}],
    "attn_decode": [{}],
    "moe": [{"tile_m": m} for m in (16.0, 32.0, 64.0, 128.0)]}


# a second start from a soft, inefficient corner: the fits have a few local minima
_STARTS = [{"sharpness": 2.0, "compute_max": 0.5, "attention_compute_max": 0.3, "memory_max": 0.6}]


def compute_predict(op, dtype, f, q, dev) -> np.ndarray:
    flops, nbytes = work(op, dtype, f)
    return _COMPUTE_TIME[op](f, flops, nbytes, q, dev, dtype)


def fit_compute(op: str, dtype: str, f: dict[str, np.ndarray], log_t: np.ndarray, dev: dict[str, float],
                seed: int = 0) -> dict[str, float]:
    """Fit the op's efficiency parameters; discrete knobs (tiles) by trying each.

    A model of a handful of parameters needs a few thousand rows, not tens of thousands:
    the discrete knobs are chosen on a seeded subsample of at most `_PICK_ROWS` rows and
    the continuous parameters refitted on at most `_FIT_ROWS`.
    """
    flops, nbytes = work(op, dtype, f)
    spec = _COMPUTE_SPECS[op]
    choices = _DISCRETE[op]
    if op == "gemm" and not _unaligned(f, dtype).any():
        # no measured shape has an unaligned row: nothing shows a penalty, so there is none
        spec = [p for p in spec if p.name != "unaligned_penalty"]
        choices = [{**c, "unaligned_penalty": 0.0} for c in choices]
    order = np.random.default_rng(seed).permutation(len(log_t))

    def fit_on(rows, fixed, starts):
        fs = {k: v[rows] for k, v in f.items()}
        fl, nb, lt = flops[rows], nbytes[rows], log_t[rows]

        def residual(q):
            return np.log(_COMPUTE_TIME[op](fs, fl, nb, {**q, **fixed}, dev, dtype)) - lt

        return robust_fit(residual, spec, starts=starts)

    best: dict[str, float] | None = None
    best_cost, fixed_best = np.inf, {}
    pick = order[:_PICK_ROWS]
    for fixed in choices:
        q, cost = fit_on(pick, fixed, _STARTS)
        if cost < best_cost:
            best, best_cost, fixed_best = q, cost, fixed
    if len(log_t) > len(pick) or len(choices) > 1:
        best, _ = fit_on(order[:_FIT_ROWS], fixed_best, [best])
    # best stays None only where every start of every choice failed (robust_fit's cost inf)
    return {**cast(dict[str, float], best), **fixed_best}
