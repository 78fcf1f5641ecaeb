"""PLMR cost formulas of a wafer-scale mesh: pure functions of a `Mesh` and a shape.

WaferLLM (He et al., OSDI'25) describes a wafer-scale accelerator by four properties, PLMR:
a massive Parallelism of cores (hundreds of thousands), non-uniform Latency (a message
between cores costs a fixed overhead plus a delay per hop of the 2-D mesh), a small local
Memory per core (tens of KB of SRAM, no shared memory) and a Routing limit (a core's router
holds a few routes, so a core cannot talk to many others at once). An operator runs over a
square sub-mesh of P x P cores; its time is the compute of one core's share plus the
messages its algorithm needs, each costed as

    message_overhead + hops x hop_latency + bytes / link_bandwidth.

A core's share of a matrix product is counted in the vector instructions its kernel issues
(`mac_s`): their lanes' work plus a fixed cost each, which short vectors pay often.

The algorithms are WaferLLM's (named where they are used): MeshGEMV with a K-tree
reduction, MeshGEMM (Cannon's algorithm with the tiles interleaved so that every shift is
two hops), weights stationary in the cores that hold them. Every function accepts numpy
arrays for the sizes (the steps of a span) unless it says otherwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mesh:
    """The square sub-mesh an operator runs on and the per-core numbers of its wafer
    (hardware/wafer.py): SI units, per core and per link."""

    side: int  # P: the sub-mesh is P x P cores
    sram_bandwidth: float  # B/s one core reads and writes its own SRAM at
    link_bandwidth: float  # B/s per direction of a link between neighbouring cores
    hop_s: float  # one hop of the fabric (router to router)
    message_s: float  # fixed cost of a message a core receives and acts on (task switch, set-up)
    routes: int  # routes (virtual channels) one core's router holds
    clock_hz: float = 1e9  # a core's clock: instructions are counted in its cycles
    vector_op_overhead_cycles: float = 0.0  # fixed cycles of each vector instruction of a tile product

    @property
    def cores(self) -> int:
        return self.side * self.side


def local_s(mesh: Mesh, flops, nbytes, core_flops: float):
    """One core's share of an operator spread evenly over the sub-mesh: its FLOPs at the
    core's peak `core_flops` (FLOP/s) or its bytes at the core's SRAM bandwidth, whichever
    is longer (a per-core roofline; the SRAM is the core's only memory)."""
    return np.maximum(flops / (mesh.cores * core_flops), nbytes / (mesh.cores * mesh.sram_bandwidth))


def mac_s(mesh: Mesh, instructions, length, core_flops: float):
    """One core's `instructions` vector multiply-accumulates of `length` elements each, as
    WaferLLM's kernels issue a tile product (one instruction per scalar of one operand, over
    a row of the other): each takes ceil(length / lanes) cycles, the lanes being
    `core_flops` / (2 x clock), so short vectors leave lanes idle, plus the mesh's fixed
    `vector_op_overhead_cycles` (issue, operand set-up, the loop that issues it), which short
    vectors pay often."""
    lanes = core_flops / (2.0 * mesh.clock_hz)
    cycles = mesh.vector_op_overhead_cycles + np.ceil(np.asarray(length, dtype=float) / lanes)
    return instructions * cycles / mesh.clock_hz


def tree_fan_in(n: int, levels: int) -> int:
    """The fan-in g of a `levels`-level tree over n cores: the smallest g with g**levels >= n."""
    g = max(2, math.ceil(n ** (1.0 / levels)))
    while (g - 1) ** levels >= n and g > 2:
        g -= 1
    while g ** levels < n:
        g += 1
    return g


def reduce_s(mesh: Mesh, n: int, nbytes):
    """K-tree reduction of `nbytes` per core along a line of n cores to one end (MeshGEMV's).

    A level gathers groups of g cores to their root: the g - 1 members send at once, each
    over its own route, and the root takes their messages one after another off its link,
    so a level costs message_overhead + (g - 1) x bytes / link_bandwidth. The farthest core's
    data crosses the whole line once, n - 1 hops, whatever the tree. Fewer levels mean more
    routes per root (g - 1 must fit in the router, one route kept for sending on and one for
    the broadcast back); the levels are chosen for the least time among those that fit.
    """
    if n <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    best = None
    for levels in range(1, max(1, math.ceil(math.log2(n))) + 1):
        g = tree_fan_in(n, levels)
        if g - 1 > mesh.routes - 2:
            continue
        time_s = levels * (mesh.message_s + (g - 1) * nbytes / mesh.link_bandwidth)
        best = time_s if best is None else np.minimum(best, time_s)
    if best is None:
        raise ValueError(f"a router of {mesh.routes} routes cannot hold a reduction tree (needs at least 3)")
    return best + (n - 1) * mesh.hop_s


def broadcast_s(mesh: Mesh, n: int, nbytes):
    """`nbytes` from one end of a line of n cores to all of them: one route that every
    router both delivers to its core and forwards, so the message streams down the line."""
    if n <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    return mesh.message_s + (n - 1) * mesh.hop_s + nbytes / mesh.link_bandwidth


def allreduce_s(mesh: Mesh, n: int, nbytes):
    """Reduce along a line of n cores, then broadcast the result back along it."""
    return reduce_s(mesh, n, nbytes) + broadcast_s(mesh, n, nbytes)


def allgather_s(mesh: Mesh, n: int, nbytes):
    """Every core of a line of n gets every core's `nbytes`: the pieces stream past each
    core, which takes n - 1 of them off its link."""
    if n <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    return mesh.message_s + (n - 1) * (mesh.hop_s + nbytes / mesh.link_bandwidth)


def transpose_s(mesh: Mesh, nbytes):
    """Core (i, j) sends its tile of `nbytes` to core (j, i), routed along its row then its
    column: up to 2 (P - 1) hops, and the link next to the diagonal carries up to P - 1 tiles
    of its row one after another."""
    p = mesh.side
    if p <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=float))
    return mesh.message_s + 2 * (p - 1) * mesh.hop_s + (p - 1) * nbytes / mesh.link_bandwidth


