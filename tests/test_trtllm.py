"""TensorRT-LLM's in-flight batching (`--scheduler trtllm`) on cases derived by hand.

Llama-3.1-8B on one L4 (bf16, about 58 ms a decode step), arrivals straight to the engine.
Where KV capacity matters the plan gets a handful of blocks (TensorRT-LLM keeps no null
block: `num_blocks` is what requests hold). Blocks are tokens_per_block = 32 tokens unless
set. A request's steps: its prompt in the step that admits it (sampling token 1), then one
decode step per further token, so a request of output O finishes at the end of its
(O - 1)-th step after the prompt's. The property test at the end runs the policy's knobs on
random traces with the engine's invariants and exact fast-forward.
"""
from __future__ import annotations

import dataclasses
import json
import math

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
from test_policies import check_static_batches
from test_scheduler_vllm import by_id, req, write_trace

from simulator.api import prepare, run_setup
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.hardware.loader import load_system
from simulator.perf.memory_plan import NON_TORCH_BYTES, weights_bytes
from simulator.perf.trtllm_plan import TrtllmGraphPlan, graph_batch_sizes
from simulator.workloads.trace import TraceIndex

RECIPE_GRAPHS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192]


def run(tmp_path, requests: list[dict], num_blocks: int | None = None, fast_forward: bool = True, **knobs):
    knobs = {"max_seq_len": 8192, "api_server": False, **knobs}
    setup = prepare(HARDWARE, MODEL, scheduler="trtllm", knobs=knobs)
    if num_blocks is not None:
        setup = dataclasses.replace(setup, plan=dataclasses.replace(setup.plan, num_blocks=num_blocks))
    return run_setup(setup, TraceIndex.build(write_trace(tmp_path / "trace.jsonl", requests)),
                     fast_forward=fast_forward)


def steps(result):
    return result.iterations.sort_values("start_s").reset_index(drop=True)


def start_s(frame, rid: str) -> float:
    return frame.loc[rid, "arrival_s"] + frame.loc[rid, "queue_s"]


# --- the capacity scheduler's policies ------------------------------------------------------------


@pytest.mark.parametrize("fast_forward", [True, False])
def test_no_evict_holds_back_a_request_whose_whole_length_does_not_fit(tmp_path, fast_forward):
    """20 blocks. A (200 + 300 tokens) reserves ceil(500/32) = 16 at admission; B's prompt
    (ceil(200/32) = 7 blocks) would fit the 13 free, but its whole length (16) does not fit
    the 20 - 16 = 4 unreserved: B starts only when A has finished (the engine is then idle,
    so at once), never evicting anyone. With max_utilization both start at once (7 + 7
    blocks), see the next test."""
    result = run(tmp_path, [req(0.0, 200, 300), req(0.0, 200, 300)], num_blocks=20, fast_forward=fast_forward)
    frame, its = by_id(result), steps(result)
    assert start_s(frame, "r1") == pytest.approx(frame.loc["r0", "finish_s"], rel=1e-12)
    assert its.loc[0, "prefill_tokens"] == 200 and its.loc[0, "kv_blocks_used"] == 7
    assert len(its) == 600 and result.summary["preemptions"] == 0
    assert (frame["status"] == "completed").all() and (frame["preemptions"] == 0).all()


@pytest.mark.parametrize("reuse, recomputed", [(False, 321), (True, 193)])
def test_max_utilization_pauses_the_last_started_request_and_recomputes_it(tmp_path, reuse, recomputed):
    """20 blocks; A and B (200 + 300 tokens each) both start at step 0 (7 + 7 blocks). At
    step j both compute token 200 + j: at j = 121 each needs its 11th block and none is free
    (2 x ceil(320/32) = 20), so B, the last started, is paused: its 10 blocks freed, its 121
    generated tokens folded into its prompt (321 tokens, 11 blocks). A's growth keeps the
    free blocks below 11 until A finishes (step 299); then B recomputes its prompt and
    generates its last 179 tokens: 300 + 179 steps in all. With block reuse B's freed blocks
    stay cached until A's growth needs them: A ends holding ceil(499/32) = 16, leaving B's
    first 4 blocks (128 tokens) cached, so B recomputes 321 - 128 = 193."""
    result = run(tmp_path, [req(0.0, 200, 300), req(0.0, 200, 300)], num_blocks=20,
                 capacity_scheduler_policy="max_utilization", enable_block_reuse=reuse)
    frame, its = by_id(result), steps(result)
    assert its.loc[0, "prefill_tokens"] == 400 and its.loc[0, "kv_blocks_used"] == 14
    assert its["prefill_tokens"].tolist().count(0) == len(its) - 2 and len(its) == 300 + 179
    restart = its.index[its["prefill_tokens"] > 0][1]
    assert its.loc[restart, "prefill_tokens"] == recomputed
    assert its.loc[restart, "start_s"] == pytest.approx(frame.loc["r0", "finish_s"], rel=1e-12)
    assert (its.loc[121:299, "batch_size"] == 1).all() and (its.loc[:120, "batch_size"] == 2).all()
    assert result.summary["preemptions"] == 1 and frame.loc["r1", "preemptions"] == 1
    assert (frame["status"] == "completed").all() and (its["kv_blocks_used"] <= 20).all()
    assert result.summary["tbt_s"]["count"] == 2 * 299


