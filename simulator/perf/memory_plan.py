"""Per-device memory plan: how many KV-cache blocks the engine gets, as vLLM 0.19 computes it.

vLLM 0.19 (V1 engine; `Worker.determine_available_memory`, `utils/mem_utils.memory_profiling`)
sizes its KV cache once, at start-up, on every device of a replica:

    requested = ceil(total x gpu_memory_utilization)
    kv_bytes  = requested - weights - torch peak increase of the profile run - non-torch increase
    blocks    = floor(kv_bytes / (block_size x KV bytes per token of the device's layers))

- `total` is what the driver reports (cudaMemGetInfo), which the device spec states, not the
  marketing capacity. Memory taken before vLLM's start-up snapshot (the CUDA context, NCCL)
  is outside `requested`: it lives in the (1 - utilisation) headroom.
- `weights` is what loading the model allocates: every parameter at its stored dtype
  (quantised linear layers at the weight dtype with their scales; embeddings, LM head and
  norms stay at 16 bits, as real quantised checkpoints keep them) plus the rotary
  embedding's cos/sin cache, one [context length, head_dim] table in the model dtype shared
  by all layers (the context rope_scaling extends, as vLLM sizes a scaled rotary cache) (`weights_bytes`).
- The profile run is one forward pass of `max_num_batched_tokens` tokens without attention,
  then the sampler on min(max_num_seqs, max_num_batched_tokens) rows; its peak is the larger
  of the two phases (`activation_peak_bytes`).
- The non-torch increase (lazily loaded kernels, cuBLAS handles, what the CUDA-graph profiling
  pass leaves behind; NCCL's buffers when tensor-parallel collectives first run) is a constant
  measured from public 0.18/0.19 start-up logs (`NON_TORCH_BYTES`).
- CUDA-graph memory is captured after the KV cache is allocated and, in 0.19, not deducted
  (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS became the default only in 0.21): it too comes out
  of the headroom, so it is not in the plan.
Block 0 is vLLM's null block: `num_blocks` counts it, as vLLM logs `num_gpu_blocks`, and a
scheduler can use num_blocks - 1 (`usable_blocks`). A deployment without room for the weights
or for one request of `max_model_len` tokens is rejected before simulation, with vLLM's numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.layers import layer_small_params, linear_params, mlp_linears, moe_linears, stage_layer_kinds

ENGINE = "vLLM 0.19"
GiB = 2**30
# Non-torch memory growth during the profile run of a tensor-parallel-1 engine: the residual of
# requested - weights - KV - (the torch peak of this module's formula) in four public 0.18/0.19
# start-up logs: Qwen3-8B on an A100-SXM4-40GB, serve (0.24 GiB) and offline with an 8192-token
# budget (0.30), Qwen2.5-7B on a V100 32 GB, eager (0.24), and Qwen2.5-72B at TP 4 on L40S (0.27).
# One more log (Llama-3.1-8B on an RTX 4090) leaves 0.62 GiB, unexplained; see docs/memory.md.
NON_TORCH_BYTES = int(0.26 * GiB)
# Model weights in a 16-bit checkpoint: the dtypes vLLM keeps its embeddings, LM head and norms in.
HIGH_PRECISION = "bf16"
# vLLM pads the vocabulary of its embedding and LM head to a multiple of 64 before splitting it.
VOCAB_PADDING = 64
# int4 (GPTQ/AWQ-style) weights carry a 16-bit scale and a 4-bit zero point per group of 128.
INT4_GROUP_SIZE = 128
INT4_GROUP_BYTES = 2.0 + 0.5


@dataclass(frozen=True)
class MemoryPlan:
    capacity_bytes: float  # what the device reports
    usable_bytes: float  # ceil(capacity x gpu_memory_utilization): vLLM's requested memory
    weights_bytes: float
    activation_bytes: float  # peak activations of the profile run (forward pass or sampler)
    reserved_bytes: float  # non-torch memory the profile run adds
    kv_bytes_per_block: float
    num_blocks: int  # as vLLM logs num_gpu_blocks (the null block included)
    block_size: int
    engine: str = ENGINE
    offloaded_weights_bytes: float = 0.0  # weights in host memory (cpu_offload_gb), not in weights_bytes
    host_experts_bytes: float = 0.0  # routed experts in host memory (experts_on_host), not in weights_bytes
    flash_weights_bytes: float = 0.0  # FFN weights on a flash tier (flash_offload_gb), not in weights_bytes
    flash_window_bytes: float = 0.0  # of them, the window's neurons cached on the device, in weights_bytes

    @property
    def kv_bytes(self) -> float:
        return self.num_blocks * self.kv_bytes_per_block

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def usable_blocks(self) -> int:
        """Blocks requests can hold: all but vLLM's null block."""
        return max(self.num_blocks - 1, 0)

    def summary(self) -> dict[str, float | int | str]:
        """The summary.json `memory` block."""
        out: dict[str, float | int | str] = {"engine": self.engine, "device_capacity_bytes": self.capacity_bytes,
               "usable_bytes": self.usable_bytes, "weights_bytes": self.weights_bytes,
               "activation_bytes": self.activation_bytes, "reserved_bytes": self.reserved_bytes,
               "kv_bytes": self.kv_bytes, "kv_blocks": self.num_blocks, "kv_tokens": self.kv_tokens,
               "block_size": self.block_size}
        if self.offloaded_weights_bytes:
            out["offloaded_weights_bytes"] = self.offloaded_weights_bytes
        if self.host_experts_bytes:
            out["host_experts_bytes"] = self.host_experts_bytes
        if self.flash_weights_bytes:
            out["flash_weights_bytes"] = self.flash_weights_bytes
            out["flash_window_bytes"] = self.flash_window_bytes
        return out


