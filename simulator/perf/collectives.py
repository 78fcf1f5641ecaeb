"""Alpha-beta models of collectives over the link a deployment actually uses.

Ring all-reduce over p devices moves 2(p-1)/p of the message through every device's link in
2(p-1) latency-bound steps (reduce-scatter then all-gather):

    t_allreduce = 2(p-1) * alpha + 2(p-1)/p * bytes / (beta * network_efficiency)

and a ring all-gather (or reduce-scatter) is half of that. alpha is the link's latency,
beta its per-direction bandwidth; network_efficiency (spec `efficiency:`, or the link's own
`efficiency`) is the fraction of link bandwidth that NCCL-style collectives reach. A
point-to-point send is alpha + bytes/beta.
"""
from __future__ import annotations

from ..hardware.spec import Link


def allreduce_time_s(nbytes: float, world: int, link: Link, efficiency: float) -> float:
    if world <= 1 or nbytes <= 0:
        return 0.0
    steps = 2 * (world - 1)
    return steps * link.latency + steps / world * nbytes / (link.bandwidth * (link.efficiency or efficiency))


def allgather_time_s(nbytes: float, world: int, link: Link, efficiency: float) -> float:
    """`nbytes` is the gathered result's size on each device."""
    if world <= 1 or nbytes <= 0:
        return 0.0
    steps = world - 1
    return steps * link.latency + steps / world * nbytes / (link.bandwidth * (link.efficiency or efficiency))


def p2p_time_s(nbytes: float, link: Link, efficiency: float) -> float:
    if nbytes <= 0:
        return 0.0
    return link.latency + nbytes / (link.bandwidth * (link.efficiency or efficiency))
