"""KV offloading: KV blocks copied to a memory tier outside the device (the host's memory, a
CXL expander, NVMe drives) and loaded back when a request finds there what the device's
prefix cache no longer holds: a shared prompt prefix, or a preempted request's own tokens.
The knobs are vLLM's `--kv-offloading-size` (GiB, the total over a replica's devices) and
`--kv-offloading-backend` (vLLM 0.11.1 on; `native` the default since 0.14), plus
`kv_offloading_tier`, the hardware spec's tier that holds the blocks.

The tier is an LRU of blocks, as vLLM's CPU offloading manager (`LRUCachePolicy`) and LMCache's
local CPU and disk backends keep it: named prompt blocks one entry each, and each request's
private full blocks as one run (only that request can hit them, on resume), eaten from its
tail. Capacity: `kv_offloading_size` GiB / the bytes of one block over the replica's devices
(vLLM's `cpu_bytes_to_use / (bytes per block per worker x world size)`). Copies cross the
tier's link, each device moving its own share of a block over its own link: latency (the
link's and the tier's) + blocks x `kv_bytes_per_block` / bandwidth, where the bandwidth is the
slower of the link, per direction, and the tier (reading for loads, writing for stores). Each
direction is one FIFO queue: loads wait for loads, stores for stores.

Two backends, as vLLM's two connectors behave:

`native`, vLLM's OffloadingConnector (vllm/distributed/kv_transfer/kv_connector/v1/offloading):
- stores are write-through: every full block a step computes, prompt and output alike, is
  copied to the tier, queued when the step ends (vLLM submits a step's stores at the start of
  the next step on a stream of their own, so they never delay the step that made the KV);
  a block the tier already holds is only moved to the LRU's tail;
- a saturated link sets the pace: a step waits until the stores queued before the previous
  step began have finished (each step's stores get the whole next step to finish). vLLM waits
  for a pending store only when its GPU block is about to be reused (`jobs_to_flush`); the
  simulator counts blocks instead of tracking them, so it bounds the queue this way: with a
  link that stores a step's KV within a step, no step ever waits;
- loads are asynchronous: a request whose prompt continues in the tier past what the device
  holds gets blocks for those tokens and waits while they load (after their store has
  finished), then runs at the first step that starts after the load (vLLM's
  WAITING_FOR_REMOTE_KVS); the other requests' steps go on meanwhile. A request that hits
  device blocks another request is still loading waits for that load, as vLLM delays it.

`lmcache`, LMCache's vLLM connector (LMCacheConnectorV1) with LMCache's defaults
(`chunk_size` 256, `save_decode_cache` false, `use_layerwise` false):
- stores: the prompt's KV only, in whole chunks of 256 tokens, copied in the step that
  computes them (`wait_for_save`), so that step lasts its compute plus the copy;
- loads are synchronous: LMCache's prefix of the prompt, from its first token in whole chunks,
  less what the device holds, is copied in the step in which the request first runs
  (`start_load_kv` before the forward pass), which lasts its compute plus the copies.

Not modelled: two tiers at once (LMCache's CPU in front of its disk), vLLM's ARC policy and
`store_threshold`, blocks of a load protected from eviction while it runs (loads take
milliseconds), and LMCache's layer-wise pipelining.
"""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..metrics.distribution import summarize

if TYPE_CHECKING:
    from .request import Request

NATIVE, LMCACHE = "native", "lmcache"
LMCACHE_CHUNK_TOKENS = 256  # LMCache's default chunk_size (LMCACHE_CHUNK_SIZE)
ENGINES = {NATIVE: "vLLM OffloadingConnector", LMCACHE: "LMCache connector (LMCacheConnectorV1)"}