def test_static_batch_starts_new_requests_only_when_nothing_generates(tmp_path):
    """A and C start together at t = 0; B arrives at 0.5 s while they decode. With
    static_batch B waits for the whole batch (C, 50 tokens, is its last) and starts when it
    has finished; with guaranteed_no_evict B joins at once (in the step after the one in
    flight at 0.5 s, the overlap scheduler having scheduled that one already)."""
    requests = [req(0.0, 100, 10), req(0.5, 100, 5), req(0.0, 100, 50)]
    static = by_id(run(tmp_path, requests, capacity_scheduler_policy="static_batch"))
    assert start_s(static, "r0") == start_s(static, "r2") == 0.0
    assert start_s(static, "r1") == pytest.approx(static.loc["r2", "finish_s"], rel=1e-12)
    result = run(tmp_path, requests)
    its, frame = steps(result), by_id(result)
    after = its.index[its["start_s"] >= 0.5]
    assert start_s(frame, "r1") == pytest.approx(its.loc[after[1], "start_s"], rel=1e-12)
    assert its.loc[after[1], "prefill_tokens"] == 100 and its.loc[after[0], "prefill_tokens"] == 0


def test_a_static_batchs_prompt_in_progress_waits_while_its_batch_mates_generate(tmp_path):
    """static_batch with chunked context, max_num_tokens 80: step 0 cuts A's 100-token prompt
    to 64 (80 rounded down to 32-token blocks) and B's 10 fit the 16 left. B then generates
    (steps 1-3) and, as in TensorRT-LLM's StaticBatchScheduler, no prompt runs while a request
    generates: A's rest (36) waits for B's end, then A decodes its 4 more tokens. A stays in
    the running set meanwhile but counts in no step's batch."""
    result = run(tmp_path, [req(0.0, 100, 5), req(0.0, 10, 4)], capacity_scheduler_policy="static_batch",
                 enable_chunked_context=True, max_num_tokens=80)
    its = steps(result)
    assert its["prefill_tokens"].tolist() == [74, 0, 0, 0, 36, 0, 0, 0, 0]
    assert its["batch_size"].tolist() == [2] + [1] * 8


# --- the overlap scheduler -------------------------------------------------------------------------


@pytest.mark.parametrize("overlap", [True, False])
def test_a_finished_request_keeps_its_blocks_for_one_more_step_with_the_overlap_scheduler(tmp_path, overlap):
    """22 blocks. A (200 + 100) reserves 10, C (64 + 300) 12: B (100 + 150, 8 blocks) waits.
    A samples its last token in step 99. With the overlap scheduler step 100 was scheduled
    before step 99's results were processed: A is left out of it (early exit) but still holds
    its ceil(299/32) = 10 blocks beside C's ceil(164/32) = 6, so B starts in step 101. Without
    it, A's blocks are free when step 100 is scheduled and B starts in it (4 blocks)."""
    result = run(tmp_path, [req(0.0, 200, 100), req(0.0, 64, 300), req(0.0, 100, 150)], num_blocks=22,
                 disable_overlap_scheduler=not overlap)
    frame, its = by_id(result), steps(result)
    j = int(its.index[its["start_s"] == frame.loc["r0", "finish_s"]][0])
    assert j == 100
    if overlap:
        assert its.loc[j, ["prefill_tokens", "batch_size", "kv_blocks_used"]].tolist() == [0, 1, 16]
        j += 1
    assert its.loc[j, ["prefill_tokens", "batch_size"]].tolist() == [100, 2]
    assert start_s(frame, "r2") == pytest.approx(its.loc[j, "start_s"], rel=1e-12)
    assert its.loc[j, "kv_blocks_used"] == 6 + 4


