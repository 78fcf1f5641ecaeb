"""The scheduler interface every serving policy implements, and the registry of policies.

A policy owns one replica's waiting queue, running set (`RequestTable`) and KV cache
(`KVCacheManager`, of which it sees block counts), and answers three calls from the engine:
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

import numpy as np

from ..deployment import TRTLLM_KNOBS, Deployment
from ..engine.batch import BatchOutcome, BatchShape, ScheduledBatch, SpanPlan, gaps
from ..engine.kv_cache import KVCacheManager
from ..engine.kv_offload import KVOffload
from ..engine.request import Request, RequestTable
from ..engine.swap_space import SwapSpace
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.cuda_graphs import GraphPlan
from ..perf.memory_plan import MemoryPlan, plan_memory
from .offloading import OffloadSteps
from .spans import SpanSteps

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


class Scheduler(SpanSteps, OffloadSteps):
    name = "base"
    role = "mixed"  # what its replica runs: prefill and decode ("mixed"), or one of them
    topology = "colocated"  # or "disaggregated": the name picks pools, each with its own policy
    prompt_only = False  # a request leaves after its prompt and first token (prefill pools)
    # Policies that chunk every prompt (`enable_chunked_prefill` ignored) set `always_chunked`
    # and their own default token budget.
    always_chunked = False
    chunked_budget_tokens = 2048  # vLLM's default with chunked prefill
    prefix_caching_default = False  # whether the engine modelled caches KV blocks unless told not to
    # whether decodes sharing a step with prefill chunks run the prefill kernel's slower path
    # (one attention call over all sequences, as vLLM's backends make it; perf/mixed_attention.py)
    mixed_decode_slowdown = True
    kv_offloading = False  # whether the policy runs with KV offloading (kv_offloading_size)
    # The other engine's knobs (deployment.py), refused by `check_knobs`: vLLM's policies
    # refuse TensorRT-LLM's and the reverse.
    foreign_engine, foreign_knobs = "TensorRT-LLM", TRTLLM_KNOBS
    # the most sequences and tokens one step holds, as the policy resolved its knobs
    max_seqs: int
    budget: int

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
    def device_defaults(cls, dep: Deployment, device: DeviceSpec) -> Deployment:
        """The deployment with the defaults the engine picks by device filled in where the user
        left them (backends/__init__.py: GPUs and CPUs): none unless the policy says otherwise."""
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
        return dep.max_model_len or model.max_context

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
        self.blocks = KVCacheManager(plan.usable_blocks, plan.block_size, self.caches_prefixes(dep))
        self.running = RequestTable(capacity=min(dep.max_num_seqs, 1024))
        self.waiting: deque[Request] = deque()
        self.waiting_work_tokens = 0
        self.max_model_len = min(self.longest_request(dep, model), plan.usable_blocks * plan.block_size)
        self.preemptions = 0
        self.swap: SwapSpace | None = None  # set by the engine when preemption_mode is swap
        self.swapped: deque[Request] = deque()  # preempted to host memory, FCFS
        self.offload: KVOffload | None = None  # set by the engine when kv_offloading_size is set
        self.loading: list[Request] = []  # waiting for KV blocks to load from the offload tier
        self._offload_now_s = 0.0  # the start of the step being scheduled (offloading only)
        self.span_in_flight: tuple[np.ndarray, SpanPlan] | None = None  # (step ends, the span's plan)
        self.step_index = 0  # steps the replica has started (set by it before asking for a batch)
        # whether an arrival first runs in the step after the next (asynchronous scheduling)
        self.lags_arrivals = False

    def batch_limits(self) -> dict[str, int]:
        """summary.json `batch_limits`: the most sequences and tokens one step of this engine
        holds, as resolved (unset knobs given the policy's, or the device's, defaults)."""
        return {"sequences": self.max_seqs, "tokens": self.budget}

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
        return bool(self.waiting) or bool(self.swapped) or self.running.n > 0 or bool(self.loading)

    def prefix_hit_tokens(self, record) -> int:
        """Prompt tokens of `record` whose KV this replica holds (in use or cached)."""
        return self.blocks.prefix_hit_tokens(record)

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
        return bool(self.loading)

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
        if self.offload is not None:
            return self._try_start_offloading(budget, now_s, whole, watermark, reserve_tokens, full_prompt)
        req = self.waiting[0]
        kv = self.blocks
        hits, revived, own = kv.computed_blocks(req)
        computed = req.num_computed + (hits + own) * self.block_size
        remaining = req.num_tokens - computed
        if remaining > budget and whole:
            return 0
        take = min(remaining, budget)
        total = kv.blocks_for(max(computed + take, reserve_tokens))
        needed = max(total, -(-req.num_tokens // self.block_size)) if full_prompt else total
        if not kv.can_allocate(needed - hits + revived, watermark):
            return 0
        self._pop_waiting()
        first_start = math.isnan(req.first_scheduled_s)
        if kv.cache is not None and req.num_computed == 0:
            kv.start(req, hits, revived, own, first_start)
            req.num_computed = computed
        kv.allocate(total - hits - own)
        if first_start:
            req.first_scheduled_s = now_s
        self.running.append(req, total, take, self._stop_at(req))
        return take

    def _stop_at(self, req: Request) -> int | None:
        """Tokens at which `req` leaves this replica: None for all of its output."""
        return req.record.input_tokens + 1 if self.prompt_only else None

    def _preempt_last(self, now_s: float) -> None:
        """Preempt the lowest-priority running request (vLLM's policy): swap its KV blocks
        out to host memory when swapping is on and host swap space is left, else free them
        and recompute it later from the front of the queue."""
        blocks = int(self.running.blocks[self.running.n - 1])
        req = self.running.pop_last()
        req.preemptions += 1
        self.preemptions += 1
        if self.swap is not None and self.swap.swap_out(blocks):
            self.blocks.free_request(req, blocks, 0)  # the GPU copy is gone either way; the host holds it
            req.swapped_blocks = blocks
            self.swapped.append(req)
            self.waiting_work_tokens += req.remaining_work_tokens
            return
        self.blocks.free_request(req, blocks, req.num_computed)
        req.num_computed = 0
        if self.offload is not None:  # behind the requests back from loads, as vLLM re-queues those first
            self._requeue_after_loads(req)
        else:
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
            assert self.swap is not None  # only requests swapped out wait in `swapped`
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
        longest = 0
        if nd:  # the longest decode (the mask only where prefill rows are among them)
            longest = np.maximum.reduce(ntok[~prefill] if idx.size else ntok)
        shape = BatchShape(prefill_tokens, float(prefill_context), pairs, nd, float(decode_context), size - len(partial),
                           float(longest))
        transfer_s = self.swap.take_transfer_s() if self.swap is not None else 0.0
        if self.offload is not None:
            transfer_s += self._offload_step_s(completing, partial)
        return ScheduledBatch(rows, shape, prefill_tokens, nd, self.blocks.used, completing, partial, transfer_s)

    def on_batch_done(self, batch: ScheduledBatch, now_s: float) -> BatchOutcome:
        """Apply a step: every row computes its scheduled tokens and all but `partial` sample one."""
        t, rows, partial = self.running, batch.rows, batch.partial
        self.blocks.tick(now_s)
        t.num_computed[rows] += t.scheduled[rows]
        t.scheduled[rows] = 0
        if self.blocks.named_prefixes:
            self.blocks.cache_prompt_blocks(self.running.requests, batch.completing)
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
        if self.offload is None:
            return BatchOutcome(self._take_finished(), [step_gaps])
        self._offload_after_step(batch, now_s)
        finished = self._take_finished()
        if finished:
            self.offload.finished(finished)
        return BatchOutcome(finished, [step_gaps])

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
        self.blocks.free_finished(self.running, gone)
