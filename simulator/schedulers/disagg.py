"""Disaggregated prefill and decode (DistServe, OSDI'24; Splitwise, ISCA'24).

Two pools of replicas, each with its own hardware, count and parallelism: prefill replicas
run prompts (and sample the first token), decode replicas generate the rest. In between,
the request's KV cache crosses the link between the pools (`engine/kv_transfer.py`).
Both sides schedule like vLLM (continuous batching over paged KV blocks, with the
deployment's chunked-prefill setting on the prefill side), because that is what DistServe
and Splitwise build on; what changes is where each phase runs:

- `PrefillScheduler`: a request leaves its running set once its first token is sampled,
  but its KV blocks stay allocated until the transfer has read them (DistServe's decode
  instance pulls the cache), so a decode pool without room backs up into the prefill
  pool's memory and, through it, into prefill admission (back-pressure).
- `DecodeScheduler`: takes a request only after reserving its KV blocks and a sequence
  slot (`reserve`); when the copy lands (`accept`) the request joins the running set
  with its prompt computed and its first token sampled. Preemption on the decode side
  follows the deployment's mode (recompute runs the prompt again on the decode replica).

The registry entry `disagg` is the pair; `role` says which side a replica runs.
"""
from __future__ import annotations

from collections.abc import Callable

from ..engine.request import Request
from .base import register
from .vllm import VLLMScheduler


@register("disagg")
class PrefillScheduler(VLLMScheduler):
    role = "prefill"
    prompt_only = True
    # called with (scheduler, request, KV blocks it holds) when a prompt is done
    handoff: Callable[[PrefillScheduler, Request, int], None]

    def __init__(self, *args):
        super().__init__(*args)
        self.sending = 0  # requests whose KV blocks wait for, or are in, a transfer
        self._held: list[int] = []  # blocks of the rows _take_finished is handing off

    def waiting_on_transfers(self) -> bool:
        return self.sending > 0

    def _give_back(self, gone) -> None:
        """Keep the finished rows' blocks until the decode side has read them."""
        self._held = [self.running.blocks.item(i) for i in gone.tolist()]

    def _take_finished(self) -> list[Request] | None:
        for req, held in zip(super()._take_finished() or (), self._held):
            self.sending += 1
            self.handoff(self, req, held)
        return None  # nothing is finished here: the decode pool completes requests

    def release_sent(self, req: Request, blocks: int, now_s: float) -> None:
        """The decode side has read the request's KV: free its blocks here."""
        self.blocks.tick(now_s)
        self.blocks.free_request(req, blocks, 0)  # its private blocks are the decode side's now
        self.sending -= 1


class DecodeScheduler(VLLMScheduler):
    role = "decode"
    pull: Callable[[float], None]  # reserve room for, and start the copies of, waiting requests

    def __init__(self, *args):
        super().__init__(*args)
        self.lags_arrivals = False  # its work lands as KV copies, not arrivals
        self.reserved_seqs = 0
        self.landed: list[tuple[Request, int]] = []  # KV copies arrived during the step in flight

    def reserve(self, req: Request, now_s: float) -> int:
        """Reserve a sequence slot and the KV blocks of `req`'s prompt and first token;
        returns the blocks reserved, or 0 when there is no room now."""
        need = self.blocks.blocks_for(req.record.input_tokens + 1)
        if self.running.n + self.reserved_seqs >= self.max_seqs or not self.blocks.can_allocate(need):
            return 0
        self.blocks.tick(now_s)
        self.blocks.allocate(need)
        self.reserved_seqs += 1
        return need

    def waiting_on_transfers(self) -> bool:
        return self.reserved_seqs > 0

    def accept(self, req: Request, blocks: int) -> None:
        """The KV of `req` has arrived: it joins at the next step (like an arrival)."""
        self.reserved_seqs -= 1
        req.num_tokens = req.record.input_tokens + 1
        req.num_computed = req.record.input_tokens
        self.landed.append((req, blocks))

    def has_work(self) -> bool:
        return bool(self.landed) or super().has_work()

    def may_start_waiting(self) -> bool:
        return bool(self.landed) or super().may_start_waiting()

    def next_batch(self, now_s: float):
        self.pull(now_s)
        for req, blocks in self.landed:
            self.running.append(req, blocks, 0)
        self.landed.clear()
        return super().next_batch(now_s)


PrefillScheduler.decode_class = DecodeScheduler  # what the decode pool's replicas run