class Tracked:
    """What the offloading connector keeps of one request: its run's name in the tier, how many
    of its blocks were handed to the tier, the blocks it holds while it waits for a load (-1:
    not waiting), when that load ends, the named keys it loads and its tier hit at first start."""

    __slots__ = ("run", "stored", "held", "ready_s", "loading_keys", "tier_blocks")

    def __init__(self, run: int):
        self.run = run
        self.stored = 0
        self.held = -1
        self.ready_s = 0.0
        self.loading_keys: list[tuple] = []
        self.tier_blocks = 0


class KVOffload:
    """One engine's offloaded KV: the tier's LRU of blocks, its link's two queues, the requests
    it follows and what it counted (see the module docstring)."""

    def __init__(self, backend: str, tier: str, link: str, capacity_blocks: int, bytes_per_block: float,
                 read_bandwidth: float, write_bandwidth: float, latency_s: float, block_size: int):
        self.backend, self.tier, self.link = backend, tier, link
        self.sync = backend == LMCACHE  # copies on the step's critical path, prompts only
        self.chunk = LMCACHE_CHUNK_TOKENS // block_size if self.sync else 1  # blocks per unit stored and hit
        self.capacity = capacity_blocks
        self.bytes_per_block = bytes_per_block
        self.read_bandwidth, self.write_bandwidth, self.latency_s = read_bandwidth, write_bandwidth, latency_s
        self.lru: OrderedDict[tuple, int] = OrderedDict()  # key -> blocks: 1 for a named block, n for a run
        self.ready: dict[tuple, float] = {}  # key -> when its latest store has reached the tier
        self.used = 0  # blocks in the tier
        self.loading: dict[tuple, float] = {}  # named device blocks being loaded -> when the load ends
        self.tracked: dict[Request, Tracked] = {}
        self._serial = itertools.count()
        self.load_free_s = 0.0  # when the tier-to-device direction is free
        self.store_free_s = 0.0  # when the device-to-tier direction is free
        self._fence_s = 0.0  # native: the stores the next step waits for end then
        self._pending_keys: dict[tuple, None] = {}  # stores not yet copied: named blocks,
        self._pending_runs: list[tuple[Tracked, int, int]] = []  # and runs (request, first private block, blocks)
        self._sync_load_blocks = 0  # lmcache: blocks the step being scheduled loads
        # counters
        self.lookup_tokens = self.device_hit_tokens = self.tier_hit_tokens = 0
        self.resumed_blocks = 0
        self.loads = self.loaded_blocks = 0
        self.load_time_s = self.load_wait_s = 0.0
        self.stores = self.stored_blocks = 0
        self.store_time_s = self.store_stall_s = 0.0
        self.evicted_blocks = 0
        self.ttft_hit: list[float] = []  # first token - arrival of requests with tier hits at first start
        self.ttft_miss: list[float] = []  # and of the others

    # -- requests --------------------------------------------------------------------
    def track(self, req: Request) -> Tracked:
        tracked = self.tracked.get(req)
        if tracked is None:
            tracked = self.tracked[req] = Tracked(next(self._serial))
        return tracked

    def finished(self, requests: list[Request]) -> None:
        """Requests that completed: their TTFT by whether the tier served their first start.
        A finished request's run stays in the tier (never hit again) until evicted."""
        for req in requests:
            tracked = self.tracked.pop(req, None)
            if tracked is not None:
                (self.ttft_hit if tracked.tier_blocks else self.ttft_miss).append(
                    req.first_token_s - req.record.arrival_s)

    # -- the tier's LRU --------------------------------------------------------------
    def match(self, keys: list[tuple], start: int, stop: int) -> int:
        """How many of keys[start:stop] the tier holds, consecutively from `start`."""
        lru = self.lru
        k = 0
        for key in itertools.islice(keys, start, stop):
            if key not in lru:
                break
            k += 1
        return k

    def run_blocks(self, tracked: Tracked) -> int:
        """The head of the request's private blocks the tier holds."""
        return self.lru.get(("run", tracked.run), 0)

    def touch(self, keys: list[tuple], tracked: Tracked) -> None:
        """A lookup refreshes the request's blocks in the LRU, its first block last (vLLM's
        `touch` walks them in reverse, so a chain's tail is evicted before its head)."""
        lru = self.lru
        run = ("run", tracked.run)
        if run in lru:
            lru.move_to_end(run)
        for key in reversed(keys):
            if key in lru:
                lru.move_to_end(key)

    def ready_after(self, keys: list[tuple], tracked: Tracked | None) -> float:
        """When the stores of `keys` (and of the request's run) have all reached the tier."""
        ready = self.ready
        latest = max((ready[key] for key in keys), default=0.0)
        if tracked is not None:
            latest = max(latest, ready.get(("run", tracked.run), 0.0))
        return latest

    def _room(self, blocks: int) -> int:
        """Evict least recently used blocks until `blocks` more fit; returns how many do."""
        blocks = min(blocks, self.capacity)
        over = self.used + blocks - self.capacity
        lru = self.lru
        while over > 0:
            key, held = next(iter(lru.items()))
            if held > over:  # a run loses its last blocks first
                lru[key] = held - over
                self.used -= over
                self.evicted_blocks += over
                break
            del lru[key]
            self.ready.pop(key, None)
            self.used -= held
            self.evicted_blocks += held
            over -= held
        return blocks

    # -- stores ----------------------------------------------------------------------
    def store(self, keys: list[tuple], tracked: Tracked, private_start: int, private: int) -> None:
        """Hand the tier a request's newly computed blocks: its named `keys` and `private`
        private blocks from the `private_start`-th; copied at the next `flush_stores` (or, with
        LMCache, in the step). Named blocks the tier holds already are only refreshed."""
        lru, pending = self.lru, self._pending_keys
        for key in keys:
            if key in lru:
                lru.move_to_end(key)
            else:
                pending[key] = None  # once, should two requests compute the same block in a step
        if private > 0:
            self._pending_runs.append((tracked, private_start, private))

    def _pending_blocks(self) -> int:
        return len(self._pending_keys) + sum(count for _, _, count in self._pending_runs)

    def _copy_stores(self, ready_s: float) -> int:
        """Put the pending stores into the tier, ready at `ready_s`, evicting what they need;
        returns their blocks (if more than the tier holds, the newest of them stay)."""
        blocks = self._pending_blocks()
        if not blocks:
            return 0
        lru, ready = self.lru, self.ready
        entries = [(key, 1) for key in self._pending_keys]
        for tracked, start, count in self._pending_runs:
            run = ("run", tracked.run)
            if start == lru.get(run, 0):
                if run in lru:
                    lru.move_to_end(run)
                entries.append((run, count))
            else:  # the run's tail was evicted meanwhile: a gap, never hit, that takes room all the same
                entries.append((("gap", next(self._serial)), count))
        self._pending_keys, self._pending_runs = {}, []
        room = self._room(blocks)
        skip = blocks - room
        for key, count in entries:
            if skip >= count:
                skip -= count
                continue
            lru[key] = lru.get(key, 0) + count - skip
            ready[key] = ready_s
            skip = 0
        self.used += room
        self.stores += 1
        self.stored_blocks += blocks
        return blocks

    def flush_stores(self, now_s: float) -> None:
        """native: queue the stores of the step that just ended on the device-to-tier direction."""
        blocks = self._pending_blocks()
        if not blocks:
            return
        start = max(self.store_free_s, now_s)
        copy_s = self.latency_s + blocks * self.bytes_per_block / self.write_bandwidth
        self.store_free_s = start + copy_s
        self.store_time_s += copy_s
        self._copy_stores(self.store_free_s)

    def begin_step(self, now_s: float) -> float:
        """native: seconds the step starting now waits for stores (the link is saturated when
        the stores queued before the previous step began have not finished)."""
        stall = self._fence_s - now_s if self._fence_s > now_s else 0.0
        self._fence_s = self.store_free_s
        self.store_stall_s += stall
        return stall

    # -- loads -----------------------------------------------------------------------
    def load(self, blocks: int, now_s: float, after_s: float) -> float:
        """native: queue a load of `blocks` that may start once their stores are done
        (`after_s`); returns when it ends."""
        start = max(now_s, self.load_free_s, after_s)
        copy_s = self.latency_s + blocks * self.bytes_per_block / self.read_bandwidth
        self.load_free_s = start + copy_s
        self.loads += 1
        self.loaded_blocks += blocks
        self.load_time_s += copy_s
        self.load_wait_s += self.load_free_s - now_s
        return self.load_free_s

    def load_in_step(self, blocks: int) -> None:
        """lmcache: `blocks` are copied in the step being scheduled."""
        self._sync_load_blocks += blocks
        self.loads += 1
        self.loaded_blocks += blocks

    def step_copies_s(self, now_s: float) -> float:
        """lmcache: seconds the step being scheduled spends copying: its loads before the
        forward pass, its stores after; each direction with blocks costs its latency."""
        seconds = 0.0
        if self._sync_load_blocks:
            load_s = self.latency_s + self._sync_load_blocks * self.bytes_per_block / self.read_bandwidth
            self.load_time_s += load_s
            self.load_wait_s += load_s
            seconds += load_s
            self._sync_load_blocks = 0
        stored = self._copy_stores(now_s)  # looked up only by later steps
        if stored:
            store_s = self.latency_s + stored * self.bytes_per_block / self.write_bandwidth
            self.store_time_s += store_s
            seconds += store_s
        return seconds


