"""A pool: replicas of one role on one kind of hardware, with what they need to run.

The whole deployment when colocated, or the prefill or decode pool of a disaggregated one.
`build_pool` validates the pool's parallelism against its hardware and builds its memory
plan and cost model with its policy and its device kind's backend (backends/); the engine
then makes one scheduler per virtual engine of each replica (its policy in its role,
schedulers/disagg.py `for_role`), with its host swap space (`swap_space`), and the recorder
one hardware row each (`replica_hardware`).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backends import backend_for, refuse_foreign_knobs
from ..deployment import Deployment
from ..engine.kv_offload import LMCACHE_CHUNK_TOKENS, KVOffload
from ..engine.swap_space import SwapSpace
from ..errors import InputError
from ..hardware.loader import System, Tier
from ..metrics.recorder import ReplicaHardware
from ..models.config import ModelConfig
from ..perf.cost_model import CostModel
from ..perf.flash_weights import flash_tier
from ..perf.memory_plan import GiB, MemoryPlan, flash_weights_bytes, host_experts_bytes
from ..perf.profile_use import AppliedProfile, resolve_calibration
from ..schedulers.base import get_scheduler


@dataclass
class Pool:
    """Replicas of one role on one kind of hardware: the whole deployment when colocated,
    or the prefill or decode pool of a disaggregated one."""

    role: str  # "mixed", "prefill" or "decode"
    system: System
    deployment: Deployment  # this pool's tp, pp and replicas
    plan: MemoryPlan
    cost: CostModel
    calibration: AppliedProfile | None = None

    @property
    def devices(self) -> int:
        return self.deployment.devices_per_replica * self.deployment.replicas

    @property
    def ranks(self) -> int:
        """Data-parallel ranks per replica, each an engine on its own tp x pp devices."""
        return self.deployment.data_parallel_size

    @property
    def engines(self) -> int:
        """Virtual engines per rank: pp with `pipeline_overlap` (engine/pipeline.py), else 1."""
        dep = self.deployment
        return dep.pp if dep.pp > 1 and dep.pipeline_overlap else 1


def _check_experts_on_host(where: str, system: System, dep: Deployment, model: ModelConfig) -> None:
    """experts_on_host (perf/host_experts.py): an MoE model on one GPU whose system describes
    its host CPU, with room in the host's memory for the routed experts."""
    if not model.is_moe:
        raise InputError(f"{where}experts_on_host: {model.name} has no routed experts; set it false")
    if system.accelerator.kind != "gpu":
        raise InputError(f"{where}experts_on_host: the routed experts move from a GPU to its host CPU, and "
                         f"{system.accelerator.name} is a {system.accelerator.kind}; set it false")
    if dep.devices_per_replica > 1:
        raise InputError(f"{where}experts_on_host: modelled as KTransformers and Fiddler run it, one GPU with its "
                         f"host; tp={dep.tp} pp={dep.pp} data_parallel_size={dep.data_parallel_size} spans "
                         f"{dep.devices_per_replica}: set them 1")
    if system.host is None or system.host_link is None:
        raise InputError(f"{system.source_file}: {where}experts_on_host: {system.name} describes no host CPU (and "
                         "link to it) to run the experts on; use a system spec with node.host (e.g. rtx4090-x1) or set it false")
    needed, memory = host_experts_bytes(model, dep), system.host.main_memory
    capacity = memory.capacity * system.hosts_per_node / system.devices_per_node
    if needed > capacity:
        raise InputError(f"{where}experts_on_host: {model.name}'s routed experts take {needed / GiB:.1f} GiB at "
                         f"weight_dtype {dep.weight_dtype}, more than the {capacity / GiB:.1f} GiB of host "
                         f"{memory.name} each device has; use a smaller weight_dtype or a host with more memory")


FLASH_KNOBS = ("flash_offload_tier", "flash_active_fraction", "flash_window_tokens")


