"""The serving policies besides vLLM: static, orca, sarathi and splitfuse.

- Headline behaviour on real loads (Llama-3.1-8B on one H100, uncalibrated roofline):
  Sarathi's stall-free chunking against vLLM v0's prefill-first steps on the Azure
  conversation trace, and iteration-level scheduling (orca, vllm) against static batching
  on outputs of very different lengths. Every bound is derived in its test's docstring.
- Each policy's defining mechanism on small hand-checkable cases (Llama-3.1-8B on one L4).
- Property tests (hypothesis) of every policy on small random traces and tight KV caches,
  with the invariants of every run, the mechanism each policy promises (no decode left out
  of a step, batches that run to their end, forward sizes) and exact fast-forward and
  determinism.
A step "leaves out" a decode when a running request past its prompt is not among the
step's rows: `checked_schedulers` wraps `next_batch` to catch that as it happens.
"""
from __future__ import annotations

import contextlib
import json
from itertools import islice
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_engine_properties import (
    HARDWARE,
    MODEL,
    assert_close,
    assert_frames_close,
    captured_schedulers,
    make_setup,
    pressure_traces,
    trace_file,
    traces,
    without_wall,
)
from test_scheduler_vllm import by_id, req, run, write_trace

from simulator import api
from simulator.api import prepare, run_setup
from simulator.errors import InputError
from simulator.paths import TRACES_DIR
from simulator.schedulers.sarathi import SARATHI_CHUNK_TOKENS, SARATHI_WATERMARK
from simulator.schedulers.splitfuse import FASTGEN_FORWARD_TOKENS
from simulator.workloads.formats import iter_azure
from simulator.workloads.trace import TraceIndex

POLICIES = ("static", "orca", "sarathi", "splitfuse")
BIG_HW, BIG_MODEL = "h100-sxm", "llama-3.1-8b"


# --- the stall check ---------------------------------------------------------------------------


def decodes_left_out(sched, batch) -> int:
    """Running requests past their prompt (one token to compute) that `batch` does not hold."""
    t, n = sched.running, sched.running.n
    ntok = t.num_tokens[:n]
    decoding = (ntok - t.num_computed[:n] == 1) & (ntok > t.input_tokens[:n])
    if batch is not None:
        decoding[batch.rows] = False
    return int(np.count_nonzero(decoding))


@contextlib.contextmanager
def checked_schedulers():
    """`captured_schedulers`, whose schedulers also assert after every `next_batch` that the
    step leaves no running decode out."""
    with captured_schedulers() as made:
        inner = api.get_scheduler

        def spy(name: str):
            cls = inner(name)

            class Checked(cls):  # type: ignore[misc, valid-type]
                def next_batch(self, now_s):
                    batch = super().next_batch(now_s)
                    assert decodes_left_out(self, batch) == 0, f"t={now_s}: a running decode was left out"
                    return batch

            return Checked

        with mock.patch.object(api, "get_scheduler", spy):
            yield made


def test_the_stall_check_catches_a_prefill_only_step(tmp_path):
    """vLLM v0 runs B's prompt in a step of its own while A decodes: the check must fire.
    The same case under every policy here passes it."""
    requests = [req(0.0, 100, 50), req(0.5, 200, 5)]
    with checked_schedulers(), pytest.raises(AssertionError, match="left out"):
        run(tmp_path, requests, scheduler="vllm", enable_chunked_prefill=False, max_num_batched_tokens=2048)
    for policy in POLICIES:
        with checked_schedulers():
            assert by_id(run(tmp_path, requests, scheduler=policy))["status"].eq("completed").all()


# --- headline behaviour on real loads ------------------------------------------------------------


def azure_slice(tmp_path, n: int, speedup: float):
    """The first n requests of the shipped Azure conversation trace, arriving speedup x faster."""
    rows = islice(iter_azure(TRACES_DIR / "azure-conv-2023.csv"), n)
    return write_trace(tmp_path / "azure.jsonl", [dict(r, arrival_s=r["arrival_s"] / speedup) for _, r in rows])