def padded_vocab(model: ModelConfig, tp: int) -> int:
    """Vocabulary rows one device holds of the embedding (and LM head)."""
    return math.ceil(model.vocab_size / VOCAB_PADDING) * VOCAB_PADDING // tp


def linear_bytes_per_param(dtype: str) -> float:
    """Stored bytes per weight of a quantised linear layer, scales included."""
    if dtype == "int4":
        return DTYPE_BYTES[dtype] + INT4_GROUP_BYTES / INT4_GROUP_SIZE
    return DTYPE_BYTES[dtype]


def weights_bytes(model: ModelConfig, dep: Deployment) -> float:
    """What loading the model allocates on the busiest device of a replica: its stage's layers
    (1/tp of each linear layer), the embedding on the first stage and the LM head and final
    norm on the last (both with pp = 1; the larger side with pp > 1), and the rotary table."""
    tp, hp = dep.tp, DTYPE_BYTES[HIGH_PRECISION]
    dense, moe = stage_layer_kinds(model, dep.pp)
    layers = (linear_params(model, tp, dense, moe, dp=dep.data_parallel_size, ep=dep.enable_expert_parallel)
              * linear_bytes_per_param(dep.weight_dtype)
              + (dense + moe) * layer_small_params(model, tp) * hp)
    vocab = padded_vocab(model, tp) * model.hidden_size * hp
    embedding, head = vocab, (0.0 if model.tie_word_embeddings else vocab) + model.hidden_size * hp
    ends = embedding + head if dep.pp == 1 else max(embedding, head)
    rotary = model.max_context * model.rotary_dim * DTYPE_BYTES[dep.activation_dtype]
    return layers + ends + rotary


def forward_peak_bytes(model: ModelConfig, dep: Deployment, tokens: int) -> float:
    """Live activations at the MLP of a `tokens`-token forward pass on one device: the
    residual stream, its normalised copy and the hidden state the runner keeps (3 x hidden),
    the MLP's input projection (gate and up, or fc1) and its activation output."""
    ab = DTYPE_BYTES[dep.activation_dtype]
    routed = model.expert_intermediate_size * model.experts_per_token + model.shared_expert_intermediate_size
    inter = max(model.intermediate_size if model.dense_layers else 0, routed if model.is_moe else 0) / dep.tp
    projected = (2 if model.gated_mlp else 1) * inter
    return tokens * (3 * model.hidden_size + projected + inter) * ab


