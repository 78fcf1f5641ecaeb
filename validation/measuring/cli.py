"""The command line of `python -m validation.measure`: its flags, their checks, and the Options they become.

Kept apart from the measuring so that every bad argument is found before anything is timed
(or torch is imported), and reported the same way: a UsageError, printed by
`validation.measure.main` as one `error: ...` line with exit code 2 (argparse's own usage dump
is turned into that too). The op and dtype lists here are the ones the backends plan from.
"""
from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from simulator.models.op_kinds import COLLECTIVE_KINDS

OPS = ("gemm", "attn_prefill", "attn_decode", "allreduce", "allgather", "reducescatter", "alltoall", "memcpy")
DEFAULT_OPS = ("gemm", "attn_prefill", "attn_decode", "allreduce", "memcpy")
COLLECTIVES = COLLECTIVE_KINDS
DTYPES = ("bf16", "fp16", "fp8", "fp32")
# the CPU's default is the dtype its kernels run in: bf16 through torch (oneDNN, as vLLM's CPU
# backend runs), fp32 through numpy (which has no fast bf16 matmul)
DEFAULT_DTYPES = {"cuda": ("bf16", "fp8"), "torch": ("bf16",), "numpy": ("fp32",)}
CPU_KERNELS = ("torch", "numpy")
CPU_TORCH_NEEDED = "--cpu-kernels torch needs torch (pip install -e '.[gpu]'; a CPU build is enough)"


class UsageError(Exception):
    """Bad arguments: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m validation.measure",
                description="Time kernels on a GPU (torch) or CPU (torch or numpy) into a measurement CSV "
                            "(its columns: docs/contracts.md, Measurement CSV).")
    p.add_argument("--device", required=True, choices=("cuda", "cpu"), help="what to measure")
    p.add_argument("--out", required=True, type=Path, help="the CSV to write (FILE.meta.yaml goes beside it)")
    p.add_argument("--ops", default=",".join(DEFAULT_OPS),
                   help=f"comma list of {', '.join(OPS)} (default: {','.join(DEFAULT_OPS)})")
    p.add_argument("--dtype", default=None,
                   help="comma list of bf16, fp16, fp8, fp32 (default: bf16,fp8 on cuda; on cpu bf16 with torch, "
                        "fp32 with numpy)")
    p.add_argument("--cpu-kernels", default=None, choices=CPU_KERNELS,
                   help="CPU path: torch (oneDNN: bf16 GEMMs and attention) or numpy (fp32 GEMMs only); "
                        "default torch where it is installed, else numpy")
    p.add_argument("--quick", action="store_true", help="a small subset of shapes (a smoke test, seconds on a CPU)")
    p.add_argument("--models", default=None, help="comma list of catalogue models to take shapes from (default: all)")
    p.add_argument("--cuda-graph", type=int, default=0, metavar="N",
                   help="time N calls replayed in one CUDA graph with rotating operands (default 0: one call per trial)")
    p.add_argument("--world-sizes", default=None,
                   help="comma list of GPU counts for collectives (default: 2, 4, 8 and all GPUs, as many as there are)")
    p.add_argument("--cpu-max-gflop", type=float, default=200.0,
                   help="CPU path: skip GEMMs above this many GFLOP per call (default 200)")
    return p


def _split(text: str, what: str, allowed: Sequence[str]) -> list[str]:
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{what}: empty list (choose from {', '.join(allowed)})")
    for x in items:
        if x not in allowed:
            raise UsageError(f"{what}: unknown {what.lstrip('-').rstrip('s')} {x!r} (choose from {', '.join(allowed)})")
    return list(dict.fromkeys(items))


@dataclass
class Options:
    device: str
    out: Path
    ops: list[str]
    dtypes: list[str]
    quick: bool
    models: list[str]
    cuda_graph: int
    world_sizes: list[int] | None
    cpu_max_gflop: float
    cpu_kernels: str | None = None  # torch | numpy on --device cpu; None on cuda


def _cpu_kernels(device: str, asked: str | None) -> str | None:
    """Which library times CPU kernels: the one asked for, else torch where it is installed."""
    if device != "cpu":
        if asked is not None:
            raise UsageError(f"--cpu-kernels {asked}: only with --device cpu")
        return None
    has_torch = importlib.util.find_spec("torch") is not None
    if asked == "torch" and not has_torch:
        raise UsageError(CPU_TORCH_NEEDED)
    return asked or ("torch" if has_torch else "numpy")


def parse_args(argv: Sequence[str] | None) -> Options:
    from simulator.models.config import model_catalogue

    a = _parser().parse_args(argv)
    ops = _split(a.ops, "--ops", OPS)
    kernels = _cpu_kernels(a.device, a.cpu_kernels)
    dtypes = (_split(a.dtype, "--dtype", DTYPES) if a.dtype is not None
              else list(DEFAULT_DTYPES[kernels or a.device]))
    catalogue = list(model_catalogue())
    models = _split(a.models, "--models", catalogue) if a.models is not None else catalogue
    if not models:
        raise UsageError("no catalogue models found (workloads/models/*.yaml)")
    if a.cuda_graph < 0 or a.cuda_graph == 1:
        raise UsageError(f"--cuda-graph: {a.cuda_graph} is not 0 (off) or a call count of at least 2")
    world = None
    if a.world_sizes is not None:
        try:
            world = sorted({int(x) for x in a.world_sizes.split(",") if x.strip()})
        except ValueError:
            raise UsageError(f"--world-sizes: {a.world_sizes!r} is not a comma list of integers") from None
        if not world or world[0] < 2:
            raise UsageError(f"--world-sizes: {a.world_sizes!r}: a collective needs at least 2 GPUs")
    if not a.cpu_max_gflop > 0:
        raise UsageError(f"--cpu-max-gflop: {a.cpu_max_gflop} is not a positive number")
    out = a.out
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as {out / 'measured.csv'}")
    if not out.parent.exists():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    return Options(a.device, out, ops, dtypes, a.quick, models, a.cuda_graph, world, a.cpu_max_gflop, kernels)
