"""The scheduler's side of KV offloading (engine/kv_offload.py, whose docstring states the
model): what a starting request finds in the tier, its load, the blocks each step hands the
tier, and the requests waiting for loads. A mixin of `Scheduler`, used only when the engine
has a `KVOffload` (`kv_offloading_size`); a run without one never enters this module.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections import deque

    from ..engine.batch import ScheduledBatch
    from ..engine.kv_cache import KVCacheManager
    from ..engine.kv_offload import KVOffload, Tracked
    from ..engine.request import Request, RequestTable

LOADING = -1  # `_try_start`: the request went off to wait for a load; try the next one
_EPS_S = 1e-12  # a load "has ended" at a step that starts within float rounding of its end


class _Policy(Protocol):
    """What the mixin reads of the policy it is mixed into (`Scheduler`)."""

    running: RequestTable
    blocks: KVCacheManager
    block_size: int
    waiting: deque[Request]
    waiting_work_tokens: int
    offload: KVOffload | None
    loading: list[Request]
    _offload_now_s: float

    def _pop_waiting(self) -> Request: ...

    def _stop_at(self, req: Request) -> int | None: ...

    def _tier_blocks(self, req: Request, hits: int, own: int) -> tuple[int, int]: ...

    def _store_upto(self, req: Request, full: int) -> None: ...

    def _start_loaded(self, req: Request, tracked: Tracked, budget: int, now_s: float, whole: bool,
                      watermark: int, reserve_tokens: int) -> int: ...

    def _loaded_at_front(self) -> int: ...


class OffloadSteps:
    """KV offloading for a policy (see the module docstring)."""

    def _offload_begin(self: _Policy, now_s: float) -> None:
        """At a step's start: requests whose loads have ended rejoin the front of the queue
        (in the order they started loading; they were its head then)."""
        self._offload_now_s = now_s
        if not self.loading:
            return
        off = self.offload
        assert off is not None
        tracked = off.tracked
        ready = [req for req in self.loading if tracked[req].ready_s <= now_s + _EPS_S]
        if not ready:
            return
        self.loading = [req for req in self.loading if tracked[req].ready_s > now_s + _EPS_S]
        at = self._loaded_at_front()  # behind those back from earlier loads, not started yet
        for req in reversed(ready):
            for key in tracked[req].loading_keys:
                if off.loading.get(key, math.inf) <= now_s + _EPS_S:
                    del off.loading[key]
            self.waiting.insert(at, req)  # its work was never taken off waiting_work_tokens

    def _loaded_at_front(self: _Policy) -> int:
        """How many requests back from loads lead the queue (they start first: they hold
        their blocks, and vLLM puts the requests it skipped for loads back first)."""
        assert self.offload is not None
        tracked, waiting = self.offload.tracked, self.waiting
        at = 0
        while at < len(waiting) and waiting[at] in tracked and tracked[waiting[at]].held >= 0:
            at += 1
        return at

    def _requeue_after_loads(self: _Policy, req: Request) -> None:
        """A preempted request goes back to the front of the queue, behind those back from loads."""
        self.waiting.insert(self._loaded_at_front(), req)
        self.waiting_work_tokens += req.remaining_work_tokens

    def next_wake_s(self: _Policy) -> float | None:
        """When the first load in flight ends (an idle engine wakes then), or None."""
        if not self.loading:
            return None
        assert self.offload is not None
        return min(self.offload.tracked[req].ready_s for req in self.loading)

    def _try_start_offloading(self: _Policy, budget: int, now_s: float, whole: bool, watermark: int,
                              reserve_tokens: int, full_prompt: bool) -> int:
        """`Scheduler._try_start` with the tier behind the device's prefix cache: the request
        starts after what the device holds of it and what the tier holds beyond that. With the
        native connector, a request with blocks to load takes them now, with its hits and the
        blocks of its first chunk (so that it can start when the load ends), leaves the queue
        and returns LOADING; it starts at a step after the load. With LMCache, the blocks load
        in the step it starts in."""
        req = self.waiting[0]
        kv, off, bs = self.blocks, self.offload, self.block_size
        assert off is not None and kv.cache is not None  # offloading needs prefix caching
        tracked = off.track(req)
        if tracked.held >= 0:
            return self._start_loaded(req, tracked, budget, now_s, whole, watermark, reserve_tokens)
        hits, revived, own = kv.computed_blocks(req)
        loaded, named = self._tier_blocks(req, hits, own)
        computed = req.num_computed + (hits + own + loaded) * bs
        remaining = req.num_tokens - computed
        if remaining > budget and whole:
            return 0
        take = min(remaining, budget)
        total = kv.blocks_for(max(computed + take, reserve_tokens))
        needed = max(total, -(-req.num_tokens // bs)) if full_prompt else total
        if not kv.can_allocate(needed - hits + revived, watermark):
            return 0
        self._pop_waiting()
        first_start = math.isnan(req.first_scheduled_s)
        keys = req.prefix_keys or []
        off.touch(keys, tracked)  # the lookup of a request that starts refreshes its blocks in the tier
        wait_s = max((off.loading.get(key, 0.0) for key in keys[:hits]), default=0.0) if off.loading else 0.0
        kv.start(req, hits, revived, own, first_start)
        if named:
            req.held_keys = req.held_keys + kv.cache.register(keys[hits:hits + named])
        req.num_computed = computed
        if first_start and req.record.prefix_hashes:
            off.lookup_tokens += req.record.input_tokens
            off.device_hit_tokens += hits * bs
            off.tier_hit_tokens += loaded * bs
            tracked.tier_blocks = loaded
        elif not first_start:
            off.resumed_blocks += loaded
        if loaded:  # the connector does not store again what it loaded
            tracked.stored = max(tracked.stored, hits + own + loaded)
        kv.allocate(total - hits - own)
        if not off.sync and (loaded or wait_s > now_s):
            end = now_s
            if loaded:
                end = off.load(loaded, now_s, off.ready_after(keys[hits:hits + named], tracked if loaded > named else None))
                tracked.loading_keys = keys[hits:hits + named]
                for key in tracked.loading_keys:
                    off.loading[key] = end
            tracked.held = total
            tracked.ready_s = max(end, wait_s)
            self.waiting_work_tokens += req.remaining_work_tokens  # still outstanding while it loads
            self.loading.append(req)
            return LOADING
        if loaded:
            off.load_in_step(loaded)
        if first_start:
            req.first_scheduled_s = now_s
        self.running.append(req, total, take, self._stop_at(req))
        return take

    def _start_loaded(self: _Policy, req: Request, tracked: Tracked, budget: int, now_s: float, whole: bool,
                      watermark: int, reserve_tokens: int) -> int:
        """Start a request whose load has ended: its tokens are computed and it holds the
        blocks of a first chunk; it takes more only for a longer chunk, when they are free."""
        kv = self.blocks
        held, computed = tracked.held, req.num_computed
        remaining = req.num_tokens - computed
        if remaining > budget and whole:
            return 0
        take = min(remaining, budget)
        total = kv.blocks_for(max(computed + take, reserve_tokens))
        if total > held and not kv.can_allocate(total - held, watermark):
            take = min(take, held * self.block_size - computed)  # what the blocks it holds take
            if take <= 0 or whole:
                return 0
            total = held
        self._pop_waiting()
        tracked.held = -1
        kv.allocate(max(total - held, 0))
        if math.isnan(req.first_scheduled_s):
            req.first_scheduled_s = now_s
        self.running.append(req, max(total, held), take, self._stop_at(req))
        return take

    def _tier_blocks(self: _Policy, req: Request, hits: int, own: int) -> tuple[int, int]:
        """Blocks of `req` to load from the tier beyond the device's `hits` named blocks and
        `own` blocks of its run, and how many of those are named: native, the tier's blocks
        that continue the device's prefix; LMCache, its prefix from the prompt's first token in
        whole chunks, less what the device holds. At least the last token is computed."""
        off, kv, bs = self.offload, self.blocks, self.block_size
        assert off is not None
        keys = kv.prefix_keys(req) if req.record.prefix_hashes else []
        limit = (req.num_tokens - 1) // bs
        run = off.run_blocks(off.tracked[req]) if req.preemptions else 0
        n = len(keys)
        if off.sync:
            tier = off.match(keys, 0, min(n, limit))
            if tier == n and run:
                tier += max(min(run, limit - n), 0)
            tier = tier // off.chunk * off.chunk
            if tier <= hits + own:
                return 0, 0
            return tier - hits - own, max(min(tier, n) - hits, 0) if not own else 0
        if hits < n:
            named = off.match(keys, hits, min(n, limit))
            mine = max(min(run, limit - hits - named), 0) if hits + named == n else 0
            return named + mine, named
        return max(min(run, limit - hits) - own, 0), 0

    def _store_upto(self: _Policy, req: Request, full: int) -> None:
        """Hand the tier `req`'s blocks up to `full` that it has not been handed yet."""
        off = self.offload
        assert off is not None
        tracked = off.tracked[req]
        if full <= tracked.stored:
            return
        keys = req.prefix_keys or []
        n = len(keys)
        start = max(tracked.stored, n)
        off.store(keys[tracked.stored:min(full, n)], tracked, start - n, full - start)
        tracked.stored = full

    def _offload_step_s(self: _Policy, completing: list[int], partial: list[int]) -> float:
        """Seconds the step being scheduled waits or copies: native, for the link to catch up
        with earlier stores; LMCache, its loads and the stores of the prompt chunks it
        completes."""
        off = self.offload
        assert off is not None
        now_s = self._offload_now_s
        if not off.sync:
            return off.begin_step(now_s)
        t, unit = self.running, self.block_size * off.chunk
        for i in completing + partial:  # prompt rows only: LMCache does not store decode tokens
            after = min(t.num_computed.item(i) + t.scheduled.item(i), t.input_tokens.item(i))
            self._store_upto(t.requests[i], after // unit * off.chunk)
        return off.step_copies_s(now_s)

    def _offload_after_step(self: _Policy, batch: ScheduledBatch, now_s: float) -> None:
        """native, once a step's tokens are computed: hand the tier every block the step
        filled (prefill chunks' blocks, and a decode's block when its last token lands) and
        queue their copy."""
        off = self.offload
        assert off is not None
        if off.sync:
            return
        t, bs, rows = self.running, self.block_size, batch.rows
        requests, computed = t.requests, t.num_computed
        for i in batch.completing + batch.partial:
            self._store_upto(requests[i], computed.item(i) // bs)
        for i in (computed[rows] % bs == 0).nonzero()[0].tolist():  # decodes that filled a block
            i += rows.start
            self._store_upto(requests[i], computed.item(i) // bs)
        off.flush_stores(now_s)
