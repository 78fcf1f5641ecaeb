"""FFN weights kept on a flash tier and read on demand every step (`flash_offload_gb`), as
"LLM in a flash" (Alizadeh et al., Apple, ACL 2024, arXiv 2312.11514) runs a model larger
than the memory of the device that computes it.

The paper keeps attention and embeddings in memory and the FFN on flash. For a ReLU model a
low-rank predictor, run on the layer's attention output, picks the FFN neurons the token will
activate (`flash_active_fraction` = a; OPT-6.7B about 0.1), and only their rows are read; the
up-projection column and down-projection row of a neuron are stored side by side (row-column
bundling), one read per neuron. Windowing keeps the neurons of the last k tokens
(`flash_window_tokens`) in memory, so a token reads only the neurons it activates that none of
them did. Taking each token's active set as independent draws of share a:

    needed by a step of T tokens         1 - (1 - a)^T
    not among the window's k tokens      (1 - a)^k
    bytes read per step                  flash bytes x (1 - (1 - a)^T) x (1 - a)^k

(T = 1: a (1 - a)^k of the flash bytes.) Consecutive tokens' active sets overlap more than
independent draws: the paper measures 2.4 % of OPT-6.7B's FFN read per token with k = 5 and
a = 0.1, where the formula gives 5.9 % (validation/README.md). A dense FFN (a = 1, the default:
SwiGLU models without relufication) reads every flash byte each step, or none with a window.

Each layer's read waits for that layer's predictor, so the reads do not overlap compute (the
paper reports flash, memory-management and compute latencies that add up to its per-token
total): a step pays one access latency per layer holding flash weights, and the bytes at the
tier's sequential bandwidth (the slower of the tier and its link). Flash reads small chunks
slower than large ones (the paper's bundling exists for that); no chunk-size efficiency is
applied, so the bandwidth is an upper bound for reads of a neuron's bundle (2 or 3 x hidden x
bytes per weight, a few KiB to tens of KiB).
"""
from __future__ import annotations

import math

from ..deployment import Deployment
from ..hardware.loader import System, Tier
from ..models.config import ModelConfig
from .memory_plan import ffn_layer_bytes, flash_weights_bytes


def flash_tier(system: System, dep: Deployment) -> Tier | None:
    """The tier that holds the flash weights: `flash_offload_tier` by name among the tiers
    reached over a link, else the node's first own tier (`node.tiers`: its NVMe drives);
    None where there is no such tier (topology.pools refuses the knob then)."""
    if dep.flash_offload_tier is None:
        return system.node_tiers[0] if system.node_tiers else None
    return next((t for t in system.memory_tiers if t.link is not None and t.name == dep.flash_offload_tier), None)


class FlashWeights:
    """The flash reads of one pipeline stage of one device, per step."""

    def __init__(self, tier: Tier, model: ModelConfig, dep: Deployment):
        self.tier = tier
        self.bytes = flash_weights_bytes(model, dep)
        self.layers = math.ceil(self.bytes / ffn_layer_bytes(model, dep))  # the layers whose FFN is on flash
        self.active, self.window = dep.flash_active_fraction, dep.flash_window_tokens

    def read_bytes(self, tokens: int) -> float:
        """Bytes a step of `tokens` tokens reads from flash (the module's formula)."""
        idle = 1.0 - self.active
        return self.bytes * (1.0 - idle ** tokens) * idle ** self.window

    def step_s(self, tokens: int) -> float:
        """What the reads add to one stage's step: a latency per layer, the bytes at bandwidth
        (nothing where the window holds every neuron the step needs)."""
        needed = self.read_bytes(tokens)
        if not needed:
            return 0.0
        return self.layers * self.tier.copy_latency + needed / self.tier.copy_bandwidth()
