"""The disaggregated topology (DistServe, Splitwise): a prefill pool and a decode pool, each
with its own hardware, replicas, tensor parallelism and policy, and the link between them
that carries each request's KV cache (`engine/kv_transfer.py`).

`disaggregated_pools` builds both pools from the deployment's `prefill_*`/`decode_*` knobs
(each pool's policy: `prefill_scheduler`, `decode_scheduler`; schedulers/disagg.py mixes
the role into it), checks they fit the hardware together and picks the transfer link
(`transfer_link`); `connect` joins the pools' replicas through the transfer at run time.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import simpy

from ..deployment import Deployment
from ..engine.kv_transfer import KvTransfer, TransferLink
from ..engine.replica import Replica
from ..errors import InputError
from ..hardware.loader import System, load_system
from ..hardware.units import parse_quantity
from ..metrics.recorder import Recorder
from ..models.config import ModelConfig
from ..schedulers.base import get_scheduler
from ..schedulers.disagg import check_pool_policy
from .pools import Pool, build_pool


@dataclass
class Disaggregation:
    """The two pools of `scheduler: disagg` and the link their KV copies take."""

    prefill: Pool
    decode: Pool
    link: TransferLink
    kv_bytes_per_token: float  # the whole model's KV for one token
    parallel_pairs: int  # device pairs copying shards side by side: min(prefill tp, decode tp)


def disaggregated_pools(system: System, dep: Deployment, model_cfg: ModelConfig,
                        calibration: str | None) -> Disaggregation:
    """Both pools of a disaggregated deployment on `system` (or each pool's own hardware),
    each resolved with its own policy, and the link between them. `calibration` applies to
    the pools on the run's hardware; a pool on other hardware uses its own profile."""
    pools = []
    for role, other_hw, pool_tp, count, policy in (
            ("prefill", dep.prefill_hardware, dep.prefill_tp, dep.prefill_replicas, dep.prefill_scheduler),
            ("decode", dep.decode_hardware, dep.decode_tp, dep.decode_replicas, dep.decode_scheduler)):
        check_pool_policy(f"{role}_scheduler", policy)
        pool_system = load_system(other_hw) if other_hw else system
        same = pool_system.source_file == system.source_file
        pool_dep = dep.model_copy(update={"tp": pool_tp or dep.tp, "replicas": count, "scheduler": policy})
        pool_dep = get_scheduler(policy).resolve(pool_dep)
        pools.append(build_pool(role, pool_system, pool_dep, model_cfg, calibration if same else None))
    prefill, decode = pools
    same_node = prefill.system.source_file == decode.system.source_file
    if same_node and prefill.devices + decode.devices > prefill.system.sized_for(1).total_devices \
            and not prefill.system.standalone:
        raise InputError(f"{system.source_file}: {system.name} has {system.total_devices} devices but the prefill "
                         f"({prefill.devices}) and decode ({decode.devices}) pools need "
                         f"{prefill.devices + decode.devices}; lower prefill_replicas/decode_replicas or add nodes")
    link = transfer_link(dep, prefill.system, decode.system, same_node and prefill.devices + decode.devices
                         <= prefill.system.devices_per_node)
    per_token = model_cfg.kv_bytes_per_token(dep.kv_cache_dtype)
    return Disaggregation(prefill, decode, link, per_token, min(prefill.deployment.tp, decode.deployment.tp))


def connect(env: simpy.Environment, split: Disaggregation, prefill: list[Replica], decode: list[Replica],
            recorder: Recorder, horizon_s) -> KvTransfer:
    """Join the pools' replicas through the KV transfer; a decode replica may run ahead only
    until the next copy that can land on it."""
    transfer = KvTransfer(env, split.link, split.kv_bytes_per_token, split.parallel_pairs, prefill, decode,
                          recorder, horizon_s)
    for i, replica in enumerate(decode):
        replica.horizon_s = functools.partial(transfer.horizon_s, i)
    return transfer


def transfer_link(dep: Deployment, prefill: System, decode: System, one_node: bool) -> TransferLink:
    """The link KV copies between the pools take (`kv_transfer_link`, `auto` by default:
    the accelerator fabric when both pools fit one node, else the network between nodes,
    else through the hosts over PCIe), with `kv_transfer_bandwidth`/`_latency` overrides."""
    kind = dep.kv_transfer_link
    if kind == "auto":
        kind = ("nvlink" if one_node and prefill.fabric is not None and prefill.fabric_name != "pcie" else
                "network" if prefill.network is not None and decode.network is not None else "pcie")
    where = f"{prefill.source_file}: kv_transfer_link={kind}"
    if kind == "nvlink":
        if not one_node or prefill.fabric is None:
            raise InputError(f"{where}: the pools are not on one node with an accelerator fabric; "
                             "use kv_transfer_link=network or pcie")
        name, bandwidth, latency = prefill.fabric_name or "fabric", prefill.fabric.bandwidth, prefill.fabric.latency
    elif kind == "network":
        if prefill.network is None or decode.network is None:
            raise InputError(f"{where}: a pool's system has no network; add `network:` to the system YAML "
                             "or use kv_transfer_link=pcie")
        name = "network"
        bandwidth = min(prefill.network.bandwidth, decode.network.bandwidth)
        latency = max(prefill.network.latency, decode.network.latency)
    else:  # device -> host memory -> device: both host links, one after the other
        if prefill.host_link is None or decode.host_link is None:
            raise InputError(f"{where}: a pool's accelerator has no host link (pcie) in its spec")
        name = "pcie (through the host)"
        bandwidth = min(prefill.host_link.bandwidth, decode.host_link.bandwidth)
        latency = prefill.host_link.latency + decode.host_link.latency
    if dep.kv_transfer_bandwidth is not None:  # both overrides were checked in Deployment
        bandwidth = parse_quantity(dep.kv_transfer_bandwidth, "bandwidth")
        name += f" at {dep.kv_transfer_bandwidth}"
    if dep.kv_transfer_latency is not None:
        latency = parse_quantity(dep.kv_transfer_latency, "time")
    return TransferLink(name, bandwidth, latency)