def test_the_overlap_scheduler_hides_host_time_and_lags_arrivals(tmp_path):
    """With the overlap scheduler a step takes max(GPU, CPU time), without it the sum: the
    L4's 200 us of scheduling per step is hidden behind a 58 ms decode step. B arriving
    mid-step starts in the step after the next with it, in the next one without."""
    requests = [req(0.0, 100, 40), req(0.5, 20, 5)]
    on, off = run(tmp_path, requests), run(tmp_path, requests, disable_overlap_scheduler=True)
    host_s = load_system(HARDWARE).accelerator.overheads.scheduler_per_iteration
    d_on, d_off = steps(on)["duration_s"], steps(off)["duration_s"]
    assert d_off[1] - d_on[1] == pytest.approx(host_s, rel=1e-9)
    for result, later in ((on, 1), (off, 0)):
        its = steps(result)
        j = its.index[its["start_s"] >= 0.5][later]
        assert start_s(by_id(result), "r1") == pytest.approx(its.loc[j, "start_s"], rel=1e-12)


# --- the micro-batch scheduler ---------------------------------------------------------------------


def test_without_chunking_a_prompt_that_does_not_fit_the_budget_stops_the_scan(tmp_path):
    """max_num_tokens 512, prompts of 300, 300 and 50 at t = 0: step 0 runs the first (the
    second would make 600; the scan stops there, so the 50 that would fit waits too); step 1
    the first's decode + 300 + 50 = 351. A 600-token prompt can never run: rejected."""
    result = run(tmp_path, [req(0.0, 300, 4), req(0.0, 300, 4), req(0.0, 50, 4), req(0.0, 600, 4)],
                 max_num_tokens=512)
    its, frame = steps(result), by_id(result)
    assert its["prefill_tokens"].tolist()[:3] == [300, 350, 0]
    assert its["decode_tokens"].tolist()[:3] == [0, 1, 3]
    assert frame.loc["r3", "status"] == "rejected" and "max_num_tokens 512" in frame.loc["r3", "reason"]


def test_chunked_context_cuts_chunks_to_whole_blocks_of_what_is_left(tmp_path):
    """enable_chunked_context, max_num_tokens 100, 32-token blocks. Step 0: A's 10-token
    prompt, then B (250 tokens) gets min(250, 90) = 90 rounded down to 64. Step 1: A decodes,
    B gets 99 -> 96. Step 2: B's last 90 fit whole. B holds blocks for its whole prompt
    (ceil(250/32) = 8) from its first chunk, beside A's one."""
    result = run(tmp_path, [req(0.0, 10, 20), req(0.0, 250, 3)], max_num_tokens=100, enable_chunked_context=True)
    its = steps(result)
    assert its["prefill_tokens"].tolist()[:4] == [74, 96, 90, 0]
    assert its.loc[0, "kv_blocks_used"] == 1 + 8
    frame = by_id(result)
    assert frame.loc["r1", "first_token_s"] == pytest.approx(its.loc[2, "start_s"] + its.loc[2, "duration_s"])


def test_vllm_defaults_do_not_limit_trtllm(tmp_path):
    """300 short requests at once: TensorRT-LLM's max_batch_size (2048) and max_num_tokens
    (8192) admit them all in step 0 (3,000 prompt tokens); vLLM's max_num_seqs default (256)
    does not apply."""
    its = steps(run(tmp_path, [req(0.0, 10, 3)] * 300))
    assert its.loc[0, "batch_size"] == 300 and its.loc[0, "prefill_tokens"] == 3000


def test_another_engines_knob_is_an_input_error():
    with pytest.raises(InputError, match="max_num_seqs: a vLLM knob.*set max_batch_size"):
        prepare("h100-sxm", "llama-3.1-8b", scheduler="trtllm", knobs={"max_num_seqs": 64})
    with pytest.raises(InputError, match="tokens_per_block: a TensorRT-LLM knob.*set block_size"):
        prepare("h100-sxm", "llama-3.1-8b", knobs={"tokens_per_block": 64})


# --- KV sizing and CUDA graphs ------------------------------------------------------------------


def test_kv_pool_is_the_fraction_of_what_weights_and_activations_leave():
    """Llama-3.1-8B bf16 on an H100: the profiling pass of max_num_tokens = 8192 tokens peaks
    at 8192 x (3 x 4096 + 3 x 14336) x 2 B in the MLP; the pool is 0.9 of what is left after
    it, the weights and the non-torch allowance, cut into blocks of 32 tokens x 32 layers x
    8 KV heads x 128 x 2 (K, V) x 2 B = 4 MiB."""
    setup = prepare("h100-sxm", "llama-3.1-8b", scheduler="trtllm", calibration="none")
    plan, capacity = setup.plan, setup.system.accelerator.main_memory.capacity
    activations = 8192 * (3 * 4096 + 3 * 14336) * 2
    assert plan.activation_bytes == activations and plan.kv_bytes_per_block == 4 * 2**20
    free = capacity - weights_bytes(setup.model, setup.deployment) - activations - NON_TORCH_BYTES
    assert plan.num_blocks == math.floor(0.9 * free / 2**22) and plan.usable_blocks == plan.num_blocks
    assert plan.block_size == 32 and plan.summary()["engine"].startswith("TensorRT-LLM")
    half = prepare("h100-sxm", "llama-3.1-8b", scheduler="trtllm", calibration="none",
                   knobs={"free_gpu_memory_fraction": 0.45}).plan
    assert half.num_blocks == math.floor(0.45 * free / 2**22)