def _check_flash_weights(where: str, system: System, dep: Deployment, model: ModelConfig) -> None:
    """flash_offload_gb (perf/flash_weights.py): a GPU running a dense-FFN model whose system
    spec has a tier (node.tiers, e.g. NVMe) with room for the FFN weights placed there."""
    if not dep.flash_offload_gb:
        extra = next((k for k in FLASH_KNOBS if k in dep.model_fields_set), None)
        if extra is not None:
            raise InputError(f"{where}{extra}: read only with flash_offload_gb; set the GiB on flash too, or drop it")
        return
    if system.accelerator.kind != "gpu":
        raise InputError(f"{where}flash_offload_gb: modelled for a GPU's memory (vLLM's plan), and "
                         f"{system.accelerator.name} is a {system.accelerator.kind}; set it 0")
    if model.is_moe:
        raise InputError(f"{where}flash_offload_gb: LLM in a flash reads a dense FFN's neurons, and {model.name} "
                         "has routed experts; use experts_on_host or cpu_offload_gb instead")
    if dep.cpu_offload_gb:
        raise InputError(f"{where}flash_offload_gb with cpu_offload_gb: keep the offloaded weights in one place; "
                         "set one of them 0")
    tier = flash_tier(system, dep)
    if tier is None:
        known = ", ".join(t.name for t in system.memory_tiers if t.link is not None) or "none"
        named = f"{dep.flash_offload_tier!r} is not a tier of {system.name} reached over a link (known: {known})" \
            if dep.flash_offload_tier else f"{system.name} has no flash tier of its own (node.tiers)"
        raise InputError(f"{system.source_file}: {where}flash_offload_gb: {named}; use a system spec with an nvme "
                         "tier (e.g. dgx-h100), declare one under node.tiers, or set flash_offload_gb 0")
    _check_room(where, f"flash_offload_gb {dep.flash_offload_gb:g}", flash_weights_bytes(model, dep), tier)


def _check_room(where: str, knob: str, needed_bytes: float, tier: Tier) -> None:
    """Weights placed on a tier (cpu_offload_gb, flash_offload_gb) must fit in the share of it
    each device has."""
    if tier.capacity is not None and needed_bytes > tier.capacity:
        raise InputError(f"{where}{knob}: more than the {tier.capacity / GiB:.1f} GiB of {tier.name} each device has; "
                         "lower it")


def build_pool(role: str, system: System, dep: Deployment, model_cfg: ModelConfig, calibration: str | None) -> Pool:
    """Validate one pool's parallelism against its hardware, plan its memory and cost model
    with its policy (`dep.scheduler`)."""
    where = "" if role == "mixed" else f"{role} pool: "
    calib = resolve_calibration(system, calibration)  # first: a profile that cannot be read is an input error
    if model_cfg.num_heads % dep.tp:
        raise InputError(f"{where}--tp {dep.tp}: must divide {model_cfg.name}'s {model_cfg.num_heads} attention heads")
    kv_heads = model_cfg.num_kv_heads
    if kv_heads % dep.tp and dep.tp % kv_heads:  # vLLM splits KV heads, or replicates them evenly
        raise InputError(f"{where}--tp {dep.tp}: must divide {model_cfg.name}'s {kv_heads} KV heads or be a "
                         "multiple of them")
    _check_data_parallel(role, where, dep, model_cfg)
    if dep.experts_on_host:
        _check_experts_on_host(where, system, dep, model_cfg)
    needed = dep.devices_per_replica * dep.replicas
    system = system.sized_for(needed)
    if needed > system.total_devices:
        ranks = f"data_parallel_size={dep.data_parallel_size} x " if dep.data_parallel_size > 1 else ""
        raise InputError(
            f"{system.source_file}: {where}{system.name} has {system.total_devices} devices but tp={dep.tp} x "
            f"pp={dep.pp} x {ranks}replicas={dep.replicas} needs {needed}; lower them or add nodes"
        )
    if dep.devices_per_replica > 1 and system.fabric is None and system.network is None:
        raise InputError(f"{system.source_file}: links: {system.name} has no link for tp/pp; add nvlink or pcie")
    if dep.preemption_mode == "swap" and system.offload_tier is None:
        raise InputError(f"{system.source_file}: {where}preemption_mode=swap needs a host link (pcie or nvlink_c2c) "
                         f"on {system.accelerator.name}; add one or use preemption_mode=recompute")
    _check_flash_weights(where, system, dep, model_cfg)
    if dep.cpu_offload_gb:
        tier = system.offload_tier
        if tier is None:
            raise InputError(f"{system.source_file}: {where}cpu_offload_gb needs a host link (pcie or nvlink_c2c) on "
                             f"{system.accelerator.name}; add one or set cpu_offload_gb 0")
        _check_room(where, f"cpu_offload_gb {dep.cpu_offload_gb:g}", dep.cpu_offload_gb * GiB, tier)
    policy = get_scheduler(dep.scheduler)
    backend = backend_for(system.accelerator)
    refuse_foreign_knobs(dep, system, where)
    backend.check(dep, system, where)
    dep = backend.resolve(dep, system, model_cfg, role, policy)
    context = model_cfg.max_context
    longest = context if dep.max_model_len in (None, -1) else dep.max_model_len
    if longest > context:  # vLLM refuses to start (its derived max_model_len is the ceiling)
        raise InputError(f"{where}max_model_len {longest}: more than the {context} tokens of context "
                         f"{model_cfg.name} has (max_position_embeddings, extended by rope_scaling); "
                         f"set max_model_len <= {context}")
    forward = policy.forward_tokens(dep, longest)
    plan = backend.plan_memory(policy, system.accelerator, model_cfg, dep, forward)
    if dep.max_model_len == -1:  # vLLM's auto-fit: the longest request the KV cache holds
        dep = dep.model_copy(update={"max_model_len": min(context, plan.usable_blocks * plan.block_size)})
    window = model_cfg.sliding_window
    if window and (dep.max_model_len or context) > window:
        raise InputError(
            f"{where}{model_cfg.name}'s {_windowed(model_cfg)} attend to the last {window} tokens (sliding_window), "
            "and the simulator costs "
            f"full attention over a KV cache that keeps every block: exact only for requests of up to {window} "
            f"tokens, so set max_model_len {window} (or less), or drop sliding_window from a copy of the config to "
            "cost full attention")
    cost = backend.cost_model(system, model_cfg, dep, calib, policy, forward)
    pool = Pool(role, system, dep, plan, cost, calib)
    if plan.num_blocks // pool.engines < 2:  # each engine needs a block besides vLLM's null block
        raise InputError(f"{where}pp={dep.pp}: {plan.num_blocks} KV block(s) per device cannot be split among "
                         f"{pool.engines} virtual engines; lower max_num_batched_tokens, raise "
                         "gpu_memory_utilization or set pipeline_overlap=false")
    if dep.kv_offloading_size is not None:
        _offload_blocks(pool, where)
    elif "kv_offloading_backend" in dep.model_fields_set or dep.kv_offloading_tier is not None:
        knob = "kv_offloading_tier" if dep.kv_offloading_tier is not None else "kv_offloading_backend"
        raise InputError(f"{where}{knob}: read only with kv_offloading_size; set the size (GiB) too, or drop it")
    return pool


