"""The KV-cache size as vLLM 0.19 computes it, against public start-up logs and by hand.

Every number a case asserts comes from a real vLLM log (cited beside it): the device total the
driver reports, the engine arguments, "Model loading took X GiB" (weights) and "GPU KV cache
size: N tokens" (blocks x 16). The simulator must land within 2 % of the logged block count,
from the model's shape and the engine arguments alone.
"""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from simulator.api import prepare
from simulator.deployment import build_deployment
from simulator.errors import InputError
from simulator.hardware.loader import load_system
from simulator.models.config import load_model
from simulator.perf.memory_plan import (
    NON_TORCH_BYTES,
    GiB,
    activation_peak_bytes,
    kv_bytes_per_block,
    plan_memory,
    weights_bytes,
)

# Qwen2.5-7B-Instruct and Qwen2-7B-Instruct differ from the catalogue's base Qwen2.5-7B only in
# their context (config.json max_position_embeddings 32768), which sizes the rotary table.
QWEN2_INSTRUCT = {"max_position_embeddings": 32768}


def _model(name: str, **overrides):
    return replace(load_model(name), **overrides)


def _device(name: str, capacity_gib: float | None = None, units: int | None = None):
    device = load_system(name).accelerator
    memory = list(device.memory)
    if capacity_gib is not None:
        memory[0] = memory[0].model_copy(update={"capacity": capacity_gib * GiB})
    update = {"memory": memory}
    if units is not None:
        update["compute"] = device.compute.model_copy(update={"units": units})
    return device.model_copy(update=update)


