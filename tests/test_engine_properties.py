"""Property tests of the engine (api.run_setup + replica + vLLM scheduler + recorder).

Hypothesis draws small traces (1-40 requests, unsorted, with equal timestamps) and vLLM
knobs on a deliberately tight deployment (Llama-3.1-8B on one 24 GB L4 at
gpu_memory_utilization 0.75-0.9 leaves 2,400-34,000 KV tokens), so admission limits,
chunking, rejections and preemptions all occur. Every example checks the invariants that
hold for any input:

- conservation: every request is in the requests frame exactly once, completed or
  rejected with a reason; the summary counts agree with the trace size;
- KV blocks never exceed the memory plan's capacity and every block is returned at the end;
- causality: first token after arrival, queueing before the first token, e2e >= ttft,
  non-negative TBT/TPOT; iterations of one replica never overlap;
- pipeline parallelism (pp 2, with or without micro-batches in flight): every invariant
  holds per virtual engine, each with its share of the KV blocks;
- accounting: throughput x makespan is the completed tokens; the TBT distribution has one
  gap per output token after the first and its gaps add up to each request's decode time;
- determinism (summary except `sim.wall_s`), and fast_forward=True (decode spans) gives the
  same summary, requests and iterations as stepping every iteration (to rel 1e-9).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from functools import lru_cache
from unittest import mock

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from simulator import api
from simulator.api import prepare, run_setup
from simulator.errors import InputError
from simulator.workloads.trace import TraceIndex

HARDWARE, MODEL = "l4", "llama-3.1-8b"
REL = 1e-9


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- drawing inputs --------------------------------------------------------------------------

arrival_times = st.one_of(
    st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.0]),  # equal timestamps are common
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False, allow_infinity=False),
)
request = st.fixed_dictionaries({
    "arrival_s": arrival_times,
    "input_tokens": st.one_of(st.integers(1, 64), st.integers(1, 3000)),
    "output_tokens": st.one_of(st.integers(1, 8), st.integers(1, 300)),
})
# Hypothesis' own list sizes favour very short lists; draw the size uniformly instead.
traces = st.integers(1, 40).flatmap(lambda n: st.lists(request, min_size=n, max_size=n))
knobs = st.fixed_dictionaries({
    "max_num_seqs": st.one_of(st.integers(1, 64), st.sampled_from([8, 64])),
    "max_num_batched_tokens": st.one_of(st.integers(16, 4096), st.sampled_from([16, 512, 2048, 4096])),
    "block_size": st.sampled_from([1, 8, 16, 32]),
    # 0.74-0.76 leaves ~500-4,000 KV tokens, 0.9 up to ~34,000
    "gpu_memory_utilization": st.one_of(st.floats(0.74, 0.76), st.sampled_from([0.75, 0.8]), st.floats(0.75, 0.9)),
    "enable_chunked_prefill": st.booleans(),
    "replicas": st.integers(1, 3),
    "router": st.sampled_from(["round_robin", "least_outstanding"]),
    "max_model_len": st.one_of(st.just(-1), st.just(-1), st.just(-1), st.integers(64, 6000)),
    "pp": st.sampled_from([1, 1, 2]),
    "pipeline_overlap": st.booleans(),
})

# Memory pressure: a KV cache of ~2,400-4,000 tokens per replica and a burst of at least 12
# prompts of 200+ tokens with 100+ output tokens and room for 16+ sequences: even the
# simplest such example admits more than the cache can grow into, so running requests are
# preempted (and recomputed).
pressure_request = st.fixed_dictionaries({
    "arrival_s": st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    "input_tokens": st.integers(200, 1200),
    "output_tokens": st.integers(100, 300),
})
pressure_traces = st.integers(12, 40).flatmap(lambda n: st.lists(pressure_request, min_size=n, max_size=n))
pressure_knobs = st.fixed_dictionaries({
    "max_num_seqs": st.integers(16, 64),
    "max_num_batched_tokens": st.sampled_from([1024, 1500, 2048, 4096]),
    "block_size": st.sampled_from([1, 8, 16, 32]),
    "gpu_memory_utilization": st.floats(0.75, 0.76),
    "enable_chunked_prefill": st.booleans(),
    "replicas": st.integers(1, 2),
    "router": st.sampled_from(["round_robin", "least_outstanding"]),
    "max_model_len": st.just(-1),
})
deployments = st.one_of(st.tuples(knobs, traces), st.tuples(pressure_knobs, pressure_traces),
                        st.tuples(pressure_knobs, pressure_traces))  # 2:1 for pressure


@lru_cache(maxsize=256)
def _setup(frozen: tuple) -> api.Setup:
    return prepare(HARDWARE, MODEL, knobs=dict(frozen))


def make_setup(k: dict) -> api.Setup:
    """The engine's invariants are about the engine's own times: no API server in front."""
    k = {"api_server": False, **k}
    return _setup(tuple(sorted((key, v) for key, v in k.items() if v is not None)))


@contextlib.contextmanager
def trace_file(requests: list[dict]):
    """The requests, in the drawn (unsorted) order, as a contract JSONL file with ids r0, r1, ..."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.jsonl")
        with open(path, "w") as handle:
            for i, r in enumerate(requests):
                handle.write(json.dumps({"id": f"r{i}", **r}) + "\n")
        yield TraceIndex.build(path)