def _windowed(model: ModelConfig) -> str:
    return "layers" if model.window_layers == model.num_layers else f"last {model.window_layers} layers"


def _check_data_parallel(role: str, where: str, dep: Deployment, model: ModelConfig) -> None:
    """What the data-parallel knobs need: experts to spread (expert parallelism), whole
    experts per device, and no pipeline stages or disaggregated pools beside the ranks."""
    dp, devices = dep.data_parallel_size, dep.data_parallel_size * dep.tp
    if dep.expert_load_factor is not None and not (dep.enable_expert_parallel and devices > 1):
        raise InputError(f"{where}expert_load_factor: the busiest expert-parallel device's load, which needs "
                         "enable_expert_parallel over more than one device (data_parallel_size x tp); remove it")
    if dep.enable_expert_parallel:
        if not model.is_moe:
            raise InputError(f"{where}enable_expert_parallel: {model.name} has no experts to spread; leave it off")
        if model.num_experts % devices:
            raise InputError(f"{where}enable_expert_parallel: {model.name}'s {model.num_experts} experts do not "
                             f"spread evenly over data_parallel_size x tp = {devices} devices")
    if dp > 1 and dep.pp > 1:
        raise InputError(f"{where}data_parallel_size {dp} with pp {dep.pp}: data-parallel ranks are modelled with "
                         "tensor parallelism only; set pp 1")
    if dp > 1 and role != "mixed":
        raise InputError(f"{where}data_parallel_size {dp}: data-parallel ranks are modelled in colocated "
                         "deployments only; set it per pool with prefill_replicas / decode_replicas instead")


def replica_hardware(pool: Pool) -> ReplicaHardware:
    """A replica's devices, or a virtual engine's share of them (one stage group)."""
    device, dep = pool.system.accelerator, pool.deployment
    power, eff = device.power, device.efficiency
    return ReplicaHardware(
        role=pool.role, devices=dep.tp * dep.pp // pool.engines,
        peak_flops=device.peak_flops(pool.cost.prec.gemm_compute),
        bandwidth=device.main_memory.bandwidth, idle_w=power.idle if power else 0.0, tdp_w=power.tdp if power else 0.0,
        compute_max=eff.compute_max, memory_max=eff.memory_max,
        price_per_hour=pool.system.device_price_per_hour, powered=power is not None)


def offload_tier(system: System, dep: Deployment, where: str = "") -> Tier:
    """The tier KV offloading keeps blocks in: `kv_offloading_tier` by name, else the nearest
    tier outside the device (`System.offload_tier`, usually the host's memory)."""
    reachable = [tier for tier in system.memory_tiers if tier.link is not None]
    if dep.kv_offloading_tier is not None:
        tier = next((t for t in reachable if t.name == dep.kv_offloading_tier), None)
        if tier is None:
            known = ", ".join(t.name for t in reachable) or "none"
            raise InputError(f"{system.source_file}: {where}kv_offloading_tier: {dep.kv_offloading_tier!r} is not a tier "
                             f"of {system.name} reached over a link (known: {known}); name one, or declare it "
                             "(memory[].link, node.tiers)")
        return tier
    if not reachable:
        raise InputError(f"{system.source_file}: {where}kv_offloading_size: {system.accelerator.name} reaches no memory "
                         "outside the device (no host link pcie or nvlink_c2c, no tier with a link); add one or drop "
                         "kv_offloading_size")
    return reachable[0]