# (what, model, overrides, device, capacity GiB if not the spec's, SMs if not the spec's, knobs,
#  logged "Model loading took" GiB, logged KV tokens, source)
CASES = [
    ("Qwen3-8B, A100-SXM4-40GB, vllm serve defaults (0.19.1)", "qwen3-8b", {}, "a100-40gb-sxm", None, None,
     {"max_num_batched_tokens": 2048, "max_num_seqs": 256}, 15.27, 140_960,
     "dariustanrd/tokenkaki, blog draft 'behind the API 1: vLLM', 2026-06-25"),
    ("Qwen3-8B, A100-SXM4-40GB, offline LLM, 8192-token budget (0.19.1)", "qwen3-8b", {}, "a100-40gb-sxm", None, None,
     {"max_num_batched_tokens": 8192, "max_num_seqs": 256}, 15.27, 139_792,
     "dariustanrd/tokenkaki, experiments/1_vllm_v0.19.1_Qwen3-8B/1_latency/out.log"),
    ("Qwen2.5-72B-Instruct, 4x L40S, TP 4, max_model_len 8192 (0.19.0)", "qwen2.5-72b", {}, "l40s", None, None,
     {"tp": 4, "max_num_batched_tokens": 2048, "max_num_seqs": 256, "max_model_len": 8192}, 33.98, 67_024,
     "gnosia93/eks-agentic-ai, lesson/10-vllm-inference.md, log of 2026-04-16"),
    ("Qwen2.5-7B-Instruct fp16, V100 32 GB, eager, offline LLM (0.18.0)", "qwen2.5-7b", QWEN2_INSTRUCT, "l40s",
     31.75, 80, {"weight_dtype": "fp16", "activation_dtype": "fp16", "kv_cache_dtype": "fp16", "enforce_eager": True,
                 "max_num_batched_tokens": 8192, "max_num_seqs": 256, "max_model_len": 32768}, 14.25, 245_360,
     "wangpeiwen/gpu-util-interference, mlwd/sensitivity/data_bak.md, 2026-03-27 (V100: 80 SMs, 31.75 GiB reported)"),
    ("Llama-3.1-8B-Instruct, A100-SXM4-40GB, eager, offline LLM, 8192-token budget (0.15.1)", "llama-3.1-8b", {},
     "a100-40gb-sxm", None, None,
     {"max_num_batched_tokens": 8192, "max_num_seqs": 256, "enforce_eager": True, "max_model_len": 131072}, 14.99,
     157_936, "ilseokoh/vllm-gce, README.md, log of 2026-02-06 (GCE a2-highgpu-1g: one A100 40GB)"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_kv_blocks_match_public_vllm_logs(case):
    what, name, overrides, device_name, capacity, units, knobs, logged_weights, logged_tokens, source = case
    model = _model(name, **overrides)
    device = _device(device_name, capacity, units)
    dep = build_deployment(knobs)
    plan = plan_memory(device, model, dep, dep.max_num_batched_tokens)
    assert plan.weights_bytes / GiB == pytest.approx(logged_weights, rel=0.005), what
    assert plan.kv_tokens == pytest.approx(logged_tokens, rel=0.02), (what, source)


def test_rtx4090_log_is_the_known_outlier():
    """Llama-3.1-8B on an RTX 4090 (vLLM 0.19.0, LLMServingSim bench/examples/RTX4090, MIT):
    num_gpu_blocks 2588 with 25,250,627,584 B reported, utilisation 0.9, 2048 tokens, 256
    sequences. The same accounting leaves 0.62 GiB of non-torch memory there against
    0.24-0.30 GiB in the other logs, so this case is 7 % over (182 blocks, 0.36 GiB), not
    within 2 %: the one public 0.19 log the model does not explain (docs/memory.md)."""
    model = load_model("llama-3.1-8b")
    dep = build_deployment({"max_num_batched_tokens": 2048, "max_num_seqs": 256, "max_model_len": 32768})
    plan = plan_memory(load_system("rtx4090").accelerator, model, dep, 2048)
    assert plan.weights_bytes / GiB == pytest.approx(14.9889, abs=0.0005)  # "Model loading took 14.99 GiB"
    assert plan.num_blocks / 2588 - 1 == pytest.approx(0.07, abs=0.005)


def test_memory_terms_by_hand_llama_8b_on_h100():
    # Llama-3.1-8B bf16 on an H100 SXM (79.18 GiB reported), utilisation 0.9, 2048-token budget,
    # 256 sequences:
    capacity = 79.18 * GiB
    requested = math.ceil(capacity * 0.9)
    # weights: 8,030,261,248 parameters x 2 B + the rotary table 131,072 x 128 x 2 B
    weights = 8_030_261_248 * 2 + 131_072 * 128 * 2
    assert weights == 16_094_076_928  # vLLM logs "Model loading took 14.99 GiB"
    # profile run: the sampler on 256 rows dominates the 2048-token forward pass:
    #   rows x vocab x (2 bf16 logits + 4 fp32 copy + 4 probs + 4 noise)
    #   + the Triton top-k/top-p buffer: min(next power of two of min(256, 132 SMs), 132) = 132 rows
    #   + the forward's hidden states 2048 x 4096 x 2
    sampler = 256 * 128256 * 14 + 132 * 128256 * 4 + 2048 * 4096 * 2
    forward = 2048 * (3 * 4096 + 3 * 14336) * 2  # residual, normed and kept hidden; gate/up; act
    assert sampler > forward
    per_block = 16 * 2 * 8 * 128 * 32 * 2  # 2 MiB
    blocks = (requested - weights - sampler - NON_TORCH_BYTES) // per_block
    # (set: the H100's own `vllm serve` defaults are 8192 tokens and 1024 sequences)
    setup = prepare("h100-sxm", "llama-3.1-8b", calibration="none",
                    knobs={"max_num_batched_tokens": 2048, "max_num_seqs": 256})
    plan = setup.plan
    assert plan.usable_bytes == requested
    assert plan.weights_bytes == weights
    assert plan.activation_bytes == sampler
    assert plan.kv_bytes_per_block == per_block
    assert plan.num_blocks == blocks
    assert plan.usable_blocks == blocks - 1  # block 0 is vLLM's null block


def test_quantised_weights_keep_embeddings_head_and_norms_at_16_bits():
    model = load_model("llama-3.1-8b")
    bf16 = weights_bytes(model, build_deployment({}))
    fp8 = weights_bytes(model, build_deployment({"weight_dtype": "fp8"}))
    embedding_and_head = 2 * 128256 * 4096 * 2
    norms = (32 * 2 + 1) * 4096 * 2
    rotary = 131072 * 128 * 2
    sixteen_bit = embedding_and_head + norms + rotary
    # the linear layers halve; what stays at 16 bits does not
    assert fp8 == pytest.approx(sixteen_bit + (bf16 - sixteen_bit) / 2, rel=1e-9)
    # int4: half a byte a weight plus a 16-bit scale and a 4-bit zero per group of 128
    int4 = weights_bytes(model, build_deployment({"weight_dtype": "int4"}))
    assert int4 == pytest.approx(sixteen_bit + (bf16 - sixteen_bit) / 2 * (0.5 + 2.5 / 128), rel=1e-9)


def test_a_request_of_max_model_len_must_fit_as_vllm_checks():
    # Llama-3.1-8B on an L4: about 4 GiB of KV cache, 35k tokens, far below its 131,072-token context
    with pytest.raises(InputError) as info:
        prepare("l4", "llama-3.1-8b")
    message = str(info.value)
    assert "max_model_len 131072" in message and "set max_model_len <=" in message
    fits = int(message.split("set max_model_len <= ")[1].split()[0])
    setup = prepare("l4", "llama-3.1-8b", knobs={"max_model_len": fits})
    assert setup.plan.kv_tokens >= fits
    with pytest.raises(InputError):
        prepare("l4", "llama-3.1-8b", knobs={"max_model_len": fits + 16})


def test_the_summary_states_the_plan(tmp_path):
    from simulator import simulate

    trace = tmp_path / "t.jsonl"
    trace.write_text('{"arrival_s": 0, "input_tokens": 100, "output_tokens": 4}\n')
    summary = simulate("h100-sxm", trace, model="llama-3.1-8b", calibration="none").summary
    memory = summary["memory"]
    assert memory["engine"] == "vLLM 0.19"
    assert memory["kv_bytes"] == memory["kv_blocks"] * kv_bytes_per_block(load_model("llama-3.1-8b"),
                                                                           build_deployment({}))
    assert memory["kv_tokens"] == memory["kv_blocks"] * memory["block_size"] == memory["kv_blocks"] * 16
    assert memory["usable_bytes"] - memory["weights_bytes"] - memory["activation_bytes"] - memory["reserved_bytes"] \
        >= memory["kv_bytes"]
    assert memory["device_capacity_bytes"] == pytest.approx(79.18 * GiB)


def test_activation_peak_is_the_larger_phase():
    model = load_model("qwen3-8b")
    small = activation_peak_bytes(model, build_deployment({"max_num_seqs": 256}), 2048, 108)
    large = activation_peak_bytes(model, build_deployment({"max_num_seqs": 256}), 8192, 108)
    # at 2048 tokens the sampler sets the peak; at 8192 the forward pass's MLP does
    assert small < large
    assert large == 8192 * (3 * 4096 + 3 * 12288) * 2


def test_num_gpu_blocks_override_replaces_the_profiled_count():
    # vLLM's --num-gpu-blocks-override: the RTX 4090 run logged 2588 blocks; the plan gives 2770
    plain = prepare("rtx4090", "llama-3.1-8b", knobs={"max_model_len": 32768})
    forced = prepare("rtx4090", "llama-3.1-8b", knobs={"max_model_len": 32768, "num_gpu_blocks_override": 2588})
    assert plain.plan.num_blocks == 44320 // 16 and forced.plan.num_blocks == 2588
    assert forced.plan.usable_blocks == 2587  # the null block still comes out of it
    # more than the device holds after weights, activations and non-torch memory: vLLM would
    # run out of memory allocating it
    free = 25.250627584e9 - plain.plan.weights_bytes - plain.plan.activation_bytes - NON_TORCH_BYTES
    most = int(free // plain.plan.kv_bytes_per_block)
    prepare("rtx4090", "llama-3.1-8b", knobs={"max_model_len": 32768, "num_gpu_blocks_override": most})
    with pytest.raises(InputError, match=f"num_gpu_blocks_override {most + 1} .* set it <= {most}"):
        prepare("rtx4090", "llama-3.1-8b", knobs={"max_model_len": 32768, "num_gpu_blocks_override": most + 1})
    with pytest.raises(InputError, match="num_gpu_blocks_override: a vLLM knob"):
        prepare("rtx4090", "llama-3.1-8b", scheduler="trtllm", knobs={"num_gpu_blocks_override": 2588})