def run_big(trace, scheduler: str, **knobs) -> api.Result:
    setup = prepare(BIG_HW, BIG_MODEL, scheduler=scheduler, knobs=knobs, calibration="none")
    return run_setup(setup, TraceIndex.build(trace))


def test_sarathi_cuts_the_tbt_tail_of_prefill_first_batching_at_equal_throughput(tmp_path):
    """300 Azure conversation requests (prompts of 900 tokens on average, median ~1000)
    compressed 4x in time (~14 requests/s, ~30 running sequences): a loaded GPU.

    Stall-free means every inter-token gap is exactly one iteration, and Sarathi's iterations
    hold at most 512 prompt tokens besides the decodes: its TBT never exceeds its longest
    iteration, a decode step plus one 512-token chunk (~17 ms here). vLLM v0 runs waiting
    prompts whole, in prefill-only steps between decode steps: each running request's gap
    across such a step lasts a decode step plus the whole prompts' prefill. About 250 such
    steps each stall some 30 running sequences, several percent of all gaps, so v0's p99 is
    one of them: at least the median prefill-only step (~1000 prompt tokens, twice a chunk)
    plus a decode step; at this load the tail steps hold several prompts, 4x and more a
    chunk's cost. Hence Sarathi's p99 < 0.5x v0's. Both serve the same tokens, so the
    throughput is the same to within 10 % (only the tails' order of completion differs).
    """
    trace = azure_slice(tmp_path, 300, 4.0)
    v0 = run_big(trace, "vllm", enable_chunked_prefill=False)
    sarathi = run_big(trace, "sarathi")
    s_its, v_its = sarathi.iterations, v0.iterations
    assert s_its["prefill_tokens"].max() <= SARATHI_CHUNK_TOKENS
    assert sarathi.summary["tbt_s"]["max"] <= s_its["duration_s"].max() * (1 + 1e-9)
    prefill_only = v_its[v_its["decode_tokens"] == 0]["duration_s"]
    decode_only = v_its[v_its["prefill_tokens"] == 0]["duration_s"]
    v0_p99, sarathi_p99 = v0.summary["tbt_s"]["p99"], sarathi.summary["tbt_s"]["p99"]
    assert v0_p99 >= prefill_only.median() + decode_only.min()
    assert sarathi_p99 < 0.5 * v0_p99
    ratio = sarathi.summary["throughput"]["output_tokens_per_s"] / v0.summary["throughput"]["output_tokens_per_s"]
    assert 0.9 < ratio < 1.1
    assert sarathi.summary["requests"]["completed"] == v0.summary["requests"]["completed"] == 300


def test_iteration_level_scheduling_beats_static_batching_on_mixed_output_lengths(tmp_path):
    """128 requests at t=0, 64-token prompts, outputs alternating 16 and 512 tokens, 32 seats.

    Static batching runs 4 batches of 32, each for as long as its longest request: exactly
    4 x 512 iterations (a prefill, then 511 decode steps), in which it samples only
    16 x 16 + 16 x 512 = 264 x 32 of the 512 x 32 tokens its seats could (52 %).
    Iteration-level scheduling (orca, vllm) refills a seat the step it frees: it is
    work-conserving while requests wait, so it needs at most 128 x 264 / 32 = 1056 steps
    plus the drain of the last requests (at most one 512-token output), fewer than 1568.
    Decode steps of an 8B model cost nearly the same whatever the batch (weights dominate:
    they vary by < 20 % here), so throughput rises by about 512 / 264 = 1.9x, less the drain:
    at least 1.5x.
    """
    requests = [req(0.0, 64, 16 if i % 2 == 0 else 512) for i in range(128)]
    trace = write_trace(tmp_path / "mixed.jsonl", requests)
    static = run_big(trace, "static", max_num_seqs=32)
    assert len(static.iterations) == 4 * 512
    tokens = static.summary["throughput"]["output_tokens_per_s"]
    for policy in ("orca", "vllm"):
        result = run_big(trace, policy, max_num_seqs=32)
        assert len(result.iterations) < 1056 + 512
        assert result.summary["throughput"]["output_tokens_per_s"] > 1.5 * tokens, policy


