"""Per-device memory plan: weights + activations + reserved runtime memory + KV-cache blocks.

Follows vLLM's accounting: of the device's main memory, `gpu_memory_utilization` is usable;
weights and the peak activations of a forward pass of `max_num_batched_tokens` tokens are
subtracted, plus memory the runtime reserves (CUDA context, NCCL buffers, CUDA graphs); what
remains is cut into KV-cache blocks of `block_size` tokens. A deployment without room for
one block, or without room for the weights, is rejected before simulation with the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.operators import layers_per_stage

# CUDA context (~500 MiB), NCCL and cuBLAS workspaces and captured CUDA graphs: vLLM's
# memory profiler typically reports 0.5-1.5 GiB of such non-torch memory per GPU.
RESERVED_RUNTIME_BYTES = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    capacity_bytes: float
    usable_bytes: float
    weights_bytes: float
    activation_bytes: float
    reserved_bytes: float
    kv_bytes_per_block: float
    num_blocks: int
    block_size: int

    @property
    def kv_bytes(self) -> float:
        return self.num_blocks * self.kv_bytes_per_block

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size


def weights_bytes_per_device(model: ModelConfig, dep: Deployment) -> float:
    """Each device holds 1/tp of its stage's layers; stage 0 and the last also hold embeddings."""
    wb = DTYPE_BYTES[dep.weight_dtype]
    layers = layers_per_stage(model, dep.sharding)
    embed = model.embedding_params() if dep.pp == 1 else model.embedding_params() / 2
    return (layers * model.layer_params() + embed) * wb / dep.tp


def activation_peak_bytes(model: ModelConfig, dep: Deployment, tokens: int) -> float:
    """Live activations at the MLP of a `tokens`-token forward pass, plus fp32 logits.

    At the MLP peak the residual stream and its normalised copy (2 x hidden), the gate/up
    output (2 x intermediate / tp) and the activation output (intermediate / tp) coexist.
    """
    ab = DTYPE_BYTES[dep.activation_dtype]
    inter = model.intermediate_size * model.experts_per_token // dep.tp
    per_token = 2 * model.hidden_size + 3 * inter
    logits = min(tokens, dep.max_num_seqs) * model.vocab_size / dep.tp * 4
    return tokens * per_token * ab + logits


def kv_bytes_per_block(model: ModelConfig, dep: Deployment) -> float:
    kv_heads = max(1, model.num_kv_heads // dep.tp)  # replicated when tp > kv heads
    layers = layers_per_stage(model, dep.sharding)
    return dep.block_size * 2 * kv_heads * model.head_dim * layers * DTYPE_BYTES[dep.kv_cache_dtype]


def _gb(x: float) -> str:
    return f"{x / 1e9:.1f} GB"


def plan_memory(device: DeviceSpec, model: ModelConfig, dep: Deployment, batched_tokens: int) -> MemoryPlan:
    capacity = device.main_memory.capacity
    usable = capacity * dep.gpu_memory_utilization
    weights = weights_bytes_per_device(model, dep)
    activations = activation_peak_bytes(model, dep, batched_tokens)
    per_block = kv_bytes_per_block(model, dep)
    free = usable - weights - activations - RESERVED_RUNTIME_BYTES
    blocks = math.floor(free / per_block) if free > 0 else 0
    if blocks < 1:
        raise InputError(
            f"{model.name} does not fit on {device.name} with tp={dep.tp} pp={dep.pp}: weights "
            f"{_gb(weights)} + activations {_gb(activations)} + reserved {_gb(RESERVED_RUNTIME_BYTES)} "
            f"+ one KV block needs more than {_gb(usable)} usable ({_gb(capacity)} x gpu_memory_utilization "
            f"{dep.gpu_memory_utilization}); raise --tp/--pp, use a smaller weight_dtype, or a larger device"
        )
    return MemoryPlan(capacity, usable, weights, activations, RESERVED_RUNTIME_BYTES, per_block, blocks, dep.block_size)