def test_cuda_graph_batch_sizes_follow_trtllms_rule():
    def sizes(**knobs):
        return graph_batch_sizes(prepare("h100-sxm", scheduler="trtllm", knobs=knobs).deployment)

    assert sizes() == [*range(1, 32), 32, 64, 128]
    assert sizes(cuda_graph_padding=True) == [1, 2, 4, *range(8, 129, 8)]
    assert sizes(cuda_graph_max_batch_size=640) == [*range(1, 32), 32, 64, 128, 256, 512, 640]
    assert sizes(cuda_graph_max_batch_size=0) == []
    # the performance overview's recipe under trtllm-bench's max_batch_size 640: padded to 640
    assert sizes(cuda_graph_batch_sizes=RECIPE_GRAPHS, cuda_graph_padding=True, max_batch_size=640) == \
        [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 640]
    assert sizes(max_num_tokens=100) == [*range(1, 32), 32, 64]
    assert sizes(max_num_tokens=100, cuda_graph_padding=True)[-2:] == [96, 100]


def test_only_decode_steps_replay_graphs():
    """Without padding a decode step of 33 runs eagerly (33 is not captured); with padding it
    replays the graph of 40. A step with a prompt chunk runs eagerly whatever its size: it
    costs the same with graphs disabled, while a decode step of 8 costs less with them."""
    plain, padded = (TrtllmGraphPlan(prepare("h100-sxm", scheduler="trtllm", knobs=k).deployment)
                     for k in ({}, {"cuda_graph_padding": True}))
    assert not plain.graphed(33) and plain.padded(33) == 33 and plain.graphed(32)
    assert padded.graphed(33) and padded.padded(33) == 40 and not padded.graphed(40, decode_only=False)
    cost, eager = (prepare("h100-sxm", scheduler="trtllm", calibration="none", knobs=k).cost
                   for k in ({}, {"cuda_graph_max_batch_size": 0}))
    mixed = BatchShape(prefill_tokens=7, prefill_context=7.0, prefill_pairs=28.0, num_decodes=1,
                       decode_context=100.0, sampled=2)
    decode = BatchShape(num_decodes=8, decode_context=800.0, sampled=8)
    assert cost.iteration(mixed).time_s == eager.iteration(mixed).time_s
    assert cost.iteration(decode).time_s < eager.iteration(decode).time_s


# --- properties ---------------------------------------------------------------------------------

trtllm_knobs = st.fixed_dictionaries({
    "max_batch_size": st.one_of(st.integers(1, 64), st.sampled_from([8, 2048])),
    "max_num_tokens": st.one_of(st.integers(16, 4096), st.sampled_from([64, 512, 8192])),
    "tokens_per_block": st.sampled_from([1, 8, 16, 32]),
    # 0.02-0.1 of the ~6 GiB the L4 leaves: ~1,000-5,000 KV tokens
    "free_gpu_memory_fraction": st.one_of(st.floats(0.02, 0.1), st.floats(0.1, 0.9)),
    "enable_chunked_context": st.booleans(),
    "enable_block_reuse": st.booleans(),
    "disable_overlap_scheduler": st.booleans(),
    "cuda_graph_padding": st.booleans(),
    "max_seq_len": st.one_of(st.none(), st.integers(64, 6000)),
    "replicas": st.integers(1, 2),
    "pp": st.sampled_from([1, 1, 2]),
    "pipeline_overlap": st.booleans(),
})
# Memory pressure (as test_engine_properties draws it for vLLM): ~1,200-3,000 KV tokens, a
# burst of 12-40 long requests and room for 16+ of them, so max_utilization pauses requests.
pressure_knobs = st.fixed_dictionaries({
    "max_batch_size": st.integers(16, 64),
    "max_num_tokens": st.sampled_from([1024, 1500, 2048, 4096]),
    "tokens_per_block": st.sampled_from([1, 8, 16, 32]),
    "free_gpu_memory_fraction": st.floats(0.025, 0.06),
    "enable_chunked_context": st.booleans(),
    "enable_block_reuse": st.booleans(),
    "disable_overlap_scheduler": st.booleans(),
    "replicas": st.integers(1, 2),
})
trtllm_cases = st.one_of(st.tuples(trtllm_knobs, traces), st.tuples(pressure_knobs, pressure_traces),
                         st.tuples(pressure_knobs, pressure_traces))