def gemv_s(mesh: Mesh, m, n: int, k: int, core_flops: float, act_bytes: float, weight_bytes: float,
           buffer_bytes: float = math.inf):
    """MeshGEMV: y[m x n] = x[m x k] W[k x n] with W tiled over the P x P cores (a k/P x n/P
    tile each, stationary) and x's k/P slice on every core of its row: each core multiplies
    its tile, the partial sums of each column reduce (K-tree) to the column's core on the
    diagonal, which broadcasts its slice of y along its row, where the next GEMV reads it
    (the diagonal root spares a transpose). The tile product is one instruction per value of
    x over a row of the tile (WaferLLM's kernel), and takes at least the bytes the core reads
    at its SRAM's bandwidth. A core holds each token's slice of x and its partial sums,
    ceil(k/P) + ceil(n/P) values; when the m tokens' do not fit the `buffer_bytes` a core
    sets aside for them, the GEMV runs in passes over the tokens, each pass reading the tile
    again and paying the reduction and broadcast again."""
    p = mesh.side
    inner, cols = math.ceil(k / p), math.ceil(n / p)
    tokens = np.asarray(m, dtype=float)
    passes = np.maximum(1.0, np.ceil(tokens * (inner + cols) * act_bytes / buffer_bytes))
    tokens = tokens / passes  # per pass
    product = mac_s(mesh, tokens * inner, cols, core_flops)
    nbytes = k * n * weight_bytes + tokens * (k + n) * act_bytes
    local = np.maximum(product, nbytes / (mesh.cores * mesh.sram_bandwidth))
    slice_bytes = tokens * cols * act_bytes
    return passes * (local + reduce_s(mesh, p, slice_bytes) + broadcast_s(mesh, p, slice_bytes))


