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
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from .errors import InputError
from .hardware.spec import quantity
from .models.operators import Precision, Sharding
from .strict_model import StrictModel

StorageDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
SIMULATOR_ONLY = "simulator-only"


def knob(default: Any, meaning: str, mirrors: str = SIMULATOR_ONLY, **bounds: Any) -> Any:
    """A deployment knob: its default and bounds, its meaning in one line and the engine option
    it mirrors (SIMULATOR_ONLY where none does). `simulate knobs` lists them from here."""
    return Field(default, description=meaning, json_schema_extra={"mirrors": mirrors}, **bounds)


class Deployment(StrictModel):
    """Validated deployment. Each knob is declared with `knob`: its default and bounds, the one
    line `simulate knobs` prints, and the engine option it mirrors; README "Deployment knobs"
    says more about each."""

    model: str = knob("llama-3.1-8b", "catalogue name (workloads/models/) or its Hugging Face id, path to a "
                      "config.json or a checkpoint folder", "vLLM --model")
    scheduler: str = knob("vllm", "serving policy (simulate run --help lists them)")
    router: Literal["round_robin", "least_outstanding", "power_of_two", "prefix_affinity"] = knob(
        "round_robin", "how requests are spread over the replicas")
    tp: int = knob(1, "tensor-parallel degree", "vLLM --tensor-parallel-size", ge=1)
    pp: int = knob(1, "pipeline-parallel degree", "vLLM --pipeline-parallel-size", ge=1)
    # pp > 1: pp virtual engines keep micro-batches in every stage (engine/pipeline.py);
    # false runs each batch through all the stages before the next one starts
    pipeline_overlap: bool = knob(True, "with pp > 1, pp virtual engines (vLLM v0's) keep every stage busy with "
                                        "micro-batches")
    replicas: int = knob(1, "model replicas behind the router", ge=1)
    # MoE models: dp ranks, each an engine with its own scheduler and KV cache, stepping together
    # through MoE layers that span all their devices (engine/data_parallel.py)
    data_parallel_size: int = knob(1, "data-parallel ranks of a replica: own scheduler and KV cache each, MoE "
                                      "layers shared (a dense model's ranks are plain replicas)",
                                   "vLLM --data-parallel-size", ge=1)
    enable_expert_parallel: bool = knob(False, "MoE: experts whole on each device, spread over the dp x tp devices "
                                               "(off: every expert split over them)",
                                        "vLLM --enable-expert-parallel")
    expert_load_factor: float | None = knob(
        None, "MoE with expert parallelism: the busiest device's routed rows over the mean (unset: balanced "
              "random routing's maximum, as after EPLB rebalancing)", ge=1.0)
    all2all_backend: Literal["allgather_reducescatter", "deepep_high_throughput", "deepep_low_latency", "pplx"] = knob(
        "allgather_reducescatter", "MoE with data_parallel_size > 1: how tokens reach the experts (all-gather and "
                                   "reduce-scatter, or all-to-all dispatch and combine)", "vLLM --all2all-backend")
    weight_dtype: StorageDtype = knob("bf16", "storage type of the weights (unset: the checkpoint's, from its "
                                      "quantization_config; bf16 without one)", "vLLM --dtype / --quantization")
    kv_cache_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4", "int2"] = knob(
        "bf16", "storage type of the KV cache", "vLLM --kv-cache-dtype")
    activation_dtype: Literal["bf16", "fp16"] = knob("bf16", "compute type of the activations", "vLLM --dtype")
    # vLLM engine arguments (same names and defaults as vLLM's OpenAI server). `vllm serve`
    # picks max_num_seqs and max_num_batched_tokens by device: left unset (max_num_seqs: not
    # given, whatever its declared default), the vllm policy takes them from the device
    # (schedulers/vllm.py: VLLMScheduler.device_defaults); the other policies keep 256
    max_num_seqs: int = knob(256, "most sequences in one step (unset, vllm on a GPU: 1024 on one of >= 70 GiB that "
                                  "is not an A100, else 256; on a CPU 128 per tp x pp rank; at most the token "
                                  "budget when set; others: 256)",
                             "vLLM --max-num-seqs", ge=1)
    max_num_batched_tokens: int | None = knob(
        None, "most tokens in one step (unset: vllm on a GPU of >= 70 GiB that is not an A100 8192, on a CPU "
              "2048 per tp x pp rank, else 2048 chunked; the policy's own budget; or the longest prompt without "
              "chunked prefill)",
        "vLLM --max-num-batched-tokens", ge=1)
    block_size: int = knob(16, "tokens per KV-cache block", "vLLM --block-size", ge=1)
    gpu_memory_utilization: float = knob(0.9, "share of the device memory the engine may use",
                                         "vLLM --gpu-memory-utilization", gt=0, le=1)
    enable_chunked_prefill: bool = knob(True, "vLLM v1 chunked prefill; false: v0 prefill-first",
                                        "vLLM --enable-chunked-prefill")
    # None: the model's context; -1: the largest the KV cache holds (vLLM's auto-fit)
    max_model_len: int | None = knob(None, "longest request (unset: the model's context; -1: what the KV cache holds)",
                                     "vLLM --max-model-len", ge=-1)
    enforce_eager: bool = knob(False, "no CUDA graphs", "vLLM --enforce-eager")
    # CUDA graphs are captured for batches of up to this many tokens; None: vLLM 0.19's rule,
    # min(2 x max_num_seqs, 512, max_num_batched_tokens)
    max_cudagraph_capture_size: int | None = knob(
        None, "largest step replayed as a CUDA graph, in tokens (unset: min(2 x max_num_seqs, 512, token budget))",
        "vLLM --max-cudagraph-capture-size", ge=0)
    # prefix caching (vLLM's automatic prefix caching): reuse KV blocks by prompt-block hash and
    # keep a preempted request's blocks; None: the policy's default (on for vllm, as in vLLM v1)
    enable_prefix_caching: bool | None = knob(
        None, "reuse the KV blocks of shared prompt prefixes (unset: on for vllm and disagg, off for the others)",
        "vLLM --enable-prefix-caching")
    # vLLM v1 schedules step n + 1 while step n runs: the engine's CPU time per step overlaps the
    # GPU, and a request arriving during a step first runs in the step after the next
    async_scheduling: bool = knob(True, "schedule step n + 1 while step n runs (host time hidden)",
                                  "vLLM --async-scheduling")
    # vLLM 0.19 admits a waiting request only if the free KV blocks could hold its whole prompt
    scheduler_reserve_full_isl: bool = knob(True, "admit a waiting request only if the free KV blocks hold its "
                                                  "whole prompt", "vLLM --scheduler-reserve-full-isl")
    # vLLM's --num-gpu-blocks-override: this many KV blocks (num_gpu_blocks, the null block
    # included) instead of what the memory plan leaves, e.g. to replay a run whose log gave it
    num_gpu_blocks_override: int | None = knob(None, "this many KV blocks instead of what the memory plan leaves",
                                               "vLLM --num-gpu-blocks-override", ge=2)
    # requests pass through the OpenAI-compatible API server (engine/frontend.py); false when
    # the trace's arrival times are the engine's own (e.g. vLLM's queued_ts)
    api_server: bool = knob(True, "requests pass through the OpenAI-compatible API server (vllm serve); false: "
                                  "straight to the engine")
    # preemption when KV blocks run out: recompute (vLLM v1) or swap to host memory (vLLM v0)
    preemption_mode: Literal["recompute", "swap"] = knob(
        "recompute", "when KV blocks run out: recompute the victim later, or swap its blocks to host memory",
        "vLLM v0 --preemption-mode")
    swap_space: float = knob(4.0, "GiB of host memory per device for swapped KV blocks", "vLLM v0 --swap-space",
                             ge=0)
    # weights kept in host memory and read over the host link by every forward pass (vLLM's UVA
    # offload): room for KV on the device, paid in step time (perf/memory_plan.py)
    cpu_offload_gb: float = knob(0.0, "GiB of each device's weights kept in host memory, read over the host link "
                                      "every forward pass", "vLLM --cpu-offload-gb", ge=0)
    # weights kept on a flash tier (NVMe) and read on demand every step, as "LLM in a flash"
    # (Alizadeh et al., ACL 2024) runs a model larger than the device's memory: the FFN only,
    # attention and embeddings stay resident (perf/flash_weights.py)
    flash_offload_gb: float = knob(0.0, "GiB of each device's FFN weights kept on a flash tier (node.tiers, e.g. "
                                        "nvme) and read from it every step, as LLM in a flash places them", ge=0)
    flash_offload_tier: str | None = knob(None, "with flash_offload_gb: the hardware spec's tier that holds them "
                                                "(unset: the node's first tier, node.tiers)")
    flash_active_fraction: float = knob(
        1.0, "with flash_offload_gb: share of the FFN neurons a token activates, as a sparsity predictor picks them "
             "(1: a dense FFN, e.g. SwiGLU, whose every row is read; OPT-6.7B's ReLU: about 0.1)", gt=0, le=1)
    flash_window_tokens: int = knob(0, "with flash_offload_gb: the neurons of the last this many tokens stay in "
                                       "device memory, so a token reads only the ones they did not use (windowing)",
                                    ge=0)
    # routed experts of an MoE model kept in the host's memory and computed by the host CPU, as
    # KTransformers (its optimize rules put the experts on the CPU) and Fiddler run them; the rest
    # of the model stays on the device (perf/host_experts.py)
    experts_on_host: bool = knob(False, "MoE: the routed experts live in host memory and run on the host CPU, as "
                                        "KTransformers (its optimize rules) and Fiddler place them; attention, dense "
                                        "layers, shared experts and the router stay on the device")
    cpu_kvcache_space: float = knob(4.0, "on a CPU: the KV cache, GiB", "vLLM VLLM_CPU_KVCACHE_SPACE (environment)",
                                    gt=0)
    # KV offloading (engine/kv_offload.py): KV blocks copied to a memory tier outside the device
    # and loaded back on a prefix hit or a resume; off while the size is unset (vLLM >= 0.11.1)
    kv_offloading_size: float | None = knob(
        None, "GiB of KV blocks kept in a tier outside the device (the replica's total over its devices); unset: "
              "no offloading", "vLLM --kv-offloading-size", gt=0)
    kv_offloading_backend: Literal["native", "lmcache"] = knob(
        "native", "with kv_offloading_size: vLLM's OffloadingConnector (asynchronous loads, every full block "
                  "stored) or LMCache's connector (loads and stores in the step, prompt chunks of 256 tokens)",
        "vLLM --kv-offloading-backend")
    kv_offloading_tier: str | None = knob(
        None, "with kv_offloading_size: the hardware spec's tier that holds the blocks (unset: the nearest off the "
              "device, usually the host's memory; a disk tier such as nvme is LMCache's LMCACHE_LOCAL_DISK)")
    # wafer-scale meshes (hardware kind wafer, docs/wafer.md): the square sub-mesh each layer runs on
    wafer_mesh: int | None = knob(None, "wafer: side in cores of the square sub-mesh each layer runs on (unset: the "
                                        "fastest that fits for a one-sequence decode step)", ge=2)
    wafer_prefill_mesh: int | None = knob(None, "wafer, disagg: the prefill pool's sub-mesh side (unset: the fastest "
                                                "that fits for a prefill chunk of the token budget)", ge=2)
    # disaggregated prefill/decode (scheduler: disagg): each pool's replicas, TP and hardware
    prefill_replicas: int = knob(1, "disagg: replicas in the prefill pool", ge=1)
    decode_replicas: int = knob(1, "disagg: replicas in the decode pool", ge=1)
    prefill_tp: int | None = knob(None, "disagg: the prefill pool's tensor parallelism (unset: tp)", ge=1)
    decode_tp: int | None = knob(None, "disagg: the decode pool's tensor parallelism (unset: tp)", ge=1)
    prefill_hardware: str | None = knob(None, "disagg: the prefill pool's hardware (unset: the run's)")
    decode_hardware: str | None = knob(None, "disagg: the decode pool's hardware (unset: the run's)")
    # each pool's policy (schedulers/disagg.py: POOL_POLICIES)
    prefill_scheduler: str = knob("vllm", "disagg: the prefill pool's policy (vllm, sarathi or splitfuse)")
    decode_scheduler: str = knob("vllm", "disagg: the decode pool's policy (vllm, sarathi or splitfuse)")
    kv_transfer_link: Literal["auto", "nvlink", "pcie", "network"] = knob(
        "auto", "disagg: the link the KV cache crosses (auto: the first of nvlink, network, pcie that applies)")
    kv_transfer_bandwidth: str | None = knob(None, "disagg: the KV link's bandwidth, with a unit (unset: the link's)")
    kv_transfer_latency: str | None = knob(None, "disagg: the KV link's latency, with a unit (unset: the link's)")
    # TensorRT-LLM's knobs (scheduler: trtllm; LLM API / trtllm-serve names and defaults, see
    # schedulers/trtllm.py): the capacity scheduler, the micro-batch limits, the KV pool
    capacity_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization", "static_batch"] = knob(
        "guaranteed_no_evict", "trtllm: which requests may run (and whether one is paused when blocks run out)",
        "TensorRT-LLM scheduler_config.capacity_scheduler_policy")
    max_batch_size: int = knob(2048, "trtllm: most requests in one step", "TensorRT-LLM max_batch_size", ge=1)
    max_num_tokens: int = knob(8192, "trtllm: most tokens in one step; also the memory-profiling pass",
                               "TensorRT-LLM max_num_tokens", ge=1)
    max_seq_len: int | None = knob(None, "trtllm: longest request (unset: the model's context, capped by the KV pool)",
                                   "TensorRT-LLM max_seq_len", ge=1)
    free_gpu_memory_fraction: float = knob(0.9, "trtllm: KV pool's share of the memory left after weights and "
                                                "activations", "TensorRT-LLM kv_cache_config.free_gpu_memory_fraction",
                                           gt=0, le=1)
    tokens_per_block: int = knob(32, "trtllm: tokens per KV-cache block", "TensorRT-LLM tokens_per_block", ge=1)
    enable_chunked_context: bool = knob(False, "trtllm: chunk prompts (off: a prompt runs whole)",
                                        "TensorRT-LLM enable_chunked_prefill (enable_chunked_context)")
    enable_block_reuse: bool = knob(True, "trtllm: freed KV blocks stay cached for reuse",
                                    "TensorRT-LLM kv_cache_config.enable_block_reuse")
    disable_overlap_scheduler: bool = knob(False, "trtllm: schedule a step only after the last one's results",
                                           "TensorRT-LLM disable_overlap_scheduler")
    # CUDA graphs (cuda_graph_config's max_batch_size, batch_sizes, enable_padding): graphs for
    # the batch sizes up to cuda_graph_max_batch_size (0: none) or the explicit list; padding
    # runs a batch in the next captured size
    cuda_graph_max_batch_size: int = knob(128, "trtllm: CUDA graphs for batches up to this size (0: none)",
                                          "TensorRT-LLM cuda_graph_config.max_batch_size", ge=0)
    cuda_graph_batch_sizes: list[Annotated[int, Field(ge=1)]] | None = knob(
        None, "trtllm: the batch sizes given CUDA graphs (unset: up to cuda_graph_max_batch_size)",
        "TensorRT-LLM cuda_graph_config.batch_sizes")
    cuda_graph_padding: bool = knob(False, "trtllm: a batch runs in the next captured CUDA graph size",
                                    "TensorRT-LLM cuda_graph_config.enable_padding")
    # TensorRT-LLM's attention data parallelism for MoE models: its tp GPUs become tp ranks, as
    # vLLM's data_parallel_size ranks at tp 1 (engine/data_parallel.py)
    enable_attention_dp: bool = knob(False, "trtllm: MoE: each of the tp GPUs an attention rank with its own "
                                            "requests and KV cache, stepping together", "TensorRT-LLM enable_attention_dp")
    moe_expert_parallel_size: int | None = knob(
        None, "trtllm: MoE: GPUs the experts spread over whole (unset or 1: every expert split over all the GPUs; "
              "all of them)", "TensorRT-LLM moe_expert_parallel_size (trtllm-bench --ep)", ge=1)

    @field_validator("max_model_len")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("must be >= 1, or -1 for the largest the KV cache holds")
        return value

    @field_validator("kv_transfer_bandwidth", "kv_transfer_latency", mode="before")
    @classmethod
    def _a_quantity(cls, value: Any, info: ValidationInfo) -> Any:
        """A unit string checked here, where the knob is named, and parsed where it is used."""
        if value is not None:
            bandwidth = info.field_name == "kv_transfer_bandwidth"
            quantity(value, "bandwidth" if bandwidth else "time", positive=bandwidth)
        return value

    @property
    def sharding(self) -> Sharding:
        return Sharding(tp=self.tp, pp=self.pp, dp=self.data_parallel_size, ep=self.enable_expert_parallel,
                        all2all=self.all2all_backend, experts_on_host=self.experts_on_host,
                        ep_load_factor=self.expert_load_factor)

    @property
    def precision(self) -> Precision:
        return Precision(weights=self.weight_dtype, kv=self.kv_cache_dtype, activations=self.activation_dtype)

    @property
    def devices_per_replica(self) -> int:
        return self.tp * self.pp * self.data_parallel_size


