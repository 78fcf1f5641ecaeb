"""Alpha-beta models of collectives over the link a deployment actually uses.

Ring all-reduce over p devices moves 2(p-1)/p of the message through every device's link in
2(p-1) latency-bound steps (reduce-scatter then all-gather):

    t_allreduce = 2(p-1) * alpha + 2(p-1)/p * bytes / (beta * network_efficiency)

and a ring all-gather (or reduce-scatter, or a pairwise all-to-all) is half of that. alpha is the link's latency,
beta its per-direction bandwidth; network_efficiency (spec `efficiency:`, or the link's own
`efficiency`) is the fraction of link bandwidth that NCCL-style collectives reach. A
point-to-point send is alpha + bytes/beta.
"""
from __future__ import annotations

import numpy as np

from ..hardware.spec import Link


def allreduce_time_s(nbytes, world: int, link: Link, efficiency: float):
    """Ring all-reduce of `nbytes` per device (a float, or an array of sizes)."""
    return _ring_time_s(nbytes, world, 2 * (world - 1), link, efficiency)


def allgather_time_s(nbytes, world: int, link: Link, efficiency: float):
    """`nbytes` is the gathered result's size on each device (a float, or an array)."""
    return _ring_time_s(nbytes, world, world - 1, link, efficiency)


def alltoall_time_s(nbytes, world: int, link: Link, efficiency: float):
    """Pairwise all-to-all of `nbytes` per device: p-1 latency-bound exchanges, each sending
    1/p of the message (the traffic of an all-gather)."""
    return _ring_time_s(nbytes, world, world - 1, link, efficiency)


def _ring_time_s(nbytes, world: int, steps: int, link: Link, efficiency: float):
    if world <= 1:
        return 0.0
    time_s = steps * link.latency + steps / world * nbytes / (link.bandwidth * (link.efficiency or efficiency))
    if isinstance(nbytes, np.ndarray):
        return np.where(nbytes > 0, time_s, 0.0)
    return time_s if nbytes > 0 else 0.0


# the alpha-beta model of every collective kind (models/op_kinds.py); a reduce-scatter moves
# what an all-gather moves
TIME_MODELS = {"allreduce": allreduce_time_s, "allgather": allgather_time_s, "reducescatter": allgather_time_s,
               "alltoall": alltoall_time_s}


def p2p_time_s(nbytes: float, link: Link, efficiency: float) -> float:
    if nbytes <= 0:
        return 0.0
    return link.latency + nbytes / (link.bandwidth * (link.efficiency or efficiency))
