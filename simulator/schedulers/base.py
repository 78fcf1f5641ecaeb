"""The scheduler interface every serving policy implements, and the registry of policies.

A policy owns one replica's waiting queue, running set (`RequestTable`) and KV blocks
(`BlockManager`), and answers three calls from the engine:
- `admit(req, now)`: accept a new request (or return the reason it can never be served);
- `next_batch(now)`: pick the next iteration's work, allocating KV blocks, or None if idle;
- `on_batch_done(batch, now)`: apply the iteration's progress (tokens computed, tokens
  sampled) and hand finished requests and inter-token gaps to the engine.
Policies never compute times: the engine asks the cost model for the batch's `shape`.
A new policy is one new module that subclasses `Scheduler` and calls `register`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..deployment import TRTLLM_KNOBS, Deployment
from ..engine.kv_cache import BlockManager
from ..engine.prefix_cache import block_keys
from ..engine.request import Request, RequestTable
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.cost_model import BatchShape
from ..perf.cuda_graphs import GraphPlan
from ..perf.memory_plan import MemoryPlan, plan_memory

REGISTRY: dict[str, type[Scheduler]] = {}


def register(name: str):
    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def get_scheduler(name: str) -> type[Scheduler]:
    _import_policies()

    if name not in REGISTRY:
        raise InputError(f"--scheduler {name}: unknown policy (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def _import_policies() -> None:
    """Import every module of this package: policies register themselves on import."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


@dataclass(slots=True)
class ScheduledBatch:
    """One iteration's work: the running-table rows `rows` with their `scheduled` tokens.

    Every row decodes one token except the prefill rows, listed by table index (a few per
    step): `completing` finish their prompt and sample a token, `partial` run a chunk that
    stops short of it and sample nothing.
    """

    rows: slice
    shape: BatchShape
    prefill_tokens: int
    decode_tokens: int
    kv_blocks_used: int
    completing: list[int]
    partial: list[int]
    transfer_s: float = 0.0  # host-link copies (swap out/in) on the step's critical path

    @property
    def batch_size(self) -> int:
        return self.rows.stop - self.rows.start


@dataclass(slots=True)
class BatchOutcome:
    """What an iteration (or a span) produced: finished requests and inter-token gaps."""

    finished: list[Request] | None  # each with last_token_s = its finish time
    gaps: list[tuple]  # (gap values in s, how many tokens saw each) pairs, see `gaps`