def sampler_peak_bytes(model: ModelConfig, dep: Deployment, tokens: int, units: int) -> float:
    """Peak of vLLM 0.19's dummy sampler run on `rows` = min(max_num_seqs, tokens) sequences
    (`GPUModelRunner._dummy_sampler_run`, temperature 0.5, top-k V - 1, top-p 0.9): the
    model-dtype logits of the full vocabulary (all-gathered across TP), their fp32 copy, the
    softmax probabilities and the exponential noise (fp32 each), and from 8 rows up the
    Triton top-k/top-p kernel's persistent fp32 buffer of min(next power of two of
    min(rows, SMs), SMs) rows; fewer rows sort instead (fp32 values + int64 indices, two masks
    and the scattered result). The forward pass's hidden states [tokens, hidden] stay alive."""
    rows, vocab = min(dep.max_num_seqs, tokens), model.vocab_size
    ab = DTYPE_BYTES[dep.activation_dtype]
    hidden = tokens * model.hidden_size * ab
    if rows >= 8:
        programs = min(rows, units)
        buffer_rows = min(1 << (programs - 1).bit_length(), units)
        return rows * vocab * (ab + 3 * 4) + buffer_rows * vocab * 4 + hidden
    return rows * vocab * (ab + 4 + 4 + 8 + 1 + 4 + 1 + 4 + 4 + 4) + hidden


def activation_peak_bytes(model: ModelConfig, dep: Deployment, tokens: int, units: int) -> float:
    """Torch peak increase of the profile run: the larger of its forward and sampler phases."""
    return max(forward_peak_bytes(model, dep, tokens), sampler_peak_bytes(model, dep, tokens, units))


def kv_bytes_per_block(model: ModelConfig, dep: Deployment) -> float:
    """One KV block on one device: its stage's layers, its share of the KV heads."""
    return dep.block_size * model.kv_bytes_per_token(dep.kv_cache_dtype, dep.tp, sum(stage_layer_kinds(model, dep.pp)))


def _gib(x: float) -> str:
    return f"{x / GiB:.2f} GiB"


def expert_params(model: ModelConfig) -> float:
    """Parameters of one routed expert, whole: its up (gate and up) and down projections."""
    _, up, down, *_ = moe_linears(model, 1)
    return up.n * up.k + down.n * down.k


def host_experts_bytes(model: ModelConfig, dep: Deployment) -> float:
    """The routed experts of a device's stage, kept in host memory with `experts_on_host`
    (KTransformers/Fiddler): every expert of every MoE layer, whole, at the weight dtype."""
    if not dep.experts_on_host:
        return 0.0
    moe = stage_layer_kinds(model, dep.pp)[1]
    return moe * model.num_experts * expert_params(model) * linear_bytes_per_param(dep.weight_dtype)


def parallelism(dep: Deployment) -> str:
    """How a plan's messages name the split of one device's share: tp and pp, and the
    data-parallel ranks whose devices share the experts where there are several."""
    ranks = f" x data_parallel_size={dep.data_parallel_size}" if dep.data_parallel_size > 1 else ""
    experts = " (experts whole per device)" if dep.enable_expert_parallel else ""
    return f"tp={dep.tp} pp={dep.pp}{ranks}{experts}"


def offloaded_weights_bytes(model: ModelConfig, dep: Deployment) -> float:
    """Weights one device keeps in host memory (vLLM's `--cpu-offload-gb`: parameters moved
    to pinned host memory until that many GiB are, at most all of those on the device), which
    every forward pass reads over the host link."""
    on_device = weights_bytes(model, dep) - host_experts_bytes(model, dep)
    return min(dep.cpu_offload_gb * GiB, on_device) if dep.cpu_offload_gb else 0.0


def ffn_layer_bytes(model: ModelConfig, dep: Deployment) -> float:
    """One dense layer's FFN (up, gate where gated, and down projections) on one device."""
    return sum(lin.n * lin.k for lin in mlp_linears(model, dep.tp)) * linear_bytes_per_param(dep.weight_dtype)


