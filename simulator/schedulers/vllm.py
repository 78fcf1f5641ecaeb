"""vLLM's scheduler: continuous batching over a paged KV cache, preemption by recompute.

Two modes, as in the real engine:
- `enable_chunked_prefill=true` (vLLM v1, the default): one token budget
  (`max_num_batched_tokens`) per step. Running requests are served first, in priority
  order, each taking what it needs (1 token for a decode, the rest of its prompt for a
  prefill) while budget lasts, so a long prompt is chunked. New requests are then admitted
  from the waiting queue (FCFS) into the remaining budget, unless this step preempted.
- `enable_chunked_prefill=false` (vLLM v0): prefills first. If waiting prompts fit (whole,
  within the budget, `max_num_seqs` and the KV blocks above a 1 % watermark), the step is
  a prefill-only batch of them; otherwise it decodes every running request.
When a running request needs a KV block and none is free, the lowest-priority running
request (the most recently admitted) is preempted. With `preemption_mode=recompute` (the
default, vLLM v1's only mode) its blocks are freed and it goes back to the front of the
queue to recompute its prompt and generated tokens later; with `swap` (vLLM v0) its blocks
are copied to host memory and copied back, ahead of any new request, when blocks free up.

vLLM 0.19 (the v1 engine modelled) also:
- caches every full block of a request's tokens (automatic prefix caching, on by default):
  a preempted request resumes after the part of its KV still cached and recomputes only
  what was evicted (`Scheduler._try_start`);
- admits a waiting request only when the free blocks could hold its whole current prompt
  (`scheduler_reserve_full_isl`), though it allocates only the chunk it schedules;
- schedules asynchronously (`async_scheduling`): step n + 1 is scheduled while step n runs,
  so a request that arrives while a step is in flight first runs in the step after the next
  one (`ready_step`); with nothing in flight it is scheduled at once.
"""
from __future__ import annotations

import math

import numpy as np

from ..deployment import Deployment
from ..engine.batch import ScheduledBatch
from ..engine.request import Request
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.memory_plan import MemoryPlan
from .base import Scheduler, register
from .offloading import LOADING

# vLLM v0's BlockSpaceManager keeps 1 % of blocks free when admitting prompts.
V0_WATERMARK = 0.01
# `vllm serve`'s defaults by device (EngineArgs.get_batch_defaults, vllm/engine/arg_utils.py,
# vLLM 0.9 to 0.19): a device that reports at least 70 GiB (the platform's total memory) and
# whose name has no "a100" gets a token budget of 8192 and 1024 sequences; any other 2048 and
# 256. The A100 is kept at the small budget because a large one lowered its throughput (vLLM
# PR #17885). The offline LLM class's larger budgets (16384 / 8192) are not modelled: a run
# replays a server.
LARGE_DEVICE_BYTES = 70 * 2**30
LARGE_DEVICE_BUDGET_TOKENS, LARGE_DEVICE_SEQS = 8192, 1024
SERVE_SEQS = 256
# On a CPU (the same function's CPU branch) `vllm serve` takes 2048 tokens and 128 sequences
# per rank of the tp x pp group, whatever the memory.
CPU_BUDGET_TOKENS_PER_RANK, CPU_SEQS_PER_RANK = 2048, 128


