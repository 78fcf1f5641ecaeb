"""experts_on_host: an MoE model's routed experts in host memory, computed by the host CPU
(KTransformers/Fiddler), the rest of the model on one GPU."""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.deployment import Deployment
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.models.config import load_model
from simulator.perf.host_experts import HOST_COMPUTE_EFFICIENCY, HOST_MEMORY_EFFICIENCY
from simulator.perf.memory_plan import weights_bytes

KTRANS = "hardware_specs/systems/rtx4090-xeon6454s-2s.yaml"  # RTX 4090 + 2 x Xeon Gold 6454S
KNOBS = {"experts_on_host": True, "weight_dtype": "int4", "max_model_len": 8192}
# DeepSeek-V3: 58 MoE layers of 256 routed experts, 8 per token, each expert 3 x 7168 x 2048
# weights, int4 at 0.5 B + 2.5 B per group of 128 weights
EXPERT_BYTES = 3 * 7168 * 2048 * (0.5 + 2.5 / 128)
MOE_LAYERS, EXPERTS, TOP_K = 58, 256, 8
HOST_BYTES_PER_S = 2 * 307.2e9 * HOST_MEMORY_EFFICIENCY  # two sockets of 8 x DDR5-4800
PCIE4_BYTES_PER_S, PCIE_LATENCY_S = 32e9, 5e-6  # the RTX 4090's host link


def test_the_routed_experts_leave_the_gpu_for_the_host():
    setup = prepare(KTRANS, "deepseek-v3", calibration="none", knobs=KNOBS)
    on_host = MOE_LAYERS * EXPERTS * EXPERT_BYTES  # 339.7 GB
    assert setup.plan.summary()["host_experts_bytes"] == pytest.approx(on_host, rel=1e-9)
    whole = weights_bytes(load_model("deepseek-v3"), Deployment(**KNOBS))
    assert whole - setup.plan.weights_bytes == pytest.approx(on_host, rel=1e-9)
    assert setup.plan.weights_bytes < 12 * 2**30  # KTransformers: "at least 14GB VRAM" with its KV cache
    plain = prepare("h100-sxm", "qwen3-30b-a3b", calibration="none").plan.summary()
    assert "host_experts_bytes" not in plain


def test_a_decode_step_waits_for_the_hosts_expert_reads():
    """One token reaches 8 experts per layer: the host reads them from DRAM (memory-bound) and
    the hidden state crosses PCIe twice; the shared expert's GPU time (a few microseconds) hides
    little of it."""
    cost = prepare(KTRANS, "deepseek-v3", calibration="none", knobs=KNOBS).cost
    layer = TOP_K * EXPERT_BYTES / HOST_BYTES_PER_S + 2 * (PCIE_LATENCY_S + 7168 * 2 / PCIE4_BYTES_PER_S)
    assert cost.host_experts.layer_s(1) == pytest.approx(layer, rel=1e-9)  # 0.607 ms
    step = cost.iteration(BatchShape(num_decodes=1, decode_context=800.0, sampled=1)).time_s
    gpu_floor = 10.8 * 2**30 / 1008e9  # the GPU's own weights read once: 11.5 ms
    assert MOE_LAYERS * layer * 0.95 + gpu_floor < step < MOE_LAYERS * layer + 2 * gpu_floor


def test_a_prefill_chunk_reads_every_expert_then_turns_compute_bound():
    """2,048 tokens reach all 256 experts of a layer (1 - (1 - 8/256)^2048 = 1): reading them
    takes 19.1 ms, computing 2,048 x 8 rows at 30 % of the two sockets' int8 AMX peak
    (2 x 144.2 TOPS) 16.7 ms; 8,192 tokens take four times that, 66.8 ms, past the read."""
    cost = prepare(KTRANS, "deepseek-v3", calibration="none", knobs=KNOBS).cost.host_experts

    def copy(tokens):
        return 2 * (PCIE_LATENCY_S + tokens * 7168 * 2 / PCIE4_BYTES_PER_S)

    assert cost.layer_s(2048) == pytest.approx(EXPERTS * EXPERT_BYTES / HOST_BYTES_PER_S + copy(2048), rel=1e-6)
    compute = 2 * 8192 * TOP_K * 3 * 7168 * 2048 / (2 * 144.2e12 * HOST_COMPUTE_EFFICIENCY)
    assert cost.layer_s(8192) == pytest.approx(compute + copy(8192), rel=1e-6)


@pytest.mark.parametrize("hardware, model, knobs, message", [
    ("h100-sxm", "qwen3-30b-a3b", {}, "describes no host CPU"),
    (KTRANS, "llama-3.1-8b", {}, "has no routed experts"),
    (KTRANS, "qwen3-30b-a3b", {"tp": 2}, "set them 1"),
    ("xeon-8480", "qwen3-30b-a3b", {}, "is a cpu"),
    ("rtx4090-x1", "deepseek-v3", {"weight_dtype": "bf16", "max_model_len": 4096}, "more than the"),
])
def test_refusals_name_the_knob(hardware, model, knobs, message):
    with pytest.raises(InputError, match=f"experts_on_host.*{message}"):
        prepare(hardware, model, knobs={"experts_on_host": True, **knobs})
