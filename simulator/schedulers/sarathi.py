"""Sarathi-Serve: stall-free batching of chunked prefills under a per-iteration token budget.

Policy (Agrawal et al., "Taming Throughput-Latency Tradeoff in LLM Inference with
Sarathi-Serve", OSDI 2024, section 4; `SarathiScheduler._schedule` in
github.com/microsoft/sarathi-serve). Each iteration
1. schedules every running request that is decoding, one token each: decodes never wait
   for a prefill (stall-free);
2. continues the prompt whose prefill is in progress with what is left of the budget;
3. admits new requests from the waiting queue (FCFS) into the rest of the budget, the last
   one admitted taking only a chunk of its prompt (decode-maximal batches).
When a decode needs a KV block and none is free, the lowest-priority (most recently
admitted) running request is preempted and recomputed later. A step that preempts admits
nothing new (vLLM's rule; Sarathi-Serve tries, but the head of its queue is then the request
just preempted, whose blocks no longer fit unless one step preempted several).

vLLM's chunked-prefill scheduler (`VLLMScheduler`) was modelled on Sarathi, and its step is
this schedule: it hands the budget out in running-table order, and the table lists the
decodes before the one prompt in progress (a prompt is chunked only when it takes the rest
of the budget, so nothing is admitted after it until it completes). The decodes always fit
the budget: a sequence takes at least one token of a step's budget in the step that
completes its prompt, so the next step's decodes are never more than the budget. What
differs, and is modelled here:
- KV blocks for the whole prompt (after a preemption: for all the tokens to recompute) are
  allocated when a request is admitted, however it is chunked, keeping
  `SARATHI_WATERMARK` of the blocks free (Sarathi-Serve's block manager is vLLM v0's); so a
  prompt in progress never needs blocks, and a request that could not be admitted even into
  an otherwise empty cache is rejected with the reason;
- the default budget is 512 tokens, the paper's chunk size for strict TBT SLOs.

Knobs and defaults: `max_num_batched_tokens` is the token budget (chunk size), 512 unless
set; `max_num_seqs` (256) bounds the running sequences; `block_size` (16);
`preemption_mode` as for vLLM (Sarathi-Serve itself only recomputes).
`enable_chunked_prefill` is ignored: Sarathi always chunks.
"""
from __future__ import annotations

from ..deployment import Deployment
from ..engine.request import Request
from ..models.config import ModelConfig
from ..perf.memory_plan import MemoryPlan
from .base import register
from .vllm import VLLMScheduler

# Chunk size of Sarathi-Serve's strict-SLO configurations (OSDI'24, section 5).
SARATHI_CHUNK_TOKENS = 512
# Fraction of KV blocks Sarathi-Serve's (vLLM v0's) block manager keeps free when admitting.
SARATHI_WATERMARK = 0.01


@register("sarathi")
class SarathiScheduler(VLLMScheduler):
    always_chunked = True
    chunked_budget_tokens = SARATHI_CHUNK_TOKENS
    v1_engine = False  # Sarathi-Serve: synchronous, no prefix caching unless asked
    prefix_caching_default = False
    serve_defaults = False  # its own budget and max_num_seqs, whatever the device

    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        super().__init__(dep, plan, model)
        self.watermark = int(SARATHI_WATERMARK * self.blocks.num_blocks)  # rounded down, as Sarathi-Serve does

    def rejection_reason(self, req: Request) -> str | None:
        reason = super().rejection_reason(req)
        # A request recomputes at most input + output - 1 tokens, all allocated at admission.
        room = (self.blocks.num_blocks - self.watermark) * self.block_size
        if reason is None and req.record.input_tokens + req.record.output_tokens - 1 > room:
            return f"input+output tokens exceed the {room} tokens of KV blocks above the admission watermark"
        return reason

    def _try_start(self, budget: int, now_s: float, whole: bool = False, watermark: int = 0,
                   reserve_tokens: int = 0, full_prompt: bool = False) -> int:
        """Admission that allocates the blocks of all the tokens the request has to compute."""
        reserve = max(reserve_tokens, self.waiting[0].num_tokens)
        return super()._try_start(budget, now_s, whole, watermark, reserve, full_prompt)