# --- each policy's mechanism, by hand --------------------------------------------------------------


def test_static_batches_run_to_their_end_before_anyone_joins(tmp_path):
    """Seats for 3. r0-r2 arrive at 0 and start together; r3 (0.1 s) and r4 (0.2 s) arrive
    while that batch decodes 40 steps (~2.3 s on an L4) and wait for its last request, r2,
    to finish; then they start together, alone, since r5 comes only later (5 s)."""
    outputs = [10, 20, 40, 5, 5, 5]
    arrivals = [0.0, 0.0, 0.0, 0.1, 0.2, 5.0]
    result = run(tmp_path, [req(a, 30, o) for a, o in zip(arrivals, outputs)], scheduler="static", max_num_seqs=3)
    frame = by_id(result)
    start = frame["arrival_s"] + frame["queue_s"]
    assert start["r0"] == start["r1"] == start["r2"] == 0.0
    assert start["r3"] == pytest.approx(frame.loc["r2", "finish_s"], rel=1e-12)
    assert start["r4"] == pytest.approx(start["r3"], rel=1e-12)
    assert frame.loc["r0", "finish_s"] < frame.loc["r1", "finish_s"] < frame.loc["r2", "finish_s"]
    assert start["r5"] == 5.0
    its = result.iterations.sort_values("start_s")
    # prefill iterations hold only the batch's prompts, and the batch never grows afterwards
    assert its[its["prefill_tokens"] > 0]["prefill_tokens"].tolist() == [90, 60, 30]
    assert (its[its["prefill_tokens"] > 0]["decode_tokens"] == 0).all()
    assert result.summary["preemptions"] == 0


def test_orca_runs_a_whole_prompt_beside_the_decodes_and_reserves_its_whole_length(tmp_path):
    """A (100-token prompt, 50 outputs) decodes; B (2000-token prompt) arrives at 0.5 s and
    runs whole in the next step, together with A's decode (Orca's selective batching; vLLM
    v0 would run it alone). KV is reserved for input + output at admission: A holds
    ceil(150/16) = 10 blocks from its first step, B adds ceil(2005/16) = 126."""
    result = run(tmp_path, [req(0.0, 100, 50), req(0.5, 2000, 5)], scheduler="orca", block_size=16)
    its = result.iterations.sort_values("start_s").reset_index(drop=True)
    assert its.loc[0, "kv_blocks_used"] == 10
    j = int(its.index[its["prefill_tokens"] == 2000][0])
    assert its.loc[j, "decode_tokens"] == 1 and its.loc[j, "kv_blocks_used"] == 10 + 126
    assert (its["kv_blocks_used"] <= 136).all()  # reserved up front: decodes never grow it


def test_orca_rejects_a_prompt_larger_than_a_set_token_budget(tmp_path):
    result = run(tmp_path, [req(0.0, 600, 5), req(0.0, 500, 5)], scheduler="orca", max_num_batched_tokens=512)
    frame = by_id(result)
    assert frame.loc["r0", "status"] == "rejected" and "max_num_batched_tokens 512" in frame.loc["r0", "reason"]
    assert frame.loc["r1", "status"] == "completed"


def test_sarathi_allocates_the_whole_prompt_at_admission_splitfuse_chunk_by_chunk(tmp_path):
    """One 2000-token prompt, a 512-token budget, 16-token blocks: both run chunks of
    512, 512, 512, 464. Sarathi allocates ceil(2000/16) = 125 blocks at once; SplitFuse
    32, 64, 96, then 125 as the chunks are computed."""
    kv = {}
    for policy in ("sarathi", "splitfuse"):
        result = run(tmp_path, [req(0.0, 2000, 2)], scheduler=policy, max_num_batched_tokens=512, block_size=16)
        its = result.iterations.sort_values("start_s")
        assert its["prefill_tokens"].tolist() == [512, 512, 512, 464, 0]
        kv[policy] = its["kv_blocks_used"].tolist()[:4]
    assert kv == {"sarathi": [125] * 4, "splitfuse": [32, 64, 96, 125]}


