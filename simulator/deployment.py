"""How a model is deployed: parallelism, dtypes, scheduler and the serving engine's knobs.

Knobs keep the names of the engine they model (vLLM's `max_num_seqs`,
`max_num_batched_tokens`, `block_size`, `gpu_memory_utilization`, `enable_chunked_prefill`,
...; TensorRT-LLM's `max_batch_size`, `max_num_tokens`, `tokens_per_block`, ... for
`scheduler: trtllm`), so a user can copy a real configuration. They come from the system YAML's
`deployment:` block, then the CLI flags and `--set key=value`, later ones winning.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import InputError
from .models.operators import Precision, Sharding

StorageDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]


class Deployment(BaseModel):
    """Validated deployment; see README "Deployment knobs" for each knob's meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "llama-3.1-8b"
    scheduler: str = "vllm"
    router: Literal["round_robin", "least_outstanding", "power_of_two", "prefix_affinity"] = "round_robin"
    tp: int = Field(1, ge=1)
    pp: int = Field(1, ge=1)
    # pp > 1: pp virtual engines keep micro-batches in every stage (engine/pipeline.py);
    # false runs each batch through all the stages before the next one starts
    pipeline_overlap: bool = True
    replicas: int = Field(1, ge=1)
    weight_dtype: StorageDtype = "bf16"
    kv_cache_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4", "int2"] = "bf16"
    activation_dtype: Literal["bf16", "fp16"] = "bf16"
    # vLLM engine arguments (same names and defaults as vLLM's OpenAI server on most GPUs)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    block_size: int = Field(16, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_chunked_prefill: bool = True
    # None: the model's context; -1: the largest the KV cache holds (vLLM's auto-fit)
    max_model_len: int | None = Field(None, ge=-1)
    enforce_eager: bool = False
    # CUDA graphs are captured for batches of up to this many tokens; None: vLLM 0.19's rule,
    # min(2 x max_num_seqs, 512, max_num_batched_tokens)
    max_cudagraph_capture_size: int | None = Field(None, ge=0)
    # prefix caching (vLLM's automatic prefix caching): reuse KV blocks by prompt-block hash and
    # keep a preempted request's blocks; None: the policy's default (on for vllm, as in vLLM v1)
    enable_prefix_caching: bool | None = None
    # vLLM v1 schedules step n + 1 while step n runs: the engine's CPU time per step overlaps the
    # GPU, and a request arriving during a step first runs in the step after the next
    async_scheduling: bool = True
    # vLLM 0.19 admits a waiting request only if the free KV blocks could hold its whole prompt
    scheduler_reserve_full_isl: bool = True
    # vLLM's --num-gpu-blocks-override: this many KV blocks (num_gpu_blocks, the null block
    # included) instead of what the memory plan leaves, e.g. to replay a run whose log gave it
    num_gpu_blocks_override: int | None = Field(None, ge=2)
    # requests pass through the OpenAI-compatible API server (engine/frontend.py); false when
    # the trace's arrival times are the engine's own (e.g. vLLM's queued_ts)
    api_server: bool = True
    # preemption when KV blocks run out: recompute (vLLM v1) or swap to host memory (vLLM v0)
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    swap_space: float = Field(4.0, ge=0)  # GiB of host memory per device for swapped KV (vLLM's default 4)
    # the KV cache of vLLM's CPU backend, GiB (VLLM_CPU_KVCACHE_SPACE; unset there: 4)
    cpu_kvcache_space: float = Field(4.0, gt=0)
    # disaggregated prefill/decode (scheduler: disagg): each pool's replicas, TP and hardware
    prefill_replicas: int = Field(1, ge=1)
    decode_replicas: int = Field(1, ge=1)
    prefill_tp: int | None = Field(None, ge=1)
    decode_tp: int | None = Field(None, ge=1)
    prefill_hardware: str | None = None  # catalogue name or path; default: the run's hardware
    decode_hardware: str | None = None
    prefill_scheduler: str = "vllm"  # each pool's policy (schedulers/disagg.py: POOL_POLICIES)
    decode_scheduler: str = "vllm"
    kv_transfer_link: Literal["auto", "nvlink", "pcie", "network"] = "auto"
    kv_transfer_bandwidth: str | None = None  # overrides the link's, with a unit ("25 GB/s")
    kv_transfer_latency: str | None = None  # overrides the link's, with a unit ("10 us")
    # TensorRT-LLM's knobs (scheduler: trtllm; LLM API / trtllm-serve names and defaults, see
    # schedulers/trtllm.py): the capacity scheduler, the micro-batch limits, the KV pool
    capacity_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization", "static_batch"] = \
        "guaranteed_no_evict"
    max_batch_size: int = Field(2048, ge=1)  # requests per step
    max_num_tokens: int = Field(8192, ge=1)  # tokens per step; also the memory-profiling pass
    max_seq_len: int | None = Field(None, ge=1)  # None: the model's context, capped by the KV pool
    free_gpu_memory_fraction: float = Field(0.9, gt=0, le=1)  # of the memory left after weights and activations
    tokens_per_block: int = Field(32, ge=1)
    enable_chunked_context: bool = False
    enable_block_reuse: bool = True
    disable_overlap_scheduler: bool = False
    # CUDA graphs (cuda_graph_config's max_batch_size, batch_sizes, enable_padding): graphs for
    # the batch sizes up to cuda_graph_max_batch_size (0: none) or the explicit list; padding
    # runs a batch in the next captured size
    cuda_graph_max_batch_size: int = Field(128, ge=0)
    cuda_graph_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = None
    cuda_graph_padding: bool = False

    @field_validator("max_model_len")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("must be >= 1, or -1 for the largest the KV cache holds")
        return value

    @property
    def sharding(self) -> Sharding:
        return Sharding(tp=self.tp, pp=self.pp)

    @property
    def precision(self) -> Precision:
        return Precision(weights=self.weight_dtype, kv=self.kv_cache_dtype, activations=self.activation_dtype)

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp


