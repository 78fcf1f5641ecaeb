"""Device backends: a CPU runs vLLM's CPU backend, not its CUDA engine.

Qwen3-0.6B keeps 28 layers x 8 KV heads x 128 x (K, V) x 2 B = 114,688 B of KV per token,
so a block of 16 tokens is 1,835,008 B and vLLM's default 4 GiB CPU cache
(VLLM_CPU_KVCACHE_SPACE unset) holds 4 GiB // 1,835,008 B = 2,340 blocks (37,440 tokens):
fewer than the model's 40,960-token context, which vLLM refuses at start-up.
"""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.errors import InputError

PER_BLOCK = 16 * 28 * 8 * 128 * 2 * 2


def test_the_cpu_kv_cache_is_vllms_fixed_space_not_what_memory_leaves():
    setup = prepare("xeon-8480", "qwen3-0.6b", knobs={"max_model_len": 8192}, calibration="none")
    plan = setup.plan
    assert plan.kv_bytes_per_block == PER_BLOCK
    assert plan.num_blocks == 4 * 2**30 // PER_BLOCK == 2340
    assert plan.activation_bytes == plan.reserved_bytes == 0  # no CUDA context, no profile run
    assert "CPU backend" in plan.engine
    bigger = prepare("xeon-8480", "qwen3-0.6b", knobs={"max_model_len": 8192, "cpu_kvcache_space": 16},
                     calibration="none").plan
    assert bigger.num_blocks == 16 * 2**30 // PER_BLOCK
    # a GPU keeps sizing its cache from what the memory plan leaves
    assert prepare("h100-sxm", "qwen3-0.6b", calibration="none").plan.num_blocks > 10 * plan.num_blocks


def test_a_cpu_captures_no_cuda_graphs():
    cpu = prepare("xeon-8480", "qwen3-0.6b", knobs={"max_model_len": 8192}, calibration="none")
    gpu = prepare("h100-sxm", "qwen3-0.6b", calibration="none")
    assert cpu.cost.graphs.limit == 0 and gpu.cost.graphs.limit > 0


@pytest.mark.parametrize("knobs, message", [
    ({}, r"max_model_len 40960 tokens needs more than the 2340 KV blocks \(37440 tokens\).*max_model_len <= 37440"),
    ({"max_model_len": 8192, "preemption_mode": "swap"}, r"KV cache already lives in host memory"),
    ({"max_model_len": 8192, "cpu_kvcache_space": 2000}, r"need more than the 931.32 GiB of memory"),
])
def test_what_vllms_cpu_backend_refuses(knobs, message):
    with pytest.raises(InputError, match=message):
        prepare("xeon-8480", "qwen3-0.6b", knobs=knobs, calibration="none")


def test_tensorrt_llm_has_no_cpu_backend():
    with pytest.raises(InputError, match="TensorRT-LLM has no CPU backend"):
        prepare("xeon-8480", "qwen3-0.6b", scheduler="trtllm", knobs={"max_seq_len": 8192}, calibration="none")


def test_a_cpu_spec_states_no_cuda_graph_overhead(tmp_path):
    spec = tmp_path / "cpu.yaml"
    spec.write_text("extends: xeon-8480\nname: X\noverheads: {graph_kernel_gap: 2 us}\nsources: [test]\n")
    with pytest.raises(InputError, match="graph_kernel_gap: a CPU launches no GPU kernels and replays no CUDA graphs"):
        prepare(str(spec), "qwen3-0.6b", knobs={"max_model_len": 8192}, calibration="none")
