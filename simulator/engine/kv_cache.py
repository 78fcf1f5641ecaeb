"""The paged KV-cache block manager of one replica (vLLM's PagedAttention accounting).

Blocks are counted, not tracked one by one: `used` is the number of distinct blocks that
running sequences hold, and `allocate(n)` succeeds when n blocks are free. With prefix
caching (`PrefixCache`), blocks no sequence uses any more stay cached until their memory
is needed: they count as free, and an allocation evicts as many as it must. The manager
also integrates occupancy over simulated time for the mean and peak KV-cache utilisation.
"""
from __future__ import annotations

import numpy as np

from .prefix_cache import PrefixCache


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = False):
        if num_blocks < 1:
            raise ValueError("a replica needs at least one KV block")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.cache = PrefixCache() if prefix_caching else None
        self.used = 0
        self.peak = 0
        self._area = 0.0  # integral of used blocks over time
        self.since_s = 0.0

    @property
    def free(self) -> int:
        return self.num_blocks - self.used

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_allocate(self, n: int, watermark: int = 0) -> bool:
        return n <= self.num_blocks - self.used - watermark

    def allocate(self, n: int) -> None:
        used = self.used + n
        if used > self.num_blocks:
            raise RuntimeError(f"KV cache over-allocated: {n} blocks asked, {self.free} free")
        self.used = used
        if used > self.peak:
            self.peak = used
        cache = self.cache
        if cache is not None:  # evict the cached blocks whose memory the blocks in use now need
            over = used + cache.cached_blocks - self.num_blocks
            if over > 0:
                cache.evict(over)

    def revive(self, n: int) -> None:
        """n cached blocks are in use again (their memory was never given away)."""
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        if n > self.used:
            raise RuntimeError(f"KV cache: releasing {n} blocks but only {self.used} in use")
        self.used -= n

    def tick(self, now_s: float) -> None:
        """Account occupancy up to `now_s` (call before every change of `used`)."""
        self._area += self.used * (now_s - self.since_s)
        self.since_s = now_s

    def advance(self, used_per_step, durations_s, end_s: float, held: int) -> None:
        """Account a span of steps whose block use was `used_per_step` for `durations_s` each.

        `held` is the count left allocated at the end, before the span's finished sequences
        are released by the caller.
        """
        self._area += float(np.add.reduce(used_per_step * durations_s))
        self.peak = max(self.peak, int(np.maximum.reduce(used_per_step)))
        self.used = held
        self.since_s = end_s

    def mean_utilization(self, until_s: float) -> float:
        self.tick(until_s)
        return self._area / (until_s * self.num_blocks) if until_s > 0 else 0.0
