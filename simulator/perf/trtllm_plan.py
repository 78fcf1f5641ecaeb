"""TensorRT-LLM's start-up plan of one device: its KV-cache pool and its CUDA-graph batch sizes.

The engine modelled is TensorRT-LLM 1.2 with the PyTorch backend, the default of
`trtllm-serve`, `trtllm-bench` and the LLM API (`schedulers/trtllm.py`).

KV cache (`KvCacheCreator` in `_torch/pyexecutor/_util.py`). After loading the weights the
executor runs dummy context requests that fill `max_num_tokens` tokens, records the peak
memory (torch's peak plus what was allocated outside torch) and gives the KV cache a fraction
of what is left:

    available  = (total - weights - peak activations - non-torch) x free_gpu_memory_fraction
    num_blocks = floor(available / (tokens_per_block x KV bytes per token of the device's layers))

- `total` is what the driver reports (the device spec's capacity), as for vLLM; the fraction
  applies to the memory left after weights and activations, not to the device's capacity as
  vLLM's `gpu_memory_utilization` does;
- weights, the activations of a `max_num_tokens` forward pass and the non-torch allowance are
  memory_plan.py's: the same PyTorch model code holds the same tensors. Only the forward pass
  counts: the dummy requests sample one token each, so no sampler peak like vLLM's;
- there is no reserved block: every block can hold a request's tokens (`usable_blocks`);
- the engine shrinks `max_seq_len` to what the pool holds rather than refusing to start, so a
  pool smaller than the model's context is not an error; a request longer than the pool is
  rejected with its reason (schedulers/base.py).

CUDA graphs (`CudaGraphConfig` in `llmapi/llm_args.py`, `_filter_cuda_graph_batch_sizes` in
`_torch/pyexecutor/model_engine.py`). Graphs are captured for batch sizes: the explicit
`cuda_graph_batch_sizes`, else, up to `cuda_graph_max_batch_size` (128), 1-31, 32, 64, 128
(with padding 1, 2, 4 and every 8 up to 128) and the powers of two from 256, plus the maximum
itself. Sizes above min(max_batch_size, max_num_tokens) are dropped; with padding that limit is
captured instead. Only a step in which every request decodes replays a graph: with padding at
the smallest captured size that holds it, without padding only at a captured size. Any step
with a context (prompt) chunk, or a batch beyond the graphs, runs eagerly.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from .cuda_graphs import GraphPlan
from .memory_plan import (
    NON_TORCH_BYTES,
    GiB,
    MemoryPlan,
    forward_peak_bytes,
    kv_bytes_per_block,
    parallelism,
    weights_bytes,
)

TRTLLM_ENGINE = "TensorRT-LLM 1.2 (PyTorch backend)"
# Batch sizes TensorRT-LLM captures by default, before its limit cuts them (CudaGraphConfig).
DEFAULT_GRAPH_BATCH_SIZE = 128
UNPADDED_SIZES = (*range(1, 32), 32, 64, 128)
PADDED_SIZES = (1, 2, 4, *range(8, 129, 8))


@dataclass(frozen=True)
class TrtllmMemoryPlan(MemoryPlan):
    """TensorRT-LLM's pool: `usable_bytes` is what the engine may hold, weights, activations,
    non-torch memory and the KV cache, the fraction of the free memory included."""

    free_gpu_memory_fraction: float = 0.9

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks

    def summary(self) -> dict[str, float | int | str]:
        return {**super().summary(), "free_gpu_memory_fraction": self.free_gpu_memory_fraction}


def plan_trtllm_memory(device: DeviceSpec, model: ModelConfig, dep: Deployment) -> TrtllmMemoryPlan:
    """The KV pool of one device (see the module docstring); an error names the numbers when no
    block fits."""
    capacity = device.main_memory.capacity
    weights = weights_bytes(model, dep)
    activations = forward_peak_bytes(model, dep, dep.max_num_tokens)
    free = capacity - weights - activations - NON_TORCH_BYTES
    per_block = kv_bytes_per_block(model, dep.model_copy(update={"block_size": dep.tokens_per_block}))
    available = max(free, 0.0) * dep.free_gpu_memory_fraction
    blocks = int(available // per_block)
    if blocks < 1:
        raise InputError(
            f"{model.name} does not fit on {device.name} with {parallelism(dep)}: no KV block left "
            f"({TRTLLM_ENGINE}): ({capacity / GiB:.2f} GiB - weights {weights / GiB:.2f} - activations of "
            f"max_num_tokens {dep.max_num_tokens} {activations / GiB:.2f} - non-torch {NON_TORCH_BYTES / GiB:.2f}) "
            f"x free_gpu_memory_fraction {dep.free_gpu_memory_fraction} = {available / GiB:.3f} GiB; raise --tp/--pp, "
            "lower max_num_tokens, use a smaller weight_dtype or a larger device")
    return TrtllmMemoryPlan(capacity, capacity - (free - available), weights, activations, NON_TORCH_BYTES,
                            per_block, blocks, dep.tokens_per_block, engine=TRTLLM_ENGINE,
                            free_gpu_memory_fraction=dep.free_gpu_memory_fraction)


def graph_batch_sizes(dep: Deployment) -> list[int]:
    """The batch sizes TensorRT-LLM captures a CUDA graph for, ascending (empty: no graphs)."""
    if dep.cuda_graph_batch_sizes:
        sizes = sorted(set(dep.cuda_graph_batch_sizes))
    elif dep.cuda_graph_max_batch_size == 0:
        return []
    else:
        most = dep.cuda_graph_max_batch_size
        powers = [2**i for i in range(8, math.ceil(math.log2(most)))]
        sizes = sorted(s for s in (*(PADDED_SIZES if dep.cuda_graph_padding else UNPADDED_SIZES), *powers) if s <= most)
        if sizes[-1] != most:
            sizes.append(most)
    limit = min(dep.max_batch_size, dep.max_num_tokens)
    kept = [s for s in sizes if s <= limit]
    if dep.cuda_graph_padding and len(kept) < len(sizes) and (not kept or kept[-1] != limit):
        kept.append(limit)
    return kept


class TrtllmGraphPlan(GraphPlan):
    """TensorRT-LLM's rule: decode-only steps of a captured batch size (padded to one with
    `cuda_graph_padding`) replay a graph, every other step runs eagerly."""

    def __init__(self, dep: Deployment):
        self.sizes = graph_batch_sizes(dep)
        self.limit = self.sizes[-1] if self.sizes else 0
        self.padding = dep.cuda_graph_padding
        self._captured = set(self.sizes)

    def padded(self, tokens: int, decode_only: bool = True) -> int:
        if self.padding and self.graphed(tokens, decode_only):
            return self.sizes[bisect.bisect_left(self.sizes, tokens)]
        return tokens

    def graphed(self, tokens: int, decode_only: bool = True) -> bool:
        if not decode_only:
            return False
        return tokens <= self.limit if self.padding else tokens in self._captured