def check_trtllm_run(requests: list[dict], setup, result, schedulers: list) -> None:
    dep, plan = setup.deployment, setup.plan
    engines = dep.pp if dep.pp > 1 and dep.pipeline_overlap else 1
    blocks = plan.num_blocks // engines
    summary, frame, its = result.summary, result.requests, result.iterations
    policy, budget, chunked = dep.capacity_scheduler_policy, dep.max_num_tokens, dep.enable_chunked_context
    # Conservation, and a rejection only for a request that could never run.
    assert len(frame) == len(requests) == summary["requests"]["total"]
    longest = min(dep.max_seq_len or setup.model.max_position_embeddings, blocks * plan.block_size)

    def never_runs(row) -> str | None:
        prompt = row.input_tokens + (row.output_tokens - 1 if policy == "max_utilization" else 0)
        if row.input_tokens + row.output_tokens > longest:
            return "max_seq_len"
        if prompt > budget and (not chunked or budget < plan.block_size):
            return "max_num_tokens"
        return None

    done, rejected = frame[frame["status"] == "completed"], frame[frame["status"] == "rejected"]
    assert len(done) + len(rejected) == len(frame)
    assert all(never_runs(row) is not None and never_runs(row) in row.reason for row in rejected.itertuples())
    assert all(never_runs(row) is None for row in done.itertuples())
    assert (done["first_token_s"] > done["arrival_s"]).all() and (done["finish_s"] >= done["first_token_s"]).all()
    assert summary["tbt_s"]["count"] == int((done["output_tokens"] - 1).sum())
    # The pool, the step limits, and every block back at the end.
    assert (its["kv_blocks_used"] <= blocks).all()
    assert (its["batch_size"] <= dep.max_batch_size).all()
    assert (its["prefill_tokens"] + its["decode_tokens"] <= budget).all()
    for s in schedulers:
        assert s.blocks.used == 0 and s.running.n == 0 and not s.waiting and not s.retiring
    if policy != "max_utilization":
        assert summary["preemptions"] == 0, "guaranteed_no_evict never evicts"
    if policy == "static_batch" and not chunked:
        check_static_batches(done, dep.max_batch_size)
    # When every running decode fits the token budget, no decode waits: each gap is one step
    # (a pipelined engine's step may also wait for the other engines' micro-batches).
    if summary["preemptions"] == 0 and summary["tbt_s"]["count"] and dep.max_batch_size <= budget:
        assert summary["tbt_s"]["max"] <= engines * its["duration_s"].max() * (1 + 1e-9)


@pytest.mark.parametrize("policy", ["guaranteed_no_evict", "max_utilization", "static_batch"])
@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=trtllm_cases)
def test_trtllm_invariants_fast_forward_and_determinism(policy, case):
    knobs, requests = case
    knobs = dict(knobs, capacity_scheduler_policy=policy)
    k = {key: v for key, v in dict(knobs, scheduler="trtllm").items() if v is not None}
    try:
        setup = make_setup(k)
    except InputError:  # no KV block left on the L4
        event("deployment does not fit")
        return
    with trace_file(requests) as index:
        with captured_schedulers() as schedulers:
            fast = run_setup(setup, index, fast_forward=True)
        check_trtllm_run(requests, setup, fast, schedulers)
        with captured_schedulers() as schedulers:
            slow = run_setup(setup, index, fast_forward=False)
        check_trtllm_run(requests, setup, slow, schedulers)
        again = run_setup(prepare(HARDWARE, MODEL, knobs={"api_server": False, **k}), TraceIndex.build(index.path))
    event(f"preemptions: {'yes' if fast.summary['preemptions'] else 'no'}")
    assert_close(without_wall(fast.summary), without_wall(slow.summary))
    assert_frames_close(fast.requests, slow.requests, ["id"])
    assert_frames_close(fast.iterations, slow.iterations, ["replica", "start_s"])
    assert json.dumps(without_wall(fast.summary), sort_keys=True) == json.dumps(without_wall(again.summary),
                                                                               sort_keys=True)
    assert fast.requests.equals(again.requests) and fast.iterations.equals(again.iterations)
    assert np.isfinite(fast.iterations["duration_s"]).all()
