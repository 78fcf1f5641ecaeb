"""Prefix caching: KV blocks shared by requests whose prompts start the same (vLLM's
automatic prefix caching, SGLang's radix cache at block granularity).

A trace says which prompts share a prefix through `prefix_hashes`: one hash per
`prefix_block_tokens` tokens (Mooncake's 512), each hash standing for its block *and*
everything before it (equal hashes mean equal prefixes). The engine's KV blocks are
smaller (16 tokens), so engine block j of a prompt is named by the hash of the trace block
holding its last token plus j: `(hash, j)`. Only engine blocks that lie wholly inside the
hashed part of the prompt have a name; the rest are always private.

A named block is either in use (reference count > 0: running requests read it) or cached
(count 0: kept in memory, reclaimable). Cached blocks are evicted least recently used
first; a finished request gives its blocks back last-block-first, so a chain's tail is
evicted before its head (the head is what most future requests share).
Accounting with the BlockManager: its `used` counts distinct blocks in use; cached blocks
count as free for admission and are evicted when a new allocation needs their memory.

vLLM v1 also hashes every full block of a request's own tokens, prompt and output alike, so
a preempted request finds whatever of its KV is still resident when it resumes and
recomputes only the rest. Such blocks can only ever be hit by their own request (a trace
names what requests share), so they are kept as one *run* per request: the count of its
full private blocks still cached, in LRU order with the named blocks. vLLM frees a request's
blocks tail first, so eviction eats a run from its end and what survives is always the run's
head: the resumed request hits `run` blocks after its named prefix.
"""
from __future__ import annotations

from collections import OrderedDict


def block_keys(hashes: tuple[int, ...], hash_block_tokens: int, input_tokens: int, block_size: int) -> list[tuple]:
    """Names of the prompt's engine blocks that a trace hash covers, from the first block."""
    hashed_tokens = min(len(hashes) * hash_block_tokens, input_tokens)
    return [(hashes[((j + 1) * block_size - 1) // hash_block_tokens], j) for j in range(hashed_tokens // block_size)]


class PrefixCache:
    """Reference counts of named KV blocks in use, and the LRU of cached (unused) blocks: named
    blocks (one entry each) and requests' private runs (an entry of several blocks)."""

    def __init__(self) -> None:
        self.refs: dict[tuple, int] = {}
        # The LRU: first `oldest_anonymous` blocks of finished requests' runs (never hit, so one
        # count is enough while nothing that can be hit is older), then `cached` in LRU order.
        self.oldest_anonymous = 0
        self.cached: OrderedDict[tuple, int] = OrderedDict()  # key -> blocks (1 for a named block)
        self.cached_blocks = 0  # blocks in the LRU
        self.hit_tokens = 0  # prompt tokens served from the cache on a request's first start
        self.lookup_tokens = 0  # prompt tokens of those first starts
        self.resumed_tokens = 0  # tokens a preempted request found still cached when it resumed
        self.evicted = 0
        self._finished_runs = 0  # keys of the runs of finished requests
        self._finished_tail: tuple | None = None  # the newest of them

    def matching(self, keys: list[tuple], limit: int) -> int:
        """How many of the first `limit` keys are present (in use or cached), from the first."""
        refs, cached = self.refs, self.cached
        k = 0
        for key in keys[:limit]:
            if key not in refs and key not in cached:
                break
            k += 1
        return k

    def acquire(self, keys: list[tuple]) -> int:
        """Take a reference on each (present) key; returns how many were cached, i.e. how
        many blocks move from reclaimable to in use."""
        refs, cached = self.refs, self.cached
        revived = 0
        for key in keys:
            if key in refs:
                refs[key] += 1
            else:
                del cached[key]
                refs[key] = 1
                revived += 1
        self.cached_blocks -= revived
        return revived

    def register(self, keys: list[tuple]) -> list[tuple]:
        """Name a request's freshly computed blocks; returns the keys it now holds. A block
        another request named meanwhile stays private to this one (computed twice)."""
        refs, cached = self.refs, self.cached
        held = []
        for key in keys:
            if key not in refs and key not in cached:
                refs[key] = 1
                held.append(key)
        return held

    def release(self, held: list[tuple]) -> int:
        """Drop a request's references, last block first; returns how many blocks became
        cached (no longer in use)."""
        refs, cached = self.refs, self.cached
        freed = 0
        for key in reversed(held):
            count = refs[key] - 1
            if count:
                refs[key] = count
            else:
                del refs[key]
                cached[key] = 1
                freed += 1
        self.cached_blocks += freed
        return freed

    def keep_run(self, owner: object | None, blocks: int) -> None:
        """Cache `owner`'s `blocks` full private blocks (its own tokens) as one run. A finished
        request's run (owner None) can never be hit, but it holds its place in the LRU."""
        if blocks <= 0:
            return
        cached = self.cached
        key: tuple[str, object]
        if owner is None:
            # Finished runs are never hit, so one that lands right after another joins it: the
            # LRU order of everything else is unchanged and eviction stays a short walk.
            if not cached:
                self.oldest_anonymous += blocks
                self.cached_blocks += blocks
                return
            tail = self._finished_tail
            if tail is not None and cached and next(reversed(cached)) is tail:
                cached[tail] += blocks
                self.cached_blocks += blocks
                return
            self._finished_runs += 1
            key = self._finished_tail = ("finished", self._finished_runs)
        else:
            key = ("run", owner)
        self.cached_blocks += blocks - cached.pop(key, 0)
        cached[key] = blocks

    def take_run(self, owner: object) -> int:
        """The blocks of `owner`'s run still cached, removed from the LRU (in use again)."""
        blocks = self.cached.pop(("run", owner), 0)
        self.cached_blocks -= blocks
        return blocks

    def evict(self, n: int) -> None:
        """Forget the n least recently used cached blocks (their memory is reused); a run
        loses its last blocks first."""
        self.cached_blocks -= n
        self.evicted += n
        anonymous = self.oldest_anonymous
        if n <= anonymous:
            self.oldest_anonymous = anonymous - n
            return
        self.oldest_anonymous = 0
        n -= anonymous
        cached = self.cached
        while n:
            key, blocks = next(iter(cached.items()))
            if blocks > n:
                cached[key] = blocks - n
                return
            del cached[key]
            n -= blocks