def gemm_s(mesh: Mesh, m, n: int, k: int, core_flops: float, in_bytes: float, weight_bytes: float):
    """MeshGEMM: Cannon's algorithm on the P x P cores with the tiles interleaved so that a
    cyclic shift moves each tile two hops (never across the mesh). After an initial skew
    (P - 1 hops), P steps each multiply one tile pair while the next pair shifts in:
    a step takes the longer of the two. Tiles are ceil(m/P) x ceil(k/P) inputs and
    ceil(k/P) x ceil(n/P) weights (the weights return home after the P shifts); a step's
    product is one instruction per weight over the tile's ceil(m/P) rows (WaferLLM's kernel)."""
    p = mesh.side
    rows, inner, cols = np.ceil(np.asarray(m, dtype=float) / p), math.ceil(k / p), math.ceil(n / p)
    compute = mac_s(mesh, inner * cols, rows, core_flops)
    shift = mesh.message_s + 2 * mesh.hop_s + (rows * inner * in_bytes + inner * cols * weight_bytes) / mesh.link_bandwidth
    return p * np.maximum(compute, shift) + mesh.message_s + (p - 1) * mesh.hop_s


def decode_attention_s(mesh: Mesh, sequences, context, heads: int, kv_heads: int, head_dim: int, nbytes,
                       core_flops: float, act_bytes: float):
    """Decode attention over a KV cache spread over the P x P cores as WaferLLM stores it:
    tokens along one axis (ceil(context / P) of them a core, `context` summed over the
    sequences), the kv_heads x head_dim dimensions along the other (ceil(kv_width / P) a core),
    so one head's dimensions span a group of ceil(head_dim / that) cores of a line (WaferLLM's
    pes_p_head). Each core scores the queries of the heads it serves against its keys (one
    instruction per query value over its tokens) and weighs its values (one per score over its
    dimensions), at least its KV bytes at the SRAM's bandwidth; then the partial scores
    all-reduce across the head's group, the softmax's maximum and sum (one value per query
    head and sequence) along the P cores of the token axis, and the partial outputs (the
    core's dimensions of each query head) along the same line."""
    p = mesh.side
    seqs = np.asarray(sequences, dtype=float)
    tokens = np.ceil(np.asarray(context, dtype=float) / p)  # the tokens of KV a core holds
    dims = math.ceil(kv_heads * head_dim / p)  # the K and V dimensions a core holds
    served = (heads // kv_heads) * math.ceil(dims / head_dim)  # query heads whose dimensions it holds
    group = min(p, math.ceil(head_dim / dims))
    products = (mac_s(mesh, served * dims * seqs, np.ceil(tokens / np.maximum(seqs, 1.0)), core_flops)
                + mac_s(mesh, served * tokens, min(dims, head_dim), core_flops))
    local = np.maximum(products, nbytes / (mesh.cores * mesh.sram_bandwidth))
    scores = act_bytes * served * tokens
    softmax = act_bytes * served * seqs
    outputs = act_bytes * served * min(dims, head_dim) * seqs
    return (local + allreduce_s(mesh, group, scores) + 2 * allreduce_s(mesh, p, softmax)
            + allreduce_s(mesh, p, outputs))


def prefill_attention_s(mesh: Mesh, chunk_tokens: float, context_tokens: float, heads: int, kv_width: int,
                        flops, nbytes, core_flops: float, kv_bytes: float):
    """Prefill attention of a chunk over its context on the P x P cores: the keys' tiles are
    transposed once (K^T), then, as in MeshGEMM, the key and value tiles rotate through the
    P steps (two hops each) while the cores compute, a step taking the longer of the two;
    the products are issued as MeshGEMM's, one instruction per key or value element over a
    core's ceil(chunk / P) query rows; the softmax's maximum and sum reduce along a line (one
    value per head and query row)."""
    p = mesh.side
    tile = math.ceil(context_tokens / p) * math.ceil(kv_width / p) * kv_bytes
    rotation = p * (mesh.message_s + 2 * mesh.hop_s + 2 * tile / mesh.link_bandwidth)
    rows = math.ceil(chunk_tokens / p)
    product = mac_s(mesh, flops / (2.0 * mesh.cores * rows), rows, core_flops)
    local = np.maximum(product, nbytes / (mesh.cores * mesh.sram_bandwidth))
    softmax = 4.0 * heads * rows
    return np.maximum(local, rotation) + transpose_s(mesh, tile) + 2 * allreduce_s(mesh, p, softmax)
