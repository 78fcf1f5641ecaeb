"""Static (request-level) batching, as FasterTransformer serves: a batch runs to its end.

Policy. When the replica is idle, up to `max_num_seqs` waiting requests are taken in
arrival order (FCFS) while the KV memory for each one's whole length can be reserved; their
prompts are prefilled together in one iteration, then the batch decodes until every one of
its requests has finished. No request joins a running batch, however long it runs: the
next batch starts only when the replica is idle again. This is the request-level
scheduling the Orca paper (Yu et al., OSDI 2022) contrasts with its own and
that NVIDIA FasterTransformer and the "faster_transformer" baseline of the Sarathi-Serve
repository (`FasterTransformerScheduler`: new requests only when no sequence runs) model.

Modelling choices, and why:
- Admission, reservation and the prompt-token budget are Orca's (this policy is
  `OrcaScheduler` that admits only when idle; see orca.py): KV for input + output tokens is
  reserved up front, so nothing is ever preempted; prompts run whole; head-of-line FCFS;
  `max_num_batched_tokens`, when set, bounds the batch's prompt tokens.
- A finished request leaves the batch at once, freeing its KV blocks, and costs nothing
  afterwards. FasterTransformer keeps computing a finished sequence's padded row until the
  whole batch is done, and pads every prompt to the batch's longest; both are left out, so
  this policy is an optimistic bound on static batching (its throughput deficit against
  iteration-level policies is, if anything, larger in the real system).
- `may_start_waiting` is False while a batch runs, even with requests waiting: its decode
  steps then run as spans (see `Scheduler.plan_span`), each up to the next arrival.

Knobs and defaults: `max_num_seqs` (256) is the batch size; `max_num_batched_tokens`
(unset: no limit but the KV capacity) bounds a batch's prompt tokens; `block_size` (16).
"""
from __future__ import annotations

from .base import register
from .orca import OrcaScheduler


@register("static")
class StaticScheduler(OrcaScheduler):
    def may_start_waiting(self) -> bool:
        """A new batch starts only when the last one has completely finished."""
        return self.running.n == 0 and super().may_start_waiting()
