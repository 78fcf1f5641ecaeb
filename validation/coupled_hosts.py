"""Where the host CPU bounds a step: Llama-3.2-1B on a GH200 (Grace host) against x86-hosted GPUs.

`python -m validation.coupled_hosts` costs one synchronous, eager step (no CUDA graphs, no
asynchronous scheduling: the configuration of Vellaisamy et al., ISPASS 2025, arXiv 2504.11750,
who run Hugging Face/PyTorch eager forward passes) of Llama-3.2-1B at batch sizes 1..256, for
decode (512 tokens of context each) and for prefill (prompts of 128 tokens), on `gh200-node`
(Grace host, `host_speed` 0.7) and on bare H100 SXM, H100 PCIe and A100 80GB PCIe specs (the
reference x86 host). It prints each step's time, the GPU's kernel time in it, the host's time
(kernels x kernel_launch + scheduler_per_iteration, `host_time_s`), the crossover batch (the
smallest batch whose kernel time reaches the host's: "host-bound" below it, the paper's
CPU-bound region) and GH200's speed-up at each batch. validation/README.md compares them with
the paper's 1.9-2.7x prefill speed-up at large batch and its "CPU-bound up to 4x larger
batches".
"""
from __future__ import annotations

import argparse

from simulator.api import prepare
from simulator.engine.batch import BatchShape
from simulator.models.operators import attention_decode_op, dense_ops, head_ops
from simulator.perf.cost_model import CostModel
from simulator.perf.kernel_times import HOST

MODEL = "llama-3.2-1b"
SYSTEMS = ("gh200-node", "h100-sxm", "h100-pcie", "a100-80gb-pcie")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_CONTEXT = 512
PROMPT = 128
_BUDGET = 65536


def eager_cost(hardware: str) -> CostModel:
    """The cost model of one device running MODEL eagerly with a synchronous engine (the host's
    per-step time adds to the GPU's), uncalibrated: the GPUs compared have no shared profile."""
    setup = prepare(hardware, model=MODEL, calibration="none",
                    knobs={"enforce_eager": True, "max_num_batched_tokens": _BUDGET, "max_num_seqs": 256})
    return CostModel(setup.system, setup.model, setup.deployment, budget_tokens=_BUDGET, host_overlapped=False)


def batch_shape(batch: int, phase: str) -> BatchShape:
    if phase == "decode":
        return BatchShape(num_decodes=batch, decode_context=float(batch * DECODE_CONTEXT), sampled=batch)
    tokens = batch * PROMPT
    return BatchShape(prefill_tokens=tokens, prefill_context=float(tokens),
                      prefill_pairs=batch * PROMPT * (PROMPT + 1) / 2, sampled=batch)


def kernels_per_step(cost: CostModel) -> int:
    """Kernels one step launches: the dense layers, the head and one attention call per layer."""
    ops = dense_ops(cost.model, 1, cost.shard, cost.prec) + head_ops(cost.model, 1, cost.shard, cost.prec)
    attention = attention_decode_op(cost.model, 1, 1.0, cost.shard, cost.prec)
    return sum(op.count for op in ops) + attention.count


def host_time_s(cost: CostModel) -> float:
    """The host's time for one eager step: every kernel's launch and the engine's own work."""
    return kernels_per_step(cost) * cost.overheads.kernel_launch + cost.host_s


def step(cost: CostModel, batch: int, phase: str) -> tuple[float, float]:
    """(step time, the GPU's kernel time in it), seconds."""
    it = cost.iteration(batch_shape(batch, phase))
    return it.time_s, it.time_s - it.sources_s[HOST]


def crossover(cost: CostModel, phase: str) -> int | None:
    """The smallest batch of BATCHES whose kernel time reaches the host's time (None: none does)."""
    host = host_time_s(cost)
    return next((b for b in BATCHES if step(cost, b, phase)[1] >= host), None)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    costs = {name: eager_cost(name) for name in SYSTEMS}
    for phase in ("decode", "prefill"):
        print(f"{phase} ({'context ' + str(DECODE_CONTEXT) if phase == 'decode' else 'prompt ' + str(PROMPT)} "
              f"tokens per sequence), eager, synchronous engine")
        for name, cost in costs.items():
            times = [step(cost, b, phase)[0] for b in BATCHES]
            print(f"  {name:15s} host {host_time_s(cost) * 1e3:.3f} ms/step  crossover batch "
                  f"{crossover(cost, phase)}  step ms: " + " ".join(f"{t * 1e3:.2f}" for t in times))
        ref = [step(costs["gh200-node"], b, phase)[0] for b in BATCHES]
        for name in SYSTEMS[1:]:
            ratios = [step(costs[name], b, phase)[0] / r for b, r in zip(BATCHES, ref)]
            print(f"  gh200-node speed-up over {name:15s} " + " ".join(f"{x:.2f}" for x in ratios))
    print("batches: " + " ".join(map(str, BATCHES)))


if __name__ == "__main__":
    main()
