"""Deterministic behaviour of the vLLM policy, on cases whose outcome can be derived by hand.

All runs are Llama-3.1-8B on one L4 (about 58 ms per decode step, a 1-token prefill alike),
through the public `prepare` / `run_setup` / `simulate` API. Where the KV capacity matters,
the memory plan is replaced by one with a handful of blocks so the block arithmetic in the
comments is exact and independent of the memory model.
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from simulator.api import prepare, run_setup, simulate
from simulator.workloads.trace import TraceIndex

HARDWARE, MODEL = "l4", "llama-3.1-8b"


def write_trace(path, requests: list[dict]):
    """Contract JSONL with ids r0, r1, ... in the given order."""
    with open(path, "w") as handle:
        for i, r in enumerate(requests):
            handle.write(json.dumps({"id": f"r{i}", **r}) + "\n")
    return path


def run(tmp_path, requests: list[dict], num_blocks: int | None = None, fast_forward: bool = True, **knobs):
    """`num_blocks`: KV blocks requests may hold (the plan gets one more, vLLM's null block)."""
    knobs.setdefault("max_model_len", 8192)  # Llama-3.1-8B's 131,072-token context does not fit an L4
    knobs.setdefault("api_server", False)  # arrivals reach the engine directly: times are the engine's
    setup = prepare(HARDWARE, MODEL, knobs=knobs)
    if num_blocks is not None:
        setup = dataclasses.replace(setup, plan=dataclasses.replace(setup.plan, num_blocks=num_blocks + 1))
    index = TraceIndex.build(write_trace(tmp_path / "trace.jsonl", requests))
    return run_setup(setup, index, fast_forward=fast_forward)


def req(arrival_s: float, input_tokens: int, output_tokens: int) -> dict:
    return {"arrival_s": arrival_s, "input_tokens": input_tokens, "output_tokens": output_tokens}


def by_id(result) -> pd.DataFrame:
    return result.requests.set_index("id").sort_index()


def ends(its: pd.DataFrame) -> np.ndarray:
    return (its["start_s"] + its["duration_s"]).to_numpy()


# --- (a) chunked prefill ----------------------------------------------------------------------


@pytest.mark.parametrize("fast_forward", [True, False])
def test_chunked_prefill_splits_a_long_prompt_into_budget_sized_chunks(tmp_path, fast_forward):
    """2000 prompt tokens with a 512-token budget: ceil(2000/512) = 4 steps of 512, 512, 512, 464;
    the first token is sampled at the end of the 4th, then one decode step per further token."""
    result = run(tmp_path, [req(0.0, 2000, 3)], fast_forward=fast_forward,
                 enable_chunked_prefill=True, max_num_batched_tokens=512)
    its = result.iterations.sort_values("start_s").reset_index(drop=True)
    assert its["prefill_tokens"].tolist() == [512, 512, 512, 464, 0, 0]
    assert its["decode_tokens"].tolist() == [0, 0, 0, 0, 1, 1]
    assert (its["batch_size"] == 1).all()
    r = by_id(result).loc["r0"]
    assert r["status"] == "completed"
    end = ends(its)
    assert r["first_token_s"] == pytest.approx(end[3], rel=1e-12)
    assert r["ttft_s"] == pytest.approx(end[3], rel=1e-12)
    assert r["finish_s"] == pytest.approx(end[-1], rel=1e-12)
    assert r["queue_s"] == 0.0
    # later chunks attend to more context, so they cost more than the first
    assert its["duration_s"][2] > its["duration_s"][0]


# --- (b) prefill-first (v0) versus mixed (v1) batches ----------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_new_prompt_joins_running_decodes(tmp_path, chunked):
    """A decodes from t=0; B (200-token prompt) arrives at 0.5 s, mid-decode. With chunked
    prefill off (vLLM v0) the first step starting after 0.5 s prefills B alone (decode_tokens
    == 0); with it on (v1) the engine has already scheduled the step after the one in flight,
    so B joins A's decode in the second step starting after 0.5 s. B's first token comes at
    the end of that step."""
    result = run(tmp_path, [req(0.0, 100, 50), req(0.5, 200, 5)],
                 enable_chunked_prefill=chunked, max_num_batched_tokens=2048)
    its = result.iterations.sort_values("start_s").reset_index(drop=True)
    after = its.index[its["start_s"] >= 0.5]
    j = int(after[1] if chunked else after[0])
    # before B: A's prefill, then A's decodes alone
    assert its.loc[0, "prefill_tokens"] == 100 and its.loc[0, "decode_tokens"] == 0
    assert (its.loc[1:j - 1, "decode_tokens"] == 1).all() and (its.loc[1:j - 1, "prefill_tokens"] == 0).all()
    row = its.loc[j]
    assert row["prefill_tokens"] == 200
    if chunked:
        assert row["decode_tokens"] == 1 and row["batch_size"] == 2
    else:
        assert row["decode_tokens"] == 0 and row["batch_size"] == 1
        # v0 steps are never mixed
        assert ((its["prefill_tokens"] == 0) | (its["decode_tokens"] == 0)).all()
    # then both decode together until B (5 tokens) is done
    assert (its.loc[j + 1:j + 4, "decode_tokens"] == 2).all()
    assert (its.loc[j + 1:j + 4, "prefill_tokens"] == 0).all()
    frame = by_id(result)
    assert frame.loc["r1", "first_token_s"] == pytest.approx(ends(its)[j], rel=1e-12)
    assert frame.loc["r1", "queue_s"] == pytest.approx(its.loc[j, "start_s"] - 0.5, rel=1e-12)
    assert (frame["status"] == "completed").all()
    # A produces no token in a prefill-only step, so one of its gaps spans two steps
    two_steps = its.loc[j, "duration_s"] + its.loc[j + 1, "duration_s"]
    if not chunked:
        assert result.summary["tbt_s"]["max"] == pytest.approx(two_steps, rel=1e-9)
    else:
        assert result.summary["tbt_s"]["max"] < two_steps


# --- (c) max_num_seqs and FCFS ------------------------------------------------------------


@pytest.mark.parametrize("chunked", [True, False])
def test_max_num_seqs_caps_the_batch_and_admission_is_fcfs(tmp_path, chunked):
    """Five requests at t=0, max_num_seqs=2. r0 and r1 start together; r1 (3 tokens) ends
    first and frees its seat for r2, then r0 (10 tokens) for r3, and so on in id order."""
    outputs = [10, 3, 10, 10, 10]
    result = run(tmp_path, [req(0.0, 50, n) for n in outputs],
                 enable_chunked_prefill=chunked, max_num_seqs=2, max_num_batched_tokens=2048)
    its = result.iterations
    assert its["batch_size"].max() == 2
    assert (its["batch_size"] <= 2).all()
    frame = by_id(result)
    assert (frame["status"] == "completed").all()
    first = frame["first_token_s"]
    assert first["r0"] == first["r1"]
    assert first["r1"] < first["r2"] < first["r3"] < first["r4"]
    # a seat is taken only when one frees: r2 is scheduled when r1 finishes, r3 when r0 does
    scheduled = frame["arrival_s"] + frame["queue_s"]
    assert scheduled["r0"] == scheduled["r1"] == 0.0
    assert scheduled["r2"] == pytest.approx(frame.loc["r1", "finish_s"], rel=1e-12)
    assert scheduled["r3"] == pytest.approx(frame.loc["r0", "finish_s"], rel=1e-12)
    assert scheduled["r4"] == pytest.approx(min(frame.loc["r2", "finish_s"], frame.loc["r3", "finish_s"]), rel=1e-12)
    # never more than two requests between first scheduling and finish at any moment
    events = sorted([(t, 1) for t in scheduled] + [(t, -1) for t in frame["finish_s"]], key=lambda e: (e[0], e[1]))
    assert max(np.cumsum([d for _, d in events])) <= 2


# --- (d) preemption by recompute --------------------------------------------------------------


@pytest.mark.parametrize("fast_forward", [True, False])
@pytest.mark.parametrize("chunked", [True, False])
def test_preemption_evicts_the_later_admitted_request_and_both_complete(tmp_path, chunked, fast_forward):
    """20 blocks of 16 tokens. A and B (100-token prompts, 150 output tokens each) are admitted
    together with 7 blocks each; decoding in lockstep they grow to 10 blocks each (20 in use)
    at 160 tokens. The next step needs 2 more: B, the later admitted, is preempted (its 10
    blocks freed, still cached: prefix caching keeps every full block) with 100 + 61 tokens.
    A then runs alone to 250 tokens (16 blocks), evicting 6 of B's cached blocks (the last
    first), which leaves no room for B's resumption (11 blocks) until A finishes; B then finds
    its first 4 blocks still cached and recomputes the other 161 - 64 = 97 tokens. Exactly
    one preemption."""
    result = run(tmp_path, [req(0.0, 100, 150), req(0.0, 100, 150)], num_blocks=20, fast_forward=fast_forward,
                 enable_chunked_prefill=chunked, block_size=16, max_num_batched_tokens=2048)
    frame = by_id(result)
    assert (frame["status"] == "completed").all()
    assert result.summary["preemptions"] == 1
    assert frame.loc["r0", "preemptions"] == 0
    assert frame.loc["r1", "preemptions"] == 1
    its = result.iterations.sort_values("start_s").reset_index(drop=True)
    assert its["kv_blocks_used"].max() == 20 and (its["kv_blocks_used"] <= 20).all()
    assert its.loc[0, "prefill_tokens"] == 200 and its.loc[0, "kv_blocks_used"] == 14
    # B's recompute: what of its prompt and 61 generated tokens was evicted, after A ends
    recompute = its[(its["prefill_tokens"] > 0) & (its["start_s"] > its.loc[0, "start_s"])]
    assert recompute["prefill_tokens"].tolist() == [161 - 4 * 16]
    assert result.summary["prefix_cache"]["resumed_tokens"] == 4 * 16
    assert recompute["start_s"].iloc[0] == pytest.approx(frame.loc["r0", "finish_s"], rel=1e-12)
    assert frame.loc["r0", "finish_s"] < frame.loc["r1", "finish_s"]
    # every output token counted once, none lost or doubled by the recompute
    assert result.summary["tbt_s"]["count"] == 2 * 149
    assert result.summary["throughput"]["output_tokens_per_s"] * result.summary["makespan_s"] == pytest.approx(300)
    # B's first token came before the preemption, so its TTFT is A's
    assert frame.loc["r1", "first_token_s"] == frame.loc["r0", "first_token_s"]


# --- (e) TBT distribution ---------------------------------------------------------------------


@pytest.mark.parametrize("fast_forward", [True, False])
@pytest.mark.parametrize("output", [2, 7, 40])
def test_single_request_tbt_is_its_decode_steps(tmp_path, output, fast_forward):
    """One request producing N tokens: N-1 gaps, each one decode step, whose mean is the TPOT."""
    result = run(tmp_path, [req(0.0, 300, output)], fast_forward=fast_forward)
    tbt, tpot = result.summary["tbt_s"], result.summary["tpot_s"]
    assert tbt["count"] == output - 1
    assert tpot["count"] == 1
    assert tbt["mean"] == pytest.approx(tpot["mean"], rel=1e-12)
    r = by_id(result).loc["r0"]
    assert r["tpot_s"] == pytest.approx((r["finish_s"] - r["first_token_s"]) / (output - 1), rel=1e-12)
    its = result.iterations.sort_values("start_s")
    decode = its[its["decode_tokens"] == 1]["duration_s"].to_numpy()
    assert len(decode) == output - 1
    assert tbt["mean"] == pytest.approx(decode.mean(), rel=1e-12)
    assert tbt["max"] == pytest.approx(decode.max(), rel=1e-12)
    assert tbt["p50"] >= decode.min() * (1 - 1e-12)


def test_single_token_output_has_no_tbt_or_tpot(tmp_path):
    result = run(tmp_path, [req(0.0, 300, 1)])
    assert result.summary["tbt_s"]["count"] == 0 and result.summary["tpot_s"]["count"] == 0
    r = by_id(result).loc["r0"]
    assert math.isnan(r["tpot_s"]) and r["finish_s"] == r["first_token_s"]
    assert len(result.iterations) == 1


# --- (f) rejections ---------------------------------------------------------------------------


def test_request_longer_than_max_model_len_is_rejected_in_requests_csv(tmp_path):
    trace = write_trace(tmp_path / "trace.jsonl", [req(0.0, 900, 200), req(0.0, 800, 200), req(0.1, 10, 5)])
    result = simulate(HARDWARE, trace, model=MODEL, knobs={"max_model_len": 1000}, out=tmp_path / "run")
    csv = pd.read_csv(tmp_path / "run" / "requests.csv", keep_default_na=False).set_index("id")
    assert csv.loc["r0", "status"] == "rejected"
    assert "max_model_len" in csv.loc["r0", "reason"] and "1000" in csv.loc["r0", "reason"]
    assert "1100" in csv.loc["r0", "reason"]
    assert csv.loc["r1", "status"] == "completed" and csv.loc["r1", "reason"] == ""  # exactly 1000 fits
    assert csv.loc["r2", "status"] == "completed"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests"] == result.summary["requests"]
    assert summary["requests"]["total"] == 3
    assert summary["requests"]["completed"] == 2 and summary["requests"]["rejected"] == 1
    assert summary["requests"]["rejected_reasons"] == {"exceeds max_model_len": 1}
    # a rejected request is never scheduled
    assert result.iterations["prefill_tokens"].sum() == 800 + 10


def test_prompt_over_budget_is_rejected_only_without_chunked_prefill(tmp_path):
    # v0 recomputes a preempted sequence as one whole prefill, so prompt + output must fit the budget
    requests = [req(0.0, 2000, 3), req(0.0, 509, 3), req(0.0, 510, 3)]
    v0 = run(tmp_path, requests, enable_chunked_prefill=False, max_num_batched_tokens=512)
    frame = by_id(v0)
    assert frame.loc["r0", "status"] == "rejected"
    assert "max_num_batched_tokens 512" in frame.loc["r0", "reason"]
    assert frame.loc["r1", "status"] == "completed"  # 509 + 3 is exactly the budget
    assert frame.loc["r2", "status"] == "rejected"
    v1 = run(tmp_path, requests, enable_chunked_prefill=True, max_num_batched_tokens=512)
    assert (by_id(v1)["status"] == "completed").all()


def test_max_model_len_is_capped_by_the_kv_cache(tmp_path):
    """With 20 blocks of 16 tokens a sequence can never exceed 320 tokens, whatever the model allows."""
    result = run(tmp_path, [req(0.0, 300, 21), req(0.0, 300, 20)], num_blocks=20, block_size=16)
    frame = by_id(result)
    assert frame.loc["r0", "status"] == "rejected" and "max_model_len 320" in frame.loc["r0", "reason"]
    assert frame.loc["r1", "status"] == "completed"


# --- regressions: requests v0 could never (re)admit are rejected up front ------------------


def test_v0_prompt_above_the_watermark_is_served_or_rejected(tmp_path):
    """20 blocks, watermark ceil(1 % of 20) = 1: a 310-token prompt needs all 20 blocks, so v0
    admission (which keeps 1 free) can never take it. vLLM v0 marks such a request
    FINISHED_IGNORED (AllocStatus.NEVER); the simulator must reject it with a reason, not stall."""
    result = run(tmp_path, [req(0.0, 310, 5)], num_blocks=20, block_size=16,
                 enable_chunked_prefill=False, max_num_batched_tokens=2048)
    r = by_id(result).loc["r0"]
    assert r["status"] == "completed" or r["reason"]


def test_v0_preempted_request_longer_than_the_budget(tmp_path):
    """As in the preemption test, but with a 150-token budget: B is preempted holding 161
    tokens, more than one v0 prefill may hold, and the run stops with "work waiting but nothing
    schedulable". (vLLM v0 requires max_num_batched_tokens >= max_model_len without chunked
    prefill, so this state is unreachable there.)"""
    result = run(tmp_path, [req(0.0, 100, 150), req(0.0, 100, 150)], num_blocks=20, block_size=16,
                 enable_chunked_prefill=False, max_num_batched_tokens=150)
    frame = by_id(result)
    assert ((frame["status"] == "completed") | (frame["reason"] != "")).all()
