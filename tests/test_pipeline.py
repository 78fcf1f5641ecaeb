"""Pipeline parallelism with micro-batches in flight (engine/pipeline.py).

The stage recurrence is checked against timings worked out by hand; end to end, a
pipeline-parallel replica of Llama-3.1-70B on a DGX H100 (tp 4, pp 2) must serve a lone
request exactly as without overlap (a micro-batch alone in the pipeline takes the whole
iteration's time, and costs the same energy), and a saturating burst at close to pp times
the throughput, never more.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.api import prepare, simulate
from simulator.engine.pipeline import Pipeline
from simulator.errors import InputError

T = 0.03  # one micro-batch's time through all the stages, alone (s)


def test_a_lone_micro_batch_takes_the_whole_iteration():
    assert Pipeline(4).run(1.0, T) == pytest.approx(1.0 + T, rel=1e-12)


def test_equal_micro_batches_leave_one_stage_time_apart():
    # pp = 2, two micro-batches of time T scheduled together: the second enters stage 0 when
    # the first leaves it (T/2) and leaves the last stage at T/2 + T = 1.5 T; a third, scheduled
    # when the first finishes (T), follows at 2 T.
    pipe = Pipeline(2)
    assert pipe.run(0.0, T) == pytest.approx(T)
    assert pipe.run(0.0, T) == pytest.approx(1.5 * T)
    assert pipe.run(T, T) == pytest.approx(2.0 * T)


def test_a_short_micro_batch_waits_behind_a_long_one_at_every_stage():
    # pp = 2: a 4T prefill then a T decode, scheduled together. The decode enters stage 0 at
    # 2T, leaves it at 2.5T, but stage 1 is the prefill's until 4T: it leaves at 4.5T.
    pipe = Pipeline(2)
    assert pipe.run(0.0, 4 * T) == pytest.approx(4 * T)
    assert pipe.run(0.0, T) == pytest.approx(4.5 * T)


def write_trace(path: Path, rows: int, input_tokens: int, output_tokens: int) -> Path:
    with open(path, "w") as handle:
        for i in range(rows):
            handle.write(json.dumps({"id": f"r{i}", "arrival_s": 0.0, "input_tokens": input_tokens,
                                     "output_tokens": output_tokens}) + "\n")
    return path


def run(trace: Path, overlap: bool, **knobs):
    return simulate("dgx-h100", trace, model="llama-3.1-70b", tp=4, pp=2, calibration="none",
                    knobs={"pipeline_overlap": overlap, **knobs}).summary


def test_a_lone_request_is_served_as_without_overlap(tmp_path):
    trace = write_trace(tmp_path / "one.jsonl", 1, 1000, 50)
    with_overlap, without = run(trace, True), run(trace, False)
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert with_overlap[key]["p50"] == pytest.approx(without[key]["p50"], rel=1e-9)
    # The same work on the same devices: the engine's stage group is busy for the whole step
    # with every stage's work, instead of all the devices at 1/pp of it.
    assert with_overlap["energy_j"] == pytest.approx(without["energy_j"], rel=1e-9)
    assert with_overlap["utilization"]["mfu"] == pytest.approx(without["utilization"]["mfu"], rel=1e-9)


def test_a_saturating_burst_runs_close_to_pp_times_faster(tmp_path):
    # 512 identical requests at once, two virtual engines of up to 256 sequences each (as
    # many as the single engine runs without overlap): the pipeline finishes one batch per
    # stage time instead of one per iteration, so up to pp = 2 times the throughput; the
    # fill and drain of the pipeline and the halved KV share per engine keep it below 2.
    trace = write_trace(tmp_path / "burst.jsonl", 512, 512, 256)
    with_overlap, without = run(trace, True), run(trace, False)
    speedup = with_overlap["throughput"]["output_tokens_per_s"] / without["throughput"]["output_tokens_per_s"]
    assert 1.8 <= speedup <= 2.0
    assert with_overlap["requests"]["completed"] == without["requests"]["completed"] == 512
    # Each engine holds its own half of the KV blocks, so its peak share is higher.
    assert with_overlap["utilization"]["kv_cache_peak"] > without["utilization"]["kv_cache_peak"]


def test_too_little_kv_to_split_among_virtual_engines_is_an_input_error(tmp_path):
    # Memory for the weights, activations, runtime and 3.5 KV blocks per device: three blocks,
    # of which vLLM's null block leaves two, one per virtual engine, and an engine needs a
    # block besides its null block; without overlap the replica runs (with it).
    base = prepare("dgx-h100", "llama-3.1-70b", None, 4, 2, None, {"pipeline_overlap": False}, "none")
    plan = base.pools()[0].plan
    needed = plan.weights_bytes + plan.activation_bytes + plan.reserved_bytes + 3.5 * plan.kv_bytes_per_block
    knobs = {"gpu_memory_utilization": needed / plan.capacity_bytes, "max_model_len": 16}
    assert prepare("dgx-h100", "llama-3.1-70b", None, 4, 2, None, {**knobs, "pipeline_overlap": False},
                   "none").pools()[0].plan.num_blocks == 3
    with pytest.raises(InputError, match=r"pp=2: 3 KV block\(s\) per device cannot be split among 2 virtual engines"):
        prepare("dgx-h100", "llama-3.1-70b", None, 4, 2, None, knobs, "none")
