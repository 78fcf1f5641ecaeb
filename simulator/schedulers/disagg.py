"""Disaggregated prefill and decode (DistServe, OSDI'24; Splitwise, ISCA'24): what a policy
does differently on either side.

Two pools of replicas, each with its own hardware, count, parallelism and policy: prefill
replicas run prompts (and sample the first token), decode replicas generate the rest. In
between, the request's KV cache crosses the link between the pools (`engine/kv_transfer.py`;
the pools are built by `topology/disaggregated.py`). Each side schedules with its pool's
policy (`prefill_scheduler`, `decode_scheduler`: vLLM's, Sarathi-Serve's or SplitFuse's,
all continuous batching over paged KV blocks); what changes is where each phase runs, and
that is a role mixed into the policy's class (`for_role`):

- `PrefillRole`: a request leaves its running set once its first token is sampled, but its
  KV blocks stay allocated until the transfer has read them (DistServe's decode instance
  pulls the cache), so a decode pool without room backs up into the prefill pool's memory
  and, through it, into prefill admission (back-pressure).
- `DecodeRole`: takes a request only after reserving its KV blocks and a sequence slot
  (`reserve`); when the copy lands (`accept`) the request joins the running set with its
  prompt computed and its first token sampled. Preemption on the decode side follows the
  deployment's mode (recompute runs the prompt again on the decode replica).

The registry entry `disagg` names the topology, not a policy.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from ..deployment import Deployment
from ..engine.request import Request
from ..errors import InputError
from .base import Scheduler, register

# The policies a pool can run: those that batch continuously over paged blocks and free a
# finished request's blocks at once (TensorRT-LLM's overlap scheduler frees them a step late,
# Orca and static batching reserve whole requests).
POOL_POLICIES = ("vllm", "sarathi", "splitfuse")


@register("disagg")
class Disaggregated(Scheduler):
    """Selects the disaggregated topology; its pools run `prefill_scheduler` and `decode_scheduler`."""

    topology = "disaggregated"

    @classmethod
    def resolve(cls, dep: Deployment) -> Deployment:
        """Only the knob check: each pool fills in its own policy's defaults."""
        cls.check_knobs(dep)
        return dep


class PrefillRole(Scheduler):
    """Mixed into a prefill pool's policy, ahead of it (see the module docstring and `for_role`)."""

    role = "prefill"
    prompt_only = True
    # called with (scheduler, request, KV blocks it holds) when a prompt is done
    handoff: Callable[[PrefillRole, Request, int], None]

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.sending = 0  # requests whose KV blocks wait for, or are in, a transfer
        self._held: list[int] = []  # blocks of the rows _take_finished is handing off

    def waiting_on_transfers(self) -> bool:
        return self.sending > 0

    def _give_back(self, gone: np.ndarray) -> None:
        """Keep the finished rows' blocks until the decode side has read them."""
        self._held = [self.running.blocks.item(i) for i in gone.tolist()]

    def _take_finished(self, give_back: bool = True) -> list[Request] | None:
        for req, held in zip(super()._take_finished(give_back) or (), self._held):
            self.sending += 1
            self.handoff(self, req, held)
        return None  # nothing is finished here: the decode pool completes requests

    def release_sent(self, req: Request, blocks: int, now_s: float) -> None:
        """The decode side has read the request's KV: free its blocks here."""
        self.blocks.tick(now_s)
        self.blocks.free_request(req, blocks, 0)  # its private blocks are the decode side's now
        self.sending -= 1


class DecodeRole(Scheduler):
    """Mixed into a decode pool's policy, ahead of it (see the module docstring and `for_role`)."""

    role = "decode"
    pull: Callable[[float], None]  # reserve room for, and start the copies of, waiting requests

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.lags_arrivals = False  # its work lands as KV copies, not arrivals
        self.reserved_seqs = 0
        self.landed: list[tuple[Request, int]] = []  # KV copies arrived during the step in flight

    def reserve(self, req: Request, now_s: float) -> int:
        """Reserve a sequence slot and the KV blocks of `req`'s prompt and first token;
        returns the blocks reserved, or 0 when there is no room now."""
        need = self.blocks.blocks_for(req.record.input_tokens + 1)
        if self.running.n + self.reserved_seqs >= self.dep.max_num_seqs or not self.blocks.can_allocate(need):
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


ROLES = {"prefill": PrefillRole, "decode": DecodeRole}


def check_pool_policy(knob: str, name: str) -> None:
    if name not in POOL_POLICIES:
        raise InputError(f"deployment: {knob}: {name!r} cannot run a disaggregated pool (one of: "
                         f"{', '.join(POOL_POLICIES)})")


@cache
def for_role(policy: type[Scheduler], role: str) -> type[Scheduler]:
    """`policy` as it runs in a pool of `role` ("prefill" or "decode"; "mixed": unchanged):
    a class whose role's methods come first and call the policy's (Python's method order)."""
    if role == "mixed":
        return policy
    return type(f"{role.capitalize()}{policy.__name__}", (ROLES[role], policy), {})
