"""Which CUDA graph a step of vLLM 0.19 replays, and how many tokens it is padded to.

vLLM 0.19 captures graphs for a list of batch sizes (`VllmConfig._set_cudagraph_sizes`):
1, 2, 4, then every 8 up to 256 and every 16 above, up to the capture limit
min(2 x max_num_seqs, 512, max_num_batched_tokens) unless `max_cudagraph_capture_size`
sets it. A step of T tokens with T at most the limit is padded up to the next captured size
and replays a graph at that size: a FULL graph (attention inside) when every sequence decodes
one token, else a PIECEWISE graph whose attention runs eagerly between the captured pieces
(cudagraph_mode FULL_AND_PIECEWISE). A larger step runs the compiled model eagerly on its
exact token count. The logits and the sampler run after the graph, eagerly, on the sequences
that sample. `enforce_eager` captures nothing.

Inside a FULL graph the decode attention runs as captured. vLLM 0.19's FlashAttention-2
backend (its choice on compute capability 8.x and 12.x) lets the kernel pick how many parts to
split each sequence's KV into on the host, from the batch's longest sequence, and the capture
runs on dummy one-token sequences (`_dummy_run`: seq_lens = max_query_len = 1), so every
replay runs one part per sequence and KV head: a long sequence is not split, and the batch
waits for it (perf/context_skew.py). FlashAttention-3 (9.x) schedules ahead of time with up
to 16 splits kept under graphs, FlashInfer (10.x) plans each step's split outside the graph.
"""
from __future__ import annotations

import bisect

from ..deployment import Deployment

LARGEST_CAPTURE = 512


def capture_limit(dep: Deployment, budget_tokens: int) -> int:
    """The largest token count a graph is captured for (0: none)."""
    if dep.enforce_eager:
        return 0
    if dep.max_cudagraph_capture_size is not None:
        return dep.max_cudagraph_capture_size
    return min(2 * dep.max_num_seqs, LARGEST_CAPTURE, budget_tokens)


def capture_sizes(limit: int) -> list[int]:
    """The captured batch sizes up to `limit`, ascending (the largest becomes the limit)."""
    sizes = [1, 2, 4, *range(8, min(limit + 1, 256), 8), *range(256, limit + 1, 16)]
    return sorted({s for s in sizes if s <= limit})


def graphed_decode_unsplit(compute_capability: str | None) -> bool:
    """Whether vLLM's FULL-graph decode attention runs one KV part per sequence on a device of
    this CUDA compute capability (FlashAttention-2, see above); False where it is not known."""
    if compute_capability is None:
        return False
    return int(compute_capability.split(".")[0]) in (8, 12)


class GraphPlan:
    """Padding and graph mode of a step, for one deployment. Another engine's rule is a class
    with the same two methods (perf/trtllm_plan.py); `decode_only` says whether the step only
    decodes, which vLLM's PIECEWISE graphs do not need to know."""

    def __init__(self, dep: Deployment, budget_tokens: int):
        self.sizes = capture_sizes(capture_limit(dep, budget_tokens))
        self.limit = self.sizes[-1] if self.sizes else 0

    def padded(self, tokens: int, decode_only: bool = True) -> int:
        """The token count the step's graphed layers run on."""
        if tokens > self.limit:
            return tokens
        return self.sizes[bisect.bisect_left(self.sizes, tokens)]

    def graphed(self, tokens: int, decode_only: bool = True) -> bool:
        """Whether a step of `tokens` tokens replays a graph (FULL or PIECEWISE)."""
        return tokens <= self.limit