@contextlib.contextmanager
def captured_schedulers():
    """Collect the scheduler instances run_setup builds (to inspect their final state)."""
    made: list = []
    real = api.get_scheduler

    def spy(name: str):
        cls = real(name)

        class Captured(cls):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        return Captured

    with mock.patch.object(api, "get_scheduler", spy):
        yield made


def simulate(setup: api.Setup, index: TraceIndex, fast_forward: bool):
    with captured_schedulers() as schedulers:
        result = run_setup(setup, index, fast_forward=fast_forward)
    return result, schedulers


# --- invariants ------------------------------------------------------------------------------


def check_invariants(requests: list[dict], setup: api.Setup, result: api.Result, schedulers: list) -> None:
    dep, plan = setup.deployment, setup.plan
    n = len(requests)
    # A replica is pp virtual engines with micro-batches in flight (engine/pipeline.py), each
    # with 1/pp of the KV blocks: the invariants below hold per engine.
    engines_per_replica = dep.pp if dep.pp > 1 and dep.pipeline_overlap else 1
    engines = dep.replicas * engines_per_replica
    num_blocks = plan.num_blocks // engines_per_replica - 1  # less vLLM's null block
    summary, frame, its = result.summary, result.requests, result.iterations

    # Conservation of requests.
    assert summary["requests"]["total"] == n
    assert summary["requests"]["completed"] + summary["requests"]["rejected"] == n
    assert len(frame) == n
    assert sorted(frame["id"]) == sorted(f"r{i}" for i in range(n))
    assert set(frame["status"]) <= {"completed", "rejected"}
    done = frame[frame["status"] == "completed"]
    rejected = frame[frame["status"] == "rejected"]
    assert len(done) == summary["requests"]["completed"]
    assert len(rejected) == summary["requests"]["rejected"]
    assert all(isinstance(r, str) and r for r in rejected["reason"])
    assert sum(summary["requests"]["rejected_reasons"].values()) == len(rejected)
    assert (done["reason"].fillna("") == "").all()

    # The frame carries the trace's numbers.
    by_id = {f"r{i}": r for i, r in enumerate(requests)}
    for row in frame.itertuples():
        src = by_id[row.id]
        assert row.input_tokens == src["input_tokens"] and row.output_tokens == src["output_tokens"]
        assert row.arrival_s == src["arrival_s"]
        assert 0 <= row.replica < engines

    # Rejections are exactly the requests that can never be served.
    max_len = min(dep.max_model_len or setup.model.max_position_embeddings, num_blocks * plan.block_size)
    too_long = done["input_tokens"] + done["output_tokens"] > max_len
    assert not too_long.any(), "a request longer than max_model_len completed"
    # Without chunked prefill a sequence must fit one whole-prompt step (it is recomputed whole
    # after a preemption): within the token budget and the KV blocks above vLLM v0's watermark.
    whole_step = min(dep.max_num_batched_tokens or 10**9,
                     (num_blocks - math.ceil(0.01 * num_blocks)) * plan.block_size)
    if not dep.enable_chunked_prefill:
        assert (done["input_tokens"] + done["output_tokens"] <= whole_step).all()
    for row in rejected.itertuples():
        if row.input_tokens + row.output_tokens > max_len:
            assert "max_model_len" in row.reason
        else:
            assert not dep.enable_chunked_prefill and row.input_tokens + row.output_tokens > whole_step
            assert "max_num_batched_tokens" in row.reason

    # Round robin hands out requests in arrival order (stable for equal arrivals).
    if dep.router == "round_robin":
        order = sorted(range(n), key=lambda i: requests[i]["arrival_s"])
        replica_of = dict(zip(frame["id"], frame["replica"]))
        assert [replica_of[f"r{i}"] for i in order] == [k % engines for k in range(n)]

    # Causality per request.
    arrival, first, finish = done["arrival_s"], done["first_token_s"], done["finish_s"]
    assert (done["ttft_s"] > 0).all()
    assert (first > arrival).all()
    assert (finish >= first).all()
    assert (done["e2e_s"] >= done["ttft_s"]).all()
    assert (done["queue_s"] >= 0).all() and (done["queue_s"] < done["ttft_s"]).all()
    np.testing.assert_allclose(done["ttft_s"], first - arrival, rtol=REL, atol=1e-12)
    np.testing.assert_allclose(done["e2e_s"], finish - arrival, rtol=REL, atol=1e-12)
    multi = done[done["output_tokens"] > 1]
    assert (multi["tpot_s"] >= 0).all()
    assert done[done["output_tokens"] == 1]["tpot_s"].isna().all()
    np.testing.assert_allclose(multi["tpot_s"] * (multi["output_tokens"] - 1),
                               multi["finish_s"] - multi["first_token_s"], rtol=1e-9, atol=1e-12)

    # Token and time accounting in the summary.
    makespan = summary["makespan_s"]
    assert makespan == (finish.max() if len(done) else 0.0)
    if len(done):
        thr = summary["throughput"]
        assert math.isclose(thr["output_tokens_per_s"] * makespan, done["output_tokens"].sum(), rel_tol=REL)
        assert math.isclose(thr["input_tokens_per_s"] * makespan, done["input_tokens"].sum(), rel_tol=REL)
        assert math.isclose(thr["requests_per_s"] * makespan, len(done), rel_tol=REL)
    else:
        assert summary["throughput"]["output_tokens_per_s"] == 0
    tbt = summary["tbt_s"]
    gaps = int((done["output_tokens"] - 1).sum())
    assert tbt["count"] == gaps
    if gaps:
        assert tbt["p50"] >= 0 and tbt["mean"] >= 0 and tbt["max"] >= tbt["p99"] >= tbt["p50"]
        decode_time = float((multi["finish_s"] - multi["first_token_s"]).sum())
        assert math.isclose(tbt["mean"] * gaps, decode_time, rel_tol=1e-9, abs_tol=1e-12)
    assert summary["ttft_s"]["count"] == len(done)
    assert summary["tpot_s"]["count"] == len(multi)
    assert summary["preemptions"] == int(done["preemptions"].sum()) >= 0
    assert (rejected["preemptions"] == 0).all()

    # Iterations: within KV capacity, never overlapping on a replica, sane token counts.
    assert summary["sim"]["iterations"] == len(its)
    if len(done):
        assert len(its) > 0
    assert (its["kv_blocks_used"] <= num_blocks).all()
    assert (its["kv_blocks_used"] >= 0).all()
    assert (its["duration_s"] > 0).all()
    assert (its["batch_size"] >= 1).all() and (its["batch_size"] <= dep.max_num_seqs).all()
    assert (its["prefill_tokens"] + its["decode_tokens"] <= dep.max_num_batched_tokens).all()
    assert (its["decode_tokens"] <= its["batch_size"]).all()
    assert (its["prefill_tokens"] + its["decode_tokens"] >= its["batch_size"]).all()
    if not dep.enable_chunked_prefill:  # v0: a step is prefill-only or decode-only
        assert ((its["prefill_tokens"] == 0) | (its["decode_tokens"] == 0)).all()
    assert int(its["prefill_tokens"].sum()) >= int(done["input_tokens"].sum())
    for replica, rows in its.groupby("replica"):
        assert 0 <= replica < engines
        rows = rows.sort_values("start_s", kind="stable")
        start, dur = rows["start_s"].to_numpy(), rows["duration_s"].to_numpy()
        ends = start + dur
        assert (start >= 0).all()
        assert (ends[:-1] <= start[1:] * (1 + 1e-12) + 1e-15).all(), f"replica {replica}: iterations overlap"
        assert ends.max() <= makespan * (1 + 1e-12) + 1e-15
    # Every completed request was served by iterations of its replica; decodes = tokens sampled later.
    assert int(its["decode_tokens"].sum()) <= gaps

    # Utilisation, energy and cost are time averages of the iterations over the makespan.
    assert ((its["mfu"] > 0) & (its["mfu"] <= 1)).all() and ((its["mbu"] > 0) & (its["mbu"] <= 1)).all()
    util, devices = summary["utilization"], setup.devices
    if makespan > 0:
        busy = float(its["duration_s"].sum())
        for key in ("mfu", "mbu"):
            expected = float((its[key] * its["duration_s"]).sum()) / (makespan * engines)
            assert math.isclose(util[key], expected, rel_tol=1e-9, abs_tol=1e-15), key
        device = setup.system.accelerator
        if device.power is not None:
            idle, tdp = device.power.idle, device.power.tdp
            floor = idle * devices * makespan
            ceiling = floor + (tdp - idle) * busy * (dep.devices_per_replica // engines_per_replica)
            assert floor * (1 - 1e-9) <= summary["energy_j"] <= ceiling * (1 + 1e-9)
        if device.price is not None:
            assert math.isclose(summary["cost_usd"], device.price.per_hour * devices * makespan / 3600, rel_tol=1e-12)

    # Final state of every replica's scheduler: nothing left, every KV block returned.
    assert len(schedulers) == engines, "the get_scheduler hook (captured_schedulers) saw no scheduler"
    peaks = []
    for s in schedulers:
        assert s.blocks.num_blocks == num_blocks
        assert s.blocks.used == 0, "KV blocks leaked"
        assert 0 <= s.blocks.peak <= num_blocks
        assert s.running.n == 0 and not s.waiting and s.waiting_work_tokens == 0
        assert s.outstanding_work_tokens(0.0) == 0
        peaks.append(s.blocks.peak)
    for replica, s in enumerate(schedulers):
        rows = its[its["replica"] == replica]
        assert s.blocks.peak == (int(rows["kv_blocks_used"].max()) if len(rows) else 0)
    assert math.isclose(summary["utilization"]["kv_cache_peak"], max(peaks) / num_blocks, rel_tol=REL)
    assert 0 <= summary["utilization"]["kv_cache_mean"] <= summary["utilization"]["kv_cache_peak"] + 1e-12


def describe(result: api.Result) -> None:
    """Label the example (shown by pytest --hypothesis-show-statistics)."""
    s = result.summary
    event(f"preemptions: {'yes' if s['preemptions'] else 'no'}")
    event(f"rejections: {'yes' if s['requests']['rejected'] else 'no'}")
    event(f"completed: {'none' if not s['requests']['completed'] else 'some'}")
    event(f"pp: {s['parallelism']['pp']}")


def assert_close(a, b, path: str = "summary") -> None:
    """Recursive equality of summaries; floats to rel 1e-9."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys differ"
        for key in a:
            assert_close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=REL, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b)), \
            f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def without_wall(summary: dict) -> dict:
    out = dict(summary)
    out["sim"] = {k: v for k, v in summary["sim"].items() if k != "wall_s"}
    return out


def assert_frames_close(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> None:
    a = a.sort_values(keys, kind="stable").reset_index(drop=True)
    b = b.sort_values(keys, kind="stable").reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x) or pd.api.types.is_float_dtype(y):
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=REL, atol=1e-12,
                                       equal_nan=True, err_msg=col)
        else:
            assert x.fillna("").tolist() == y.fillna("").tolist(), col


# --- the properties --------------------------------------------------------------------------


@SETTINGS
@given(case=deployments)
def test_engine_invariants_and_fast_forward_is_exact(case):
    k, requests = case
    try:
        setup = make_setup(k)
    except InputError:  # a deployment that does not fit is rejected up front; nothing to run
        event("deployment does not fit")
        return
    with trace_file(requests) as index:
        fast, fast_scheds = simulate(setup, index, fast_forward=True)
        describe(fast)
        check_invariants(requests, setup, fast, fast_scheds)
        slow, slow_scheds = simulate(setup, index, fast_forward=False)
        check_invariants(requests, setup, slow, slow_scheds)
    # Decode spans are exact: the same summary, per-request rows and per-iteration rows.
    assert_close(without_wall(fast.summary), without_wall(slow.summary))
    assert_frames_close(fast.requests, slow.requests, ["id"])
    assert_frames_close(fast.iterations, slow.iterations, ["replica", "start_s"])


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=deployments)
def test_same_inputs_give_the_same_summary(case):
    k, requests = case
    try:
        setup = make_setup(k)
    except InputError:
        return
    with trace_file(requests) as index:
        first = run_setup(setup, index)
        fresh = prepare(HARDWARE, MODEL, knobs={"api_server": False, **{key: v for key, v in k.items() if v is not None}})  # cold caches
        second = run_setup(fresh, TraceIndex.build(index.path))
    a, b = without_wall(first.summary), without_wall(second.summary)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    pd.testing.assert_frame_equal(first.requests, second.requests)
    pd.testing.assert_frame_equal(first.iterations, second.iterations)


@SETTINGS
@given(case=deployments, shuffle=st.randoms(use_true_random=False))
def test_file_order_does_not_matter_for_distinct_arrivals(case, shuffle):
    """A trace is replayed in arrival order: permuting the lines of a trace whose arrival
    times are distinct changes nothing (equal arrivals keep file order, so they are spread:
    rounded to 1 ms, plus i x 0.1 us for the i-th line, all distinct)."""
    k, requests = case
    requests = [dict(r, arrival_s=round(r["arrival_s"], 3) + i * 1e-7) for i, r in enumerate(requests)]
    try:
        setup = make_setup(k)
    except InputError:
        return
    order = list(range(len(requests)))
    shuffle.shuffle(order)
    with trace_file(requests) as index:
        a = run_setup(setup, index)
    with trace_file([requests[i] for i in order]) as index:
        b = run_setup(setup, index)
    rename = {f"r{j}": f"r{i}" for j, i in enumerate(order)}  # b's ids back to a's
    b_requests = b.requests.assign(id=b.requests["id"].map(rename))
    assert_close(without_wall(a.summary), without_wall(b.summary))
    assert_frames_close(a.requests, b_requests, ["id"])


# --- regression: least_outstanding routing during a decode span ---------------------------


def test_least_outstanding_routing_is_the_same_with_fast_forward():
    """Two replicas, least_outstanding. At t=0: r0 (100 output tokens) -> replica 0; r1 and
    r2 (75 each) -> replica 1 (loads 101 vs 0, then 101 vs 76). Replica 1 drains 2 tokens a
    step, replica 0 one, so when r3 arrives at 3.5 s (~60 steps later) replica 1 has ~30
    tokens left and replica 0 ~40: r3 goes to replica 1. With fast_forward both replicas are
    inside decode spans planned at t~0.06, whose progress is applied only at their ends, so
    the router sees 100 vs 150 and sends r3 to replica 0."""
    requests = [{"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 100},
                {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 75},
                {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 75},
                {"arrival_s": 3.5, "input_tokens": 1, "output_tokens": 1}]
    setup = make_setup({"replicas": 2, "router": "least_outstanding", "max_model_len": -1})
    with trace_file(requests) as index:
        slow = run_setup(setup, index, fast_forward=False)
        fast = run_setup(setup, index, fast_forward=True)
    assert slow.requests.set_index("id").loc["r3", "replica"] == 1  # the hand-derived routing
    assert fast.requests.set_index("id").loc["r3", "replica"] == 1
    assert_close(without_wall(fast.summary), without_wall(slow.summary))