KNOBS = tuple(Deployment.model_fields)


def knob_list() -> list[dict[str, Any]]:
    """Every knob (`KNOBS`, in declaration order) with its default, meaning and the engine
    option it mirrors, as `knob` declared them: what `simulate knobs` prints."""
    rows = []
    for name, field in Deployment.model_fields.items():
        extra = field.json_schema_extra
        rows.append({"knob": name, "default": field.default, "meaning": field.description,
                     "mirrors": extra.get("mirrors", SIMULATOR_ONLY) if isinstance(extra, dict) else SIMULATOR_ONLY})
    return rows


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
    "data_parallel_size": None, "enable_expert_parallel": None, "all2all_backend": None, "cpu_offload_gb": None,
    "experts_on_host": None, "flash_offload_gb": None, "flash_offload_tier": None, "flash_active_fraction": None,
    "flash_window_tokens": None,
    "kv_offloading_size": None, "kv_offloading_backend": None, "kv_offloading_tier": None,
}
TRTLLM_KNOBS = {
    "capacity_scheduler_policy": None, "max_batch_size": "max_num_seqs",
    "max_num_tokens": "max_num_batched_tokens", "max_seq_len": "max_model_len",
    "free_gpu_memory_fraction": "gpu_memory_utilization", "tokens_per_block": "block_size",
    "enable_chunked_context": "enable_chunked_prefill", "enable_block_reuse": "enable_prefix_caching",
    "disable_overlap_scheduler": "async_scheduling (inverted)", "cuda_graph_max_batch_size": "max_cudagraph_capture_size",
    "cuda_graph_batch_sizes": None, "cuda_graph_padding": None,
    "enable_attention_dp": "data_parallel_size", "moe_expert_parallel_size": "enable_expert_parallel",
}