def test_splitfuse_and_sarathi_wait_for_room_for_the_whole_prompt(tmp_path):
    """100 KV blocks of 16 tokens, a 512-token budget. A (800-token prompt, 100 outputs)
    holds 51 blocks while it decodes, for ~6 s. B (900-token prompt) arrives at 0.5 s: its
    first 511-token chunk would fit the 49 free blocks (32), its whole prompt (57) does not.
    SplitFuse (FastGen's admission check), Sarathi (which allocates the whole prompt) and
    vLLM 0.19 (which admits only what the free blocks could hold whole) start B the moment A
    finishes and never preempt; vLLM without that check (scheduler_reserve_full_isl=false, as
    before 0.19) starts B's first chunk at once, and its second chunk then needs more blocks
    than are free: B is preempted, again and again until A is done."""
    requests = [req(0.0, 800, 100), req(0.5, 900, 5)]
    for policy in ("splitfuse", "sarathi", "vllm"):  # vLLM 0.19: scheduler_reserve_full_isl
        result = run(tmp_path, requests, num_blocks=100, scheduler=policy, max_num_batched_tokens=512, block_size=16)
        frame = by_id(result)
        assert result.summary["preemptions"] == 0
        start = frame.loc["r1", "arrival_s"] + frame.loc["r1", "queue_s"]
        assert start == pytest.approx(frame.loc["r0", "finish_s"], rel=1e-12), policy
    vllm = by_id(run(tmp_path, requests, num_blocks=100, scheduler="vllm", max_num_batched_tokens=512, block_size=16,
                     scheduler_reserve_full_isl=False))
    assert vllm.loc["r1", "queue_s"] < 0.1 and vllm.loc["r1", "preemptions"] >= 1


def test_sarathi_rejects_what_its_admission_watermark_can_never_admit(tmp_path):
    """100 blocks of 16 tokens: the 1 % watermark keeps 1 free at admission, so at most
    99 x 16 = 1584 tokens can be allocated at once: a request recomputes (after a
    preemption) up to input + output - 1 tokens, so 1500 + 85 is just acceptable, 1500 + 86 not."""
    assert int(SARATHI_WATERMARK * 100) == 1
    result = run(tmp_path, [req(0.0, 1500, 86), req(0.0, 1500, 85)], num_blocks=100, scheduler="sarathi",
                 block_size=16)
    frame = by_id(result)
    assert frame.loc["r0", "status"] == "rejected" and "1584 tokens" in frame.loc["r0", "reason"]
    assert frame.loc["r1", "status"] == "completed"


# --- properties of every policy ----------------------------------------------------------------------

policy_knobs = st.fixed_dictionaries({
    "max_num_seqs": st.one_of(st.integers(1, 64), st.sampled_from([8, 64])),
    # None: each policy's own default (no limit for orca and static)
    "max_num_batched_tokens": st.one_of(st.none(), st.integers(16, 4096), st.sampled_from([16, 512])),
    "block_size": st.sampled_from([1, 8, 16, 32]),
    # 0.74-0.76 leaves ~500-4,000 KV tokens on the L4, 0.9 up to ~34,000
    "gpu_memory_utilization": st.one_of(st.floats(0.74, 0.76), st.floats(0.75, 0.9)),
    "replicas": st.integers(1, 2),
    "max_model_len": st.one_of(st.just(-1), st.just(-1), st.integers(64, 6000)),
    "pp": st.sampled_from([1, 1, 2]),  # 2: virtual engines with their share of the blocks
    "pipeline_overlap": st.booleans(),
})
# 1:2 for memory pressure (12-40 long requests at once): preemptions in sarathi and splitfuse
cases = st.one_of(st.tuples(policy_knobs, traces), st.tuples(policy_knobs, pressure_traces),
                  st.tuples(policy_knobs, pressure_traces))