KNOBS = tuple(Deployment.model_fields)
# Each engine's own knobs. One given to a policy that models the other engine is an input
# error (Scheduler.check_knobs), so an unread knob never looks as if it took effect; each maps
# to the other engine's knob that does its job, where there is one.
VLLM_ENGINE_KNOBS = {
    "max_num_seqs": "max_batch_size", "max_num_batched_tokens": "max_num_tokens", "block_size": "tokens_per_block",
    "gpu_memory_utilization": "free_gpu_memory_fraction", "enable_chunked_prefill": "enable_chunked_context",
    "max_model_len": "max_seq_len", "enforce_eager": "cuda_graph_max_batch_size=0",
    "max_cudagraph_capture_size": "cuda_graph_max_batch_size", "enable_prefix_caching": "enable_block_reuse",
    "async_scheduling": "disable_overlap_scheduler (inverted)", "scheduler_reserve_full_isl": None,
    "preemption_mode": None, "swap_space": None, "num_gpu_blocks_override": None,
}
TRTLLM_KNOBS = {
    "capacity_scheduler_policy": None, "max_batch_size": "max_num_seqs",
    "max_num_tokens": "max_num_batched_tokens", "max_seq_len": "max_model_len",
    "free_gpu_memory_fraction": "gpu_memory_utilization", "tokens_per_block": "block_size",
    "enable_chunked_context": "enable_chunked_prefill", "enable_block_reuse": "enable_prefix_caching",
    "disable_overlap_scheduler": "async_scheduling (inverted)", "cuda_graph_max_batch_size": "max_cudagraph_capture_size",
    "cuda_graph_batch_sizes": None, "cuda_graph_padding": None,
}


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML scalars (true, 256, 0.9, fp8)."""
    knobs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item}: expected key=value, e.g. --set max_num_seqs=256")
        if key not in KNOBS:
            raise InputError(f"--set {key}: unknown knob (known: {', '.join(KNOBS)})")
        try:
            knobs[key] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            knobs[key] = raw
    return knobs


def build_deployment(*layers: dict[str, Any], where: str = "deployment", yaml_file: str | None = None) -> Deployment:
    """Merge knob layers (system YAML, CLI flags, --set), later ones winning, and validate.
    With `yaml_file`, the first layer is that system YAML's `deployment:` block, and an error
    in a knob it set names the file (see `knob_where`)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if v is not None})
    try:
        return Deployment.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        at = knob_where(".".join(str(p) for p in err["loc"]), layers, where, yaml_file)
        if err["type"] == "extra_forbidden":
            raise InputError(f"{at}: unknown knob (known: {', '.join(KNOBS)})") from None
        raise InputError(f"{at}: {err['msg']} (got {err.get('input')!r})") from None


def knob_where(key: str, layers: tuple[dict[str, Any], ...], where: str = "deployment",
               yaml_file: str | None = None) -> str:
    """How an error names knob `key`: `FILE: deployment.KEY`, like any other error in a hardware
    YAML, when `set_in_yaml`; else `WHERE: KEY` (flags and --set, a plan's knobs)."""
    return f"{yaml_file}: deployment.{key}" if yaml_file is not None and set_in_yaml(key, layers) else f"{where}: {key}"


def set_in_yaml(key: str, layers: tuple[dict[str, Any], ...]) -> bool:
    """Whether the value in effect of knob `key` (or of an item of it, `key.0`) came from the
    first of `layers`, the system YAML's `deployment:` block."""
    top = key.split(".")[0]
    return max((i for i, layer in enumerate(layers) if layer.get(top) is not None), default=None) == 0
