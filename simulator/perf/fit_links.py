"""The fits of data movement: collectives over a fabric or network, and memory copies.

Collectives fit latency + bytes / bandwidth per measured world size, and across them the
ring model's latency per step and network efficiency (the bus bandwidth over the link's),
which predict a world size that was not measured. Memcpy fits latency + bytes / bandwidth per
direction, the bandwidth kept as a fraction of the link it streams over (the host link, or
half the memory bandwidth for a device-to-device copy). These are alpha-beta models in log
space, not rooflines of compute: they live apart from `fit_compute.py` and share only the
solver (`fit_least_squares.py`).
"""
from __future__ import annotations

import numpy as np

from .fit_inputs import DIRECTIONS
from .fit_least_squares import Param, robust_fit


def _link_for(dev: dict[str, float], world: float) -> tuple[float, float]:
    """(bandwidth B/s, latency us) of the link a `world`-device collective uses."""
    if world <= dev.get("devices_per_node", 1) or "network_bandwidth" not in dev:
        return dev.get("fabric_bandwidth", dev["bandwidth"]), dev.get("fabric_latency_us", 0.0)
    return dev["network_bandwidth"], dev.get("network_latency_us", 0.0)


def _ring_factors(op: str, world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latency steps, bandwidth factor) of a ring collective over `world` devices."""
    if op == "allreduce":
        return 2.0 * (world - 1), 2.0 * (world - 1) / world
    return world - 1.0, (world - 1.0) / world


def _fit_alpha_beta(x: np.ndarray, log_t: np.ndarray) -> tuple[float, float]:
    """latency_us + bytes / bytes_per_us, fitted in log space."""
    spec = [Param("latency_us", max(float(np.exp(log_t.min())), 0.1), 1e-3, 1e6),
            Param("bytes_per_us", max(float(x.max() / np.exp(log_t.max())), 1.0), 1e-3, 1e9)]
    q, _ = robust_fit(lambda q: np.log(q["latency_us"] + x / q["bytes_per_us"]) - log_t, spec)
    return q["latency_us"], q["bytes_per_us"]


def fit_collective(op, f, log_t, dev) -> dict[str, float]:
    """Alpha-beta per measured world size, and the ring-model link efficiencies over all."""
    q: dict[str, float] = {}
    steps_lat, busbw = [], []
    for w in np.unique(f["world_size"]):
        rows = f["world_size"] == w
        lat, bpu = _fit_alpha_beta(f["bytes"][rows], log_t[rows])
        q[f"latency_us@{int(w)}"], q[f"bytes_per_us@{int(w)}"] = lat, bpu
        steps, factor = _ring_factors(op, np.array([w]))
        link_bw, _ = _link_for(dev, w)
        steps_lat.append(lat / max(float(steps[0]), 1.0))
        busbw.append(bpu * 1e6 * float(factor[0]) / link_bw)
    q["latency_per_step_us"] = float(np.median(steps_lat))
    q["network_efficiency"] = float(np.median(busbw))
    return q


def collective_predict(op, f, q, dev) -> np.ndarray:
    world, nbytes = f["world_size"], f["bytes"]
    out = np.empty(len(nbytes))
    for w in np.unique(world):
        rows = world == w
        key = f"latency_us@{int(w)}"
        if key in q:
            lat, bpu = q[key], q[f"bytes_per_us@{int(w)}"]
        else:  # an unmeasured world size: the ring model with the fitted link efficiencies
            steps, factor = _ring_factors(op, np.array([w]))
            link_bw, _ = _link_for(dev, w)
            lat = q["latency_per_step_us"] * float(steps[0])
            bpu = link_bw * q["network_efficiency"] / float(factor[0]) / 1e6
        out[rows] = lat + nbytes[rows] / bpu
    return out


def _copy_link(dev: dict[str, float], direction: str) -> tuple[float, float]:
    """(bytes/s, latency us) a copy streams at: the host link, or for d2d half the memory
    bandwidth (a device copy reads and writes every byte)."""
    if direction == "d2d":
        return dev["bandwidth"] / 2.0, 0.0
    return dev.get("host_bandwidth", dev["bandwidth"]), dev.get("host_latency_us", 0.0)


def fit_memcpy(f, log_t, dev) -> dict[str, float]:
    """latency + bytes / bandwidth per direction; the bandwidth kept as a fraction of the link's."""
    q = {}
    for code in np.unique(f["direction"]):
        rows = f["direction"] == code
        lat, bpu = _fit_alpha_beta(f["bytes"][rows], log_t[rows])
        name = DIRECTIONS[int(code)]
        q[f"latency_us@{name}"] = lat
        q[f"efficiency@{name}"] = bpu * 1e6 / _copy_link(dev, name)[0]
    return q


def memcpy_predict(f, q, dev) -> np.ndarray:
    out = np.empty(len(f["bytes"]))
    for code in np.unique(f["direction"]):
        rows = f["direction"] == code
        name = DIRECTIONS[int(code)]
        link_bw, link_lat = _copy_link(dev, name)
        # an unmeasured direction: the link's own latency and the spec's default efficiencies
        default = dev["memory_max"] if name == "d2d" else dev["network_efficiency"]
        lat = q.get(f"latency_us@{name}", link_lat)
        eff = q.get(f"efficiency@{name}", default)
        out[rows] = lat + f["bytes"][rows] / (link_bw * eff / 1e6)
    return out