def flash_weights_bytes(model: ModelConfig, dep: Deployment) -> float:
    """FFN weights one device keeps on a flash tier (`flash_offload_gb`): that many GiB, at
    most the FFNs of its stage's layers. LLM in a flash keeps only the FFN there (attention
    and embeddings, about a third of the model, stay in memory): its rows are what a
    sparsity predictor can skip."""
    if not dep.flash_offload_gb:
        return 0.0
    return min(dep.flash_offload_gb * GiB, stage_layer_kinds(model, dep.pp)[0] * ffn_layer_bytes(model, dep))


def flash_window_bytes(model: ModelConfig, dep: Deployment) -> float:
    """The window's neurons (`flash_window_tokens` = k) the device keeps of its flash weights:
    those any of the last k tokens activated, 1 - (1 - a)^k of them when each token activates
    a share a (`flash_active_fraction`) independently of the others."""
    if not dep.flash_window_tokens:
        return 0.0
    return flash_weights_bytes(model, dep) * (1.0 - (1.0 - dep.flash_active_fraction) ** dep.flash_window_tokens)


def plan_memory(device: DeviceSpec, model: ModelConfig, dep: Deployment, batched_tokens: int) -> MemoryPlan:
    """The KV-cache plan of one device (see the module docstring). One request of
    `max_model_len` tokens (default: the model's context; -1: whatever fits) must fit, as
    vLLM checks."""
    capacity = device.main_memory.capacity
    requested = math.ceil(capacity * dep.gpu_memory_utilization)
    offloaded, on_host = offloaded_weights_bytes(model, dep), host_experts_bytes(model, dep)
    on_flash, window = flash_weights_bytes(model, dep), flash_window_bytes(model, dep)
    weights = weights_bytes(model, dep) - offloaded - on_host - on_flash + window
    activations = activation_peak_bytes(model, dep, batched_tokens, device.compute.units)
    per_block = kv_bytes_per_block(model, dep)
    available = requested - weights - activations - NON_TORCH_BYTES
    where = f"{model.name} on {device.name} with {parallelism(dep)}"
    if available <= 0:
        raise InputError(
            f"{model.name} does not fit on {device.name} with {parallelism(dep)}: no memory left for the KV "
            f"cache ({ENGINE}): {_gib(requested)} requested "
            f"({_gib(capacity)} x gpu_memory_utilization {dep.gpu_memory_utilization}) - weights {_gib(weights)} "
            f"- activations {_gib(activations)} - non-torch {_gib(NON_TORCH_BYTES)} = {_gib(available)}; "
            "raise --tp/--pp or gpu_memory_utilization, use a smaller weight_dtype, or a larger device")
    blocks = int(available // per_block)
    longest = dep.max_model_len or model.max_context
    needed = math.ceil(longest / dep.block_size) * per_block
    if longest != -1 and needed > available:
        fits = int(available // per_block) * dep.block_size
        raise InputError(
            f"{where}: one request of max_model_len {longest} tokens needs {_gib(needed)} of KV cache, more "
            f"than the {_gib(available)} available ({ENGINE} refuses to start); set max_model_len <= {fits} "
            "or raise gpu_memory_utilization")
    if dep.num_gpu_blocks_override is not None:  # vLLM's: that many blocks, whatever the profile run left
        blocks = dep.num_gpu_blocks_override
        free = capacity - weights - activations - NON_TORCH_BYTES
        if blocks * per_block > free:
            raise InputError(
                f"{where}: num_gpu_blocks_override {blocks} needs {_gib(blocks * per_block)} of KV cache, more than "
                f"the {_gib(free)} the device has left ({ENGINE} would run out of memory); set it <= "
                f"{int(free // per_block)}")
    return MemoryPlan(capacity, requested, weights, activations, NON_TORCH_BYTES, per_block, blocks, dep.block_size,
                      offloaded_weights_bytes=offloaded, host_experts_bytes=on_host,
                      flash_weights_bytes=on_flash, flash_window_bytes=window)
