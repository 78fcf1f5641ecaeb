"""DeepSpeed-FastGen's Dynamic SplitFuse: forward passes of a fixed token count.

Policy (Holmes et al., "DeepSpeed-FastGen: High-throughput Text Generation for LLMs via MII
and DeepSpeed-Inference", arXiv:2401.08671, "Dynamic SplitFuse"; `RaggedBatchBase.
schedule_requests` in github.com/microsoft/DeepSpeed-MII). Every forward pass holds at
most the token budget (FastGen's `max_ragged_batch_size`): the running sequences' decode
tokens first, then prompt tokens fill the rest of it exactly, in arrival order. A long
prompt is split into chunks over several forward passes, its remainder going first in the
next one; short prompts are fused into one forward with the decodes, the last of them split
so that the budget is met exactly. Only a prompt's last chunk samples a token.

In this simulator's terms that is vLLM's chunked-prefill step (`VLLMScheduler`: the budget
handed out in running-table order, decodes first, one prompt in progress at the table's
end) under FastGen's limits and memory management. What makes it differ:
- KV blocks are taken chunk by chunk, as a prompt's tokens are computed, and no watermark is
  kept; `sarathi` allocates the whole prompt at admission. A prompt holds only what it has
  computed, so memory goes further, at the price of preemptions when the decodes and an
  admitted prompt's later chunks outgrow it;
- a prompt is admitted only if the blocks for all of it are free at that moment, without
  reserving them (FastGen's guard against deadlock: `_do_schedule_requests` stops at a
  prompt whose KV does not fit); `vllm` admits whatever chunk fits;
- the default forward size is 768 tokens, FastGen's `max_ragged_batch_size` (Sarathi's
  strict-SLO chunk is 512, vLLM's budget 2048).
As in FastGen only one prompt is ever in progress: the remainder of a split prompt is
scheduled before any later prompt, so a new prompt starts only in a forward where the
previous one completes. FastGen skips a decode that finds no free KV block and, when nothing
can run, drops the whole KV cache and recomputes every request; here the most recently
admitted running request is preempted instead (recomputed, or swapped with
`preemption_mode=swap`), the local form of that recovery, which keeps every other decode
running (stall-free, like Sarathi). The forward never exceeds the budget: decodes always
fit it (a sequence took at least one token of a step's budget when its prompt completed).

Knobs and defaults: `max_num_batched_tokens` is the forward size, 768 unless set;
`max_num_seqs` (256; FastGen's `max_ragged_sequence_count` is 512); `block_size` (16;
FastGen's KV blocks hold 128 tokens). `enable_chunked_prefill` is ignored: prompts are
always split.
"""
from __future__ import annotations

from .base import register
from .vllm import VLLMScheduler

# FastGen's default forward size (DeepSpeed's DSStateManagerConfig.max_ragged_batch_size).
FASTGEN_FORWARD_TOKENS = 768


@register("splitfuse")
class SplitFuseScheduler(VLLMScheduler):
    always_chunked = True  # chunked, so no admission watermark either
    chunked_budget_tokens = FASTGEN_FORWARD_TOKENS
    v1_engine = False  # DeepSpeed-FastGen: synchronous, no prefix caching unless asked
    prefix_caching_default = False
    serve_defaults = False  # its own budget and max_num_seqs, whatever the device

    def _try_start(self, budget: int, now_s: float, whole: bool = False, watermark: int = 0,
                   reserve_tokens: int = 0, full_prompt: bool = False) -> int:
        """Start the head request only if the blocks of all its tokens to compute are free now."""
        if not self.blocks.can_allocate(self.blocks.blocks_for(self.waiting[0].num_tokens)):
            return 0
        return super()._try_start(budget, now_s, whole, watermark, reserve_tokens, full_prompt)