@pytest.mark.parametrize("policy, forward, seqs", [("vllm", 8192, 1024), ("sarathi", SARATHI_CHUNK_TOKENS, 256),
                                                   ("splitfuse", FASTGEN_FORWARD_TOKENS, 256)])
def test_the_memory_plan_reserves_activations_for_the_policys_own_forward_pass(policy, forward, seqs):
    # Llama-3.1-8B, bf16, H100 (132 SMs; vllm takes `vllm serve`'s defaults there, 8192 tokens and
    # 1024 sequences): the profile run's peak is its sampler on min(seqs, forward) rows: bf16 logits and three fp32 copies over the 128,256-token
    # vocabulary, the Triton top-k/top-p buffer (132 rows), and the forward's hidden states;
    # the forward pass's own MLP peak, forward x (3 x 4096 + 3 x 14336) x 2 B, is smaller.
    plan = prepare("h100-sxm", "llama-3.1-8b", scheduler=policy, calibration="none").plan
    rows = min(forward, seqs)
    expected = max(rows * 128256 * 14 + 132 * 128256 * 4 + forward * 4096 * 2,
                   forward * (3 * 4096 + 3 * 14336) * 2)
    assert plan.activation_bytes == pytest.approx(expected, rel=1e-12)
    # What a smaller forward pass does not reserve goes to the KV cache.
    vllm = prepare("h100-sxm", "llama-3.1-8b", calibration="none").plan
    assert (plan.num_blocks - vllm.num_blocks) * plan.kv_bytes_per_block == pytest.approx(
        vllm.activation_bytes - plan.activation_bytes, abs=plan.kv_bytes_per_block)


def forward_budget(dep) -> int | None:
    """The token budget a policy works to (None: unlimited)."""
    defaults = {"sarathi": SARATHI_CHUNK_TOKENS, "splitfuse": FASTGEN_FORWARD_TOKENS}
    return dep.max_num_batched_tokens or defaults.get(dep.scheduler)


def check_policy_run(requests: list[dict], setup: api.Setup, result: api.Result, schedulers: list) -> None:
    dep, plan = setup.deployment, setup.plan
    policy, budget = dep.scheduler, forward_budget(dep)
    # Each of a pipelined replica's virtual engines has 1/pp of the blocks (engine/pipeline.py).
    num_blocks = plan.num_blocks // (dep.pp if dep.pipeline_overlap else 1) - 1  # less vLLM's null block
    summary, frame, its = result.summary, result.requests, result.iterations

    # Every request completes or is rejected, with a reason that says why it never could run.
    assert len(frame) == len(requests) == summary["requests"]["total"]
    assert set(frame["status"]) <= {"completed", "rejected"}
    done, rejected = frame[frame["status"] == "completed"], frame[frame["status"] == "rejected"]
    assert len(done) == summary["requests"]["completed"]
    max_len = min(dep.max_model_len or setup.model.max_position_embeddings, num_blocks * plan.block_size)
    watermark_room = (num_blocks - int(SARATHI_WATERMARK * num_blocks)) * plan.block_size

    def never_runs(row) -> str | None:
        if row.input_tokens + row.output_tokens > max_len:
            return "max_model_len"
        if policy in ("orca", "static") and budget is not None and row.input_tokens > budget:
            return "whole-prompt step"
        if policy == "sarathi" and row.input_tokens + row.output_tokens - 1 > watermark_room:
            return "watermark"
        return None

    for row in rejected.itertuples():
        assert never_runs(row) is not None and never_runs(row) in row.reason
    assert all(never_runs(row) is None for row in done.itertuples())

    # Causality (a request is submitted at env.now = previous arrival + (its arrival - that):
    # its queue time can be -1 ulp) and token accounting.
    assert (done["first_token_s"] > done["arrival_s"]).all()
    assert (done["finish_s"] >= done["first_token_s"]).all() and (done["queue_s"] >= -1e-12).all()
    assert summary["tbt_s"]["count"] == int((done["output_tokens"] - 1).sum())

    # KV capacity, and every block back at the end.
    assert (its["kv_blocks_used"] <= num_blocks).all()
    for s in schedulers:
        assert s.blocks.used == 0 and s.running.n == 0 and not s.waiting

    # Batch limits of each policy.
    assert (its["batch_size"] <= dep.max_num_seqs).all()
    tokens = its["prefill_tokens"] + its["decode_tokens"]
    if policy in ("orca", "static"):
        assert summary["preemptions"] == 0, "KV is reserved up front: nothing to preempt"
        if budget is not None:
            assert (its["prefill_tokens"] <= budget).all()
    else:  # sarathi, splitfuse: decodes first, prompt chunks fill the rest of the budget
        assert (tokens <= budget).all()
    if policy == "static":
        check_static_batches(done, dep.max_num_seqs)
        assert (its[its["prefill_tokens"] > 0]["decode_tokens"] == 0).all()

    # No decode is ever left out of a step (checked_schedulers), so without preemptions every
    # inter-token gap is exactly one iteration; a pipelined engine's step may also wait for
    # the other pp - 1 engines' micro-batches ahead of it, each at most one iteration.
    if summary["preemptions"] == 0 and summary["tbt_s"]["count"]:
        engines = dep.pp if dep.pipeline_overlap else 1
        assert summary["tbt_s"]["max"] <= engines * its["duration_s"].max() * (1 + 1e-9)