@register("vllm")
class VLLMScheduler(Scheduler):
    # vLLM 0.19's engine (chunked prefill on): asynchronous scheduling and the full-prompt
    # admission check; policies built on this class's batching (Sarathi, SplitFuse) say False
    v1_engine = True
    prefix_caching_default = True  # vLLM v1: automatic prefix caching on by default
    kv_offloading = True  # its batching starts requests through Scheduler._try_start
    # whether unset max_num_seqs and max_num_batched_tokens take `vllm serve`'s defaults by
    # device; Sarathi and SplitFuse, built on this batching, keep their own
    serve_defaults = True

    @classmethod
    def device_defaults(cls, dep: Deployment, device: DeviceSpec) -> Deployment:
        """`vllm serve`'s max_num_batched_tokens and max_num_seqs on `device` where unset:
        on a GPU 8192 and 1024 on one of at least 70 GiB that is not an A100, else 2048 (the
        chunked budget, `forward_tokens`) and 256; on a CPU 2048 and 128 per tp x pp rank. As
        vLLM does, an unset max_num_seqs is at most the token budget when that is set (a
        budget without chunked prefill stays room for the longest prompt, `forward_tokens`)."""
        if not cls.serve_defaults:
            return dep
        if device.kind == "cpu":
            ranks = dep.tp * dep.pp
            budget, seqs, raise_budget = CPU_BUDGET_TOKENS_PER_RANK * ranks, CPU_SEQS_PER_RANK * ranks, True
        else:
            raise_budget = device.memory[0].capacity >= LARGE_DEVICE_BYTES and "a100" not in device.name.lower()
            budget, seqs = LARGE_DEVICE_BUDGET_TOKENS, (LARGE_DEVICE_SEQS if raise_budget else SERVE_SEQS)
        update: dict[str, int] = {}
        tokens = dep.max_num_batched_tokens
        if tokens is None and raise_budget and dep.enable_chunked_prefill:
            tokens = update["max_num_batched_tokens"] = budget
        if "max_num_seqs" not in dep.model_fields_set:
            update["max_num_seqs"] = seqs if tokens is None else min(seqs, tokens)
        return dep.model_copy(update=update)

    @classmethod
    def host_overlapped(cls, dep: Deployment) -> bool:
        """vLLM v1 (chunked prefill) schedules asynchronously; v0 (prefill-first) does not."""
        return cls.v1_engine and dep.async_scheduling and dep.enable_chunked_prefill

    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        super().__init__(dep, plan, model)
        self.chunked = self.always_chunked or dep.enable_chunked_prefill
        self.budget = self.forward_tokens(dep, self.max_model_len)
        self.max_seqs = dep.max_num_seqs
        self.watermark = 0 if self.chunked else math.ceil(V0_WATERMARK * self.blocks.num_blocks)
        self.lags_arrivals = self.v1_engine and self.chunked and dep.async_scheduling

    def rejection_reason(self, req: Request) -> str | None:
        reason = super().rejection_reason(req)
        if reason is None and not self.chunked:
            # Without chunking a prompt, and after a preemption its prompt plus the tokens
            # generated so far, must fit one step's budget and the blocks above the watermark.
            total = req.record.input_tokens + req.record.output_tokens
            room = min(self.budget, (self.blocks.num_blocks - self.watermark) * self.block_size)
            if total > room:
                return (f"input+output {total} tokens exceed one whole-prompt step ({room} tokens: "
                        f"max_num_batched_tokens {self.budget}, KV blocks above the watermark) "
                        "with chunked prefill off")
        return reason

    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        self.blocks.tick(now_s)
        if self.offload is not None:
            self._offload_begin(now_s)
        if not self.chunked and not self.swapped:
            start = self.running.n
            self._admit_waiting(self.budget, now_s, whole=True)
            if self.running.n > start:
                return self._make_batch(slice(start, self.running.n))
        scheduled, budget_left, preempted = self._schedule_running(now_s)
        if not preempted and scheduled == self.running.n:
            if self.swapped:  # swapped requests resume before any new one starts
                self._swap_in(budget_left, now_s)
            elif self.chunked:
                self._admit_waiting(budget_left, now_s, whole=False)
                if self.running.n == 0:  # nothing in flight either: the engine schedules at once
                    self._admit_waiting(budget_left, now_s, whole=False, lag=False)
            scheduled = self.running.n
        if scheduled == 0:
            return None
        return self._make_batch(slice(0, scheduled))

    def _schedule_running(self, now_s: float) -> tuple[int, int, bool]:
        """Give running requests their tokens in priority order; returns (rows, budget left, preempted)."""
        t, n, budget = self.running, self.running.n, self.budget
        if n == 0:
            return 0, budget, False
        comp = t.num_computed[:n]
        new = t.num_tokens[:n] - comp
        cum = new.cumsum()
        if cum[-1] <= budget:  # the common case: every row gets all it needs
            m, sched, after = n, new, t.num_tokens[:n]
        else:  # budget is consumed in order, so the scheduled rows are the prefix [0, m)
            before = cum - new
            m = int(before.searchsorted(budget))
            sched = np.minimum(budget - before[:m], new[:m])
            after = comp[:m] + sched
        bs = self.block_size
        need = np.maximum((after + (bs - 1)) // bs - t.blocks[:m], 0)  # blocks to hold `after` tokens
        total = int(np.add.reduce(need))
        preempted = False
        while total > self.blocks.free:
            victim = t.n - 1
            if victim < m:
                total -= int(need[victim])
                m = victim
            self._preempt_last(now_s)
            preempted = True
        self.blocks.allocate(total)
        t.blocks[:m] += need[:m]
        t.scheduled[:m] = sched[:m]
        if m < t.n:
            t.scheduled[m:t.n] = 0
        spent = min(int(cum[m - 1]), budget) if m else 0  # the first m rows' tokens, capped by the budget
        return m, budget - spent, preempted

    def _admit_waiting(self, budget: int, now_s: float, whole: bool, lag: bool = True) -> None:
        """FCFS admission from the waiting queue into `budget` tokens; with asynchronous
        scheduling (and `lag`), only of requests already known when the step before was
        scheduled."""
        t, waiting = self.running, self.waiting
        v1 = self.v1_engine and self.chunked
        lagged = lag and self.lags_arrivals
        while waiting and budget > 0 and t.n < self.max_seqs:
            if lagged and waiting[0].ready_step > self.step_index:
                break
            take = self._try_start(budget, now_s, whole, self.watermark,
                                   full_prompt=v1 and self.dep.scheduler_reserve_full_isl)
            if take <= 0:
                if take == LOADING:  # it waits for a load off the queue; the next may start
                    continue
                break
            budget -= take
