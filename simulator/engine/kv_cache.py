"""One replica's KV cache, as vLLM v1's KV-cache manager keeps it: paged blocks with the
prefix cache inside.

Blocks are counted, not tracked one by one: `used` is the number of distinct blocks that
running sequences hold, and `allocate(n)` succeeds when n blocks are free. With prefix
caching (`PrefixCache`), blocks no sequence uses any more stay cached until their memory
is needed: they count as free, and an allocation evicts as many as it must.

Policies see block counts only (`free`, `can_allocate`, `allocate`, `blocks_for`); the
request-level calls mirror vLLM's `get_computed_blocks` (`computed_blocks`: what a starting
request finds cached), `allocate_slots` (`start`, then `allocate`), caching a prompt's
full blocks once computed (`cache_prompt_blocks`) and `free` (`free_request`, `free_finished`,
`free_span_finishers`). The manager also integrates occupancy over simulated time for the
mean and peak KV-cache utilisation.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .prefix_cache import PrefixCache, block_keys

if TYPE_CHECKING:
    from .batch import SpanPlan
    from .request import Request, RequestTable


class KVCacheManager:
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
        self.named_prefixes = False  # whether a request has named prompt blocks (to register)

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

    # -- requests: what they find cached, what they hold, what they give back ------------
    def prefix_keys(self, req: Request) -> list[tuple]:
        """The names of `req`'s prompt blocks that its trace hashes cover (computed once)."""
        if req.prefix_keys is None:
            rec = req.record
            assert rec.prefix_hashes is not None  # asked only of requests whose trace names blocks
            req.prefix_keys = block_keys(rec.prefix_hashes, rec.prefix_block_tokens, rec.input_tokens, self.block_size)
            self.named_prefixes = self.named_prefixes or bool(req.prefix_keys)
        return req.prefix_keys

    def prefix_hit_tokens(self, record) -> int:
        """Prompt tokens of `record` whose KV this cache holds (in use or cached)."""
        cache = self.cache
        if cache is None or not record.prefix_hashes:
            return 0
        keys = block_keys(record.prefix_hashes, record.prefix_block_tokens, record.input_tokens, self.block_size)
        return cache.matching(keys, (record.input_tokens - 1) // self.block_size) * self.block_size

    def computed_blocks(self, req: Request) -> tuple[int, int, int]:
        """What the prefix cache holds of `req` if it started now, in blocks: its named prompt
        blocks present (hits), of those the ones no request uses (revived), and, after a
        preemption, its own run still cached (own). At least its last token is left to compute."""
        cache = self.cache
        hits = revived = own = 0
        if cache is not None and req.num_computed == 0 and (req.preemptions or req.record.prefix_hashes):
            limit = (req.num_tokens - 1) // self.block_size  # blocks that may be hits
            keys = self.prefix_keys(req) if req.record.prefix_hashes else ()
            if keys:
                hits = cache.matching(keys, limit)
                revived = sum(key in cache.cached for key in keys[:hits])
            if req.preemptions and hits == len(keys):
                own = min(cache.cached.get(("run", req), 0), limit - hits)
        return hits, revived, own

    def start(self, req: Request, hits: int, revived: int, own: int, first_start: bool) -> None:
        """`req` starts on what `computed_blocks` found: take references on its named hits,
        take back its own run (blocks beyond `own` are free again, without content), count
        the lookup. The caller then allocates the blocks it computes into."""
        cache = self.cache
        assert cache is not None  # called only with prefix caching
        if hits:
            assert req.prefix_keys is not None  # hits are among its named blocks
            req.held_keys = req.prefix_keys[:hits]
            cache.acquire(req.held_keys)
            self.revive(revived)
        if req.preemptions:
            cache.take_run(req)
            self.revive(own)
            cache.resumed_tokens += own * self.block_size
        if first_start and req.record.prefix_hashes:
            cache.lookup_tokens += req.record.input_tokens
            cache.hit_tokens += hits * self.block_size

    def cache_prompt_blocks(self, requests: list[Request], rows: list[int]) -> None:
        """Name the prompt blocks of the requests at `rows` that just finished their prompt."""
        cache = self.cache
        assert cache is not None  # blocks are named only with prefix caching
        for i in rows:
            req = requests[i]
            if req.prefix_keys:
                req.held_keys = req.held_keys + cache.register(req.prefix_keys[len(req.held_keys):])

    def free_request(self, req: Request, blocks: int, computed: int, finished: bool = False) -> None:
        """Give back a request's `blocks`, of which `computed` tokens hold KV: private ones are
        freed, named ones drop a reference. With prefix caching the full private blocks stay
        cached as the request's run (anonymous once it is `finished`), freed before its named
        blocks (vLLM frees a request's blocks tail first), so they are evicted first."""
        cache = self.cache
        if cache is None:
            self.release(blocks)
            return
        shared = len(req.held_keys)
        private = blocks - shared
        cache.keep_run(None if finished else req, min(private, computed // self.block_size - shared))
        if shared:
            private += cache.release(req.held_keys)
            req.held_keys = []
        self.release(private)

    def free_finished(self, table: RequestTable, gone: np.ndarray) -> None:
        """`free_request` the finished rows `gone` of the running table."""
        cache = self.cache
        if cache is None:
            self.release(sum(map(table.blocks.item, gone.tolist())))
        elif not cache.refs:
            self._free_private(table, gone)
        else:
            for i in gone.tolist():
                self.free_request(table.requests[i], table.blocks.item(i), table.num_computed.item(i), finished=True)

    def _free_private(self, table: RequestTable, gone: np.ndarray) -> list[int]:
        """`free_request` of finished rows while no named block is in use (so none holds one), all at
        once: each leaves its full blocks cached as an anonymous run, and consecutive such
        runs are one (PrefixCache.keep_run). Returns each row's run, in blocks. (A loop:
        a step finishes a few rows, fewer than make numpy's per-call cost worth it.)"""
        blocks, computed, bs = table.blocks, table.num_computed, self.block_size
        runs, freed = [], 0
        for i in gone.tolist():
            held = blocks.item(i)
            runs.append(min(held, computed.item(i) // bs))
            freed += held
        assert self.cache is not None  # called only with prefix caching
        self.cache.keep_run(None, sum(runs))
        self.release(freed)
        return runs

    def still_shared(self, table: RequestTable, remaining: np.ndarray, steps: int) -> np.ndarray:
        """Per running row: how many of its named blocks other sequences still use when it
        finishes within `steps` steps of a span; they stay in use (only a reference is
        dropped). Finishers release in the order `free_span_finishers` gives them back."""
        assert self.cache is not None  # called only with prefix caching
        n, refs = table.n, self.cache.refs
        kept = np.zeros(n, dtype=np.int64)
        gone = (remaining[:n] < steps).nonzero()[0]
        dropped: dict[tuple, int] = {}
        for i in gone[np.argsort(remaining[gone], kind="stable")].tolist():
            for key in table.requests[i].held_keys:
                dropped[key] = dropped.get(key, 0) + 1
                kept[i] += refs[key] > dropped[key]
        return kept

    def free_span_finishers(self, table: RequestTable, plan: SpanPlan, k: int) -> None:
        """The prefix cache after the first k steps of span `plan`, exactly as single steps
        would leave it: the blocks of the sequences that finished are given back in order of
        finishing (their named blocks join the LRU tail in that order), and as many cached
        blocks are evicted as the span's steps needed room for, finishers or not (the new
        blocks of growing sequences need it too; eviction takes the LRU head, so evicting
        late picks the same blocks as evicting step by step)."""
        n, cache, used = table.n, self.cache, plan.used
        assert cache is not None  # called only with prefix caching
        if plan.min_remaining > k:  # nobody finished: only the growing sequences need room
            if k > 1:
                over = int(np.maximum.reduce(used[1:k])) + cache.cached_blocks - self.num_blocks
                if over > 0:
                    cache.evict(over)
            return
        gone = (plan.remaining[:n] <= k).nonzero()[0]
        after = plan.remaining[gone]  # a finisher's blocks are free from this step on
        if not cache.refs:  # only private blocks: each finisher adds its run, in any order
            runs = self._free_private(table, gone)
            cached_at = cache.cached_blocks - sum(runs) + np.bincount(
                after, weights=runs, minlength=k + 1).cumsum()[1:k]
        else:
            order = np.argsort(after, kind="stable")
            cached = [cache.cached_blocks]
            for i in gone[order].tolist():
                self.free_request(table.requests[i], table.blocks.item(i), table.num_computed.item(i), finished=True)
                cached.append(cache.cached_blocks)
            cached_at = np.array(cached)[after[order].searchsorted(np.arange(1, k), side="right")]
        if k > 1:
            over = int(np.maximum.reduce(used[1:k] + cached_at)) - self.num_blocks
            if over > 0:
                cache.evict(over)