def check_static_batches(done, max_seqs: int) -> None:
    """Requests that start at the same time on a replica are a batch; the next batch of that
    replica starts only after every request of the previous one has finished."""
    for _, rows in done.assign(start=done["arrival_s"] + done["queue_s"]).groupby("replica"):
        rows = rows.sort_values("start", kind="stable")
        starts = rows["start"].to_numpy()
        batch = np.concatenate(([0], np.cumsum(np.diff(starts) > 1e-9 * np.maximum(starts[1:], 1.0))))
        finishes = rows.groupby(batch)["finish_s"].max().to_numpy()
        firsts = rows.groupby(batch)["start"].min().to_numpy()
        assert (firsts[1:] >= finishes[:-1] * (1 - 1e-12)).all(), "a request started while a batch was running"
        assert np.bincount(batch).max() <= max_seqs


def label(result: api.Result) -> None:
    s = result.summary
    event(f"preemptions: {'yes' if s['preemptions'] else 'no'}")
    event(f"rejections: {'yes' if s['requests']['rejected'] else 'no'}")


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases)
def test_policy_invariants_fast_forward_and_determinism(policy, case):
    knobs, requests = case
    k = dict(knobs, scheduler=policy)
    try:
        setup = make_setup(k)
    except InputError:  # the deployment does not fit the L4
        event("deployment does not fit")
        return
    with trace_file(requests) as index:
        with checked_schedulers() as schedulers:
            fast = run_setup(setup, index, fast_forward=True)
        label(fast)
        check_policy_run(requests, setup, fast, schedulers)
        with checked_schedulers() as schedulers:
            slow = run_setup(setup, index, fast_forward=False)
        check_policy_run(requests, setup, slow, schedulers)
        fresh = prepare(HARDWARE, MODEL, knobs={"api_server": False, **{key: v for key, v in k.items() if v is not None}})  # cold caches
        again = run_setup(fresh, TraceIndex.build(index.path), seed=0)
    # Spans are exact: the same summary, request rows and iteration rows as single steps.
    assert_close(without_wall(fast.summary), without_wall(slow.summary))
    assert_frames_close(fast.requests, slow.requests, ["id"])
    assert_frames_close(fast.iterations, slow.iterations, ["replica", "start_s"])
    # Deterministic: the same inputs and seed give the same outputs, bit for bit.
    assert json.dumps(without_wall(fast.summary), sort_keys=True) == json.dumps(without_wall(again.summary),
                                                                               sort_keys=True)
    assert fast.requests.equals(again.requests) and fast.iterations.equals(again.iterations)