def offload_summary(offloads: list[KVOffload], output_delay_s: float) -> dict[str, Any]:
    """summary.json's `kv_offload` block over every engine's offloaded KV (docs/contracts.md)."""
    first = offloads[0]
    looked = sum(o.lookup_tokens for o in offloads)
    device = sum(o.device_hit_tokens for o in offloads)
    tier = sum(o.tier_hit_tokens for o in offloads)
    per_block = first.bytes_per_block
    loaded = sum(o.loaded_blocks for o in offloads)
    stored = sum(o.stored_blocks for o in offloads)

    def ttft(values: list[float]) -> dict[str, float]:
        return summarize(np.array(values, dtype=float) + output_delay_s)

    hit = [v for o in offloads for v in o.ttft_hit if not math.isnan(v)]
    miss = [v for o in offloads for v in o.ttft_miss if not math.isnan(v)]
    return {
        "backend": first.backend, "engine": ENGINES[first.backend], "tier": first.tier, "link": first.link,
        "read_bandwidth_bytes_per_s": first.read_bandwidth, "write_bandwidth_bytes_per_s": first.write_bandwidth,
        "latency_s": first.latency_s, "capacity_blocks": sum(o.capacity for o in offloads),
        "bytes_per_block": per_block,
        "lookup_tokens": looked, "device_hit_tokens": device, "tier_hit_tokens": tier,
        "device_hit_rate": device / looked if looked else 0.0, "tier_hit_rate": tier / looked if looked else 0.0,
        "hit_rate": (device + tier) / looked if looked else 0.0,
        "resumed_blocks": sum(o.resumed_blocks for o in offloads),
        "loads": sum(o.loads for o in offloads), "loaded_blocks": loaded, "bytes_loaded": loaded * per_block,
        "load_time_s": sum(o.load_time_s for o in offloads), "load_wait_s": sum(o.load_wait_s for o in offloads),
        "stores": sum(o.stores for o in offloads), "stored_blocks": stored, "bytes_stored": stored * per_block,
        "store_time_s": sum(o.store_time_s for o in offloads),
        "store_stall_s": sum(o.store_stall_s for o in offloads),
        "evicted_blocks": sum(o.evicted_blocks for o in offloads),
        "ttft_s": {"with_tier_hits": ttft(hit), "without_tier_hits": ttft(miss)},
    }
