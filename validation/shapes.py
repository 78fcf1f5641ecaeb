"""The shapes the measuring harness times (docs/contracts.md, section 6), as plain data.

GEMM shapes come from the shipped models' linear layers, split the way the cost model splits
them (`simulator/models/operators.py`: m = tokens, n = output features, k = input features;
tensor parallelism divides heads and MLP columns, KV heads are replicated when tp exceeds
them), at TP 1/2/4/8 and log-spaced token counts 1..8192, plus a log-spaced m, n, k grid.
Attention shapes take the models' (heads, kv_heads, head_dim) per device at each TP degree
with batch and context grids. Sizes of collectives and copies are log-spaced 4 KiB..1 GiB.

`quick=True` gives a small subset (one model, a few shapes) for smoke tests; nothing here
imports numpy or torch.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from simulator.models.config import ModelConfig
from simulator.models.layers import DENSE, MOE, linear_layers

TP_DEGREES = (1, 2, 4, 8)
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
QUICK_MODEL = "llama-3.1-8b"  # the model --quick takes shapes from, when it is in the selection


@dataclass(frozen=True)
class Gemm:
    m: int
    n: int
    k: int
    label: str  # where the shape comes from, e.g. "llama-3.1-8b tp2 qkv_proj" or "grid"

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def params(self) -> dict[str, int]:
        return {"m": self.m, "n": self.n, "k": self.k}


@dataclass(frozen=True)
class AttnPrefill:
    batch: int
    seq_len: int  # new query tokens per sequence
    kv_len: int  # keys per sequence, the chunk included (kv_len > seq_len: chunked prefill)
    heads: int
    kv_heads: int
    head_dim: int
    label: str

    def params(self) -> dict[str, int]:
        return {"batch": self.batch, "seq_len": self.seq_len, "kv_len": self.kv_len, "heads": self.heads,
                "kv_heads": self.kv_heads, "head_dim": self.head_dim}


@dataclass(frozen=True)
class AttnDecode:
    batch: int
    kv_len: int
    heads: int
    kv_heads: int
    head_dim: int
    label: str

    def params(self) -> dict[str, int]:
        return {"batch": self.batch, "kv_len": self.kv_len, "heads": self.heads, "kv_heads": self.kv_heads,
                "head_dim": self.head_dim}


@dataclass(frozen=True)
class Collective:
    op: str  # allreduce | allgather | reducescatter | alltoall
    nbytes: int  # message size per device (allgather: the gathered result; reducescatter: the input)
    world_size: int

    def params(self) -> dict[str, int]:
        return {"bytes": self.nbytes, "world_size": self.world_size}


@dataclass(frozen=True)
class Memcpy:
    nbytes: int
    direction: str  # h2d | d2h | d2d
    pinned: bool | None  # host memory page-locked (None for d2d)

    def params(self) -> dict[str, int | str]:
        return {"bytes": self.nbytes, "direction": self.direction}


def log_grid(lo: int, hi: int, factor: int = 2) -> list[int]:
    """lo, lo*factor, ... up to hi, with hi itself always included."""
    out, x = [], lo
    while x < hi:
        out.append(x)
        x *= factor
    out.append(hi)
    return out


def layer_gemms(model: ModelConfig, tp: int) -> list[tuple[str, int, int]]:
    """(name, n, k) of every linear layer of `model` on one device at tensor parallelism `tp`."""
    kinds = ([DENSE] if model.dense_layers else []) + ([MOE] if model.is_moe else [])
    out = _dedup(((lin.name, lin.n, lin.k) for kind in kinds for lin in linear_layers(model, tp, kind)),
                 key=lambda shape: shape)
    return out + [("lm_head", model.vocab_size // tp, model.hidden_size)]


def _dedup(shapes: Iterable, key) -> list:
    seen, out = set(), []
    for s in shapes:
        kk = key(s)
        if kk not in seen:
            seen.add(kk)
            out.append(s)
    return out


def _quick_models(models: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
    name = QUICK_MODEL if QUICK_MODEL in models else next(iter(models))
    return {name: models[name]}


def gemm_shapes(models: dict[str, ModelConfig], quick: bool = False) -> list[Gemm]:
    """Model layer GEMMs at every TP degree and token count, then the generic m, n, k grid."""
    if quick:
        tps, tokens = (8,), (1, 64)
        models = _quick_models(models)
        grid = [(m, nk, nk) for m in (1, 16, 128) for nk in (256, 1024, 4096)]
    else:
        tps, tokens = TP_DEGREES, log_grid(1, 8192)
        nk = log_grid(256, 16384)
        grid = [(m, n, k) for m in log_grid(1, 8192, 4) for n in nk for k in nk]
    shapes = []
    for name, model in models.items():
        for tp in tps:
            for layer, n, k in layer_gemms(model, tp):
                shapes += [Gemm(m, n, k, f"{name} tp{tp} {layer}") for m in tokens]
    shapes += [Gemm(m, n, k, "grid") for m, n, k in grid]
    return _dedup(shapes, lambda s: (s.m, s.n, s.k))


def attention_heads(models: dict[str, ModelConfig], tps: Iterable[int] = TP_DEGREES) -> list[tuple[int, int, int, str]]:
    """Distinct per-device (heads, kv_heads, head_dim) of the models at each TP degree, with a label."""
    out = []
    for name, model in models.items():
        if model.is_mla:
            continue  # latent attention is its own kernel (mla_prefill, mla_decode), not timed here yet
        for tp in tps:
            heads, kv_heads = model.heads_per_device(tp), model.kv_heads_per_device(tp)
            if heads % kv_heads:
                continue  # no even split of query heads over KV heads at this TP degree
            out.append((heads, kv_heads, model.head_dim, f"{name} tp{tp}"))
    return _dedup(out, lambda s: s[:3])


def attn_prefill_shapes(models: dict[str, ModelConfig], quick: bool = False) -> list[AttnPrefill]:
    """Fresh prefills (kv_len = seq_len, causal) over batch and length, then chunked prefills
    (a chunk of seq_len new tokens after kv_len - seq_len cached ones)."""
    if quick:
        heads = attention_heads(_quick_models(models), (1,))
        fresh = [(1, 128), (1, 1024)]
        chunked = [(1, 256, 2048)]
    else:
        heads = attention_heads(models)
        fresh = [(b, s) for b in (1, 2, 8) for s in log_grid(128, 16384) if b * s <= 32768]
        chunked = [(1, c, kv) for c in (256, 1024, 2048) for kv in (4096, 16384)]
    shapes = []
    for h, kvh, d, label in heads:
        shapes += [AttnPrefill(b, s, s, h, kvh, d, label) for b, s in fresh]
        shapes += [AttnPrefill(b, c, kv, h, kvh, d, label) for b, c, kv in chunked]
    return shapes


def attn_decode_shapes(models: dict[str, ModelConfig], quick: bool = False) -> list[AttnDecode]:
    """One query token per sequence attending to kv_len cached keys, over batch and context."""
    if quick:
        heads = attention_heads(_quick_models(models), (1,))
        grid = [(1, 512), (16, 4096)]
    else:
        heads = attention_heads(models)
        grid = [(b, kv) for b in (1, 4, 16, 64, 256) for kv in log_grid(128, 32768, 4) if b * kv <= 1 << 21]
    return [AttnDecode(b, kv, h, kvh, d, label) for h, kvh, d, label in heads for b, kv in grid]


def message_sizes(quick: bool = False) -> list[int]:
    """Collective and copy sizes in bytes, log-spaced 4 KiB..1 GiB (quick: 4 KiB..256 MiB, x16)."""
    return log_grid(4 * KIB, 256 * MIB, 16) if quick else log_grid(4 * KIB, GIB)


def collective_shapes(ops: Iterable[str], world_sizes: Iterable[int], quick: bool = False) -> list[Collective]:
    return [Collective(op, n, w) for w in world_sizes for op in ops for n in message_sizes(quick)]


def memcpy_shapes(directions: Iterable[str], quick: bool = False, pinned: Iterable[bool] = (True, False)) -> list[Memcpy]:
    """Every size in every direction; host<->device copies once from pinned and once from pageable memory."""
    out = []
    for direction in directions:
        kinds = [None] if direction == "d2d" else list(pinned)
        out += [Memcpy(n, direction, p) for p in kinds for n in message_sizes(quick)]
    return out
