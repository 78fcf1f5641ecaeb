"""Orca's iteration-level scheduling: whole prompts join running decodes, KV reserved up front.

Policy (Yu et al., "Orca: A Distributed Serving System for Transformer-Based Generative
Models", OSDI 2022, Algorithm 1). Every iteration runs every running request
(each decodes one token) plus the whole prompts of the requests admitted at that
iteration, taken from the waiting queue in arrival order (FCFS) while `max_num_seqs`
sequences, the iteration's prompt-token budget and the KV memory allow. A finished request
leaves at the end of its iteration and its seat and memory go to the next one.

Modelling choices, and why:
- KV memory for a request's whole length (prompt + output) is reserved when it is
  admitted. Orca reserves a request's `max_tokens` slots so that a running request never
  runs out of memory; here the trace's output length is known, so the reservation is
  input + output tokens, the "Orca (Oracle)" baseline of the vLLM paper (Kwon et al.,
  SOSP 2023, section 6.1). Nothing can run out of memory, so there is no preemption.
  Memory is counted in `block_size` blocks like every policy of this package; a request's
  reservation is rounded up to whole blocks (at most block_size - 1 tokens more than Orca's
  contiguous slots).
- Prompts are never chunked: Orca's selective batching runs a prompt's tokens in one
  iteration. `enable_chunked_prefill` is ignored.
- Admission is FCFS and head-of-line: selection stops at the first waiting request whose
  reservation does not fit (Orca's Algorithm 1; so does the Orca baseline of the
  Sarathi-Serve repository, `OrcaScheduler`, which reserves max_model_len per request).
- Prompt tokens per iteration: `max_num_batched_tokens` when set. Orca itself has no such
  limit, so by default the only bound is the KV capacity (the reserved prompts of one
  iteration cannot hold more). A prompt longer than a set budget can never run and is
  rejected with the reason. Note that the memory plan reserves activation memory for a
  2048-token forward pass (with the default `enable_chunked_prefill`) unless
  `max_num_batched_tokens` is set, while an unbounded Orca iteration can be larger: set it
  to model the activation memory of large prefill batches.
- Orca's distributed engine keeps up to pp batches in flight in a pp-stage pipeline, drawn
  from one request pool. Here, as for every policy, a pp-stage replica is pp virtual engines
  (engine/pipeline.py): the same overlap of the stages, with the requests and the KV blocks
  split among the engines.

Knobs and defaults: `max_num_seqs` (256) is Orca's maximum batch size;
`max_num_batched_tokens` (unset: no prompt-token limit but the KV capacity); `block_size`
(16) the reservation granularity.
"""
from __future__ import annotations

from ..deployment import Deployment
from ..engine.batch import ScheduledBatch
from ..engine.request import Request
from ..models.config import ModelConfig
from ..perf.memory_plan import MemoryPlan
from .base import Scheduler, register


@register("orca")
class OrcaScheduler(Scheduler):
    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        super().__init__(dep, plan, model)
        self.max_seqs = dep.max_num_seqs
        self.budget = dep.max_num_batched_tokens or self.blocks.num_blocks * dep.block_size

    def rejection_reason(self, req: Request) -> str | None:
        reason = super().rejection_reason(req)
        if reason is None and req.record.input_tokens > self.budget:
            return (f"input {req.record.input_tokens} tokens exceed one whole-prompt step "
                    f"(max_num_batched_tokens {self.budget}): prompts are never chunked")
        return reason

    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        """Every running request decodes; then new requests start with their whole prompt."""
        self.blocks.tick(now_s)
        t = self.running
        t.scheduled[:t.n] = 1  # prompts complete in the iteration that admits them
        if self.may_start_waiting():
            self._admit_reserved(now_s)
        if t.n == 0:
            return None
        return self._make_batch(slice(0, t.n))

    def _admit_reserved(self, now_s: float) -> None:
        """FCFS admission of whole prompts, each reserving KV for its whole length."""
        t, budget = self.running, self.budget
        while self.waiting and t.n < self.max_seqs:
            rec = self.waiting[0].record
            take = self._try_start(budget, now_s, whole=True, reserve_tokens=rec.input_tokens + rec.output_tokens)
            if not take:
                return
            budget -= take