def _offload_blocks(pool: Pool, where: str) -> int:
    """Check that the pool can run KV offloading as asked; returns each engine's tier blocks."""
    dep, system = pool.deployment, pool.system
    policy = get_scheduler(dep.scheduler)
    size = dep.kv_offloading_size
    assert size is not None
    if pool.role != "mixed" or not policy.kv_offloading:
        which = "a disaggregated pool" if pool.role != "mixed" else f"--scheduler {dep.scheduler}"
        raise InputError(f"{where}kv_offloading_size: KV offloading is modelled for the vllm, sarathi and splitfuse "
                         f"policies in colocated deployments, not {which}; drop it")
    if system.accelerator.kind == "cpu":
        raise InputError(f"{where}kv_offloading_size: on a CPU ({system.accelerator.name}) the KV cache already lives "
                         "in host memory; drop it")
    if not policy.caches_prefixes(dep):
        raise InputError(f"{where}kv_offloading_size: offloaded KV blocks are found again by their prefix hashes, "
                         f"which need enable_prefix_caching=true (--scheduler {dep.scheduler} leaves it off); set it")
    if dep.preemption_mode == "swap":
        raise InputError(f"{where}kv_offloading_size with preemption_mode=swap: KV offloading is a vLLM V1 connector "
                         "and swap preemption vLLM v0's; use preemption_mode=recompute (a preempted request's blocks "
                         "then come back from the tier)")
    if dep.kv_offloading_backend == "lmcache" and LMCACHE_CHUNK_TOKENS % dep.block_size:
        raise InputError(f"{where}kv_offloading_backend=lmcache: LMCache keeps KV in chunks of "
                         f"{LMCACHE_CHUNK_TOKENS} tokens, which block_size {dep.block_size} does not divide; use a "
                         "block_size that divides it (16, 32, 64...)")
    tier = offload_tier(system, dep, where)
    devices = dep.tp * dep.pp
    if tier.capacity is not None and size * GiB > tier.capacity * devices:
        raise InputError(f"{system.source_file}: {where}kv_offloading_size: {size:g} GiB is more than the "
                         f"{tier.capacity * devices / GiB:.1f} GiB of {tier.name} the spec gives {devices} device(s) "
                         f"of {system.name}; lower it")
    blocks = int(size * GiB // (pool.plan.kv_bytes_per_block * devices)) // pool.engines
    if blocks < 1:
        raise InputError(f"{where}kv_offloading_size: {size:g} GiB holds no KV block of "
                         f"{pool.plan.kv_bytes_per_block * devices / 2**20:.2f} MiB (over {devices} device(s)); "
                         "raise it")
    return blocks


def kv_offload(pool: Pool) -> KVOffload | None:
    """One engine's KV offloading (engine/kv_offload.py) when `kv_offloading_size` is set: the
    tier's blocks (split evenly among a replica's virtual engines) and its link's copies."""
    dep = pool.deployment
    if dep.kv_offloading_size is None:
        return None
    tier = offload_tier(pool.system, dep)
    assert tier.link is not None
    link = next((name for name, link in pool.system.accelerator.links.items() if link is tier.link), "link")
    return KVOffload(dep.kv_offloading_backend, tier.name, link, _offload_blocks(pool, ""),
                     pool.plan.kv_bytes_per_block, tier.copy_bandwidth(), tier.copy_bandwidth(write=True),
                     tier.copy_latency, pool.plan.block_size)


def swap_space(pool: Pool) -> SwapSpace | None:
    """Swap space of one virtual engine (a replica's, split evenly among its engines) in the
    nearest memory tier outside the device (`System.offload_tier`: the host's memory over
    the host link, unless the spec names a nearer one): `swap_space` GiB per device, at most
    the tier's share; the copies take the tier's link."""
    dep, system = pool.deployment, pool.system
    if dep.preemption_mode != "swap":
        return None
    tier = system.offload_tier
    assert tier is not None and tier.link is not None  # build_pool refuses swap without one
    per_device = dep.swap_space * GiB
    if tier.capacity is not None:
        per_device = min(per_device, tier.capacity)
    blocks = int(per_device // pool.plan.kv_bytes_per_block) // pool.engines
    return SwapSpace(blocks, pool.plan.kv_bytes_per_block, tier.link.bandwidth, tier.link.latency)