class Scheduler:
    name = "base"
    role = "mixed"  # what its replica runs: prefill and decode ("mixed"), or one of them
    prompt_only = False  # a request leaves after its prompt and first token (prefill pools)
    # Policies that chunk every prompt (`enable_chunked_prefill` ignored) set `always_chunked`
    # and their own default token budget.
    always_chunked = False
    chunked_budget_tokens = 2048  # vLLM's default with chunked prefill
    prefix_caching_default = False  # whether the engine modelled caches KV blocks unless told not to
    # whether decodes sharing a step with prefill chunks run the prefill kernel's slower path
    # (one attention call over all sequences, as vLLM's backends make it; perf/mixed_attention.py)
    mixed_decode_slowdown = True
    # The other engine's knobs (deployment.py), refused by `check_knobs`: vLLM's policies
    # refuse TensorRT-LLM's and the reverse.
    foreign_engine, foreign_knobs = "TensorRT-LLM", TRTLLM_KNOBS

    @classmethod
    def host_overlapped(cls, dep: Deployment) -> bool:
        """Whether the engine's CPU work of a step overlaps the GPU's (asynchronous scheduling)."""
        return False

    @classmethod
    def resolve(cls, dep: Deployment) -> Deployment:
        """The deployment with this policy's defaults filled in where the user left them."""
        cls.check_knobs(dep)
        if dep.enable_prefix_caching is None:
            dep = dep.model_copy(update={"enable_prefix_caching": cls.prefix_caching_default})
        return dep

    @classmethod
    def check_knobs(cls, dep: Deployment) -> None:
        """Refuse a knob of the engine this policy does not model (it would silently do
        nothing), naming this engine's knob for the same job where there is one."""
        for key, own in cls.foreign_knobs.items():
            if key in dep.model_fields_set:
                hint = f"; set {own} instead" if own else ""
                raise InputError(f"deployment: {key}: a {cls.foreign_engine} knob, which --scheduler {dep.scheduler} "
                                 f"does not read{hint}")

    @classmethod
    def plan_memory(cls, device: DeviceSpec, model: ModelConfig, dep: Deployment, forward_tokens: int) -> MemoryPlan:
        """The KV-cache plan of one device of the engine modelled (vLLM's: perf/memory_plan.py)."""
        return plan_memory(device, model, dep, forward_tokens)

    @classmethod
    def graph_plan(cls, dep: Deployment, forward_tokens: int) -> GraphPlan:
        """Which steps replay a CUDA graph, at what padded size (vLLM's: perf/cuda_graphs.py)."""
        return GraphPlan(dep, forward_tokens)

    @classmethod
    def caches_prefixes(cls, dep: Deployment) -> bool:
        """Whether KV blocks stay cached for reuse once released (`enable_prefix_caching`)."""
        return bool(dep.enable_prefix_caching)

    @classmethod
    def longest_request(cls, dep: Deployment, model: ModelConfig) -> int:
        """The most tokens (input + output) a request may have before the KV capacity caps it."""
        return dep.max_model_len or model.max_position_embeddings

    @classmethod
    def forward_tokens(cls, dep: Deployment, max_model_len: int) -> int:
        """The most tokens one forward pass holds, the token budget: `max_num_batched_tokens`,
        else the policy's chunk budget when it chunks prompts, else (vLLM's default without
        chunked prefill) room for the longest prompt. The memory plan reserves activations
        for a forward pass this large, as vLLM's profiling run does."""
        if dep.max_num_batched_tokens is not None:
            return dep.max_num_batched_tokens
        if cls.always_chunked or dep.enable_chunked_prefill:
            return cls.chunked_budget_tokens
        return max(max_model_len, 2048)

    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        self.dep = dep
        self.block_size = plan.block_size
        self.blocks = BlockManager(plan.usable_blocks, plan.block_size, self.caches_prefixes(dep))
        self.running = RequestTable(capacity=min(dep.max_num_seqs, 1024))
        self.waiting: deque[Request] = deque()
        self.waiting_work_tokens = 0
        self.max_model_len = min(self.longest_request(dep, model), plan.usable_blocks * plan.block_size)
        self.preemptions = 0
        self._named_prefixes = False  # whether a request has named prompt blocks (to register)
        self.swap: SwapSpace | None = None  # set by the engine when preemption_mode is swap
        self.swapped: deque[Request] = deque()  # preempted to host memory, FCFS
        self.span_in_flight: tuple[np.ndarray, SpanPlan] | None = None  # (step ends, the span's plan)
        self.step_index = 0  # steps the replica has started (set by it before asking for a batch)
        # whether an arrival first runs in the step after the next (asynchronous scheduling)
        self.lags_arrivals = False

    # -- admission -------------------------------------------------------------------
    def rejection_reason(self, req: Request) -> str | None:
        total = req.record.input_tokens + req.record.output_tokens
        if total > self.max_model_len:
            return f"input+output {total} tokens exceed max_model_len {self.max_model_len}"
        return None

    def admit(self, req: Request, now_s: float) -> str | None:
        reason = self.rejection_reason(req)
        if reason is None:
            self._push_waiting(req)
        return reason

    def _push_waiting(self, req: Request, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(req)
        self.waiting_work_tokens += req.remaining_work_tokens

    def _pop_waiting(self) -> Request:
        req = self.waiting.popleft()
        self.waiting_work_tokens -= req.remaining_work_tokens
        return req

    # -- state the engine and routers read --------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting) or bool(self.swapped) or self.running.n > 0

    def prefix_hit_tokens(self, record) -> int:
        """Prompt tokens of `record` whose KV this replica holds (in use or cached)."""
        cache = self.blocks.cache
        if cache is None or not record.prefix_hashes:
            return 0
        keys = block_keys(record.prefix_hashes, record.prefix_block_tokens, record.input_tokens, self.block_size)
        return cache.matching(keys, (record.input_tokens - 1) // self.block_size) * self.block_size

    def outstanding_work_tokens(self, now_s: float) -> int:
        """Tokens still to compute on this replica (prompts and outputs, waiting and running).

        While a span runs, its steps that have ended by `now_s` count as done, exactly as if
        each had been applied at its own end.
        """
        t, n = self.running, self.running.n
        running = int(np.add.reduce(t.final_tokens[:n] - t.num_computed[:n]))
        done = 0
        if self.span_in_flight is not None:
            ends, plan = self.span_in_flight
            done = plan.work_done(int(ends.searchsorted(now_s, side="right")))
        return running + self.waiting_work_tokens - done

    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        raise NotImplementedError

    def waiting_on_transfers(self) -> bool:
        """Whether KV copies in flight will free or bring work (so idling with work is fine)."""
        return False

    def may_start_waiting(self) -> bool:
        """Whether a waiting request could join the running set at the next step; while
        none can, the running sequences decode on unchanged and may run as one span."""
        return bool(self.waiting) or bool(self.swapped)

    # -- shared mechanics -------------------------------------------------------------
    def _try_start(self, budget: int, now_s: float, whole: bool = False, watermark: int = 0,
                   reserve_tokens: int = 0, full_prompt: bool = False) -> int:
        """Start the request at the head of the waiting queue with up to `budget` tokens
        scheduled (all of its uncomputed tokens if `whole`); returns the tokens scheduled,
        or 0 (and changes nothing) when it does not fit the budget or the KV blocks above
        `watermark`. `reserve_tokens` > 0 allocates blocks for that many tokens up front
        (policies that reserve a request's whole length, like Orca and static batching);
        `full_prompt` admits it only if the free blocks could hold its whole current prompt
        (vLLM 0.19's scheduler_reserve_full_isl: a test, not a reservation).

        With prefix caching the request starts after what the cache holds of it: the named
        blocks of its prompt that are present, then, if it was preempted, the run of its own
        blocks still cached (`PrefixCache.keep_run`); at least its last token is computed.
        """
        req = self.waiting[0]
        cache = self.blocks.cache
        hits = revived = own = 0
        if cache is not None and (req.preemptions or req.record.prefix_hashes):  # else nothing can hit
            hits, revived, own = self._cached_start(req)
        computed = req.num_computed + (hits + own) * self.block_size
        remaining = req.num_tokens - computed
        if remaining > budget and whole:
            return 0
        take = min(remaining, budget)
        total = self.blocks.blocks_for(max(computed + take, reserve_tokens))
        needed = max(total, -(-req.num_tokens // self.block_size)) if full_prompt else total
        if not self.blocks.can_allocate(needed - hits + revived, watermark):
            return 0
        self._pop_waiting()
        first_start = math.isnan(req.first_scheduled_s)
        if cache is not None and req.num_computed == 0:
            if hits:
                req.held_keys = req.prefix_keys[:hits]
                cache.acquire(req.held_keys)
                self.blocks.revive(revived)
            if req.preemptions:
                cache.take_run(req)  # blocks beyond `own` are free again, without content
                self.blocks.revive(own)
                cache.resumed_tokens += own * self.block_size
            req.num_computed = computed
            if first_start and req.record.prefix_hashes:
                cache.lookup_tokens += req.record.input_tokens
                cache.hit_tokens += hits * self.block_size
        self.blocks.allocate(total - hits - own)
        if first_start:
            req.first_scheduled_s = now_s
        self.running.append(req, total, take, self._stop_at(req))
        return take

    def _cached_start(self, req: Request) -> tuple[int, int, int]:
        """What the prefix cache holds of `req` if it started now, in blocks: its named prompt
        blocks present (hits), of those the ones no request uses (revived), and, after a
        preemption, its own run still cached (own). At least its last token is left to compute."""
        cache = self.blocks.cache
        hits = revived = own = 0
        if cache is not None and req.num_computed == 0:
            limit = (req.num_tokens - 1) // self.block_size  # blocks that may be hits
            keys = self._prefix_keys(req) if req.record.prefix_hashes else ()
            if keys:
                hits = cache.matching(keys, limit)
                revived = sum(key in cache.cached for key in keys[:hits])
            if req.preemptions and hits == len(keys):
                own = min(cache.cached.get(("run", req), 0), limit - hits)
        return hits, revived, own

    def _stop_at(self, req: Request) -> int | None:
        """Tokens at which `req` leaves this replica: None for all of its output."""
        return req.record.input_tokens + 1 if self.prompt_only else None

    def _prefix_keys(self, req: Request) -> list[tuple]:
        if req.prefix_keys is None:
            rec = req.record
            req.prefix_keys = block_keys(rec.prefix_hashes, rec.prefix_block_tokens, rec.input_tokens, self.block_size)
            self._named_prefixes = self._named_prefixes or bool(req.prefix_keys)
        return req.prefix_keys

    def _register_prefixes(self, completing: list[int]) -> None:
        """Name the prompt blocks of requests that just finished their prompt, for reuse."""
        cache, requests = self.blocks.cache, self.running.requests
        for i in completing:
            req = requests[i]
            if req.prefix_keys:
                req.held_keys = req.held_keys + cache.register(req.prefix_keys[len(req.held_keys):])

    def _release(self, req: Request, blocks: int, computed: int, finished: bool = False) -> None:
        """Give back a request's `blocks`, of which `computed` tokens hold KV: private ones are
        freed, named ones drop a reference. With prefix caching the full private blocks stay
        cached as the request's run (anonymous once it is `finished`), freed before its named
        blocks (vLLM frees a request's blocks tail first), so they are evicted first."""
        cache = self.blocks.cache
        if cache is None:
            self.blocks.release(blocks)
            return
        shared = len(req.held_keys)
        private = blocks - shared
        cache.keep_run(None if finished else req, min(private, computed // self.block_size - shared))
        if shared:
            private += cache.release(req.held_keys)
            req.held_keys = []
        self.blocks.release(private)

    def _preempt_last(self, now_s: float) -> None:
        """Preempt the lowest-priority running request (vLLM's policy): swap its KV blocks
        out to host memory when swapping is on and host swap space is left, else free them
        and recompute it later from the front of the queue."""
        blocks = int(self.running.blocks[self.running.n - 1])
        req = self.running.pop_last()
        req.preemptions += 1
        self.preemptions += 1
        if self.swap is not None and self.swap.swap_out(blocks):
            self._release(req, blocks, 0)  # the GPU copy is gone either way; the host holds it
            req.swapped_blocks = blocks
            self.swapped.append(req)
            self.waiting_work_tokens += req.remaining_work_tokens
            return
        self._release(req, blocks, req.num_computed)
        req.num_computed = 0
        self._push_waiting(req, front=True)

    def _swap_in(self, budget: int, now_s: float) -> int:
        """Bring swapped requests back (FCFS) while their blocks fit; returns budget used."""
        t, used = self.running, 0
        while self.swapped and t.n < self.dep.max_num_seqs and used < budget:
            req = self.swapped[0]
            take = min(req.num_tokens - req.num_computed, budget - used)
            need = max(req.swapped_blocks, self.blocks.blocks_for(req.num_computed + take))
            if not self.blocks.can_allocate(need):
                break
            self.swapped.popleft()
            self.waiting_work_tokens -= req.remaining_work_tokens
            self.swap.swap_in(req.swapped_blocks)
            self.blocks.allocate(need)
            t.append(req, need, take, self._stop_at(req))
            used += take
        return used

    def _make_batch(self, rows: slice) -> ScheduledBatch:
        """Aggregate the scheduled rows into the cost model's BatchShape.

        A row decodes when all but its newest token are computed and it is past its prompt;
        any other row runs a prefill chunk of `scheduled` tokens after `num_computed` cached.
        Prefill rows are few, so their sums run in Python over exact integers (and
        half-integers for the pairs): the same values as summing arrays in any order.
        """
        t = self.running
        ntok, comp = t.num_tokens[rows], t.num_computed[rows]
        prefill = ((ntok - comp) != 1) | (ntok <= t.input_tokens[rows])
        idx = prefill.nonzero()[0]
        size = rows.stop - rows.start
        decode_context = int(np.add.reduce(ntok))
        prefill_tokens = prefill_context = 0
        pairs = 0.0
        completing: list[int] = []
        partial: list[int] = []
        if idx.size:
            sched, computed, tokens = t.scheduled, t.num_computed, t.num_tokens
            for i in idx.tolist():
                i += rows.start
                c, ctx, total = sched.item(i), computed.item(i), tokens.item(i)
                prefill_tokens += c
                prefill_context += ctx + c
                pairs += c * (ctx + (c + 1) / 2.0)
                decode_context -= total
                (completing if ctx + c == total else partial).append(i)
        nd = size - len(idx)
        shape = BatchShape(prefill_tokens, float(prefill_context), pairs, nd, float(decode_context), size - len(partial))
        transfer_s = self.swap.take_transfer_s() if self.swap is not None else 0.0
        return ScheduledBatch(rows, shape, prefill_tokens, nd, self.blocks.used, completing, partial, transfer_s)

    def on_batch_done(self, batch: ScheduledBatch, now_s: float) -> BatchOutcome:
        """Apply a step: every row computes its scheduled tokens and all but `partial` sample one."""
        t, rows, partial = self.running, batch.rows, batch.partial
        self.blocks.tick(now_s)
        t.num_computed[rows] += t.scheduled[rows]
        t.scheduled[rows] = 0
        if self._named_prefixes:
            self._register_prefixes(batch.completing)
        first = self._first_tokens(batch.completing, now_s)
        last = t.last_token_s
        kept = [last.item(i) for i in partial]  # partial rows sample nothing: no gap, no new time
        for i in partial:
            last[i] = math.nan
        step_gaps = gaps(now_s, last[rows], batch.shape.sampled - first)
        last[rows] = now_s
        t.num_tokens[rows] += 1
        for i, held in zip(partial, kept):
            last[i] = held
            t.num_tokens[i] -= 1
        return BatchOutcome(self._take_finished(), [step_gaps])

    def _first_tokens(self, completing: list[int], now_s: float) -> int:
        """Stamp the first token of the `completing` rows that had none; returns how many."""
        requests, count = self.running.requests, 0
        for i in completing:
            req = requests[i]
            if math.isnan(req.first_token_s):
                req.first_token_s = now_s
                count += 1
        return count

    def _take_finished(self, give_back: bool = True) -> list[Request] | None:
        """Remove the finished rows from the running table (freeing their KV blocks unless
        the caller has given them back already); returns their requests, or None."""
        t, n = self.running, self.running.n
        done = t.num_tokens[:n] >= t.final_tokens[:n]
        gone = done.nonzero()[0]
        if not gone.size:
            return None
        if give_back:
            self._give_back(gone)
        return t.take(gone, (~done).nonzero()[0])

    def _give_back(self, gone: np.ndarray) -> None:
        """Free the KV blocks of the finished rows `gone`."""
        t, cache = self.running, self.blocks.cache
        if cache is None:
            self.blocks.release(sum(map(t.blocks.item, gone.tolist())))
        elif not cache.refs:
            self._give_back_private(gone)
        else:
            for i in gone.tolist():
                self._release(t.requests[i], t.blocks.item(i), t.num_computed.item(i), finished=True)

    def _give_back_private(self, gone: np.ndarray) -> list[int]:
        """`_release` of finished rows while no named block is in use (so none holds one), all
        at once: each leaves its full blocks cached as an anonymous run, and consecutive such
        runs are one (PrefixCache.keep_run). Returns each row's run, in blocks. (A loop:
        a step finishes a few rows, fewer than make numpy's per-call cost worth it.)"""
        blocks, computed, bs = self.running.blocks, self.running.num_computed, self.block_size
        runs, freed = [], 0
        for i in gone.tolist():
            held = blocks.item(i)
            runs.append(min(held, computed.item(i) // bs))
            freed += held
        self.blocks.cache.keep_run(None, sum(runs))
        self.blocks.release(freed)
        return runs

    # -- spans: a step, then decode steps of the same sequences until they finish --------
    def plan_span(self, batch: ScheduledBatch, max_steps: int) -> SpanPlan | None:
        """Plan `batch` followed by up to max_steps-1 pure-decode steps of its sequences.

        Valid while every running sequence samples a token every step (so `batch` completes
        each prompt it touches), nothing waits, and KV blocks suffice without preemption;
        sequences drop out as they finish. Returns None when no second step qualifies.
        """
        t, n = self.running, self.running.n
        if max_steps < 2 or self.may_start_waiting() or batch.rows != slice(0, n) or batch.shape.sampled != n:
            return None
        ntok = t.num_tokens[:n]  # all sampled at step 0, so computed + scheduled = ntok
        remaining = t.final_tokens[:n] - ntok  # steps each samples in, >= 1
        steps = int(min(np.maximum.reduce(remaining), max_steps))
        if steps < 2:
            return None
        lo = int(np.minimum.reduce(remaining))
        # Step j >= 1 decodes the sequences with remaining > j, each reading ntok + j tokens.
        step_index = np.arange(steps, dtype=np.float64)  # float: the contexts are float sums
        if lo >= steps:  # nobody finishes inside the span: the common short span
            active = np.full(steps, n)
            context = np.add.reduce(ntok) + step_index * n
        else:  # those done by step j: cumulative counts (and ntok sums) by remaining
            active = n - np.bincount(remaining, minlength=steps)[:steps].cumsum()
            ntok_done = np.bincount(remaining, weights=ntok, minlength=steps)[:steps].cumsum()
            context = (np.add.reduce(ntok) - ntok_done) + step_index * active
        # KV blocks: after step 0 sequence i holds ntok_i tokens; step j needs ceil((ntok_i + j) / bs)
        # blocks, a new one first at j0 = blocks*bs - ntok_i + 1, then every bs steps, while it is
        # active (j < remaining). A finished sequence frees all its blocks.
        bs = self.block_size
        j0 = t.blocks[:n] * bs - ntok + 1
        grows = np.maximum((np.minimum(remaining, steps) - j0 + (bs - 1)) // bs, 0)  # new blocks within the span
        # +1 at j0 and -1 at j0 + grows*bs on every bs-th step (a row that never grows cancels out)
        width = -(-(steps + bs) // bs) * bs
        comb = (np.bincount(j0, minlength=width) - np.bincount(j0 + grows * bs, minlength=width))[:width]
        new_per_step = comb.reshape(-1, bs).cumsum(axis=0).ravel()[:steps]
        held = self.blocks.used + new_per_step.cumsum()  # before releases
        used = held
        if lo < steps:
            gone = t.blocks[:n] + grows
            if self.blocks.cache is not None and self.blocks.cache.refs:
                gone = gone - self._still_shared(remaining, steps)
            freed = np.bincount(remaining, weights=gone, minlength=steps)[:steps]
            used = held - freed.cumsum().astype(np.int64)
        if np.maximum.reduce(used) > self.blocks.num_blocks:
            steps = int((used > self.blocks.num_blocks).nonzero()[0][0])
            if steps < 2:
                return None
        return SpanPlan(batch, steps, active[:steps], context[:steps], used[:steps], held[:steps], remaining, lo)

    def apply_span(self, plan: SpanPlan, ends_s: np.ndarray) -> BatchOutcome:
        """Apply the first k = len(ends_s) steps of `plan`; sequences finish at their own step."""
        t, n, k = self.running, self.running.n, len(ends_s)
        starts = np.concatenate(([self.blocks.since_s], ends_s[:-1]))
        self.blocks.advance(plan.used[:k], ends_s - starts, float(ends_s[-1]), int(plan.held[k - 1]))
        first_end = float(ends_s[0])
        if self._named_prefixes:
            self._register_prefixes(plan.batch.completing)
        first = self._first_tokens(plan.batch.completing, first_end)  # every row samples at step 0
        # gaps: at step 0 since each row's last token, then one step long for each active row
        span_gaps = [gaps(first_end, t.last_token_s[:n], n - first), (ends_s[1:] - ends_s[:-1], plan.active[1:k])]
        if plan.min_remaining <= k:  # some finish: each row samples in min(remaining, k) steps
            steps_in = np.minimum(plan.remaining, k)
            t.num_tokens[:n] += steps_in
            t.last_token_s[:n] = ends_s[steps_in - 1]
        else:
            t.num_tokens[:n] += k
            t.last_token_s[:n] = ends_s[-1]
        comp = t.num_computed[:n]
        np.subtract(t.num_tokens[:n], 1, out=comp)  # each row sampled at its last step
        t.scheduled[:n] = 0
        np.maximum(t.blocks[:n], (comp + (self.block_size - 1)) // self.block_size, out=t.blocks[:n])
        cached = self.blocks.cache is not None
        if cached:
            self._span_prefix_cache(plan, k)  # gives back the finished rows' blocks
        finished = self._take_finished(give_back=not cached) if plan.min_remaining <= k else None
        return BatchOutcome(finished, span_gaps)

    def _still_shared(self, remaining: np.ndarray, steps: int) -> np.ndarray:
        """Per running row: how many of its named blocks other sequences still use when it
        finishes within `steps` steps; they stay in use (only a reference is dropped).
        Finishers release in the order `_span_prefix_cache` gives their blocks back."""
        t, n, refs = self.running, self.running.n, self.blocks.cache.refs
        kept = np.zeros(n, dtype=np.int64)
        gone = (remaining[:n] < steps).nonzero()[0]
        dropped: dict[tuple, int] = {}
        for i in gone[np.argsort(remaining[gone], kind="stable")].tolist():
            for key in t.requests[i].held_keys:
                dropped[key] = dropped.get(key, 0) + 1
                kept[i] += refs[key] > dropped[key]
        return kept

    def _span_prefix_cache(self, plan: SpanPlan, k: int) -> None:
        """The prefix cache after the first k steps of a span, exactly as single steps would
        leave it: the blocks of the sequences that finished are given back in order of
        finishing (their named blocks join the LRU tail in that order), and as many cached
        blocks are evicted as the span's steps needed room for, finishers or not (the new
        blocks of growing sequences need it too; eviction takes the LRU head, so evicting
        late picks the same blocks as evicting step by step)."""
        t, n, cache = self.running, self.running.n, self.blocks.cache
        if plan.min_remaining > k:  # nobody finished: only the growing sequences need room
            if k > 1:
                over = int(np.maximum.reduce(plan.used[1:k])) + cache.cached_blocks - self.blocks.num_blocks
                if over > 0:
                    cache.evict(over)
            return
        gone = (plan.remaining[:n] <= k).nonzero()[0]
        after = plan.remaining[gone]  # a finisher's blocks are free from this step on
        if not cache.refs:  # only private blocks: each finisher adds its run, in any order
            runs = self._give_back_private(gone)
            cached_at = cache.cached_blocks - sum(runs) + np.bincount(
                after, weights=runs, minlength=k + 1).cumsum()[1:k]
        else:
            order = np.argsort(after, kind="stable")
            cached = [cache.cached_blocks]
            for i in gone[order].tolist():
                self._release(t.requests[i], t.blocks.item(i), t.num_computed.item(i), finished=True)
                cached.append(cache.cached_blocks)
            cached_at = np.array(cached)[after[order].searchsorted(np.arange(1, k), side="right")]
        if k > 1:
            over = int(np.maximum.reduce(plan.used[1:k] + cached_at)) - self.blocks.num_blocks
            if over > 0:
                cache.evict(over)


@dataclass(slots=True)
class SpanPlan:
    """Per-step arrays (index j = step j, step 0 being the scheduled batch) of a span."""

    batch: ScheduledBatch  # step 0
    steps: int
    active: np.ndarray  # sequences in step j
    decode_context: np.ndarray  # KV tokens read by step j's decodes (j >= 1)
    used: np.ndarray  # KV blocks in use during step j
    held: np.ndarray  # KV blocks held by the span's sequences at step j, before any is freed
    remaining: np.ndarray  # per running row: steps it samples in before it finishes
    min_remaining: int

    def work_done(self, steps: int) -> int:
        """Tokens of outstanding work (see outstanding_work_tokens) done by the first `steps`
        steps: step 0's scheduled tokens, one per active sequence in each later step, and the
        one token of context a sequence leaves behind when it finishes."""
        if steps == 0:
            return 0
        return (self.batch.shape.tokens + int(np.add.reduce(self.active[1:steps]))
                + int(np.count_nonzero(self.remaining <= steps)))


def gaps(now_s: float, last_token_s: np.ndarray, count: int) -> tuple:
    """Inter-token gaps ending now, as (distinct values, counts), from the `count` entries of
    last_token_s that are not NaN (NaN: no earlier token). Usually all share one value, and
    then the pair is of 1-tuples (cheaper than arrays for one step's single gap)."""
    if count == 0:
        return (), ()
    lo = np.fmin.reduce(last_token_s)
    if lo == np.fmax.reduce(last_token_s):
        return (float(now_s - lo),), (count,)
    return np.unique(now_s - last_token_s[~np.isnan(last_token_s)], return_counts=True)


class SwapSpace:
    """Host memory for swapped-out KV blocks of one replica, and the host link that copies them.

    Capacity is `swap_space` GiB per device (vLLM's knob), no more than the host memory's
    share per device. Copies block the step that makes them (vLLM v0 issues them on the
    compute stream before the step's kernels): each direction with bytes costs the link's
    latency plus bytes / bandwidth, added to that step's duration.
    """

    def __init__(self, capacity_blocks: int, bytes_per_block: float, bandwidth: float, latency_s: float):
        self.capacity_blocks, self.bytes_per_block = capacity_blocks, bytes_per_block
        self.bandwidth, self.latency_s = bandwidth, latency_s
        self.used_blocks = 0
        self.out_count = self.in_count = 0
        self.out_bytes = self.in_bytes = 0.0
        self.time_s = 0.0
        self.full = 0  # preemptions that found no swap space and recomputed instead
        self._pending = [0.0, 0.0]  # bytes out, bytes in, not yet charged to a step

    def swap_out(self, blocks: int) -> bool:
        if self.used_blocks + blocks > self.capacity_blocks:
            self.full += 1
            return False
        self.used_blocks += blocks
        self.out_count += 1
        self.out_bytes += blocks * self.bytes_per_block
        self._pending[0] += blocks * self.bytes_per_block
        return True

    def swap_in(self, blocks: int) -> None:
        self.used_blocks -= blocks
        self.in_count += 1
        self.in_bytes += blocks * self.bytes_per_block
        self._pending[1] += blocks * self.bytes_per_block

    def take_transfer_s(self) -> float:
        """Copy time the next step carries: the copies made since the last step."""
        seconds = sum(self.latency_s + b / self.bandwidth for b in self._pending if b)
        self._pending = [0.0, 0.0]
        self.time_s += seconds
        return seconds
