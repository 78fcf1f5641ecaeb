"""Whole forward steps of a real model on this machine's CPU, against the simulator's step.

    python -m validation.cpu_step measure --model llama-3.2-1b --out steps.csv      # needs torch
    python -m validation.cpu_step compare epyc-genoa-2vcpu steps.csv

The kernel tables a CPU profile is fitted to time one operator at a time; this times what a
serving step does with them, as vLLM's CPU backend runs it in bf16 through torch: the embedding,
then per layer residual add and RMSNorm, the QKV projection, rotary embedding, attention over
a KV cache (prefill: `scaled_dot_product_attention`, causal; decode: two batched matmuls over
the query heads grouped by KV head, see `TorchStep._decode_attention`), the output projection, RMSNorm, the gate/up
projection, SiLU-and-multiply, the down projection; then the final norm, the LM head on one
token per sequence and a greedy sample. Linear layers use oneDNN on weights prepacked once, as
the measuring harness times them (`validation.measuring.torch_backend.onednn_linear`). Weights are random
(timing does not depend on their values) and the whole model is built, so every step streams
all of its weights from memory as a real one does.

`measure` writes one row per step shape: decodes of a batch of sequences at a context length,
and prefills of one prompt; `time_ms` is the median over repeated steps after two warm-up steps.
`compare` costs the same shapes with the simulator on a CPU spec and its calibration profile and
prints both with the error. The simulated time leaves out the engine's own per-step work
(`scheduler_per_iteration`), which a bare forward loop does not have, and keeps each operator's
dispatch, which it does.
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from simulator.api import prepare
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.models.config import ModelConfig, load_model
from simulator.perf.cost_model import CostModel
from simulator.perf.kernel_times import SOURCES
from validation.measuring.torch_backend import onednn_linear

DECODES = ((1, 512), (4, 512), (16, 512), (1, 2048), (8, 2048))  # (batch, context tokens)
PREFILLS = (128, 512, 1024)  # prompt tokens of one sequence
WARMUP_STEPS, TIMED_STEPS = 2, 7


class TorchStep:
    """One model in bf16 on the CPU, with the operators of a vLLM CPU step."""

    def __init__(self, model: ModelConfig):
        import torch

        if model.is_moe or model.is_mla or not model.gated_mlp:
            raise InputError(f"{model.name}: the step check builds dense gated-MLP models with standard attention")
        self.torch, self.model = torch, model
        self.F = torch.nn.functional
        bf16 = torch.bfloat16
        h, d = model.hidden_size, model.head_dim
        self.q_size, self.kv_size = model.num_heads * d, model.num_kv_heads * d

        def linear(n: int, k: int):
            return onednn_linear(torch, torch.randn(n, k, dtype=bf16) * 0.02)

        self.embed = torch.randn(model.vocab_size, h, dtype=bf16) * 0.02
        self.layers = [{"ln1": torch.ones(h, dtype=bf16), "ln2": torch.ones(h, dtype=bf16),
                        "qkv": linear(self.q_size + 2 * self.kv_size, h), "o": linear(h, self.q_size),
                        "gate_up": linear(2 * model.intermediate_size, h), "down": linear(h, model.intermediate_size)}
                       for _ in range(model.num_layers)]
        self.norm = torch.ones(h, dtype=bf16)
        self.head = linear(model.vocab_size, h)
        inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
        longest = max(max(context for _, context in DECODES), max(PREFILLS))  # the positions a step reaches
        angles = torch.outer(torch.arange(longest, dtype=torch.float32), inv)
        self.cos, self.sin = angles.cos().to(bf16), angles.sin().to(bf16)

    def _rotary(self, x, positions):
        """Neox-style rotary embedding of (tokens, heads, head_dim) at the given positions."""
        cos, sin = self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)
        x1, x2 = x.chunk(2, dim=-1)
        return self.torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def _decode_attention(self, q, k_cache, v_cache):
        """One query token per sequence, its heads grouped by KV head (batch, kv_heads, group,
        head_dim): two batched matmuls and a softmax, streaming the cache once. torch's
        scaled_dot_product_attention runs this shape on the CPU about ten times slower (under
        1 GB/s of KV on the 2-vCPU EPYC; this path 10-14 GB/s), far from vLLM's paged decode kernel."""
        torch = self.torch
        scores = torch.matmul(q, k_cache.transpose(-1, -2)) * self.model.head_dim ** -0.5
        return torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), v_cache)

    def step(self, tokens, positions, caches, batch: int, q_len: int) -> None:
        """One forward step of `batch` sequences of `q_len` new tokens each, attending to the
        (k, v) caches of every layer (batch, kv_heads, context, head_dim), which hold the new
        tokens' keys at their end."""
        torch, F, m = self.torch, self.F, self.model
        eps = 1e-5
        x = F.embedding(tokens, self.embed)
        residual = torch.zeros_like(x)
        for layer, (k_cache, v_cache) in zip(self.layers, caches):
            residual = residual + x
            x = F.rms_norm(residual, (m.hidden_size,), layer["ln1"], eps)
            q, k, _v = layer["qkv"](x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
            q = self._rotary(q.view(-1, m.num_heads, m.head_dim), positions)
            self._rotary(k.view(-1, m.num_kv_heads, m.head_dim), positions)  # written to the cache in a real engine
            if q_len == 1:
                attn = self._decode_attention(q.view(batch, m.num_kv_heads, -1, m.head_dim), k_cache, v_cache)
            else:
                q = q.view(batch, q_len, m.num_heads, m.head_dim).transpose(1, 2)
                attn = F.scaled_dot_product_attention(q, k_cache, v_cache, is_causal=True, enable_gqa=True)
                attn = attn.transpose(1, 2)
            x = layer["o"](attn.reshape(batch * q_len, self.q_size))
            residual = residual + x
            x = F.rms_norm(residual, (m.hidden_size,), layer["ln2"], eps)
            gate, up = layer["gate_up"](x).chunk(2, dim=-1)
            x = layer["down"](F.silu(gate) * up)
        last = (residual + x).view(batch, q_len, -1)[:, -1]
        logits = self.head(F.rms_norm(last, (m.hidden_size,), self.norm, eps))
        logits.float().argmax(dim=-1)

    def time_ms(self, batch: int, context: int, q_len: int) -> tuple[float, float, float]:
        """Median, p10 and p90 of one step over TIMED_STEPS, in milliseconds."""
        torch, m = self.torch, self.model
        shape = (batch, m.num_kv_heads, context, m.head_dim)
        caches = [(torch.randn(shape, dtype=torch.bfloat16), torch.randn(shape, dtype=torch.bfloat16))
                  for _ in self.layers]
        tokens = torch.randint(0, m.vocab_size, (batch * q_len,))
        positions = (torch.arange(context - q_len, context).repeat(batch))
        with torch.inference_mode():
            samples = []
            for i in range(WARMUP_STEPS + TIMED_STEPS):
                t0 = time.perf_counter()
                self.step(tokens, positions, caches, batch, q_len)
                if i >= WARMUP_STEPS:
                    samples.append((time.perf_counter() - t0) * 1e3)
        samples.sort()
        return statistics.median(samples), samples[0], samples[-1]


def measure(model_name: str, out: Path, progress: Callable[[str], None] = print) -> pd.DataFrame:
    import torch

    from validation.measuring.host import cpu_model_name

    model = load_model(model_name)
    runner = TorchStep(model)
    rows = []
    shapes = [("decode", b, c, 1) for b, c in DECODES] + [("prefill", 1, s, s) for s in PREFILLS]
    for phase, batch, context, q_len in shapes:
        median, lo, hi = runner.time_ms(batch, context, q_len)
        rows.append({"model": model_name, "phase": phase, "batch": batch, "context": context,
                     "new_tokens": batch * q_len, "time_ms": round(median, 3), "min_ms": round(lo, 3),
                     "max_ms": round(hi, 3), "steps": TIMED_STEPS, "threads": torch.get_num_threads(),
                     "device": cpu_model_name(), "source": f"validation.cpu_step, torch {torch.__version__} "
                                                           f"on {platform.node()}"})
        progress(f"{phase} batch {batch} context {context}: {median:.1f} ms")
    frame = pd.DataFrame(rows)
    frame.to_csv(out, index=False)
    return frame


def simulated_ms(cost: CostModel, row) -> tuple[float, float]:
    """The simulator's time for one measured step, less the engine's per-step work, in ms; and
    the share of it that came from measured tables (the calibrated sources)."""
    if row.phase == "decode":
        shape = BatchShape(num_decodes=int(row.batch), decode_context=float(row.batch * row.context),
                           sampled=int(row.batch))
    else:
        n = int(row.new_tokens)
        shape = BatchShape(prefill_tokens=n, prefill_context=float(n), prefill_pairs=n * (n + 1) / 2, sampled=1)
    it = cost.iteration(shape)
    measured = sum(t for src, t in zip(SOURCES, it.sources_s) if src.startswith("calibrated"))
    return (it.time_s - cost.host_s) * 1e3, measured / it.time_s


def compare(hardware: str, steps: Path) -> pd.DataFrame:
    if not steps.is_file():
        raise InputError(f"{steps}: no such file; give a CSV written by `python -m validation.cpu_step measure`")
    frame = pd.read_csv(steps)
    out = []
    for model_name, rows in frame.groupby("model", sort=False):
        setup = prepare(hardware, model=str(model_name), knobs={"max_num_batched_tokens": 4096, "max_model_len": 4096})
        cost = setup.cost
        for row in rows.itertuples():
            sim, share = simulated_ms(cost, row)
            out.append({"model": model_name, "phase": row.phase, "batch": row.batch, "context": row.context,
                        "measured_ms": row.time_ms, "simulated_ms": round(sim, 2),
                        "error_pct": round(100 * (sim / row.time_ms - 1), 1), "measured_share": round(share, 2)})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.cpu_step", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="time whole steps on this CPU (needs torch)")
    m.add_argument("--model", default="llama-3.2-1b")
    m.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compare", help="the simulator's steps against a measured file")
    c.add_argument("hardware")
    c.add_argument("steps", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "measure":
            if importlib.util.find_spec("torch") is None:
                raise InputError("measure needs torch (pip install -e '.[gpu]'; a CPU build is enough)")
            measure(args.model, args.out, lambda line: print(line, file=sys.stderr))
        else:
            print(compare(args.hardware, args.steps).to_string(index=False))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
