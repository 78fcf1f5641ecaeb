"""TensorRT-LLM's in-flight batching (PyTorch backend, 1.2): capacity and micro-batch schedulers.

Each step the executor (`PyExecutor`, `SimpleScheduler` over the C++ `CapacityScheduler` and
`MicroBatchScheduler` of `cpp/tensorrt_llm/batch_manager/`) walks its active requests in
arrival order (FCFS; here: the running table, then the waiting queue):
1. the capacity scheduler picks the requests that may run, by `capacity_scheduler_policy`:
   - `guaranteed_no_evict` (default): every generating request runs, and its remaining
     blocks, ceil((prompt + max_new_tokens) / tokens_per_block) less those it holds, count as
     reserved; a new request starts only if the free blocks cover all of its own, and the
     first that does not fit stops the scan (head-of-line). Nothing is ever evicted;
   - `max_utilization`: each request needs only this step's blocks (a new prompt all of its
     prompt's); when a request does not fit, the last started request (the latest arrival
     running) is paused, its blocks freed, and nothing new starts this step. A paused request
     is recomputed later with its generated tokens folded into its prompt; with
     `enable_block_reuse` its freed blocks stay cached and a restart hits what is left of them;
   - `static_batch`: `guaranteed_no_evict`, but new requests start only when none is
     generating (and none of the last step's is still being retired): a batch runs to its end;
2. the micro-batch scheduler fits them into `max_batch_size` requests and `max_num_tokens`
   tokens: one token per generating request first (past the budget the scan stops), then
   prompts. Without `enable_chunked_context` (the default) a prompt runs whole, and the first
   that does not fit what is left of the budget stops the scan (a prompt longer than
   `max_num_tokens` is rejected, as the LLM API does); with it, prompts are chunked first come
   first served, a cut chunk rounded down to a multiple of `tokens_per_block`.
A request's first step allocates blocks for its whole prompt (`addSequence`), later steps one
block whenever its sequence crosses a block boundary. The engine's max_new_tokens is the
trace's output_tokens: the simulator knows when a request stops, as trtllm-bench does with
EOS disabled.

The overlap scheduler (`disable_overlap_scheduler=false`, the default) schedules and launches
step n + 1 before it processes step n's results on the CPU. Modelled:
- the engine's CPU time per step overlaps the GPU's (the step takes the larger);
- a request that arrives while a step runs first runs in the step after the next;
- the documented extra decoding step: since PR #8587 ("early exit", October 2025) a request
  known to finish with step n (here every request: it stops at its max_new_tokens) is marked
  GENERATION_TO_COMPLETE and left out of step n + 1's batch, but it keeps its seat and KV
  blocks until step n's results are processed, during step n + 1. So here it finishes at step
  n's end, when its last token is sampled (its response is processed then, not a step later),
  and its blocks and seat are freed only after step n + 1 is scheduled (`retiring`). Earlier
  releases (the 1.0-era tables of validation/trtllm_tables.py) also ran it in step n + 1's
  batch, one wasted decode row per request; that is not modelled.

Not modelled: the "beneficial to skip" rule of block reuse (a prompt whose first new block
another prompt of the same step is computing waits a step to reuse it), draft tokens, beam
search, LoRA. A prompt that gets no chunk (fewer than tokens_per_block tokens left in the
budget) holds back the prompts behind it, where TensorRT-LLM would still start one short
enough. Pipeline parallelism runs as the simulator's virtual engines (engine/pipeline.py),
each with its share of the blocks and its own `max_batch_size`.

Knobs (TensorRT-LLM's names and defaults, deployment.py): `capacity_scheduler_policy`,
`max_batch_size` (2048), `max_num_tokens` (8192), `max_seq_len` (the model's context, capped
by the pool), `tokens_per_block` (32), `free_gpu_memory_fraction` (0.9), `enable_chunked_context`
(false), `enable_block_reuse` (true), `disable_overlap_scheduler` (false) and the CUDA-graph
knobs of perf/trtllm_plan.py; vLLM's knobs are an input error with this policy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..deployment import VLLM_ENGINE_KNOBS, Deployment
from ..engine.batch import ScheduledBatch, SpanPlan
from ..engine.request import Request
from ..errors import InputError
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.memory_plan import MemoryPlan
from ..perf.trtllm_plan import TrtllmGraphPlan, TrtllmMemoryPlan, plan_trtllm_memory
from .base import Scheduler, register

MAX_UTILIZATION, STATIC_BATCH = "max_utilization", "static_batch"


@dataclass(slots=True)
class TrtllmBatch(ScheduledBatch):
    """A step whose row slice holds `idle_rows` prompts in progress that get no tokens this
    step (a zero chunk, or a static batch's prompt waiting for its decodes to finish)."""

    idle_rows: int = 0

    @property
    def batch_size(self) -> int:
        return self.rows.stop - self.rows.start - self.idle_rows


@register("trtllm")
class TrtllmScheduler(Scheduler):
    foreign_engine, foreign_knobs = "vLLM", VLLM_ENGINE_KNOBS
    # its attention op runs a step's context requests and its generation requests through
    # separate kernels (thop/attentionOp.cpp): a decode costs the same beside a prompt
    mixed_decode_slowdown = False

    @classmethod
    def host_overlapped(cls, dep: Deployment) -> bool:
        return not dep.disable_overlap_scheduler

    @classmethod
    def resolve(cls, dep: Deployment) -> Deployment:
        """TensorRT-LLM's parallelism knobs in the simulator's terms: attention data
        parallelism makes the tp GPUs tp ranks at tp 1 (data_parallel_size), and experts
        spread whole over all the GPUs are expert parallelism."""
        cls.check_knobs(dep)
        gpus = dep.tp
        if dep.enable_attention_dp:
            dep = dep.model_copy(update={"data_parallel_size": dep.tp, "tp": 1})
        ep = dep.moe_expert_parallel_size
        if ep not in (None, 1):
            if ep != gpus:
                raise InputError(f"deployment: moe_expert_parallel_size: {ep} is modelled as 1 (experts split over "
                                 f"the GPUs) or all {gpus} GPUs (whole experts on each)")
            dep = dep.model_copy(update={"enable_expert_parallel": True})
        return dep

    @classmethod
    def forward_tokens(cls, dep: Deployment, max_model_len: int) -> int:
        return dep.max_num_tokens

    @classmethod
    def plan_memory(cls, device: DeviceSpec, model: ModelConfig, dep: Deployment,
                    forward_tokens: int) -> TrtllmMemoryPlan:
        return plan_trtllm_memory(device, model, dep)

    @classmethod
    def graph_plan(cls, dep: Deployment, forward_tokens: int) -> TrtllmGraphPlan:
        return TrtllmGraphPlan(dep)

    @classmethod
    def caches_prefixes(cls, dep: Deployment) -> bool:
        return dep.enable_block_reuse

    @classmethod
    def longest_request(cls, dep: Deployment, model: ModelConfig) -> int:
        return dep.max_seq_len or model.max_context

    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        super().__init__(dep, plan, model)
        self.policy = dep.capacity_scheduler_policy
        self.max_seqs, self.budget = dep.max_batch_size, dep.max_num_tokens
        self.chunked = dep.enable_chunked_context
        self.overlap = self.lags_arrivals = not dep.disable_overlap_scheduler
        # finished in the last step, blocks not yet freed: (request, blocks, computed tokens)
        self.retiring: list[tuple[Request, int, int]] = []

    def rejection_reason(self, req: Request) -> str | None:
        """Why a request can never run: longer than max_seq_len (or the KV pool), or a prompt
        that no step can hold (longer than max_num_tokens and not chunked into it)."""
        rec = req.record
        total = rec.input_tokens + rec.output_tokens
        if total > self.max_model_len:
            return f"input+output {total} tokens exceed max_seq_len {self.max_model_len} (capped by the KV pool)"
        # the longest prompt it may have to compute: after a pause, its generated tokens too
        prompt = rec.input_tokens + (rec.output_tokens - 1 if self.policy == MAX_UTILIZATION else 0)
        if prompt > self.budget and (not self.chunked or self.budget < self.block_size):
            what = "input" if prompt == rec.input_tokens else "input+output-1 (recomputed after a pause)"
            why = ("enable_chunked_context is off" if not self.chunked else
                   f"a cut chunk is a multiple of tokens_per_block {self.block_size}")
            return f"{what} {prompt} tokens exceed max_num_tokens {self.budget} and {why}"
        return None

    # -- one step ---------------------------------------------------------------------------
    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        self.blocks.tick(now_s)
        t = self.running
        if t.n == 0:  # the engine idled or ran an empty step: it has processed every result
            self._retire()
        batch = self._schedule(now_s, lag=self.overlap and t.n > 0)
        if batch is None and (self.retiring or self.waiting):
            # an empty step (all that could run is retiring or paused): the engine processes the
            # last step's results, fetches the new requests and schedules again at once
            self._retire()
            batch = self._schedule(now_s, lag=False)
        return batch

    def _schedule(self, now_s: float, lag: bool) -> ScheduledBatch | None:
        """The capacity scheduler, then the micro-batch scheduler (see the module docstring)."""
        t = self.running
        paused = self.policy == MAX_UTILIZATION and self._pause_to_fit(now_s)
        n, bs = t.n, self.block_size
        ntok, comp = t.num_tokens[:n], t.num_computed[:n]
        decoding = (ntok - comp == 1) & (ntok > t.input_tokens[:n])
        t.scheduled[:n] = 0
        decodes = decoding.nonzero()[0][:self.budget]
        t.scheduled[decodes] = 1
        need = np.maximum((ntok[decodes] + (bs - 1)) // bs - t.blocks[decodes], 0)
        self.blocks.allocate(int(np.add.reduce(need)))
        t.blocks[decodes] += need
        room = self.budget - decodes.size
        stalled = self.policy == STATIC_BATCH and (bool(decoding.any()) or bool(self.retiring))
        if not stalled and self._chunk_prompts(np.flatnonzero(~decoding), room) and not paused:
            self._admit(self.budget - int(np.add.reduce(t.scheduled[:n])), now_s, lag)
        active = t.scheduled[:t.n].nonzero()[0]
        if not active.size:
            return None
        batch = self._make_batch(slice(0, int(active[-1]) + 1))
        idle = batch.rows.stop - active.size
        if idle:  # prompts in progress that got no chunk: no tokens, no context read
            held = sum(t.num_computed.item(i) for i in range(batch.rows.stop) if not t.scheduled[i])
            batch = TrtllmBatch(batch.rows, batch.shape._replace(prefill_context=batch.shape.prefill_context - held),
                                batch.prefill_tokens, batch.decode_tokens, batch.kv_blocks_used, batch.completing,
                                batch.partial, batch.transfer_s, idle)
        self._retire()  # the last step's finished requests, processed while this one runs
        return batch

    def _chunk(self, remaining: int, room: int) -> int:
        """Tokens a prompt with `remaining` tokens to compute gets of `room`: all of them, or
        with chunking as many as fit rounded down to whole blocks."""
        if remaining <= room:
            return remaining
        return room // self.block_size * self.block_size if self.chunked else 0

    def _chunk_prompts(self, rows: np.ndarray, room: int) -> bool:
        """Give the running prompts in progress (`rows`, FCFS) their chunks of `room`; returns
        whether every one got one (else the prompts behind it wait)."""
        t = self.running
        for i in rows.tolist():
            take = self._chunk(t.num_tokens.item(i) - t.num_computed.item(i), room)
            if not take:
                return False
            t.scheduled[i] = take
            room -= take
        return True

    def _admit(self, room: int, now_s: float, lag: bool) -> None:
        """Start waiting requests in order while a seat, their blocks (by policy) and the token
        budget allow; with the overlap scheduler and a step in flight, only requests that
        arrived before that step was scheduled."""
        t, waiting, bs = self.running, self.waiting, self.block_size
        seats = self.max_seqs - t.n - len(self.retiring)
        free = self.blocks.free - (0 if self.policy == MAX_UTILIZATION else self._reserved_blocks())
        while waiting and seats > 0:
            req = waiting[0]
            if lag and req.ready_step > self.step_index:
                return
            take = self._chunk(self._tokens_to_compute(req), room)
            need = -(-(req.num_tokens if self.policy == MAX_UTILIZATION else self._final_tokens(req)) // bs)
            if need > free or not take or not self._try_start(take, now_s, reserve_tokens=req.num_tokens):
                return
            seats, free, room = seats - 1, free - need, room - take

    def _pause_to_fit(self, now_s: float) -> bool:
        """max_utilization: while the running requests' blocks for this step do not fit the free
        ones, pause the last started (recompute later); returns whether any was paused."""
        t, bs = self.running, self.block_size
        paused = False
        while t.n and int(np.add.reduce((t.num_tokens[:t.n] + (bs - 1)) // bs - t.blocks[:t.n])) > self.blocks.free:
            self._preempt_last(now_s)
            paused = True
        return paused

    def _reserved_blocks(self) -> int:
        """guaranteed_no_evict: the blocks the running requests have yet to take to complete."""
        t, n, bs = self.running, self.running.n, self.block_size
        return int(np.add.reduce((t.final_tokens[:n] + (bs - 1)) // bs - t.blocks[:n]))

    @staticmethod
    def _final_tokens(req: Request) -> int:
        return req.record.input_tokens + req.record.output_tokens

    def _tokens_to_compute(self, req: Request) -> int:
        """Prompt tokens a waiting request would compute if it started now (less what the
        cache holds of it)."""
        hits, _, own = self.blocks.computed_blocks(req)
        return req.num_tokens - req.num_computed - (hits + own) * self.block_size

    # -- the overlap scheduler's late release ---------------------------------------------------
    def _give_back(self, gone: np.ndarray) -> None:
        """Finished rows: with the overlap scheduler their blocks are freed only after the next
        step is scheduled (`_retire`)."""
        if not self.overlap:
            super()._give_back(gone)
            return
        t = self.running
        self.retiring += [(t.requests[i], t.blocks.item(i), t.num_computed.item(i)) for i in gone.tolist()]

    def _retire(self) -> None:
        for req, blocks, computed in self.retiring:
            self.blocks.free_request(req, blocks, computed, finished=True)
        self.retiring.clear()

    # -- spans ----------------------------------------------------------------------------------
    def may_start_waiting(self) -> bool:
        """Whether a waiting request could start at the next step. One held back by a limit that
        decode steps of the running requests do not relax (a running static batch, the seats,
        the blocks its policy wants, the token budget left by the decodes) stays held back
        until one of them finishes, so they may decode on as a span meanwhile."""
        t = self.running
        if not self.waiting:
            return False
        if self.retiring or t.n == 0:
            return True
        if self.policy == STATIC_BATCH or t.n >= self.max_seqs:
            return False
        head = self.waiting[0]
        if self.policy == MAX_UTILIZATION:  # the free blocks only shrink as the decodes grow
            blocked = self.blocks.blocks_for(head.num_tokens) > self.blocks.free
        else:  # the free blocks less the reservations stay the same
            blocked = self.blocks.blocks_for(self._final_tokens(head)) > self.blocks.free - self._reserved_blocks()
        return not blocked and self._chunk(self._tokens_to_compute(head), self.budget - t.n) > 0

    def plan_span(self, batch: ScheduledBatch, max_steps: int) -> SpanPlan | None:
        """A span ends before the first request's last step with the overlap scheduler (its
        blocks outlive it by a step), and at it while a waiting request is held back (its
        release may let that one start)."""
        t, n = self.running, self.running.n
        if n and (self.overlap or self.waiting):
            first_done = int(np.minimum.reduce(t.final_tokens[:n] - t.num_tokens[:n]))
            max_steps = min(max_steps, first_done - 1 if self.overlap else first_done)
        return super().plan_span(batch, max_steps)