# The knobs only a disaggregated deployment (--scheduler disagg) reads: given to any other
# policy they would silently do nothing, so `check_disagg_knobs` refuses them.
DISAGG_KNOBS = ("prefill_replicas", "decode_replicas", "prefill_tp", "decode_tp", "prefill_hardware",
                "decode_hardware", "prefill_scheduler", "decode_scheduler", "kv_transfer_link",
                "kv_transfer_bandwidth", "kv_transfer_latency")


def check_disagg_knobs(dep: Deployment) -> None:
    """Refuse a disaggregation knob in a deployment whose policy is not disaggregated."""
    for key in DISAGG_KNOBS:
        if key in dep.model_fields_set:
            raise InputError(f"deployment: {key}: a disaggregated-serving knob, which --scheduler {dep.scheduler} "
                             f"does not read; add --scheduler disagg or remove it")


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are YAML scalars (true, 256, 0.9, fp8)."""
    knobs: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set {item}: expected key=value, e.g. --set max_num_seqs=256")
        if key not in KNOBS:
            raise InputError(f"--set {key}: unknown knob (known: {', '.join(KNOBS)}; `simulate knobs` says what "
                             "each does)")
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
            raise InputError(f"{at}: unknown knob (known: {', '.join(KNOBS)}; `simulate knobs` says what each "
                             "does)") from None
        # a validator's own ValueError reads as its message alone, without pydantic's prefix
        raise InputError(f"{at}: {err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})") from None


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
