"""Data parallelism and expert parallelism with vLLM's names (data_parallel_size,
enable_expert_parallel, all2all_backend): experts spread over the ranks' devices, tokens
moved to them and back by hand-computed collectives, and ranks stepping in lockstep."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from simulator.api import prepare, run_setup
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.models.config import load_model
from simulator.models.layers import MOE, linear_layers
from simulator.models.operators import Precision, Sharding, dense_ops
from simulator.workloads.trace import TraceIndex

H100_NVLINK_BYTES_PER_S, H100_NVLINK_LATENCY_S = 450e9, 2e-6


def _trace(tmp_path, n=40):
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps({"arrival_s": i * 0.05, "input_tokens": 300 + 50 * (i % 5),
                                        "output_tokens": 40 + 7 * (i % 3)}) + "\n" for i in range(n)))
    return TraceIndex.build(path)


def test_experts_spread_over_every_rank_device():
    model = load_model("qwen3-30b-a3b")  # 128 experts of width 768
    whole = {lin.name: lin for lin in linear_layers(model, 1, MOE, dp=4, ep=True)}
    split = {lin.name: lin for lin in linear_layers(model, 1, MOE, dp=4)}
    # expert parallelism: 128 / 4 = 32 whole experts per device; without: every expert 4 ways
    assert (whole["experts_up"].copies, whole["experts_up"].n) == (32, 2 * 768)
    assert (split["experts_up"].copies, split["experts_up"].n) == (128, 2 * 768 // 4)
    # the same weights either way, a quarter of them per device; attention is each rank's own
    size = {name: sum(lin.n * lin.k * lin.copies for lin in layer.values() if lin.routed)
            for name, layer in (("whole", whole), ("split", split))}
    assert size["whole"] == size["split"] == 128 * 3 * 768 * 2048 // 4
    assert whole["qkv_proj"] == split["qkv_proj"] == linear_layers(model, 1, MOE)[0]


def test_routed_rows_and_dispatch_by_hand():
    model, prec, T = load_model("qwen3-30b-a3b"), Precision(), 16
    ops = {op.name: op for op in dense_ops(model, T, Sharding(dp=4, ep=True), prec)}
    # the experts see all 4 ranks' 16 tokens: 64 x 8 routed rows, a quarter of them per device
    # on average, the busiest of 4 devices about 128 + sqrt(2 x 128 x 3/4 x ln 4) = 144.3
    # (binomial loads), over the expected local experts reached: 32 (1 - (1 - 8/128)^64)
    up = ops["experts_up"]
    reached = 32 * (1 - (1 - 8 / 128) ** 64)
    busiest = 128 + math.sqrt(2 * 128 * 0.75 * math.log(4))
    assert up.flops == pytest.approx(2 * busiest * (2 * 768) * 2048, rel=1e-12)
    assert up.shape.groups == round(reached) and up.count == 48
    # all-gather of every rank's hidden states, reduce-scatter back: 64 tokens x 2048 x 2 B
    dispatch, combine = ops["moe_dispatch"], ops["moe_combine"]
    assert (dispatch.kind, combine.kind) == ("allgather", "reducescatter")
    assert dispatch.bytes == combine.bytes == 64 * 2048 * 2 and dispatch.shape == (4, 4)
    a2a = {op.name: op for op in dense_ops(model, T, Sharding(dp=4, ep=True, all2all="deepep_low_latency"), prec)}
    # all-to-all: each device sends its 16 tokens to their 8 experts' devices, and back
    assert a2a["moe_dispatch"].kind == "alltoall" and a2a["moe_dispatch"].bytes == 16 * 8 * 2048 * 2
    assert "moe_dispatch" not in {op.name for op in dense_ops(model, T, Sharding(tp=4, ep=True), prec)}


def test_dispatch_time_over_nvlink_by_hand():
    setup = prepare("dgx-h100", "qwen3-30b-a3b", tp=1, calibration="none",
                    knobs={"data_parallel_size": 8, "enable_expert_parallel": True})
    cost = setup.cost
    op = next(op for op in dense_ops(setup.model, 256, cost.shard, cost.prec) if op.name == "moe_dispatch")
    # ring all-gather of 8 x 256 tokens x 2048 x 2 B over NVLink: 7 latencies and 7/8 of it per link
    eff = setup.system.accelerator.efficiency.network_efficiency
    expected = 7 * H100_NVLINK_LATENCY_S + 7 / 8 * op.bytes / (H100_NVLINK_BYTES_PER_S * eff)
    total, _, _ = cost.op_time_s(op, graphed=True)
    assert total == pytest.approx(48 * expected, rel=1e-9)


def test_ranks_step_together_padded_to_the_largest():
    setup = prepare("dgx-h100", "qwen3-30b-a3b", tp=1, calibration="none", knobs={"data_parallel_size": 2})
    cost = setup.cost
    prefill = BatchShape(prefill_tokens=1024, prefill_context=1024.0, prefill_pairs=1024 * 1025 / 2, sampled=1)
    decodes = BatchShape(num_decodes=4, decode_context=4000.0, sampled=4)
    big, small = cost.lockstep([prefill, decodes])
    # the decoding rank runs the token-parallel layers padded to the prefill's 1024 tokens, so
    # it is far slower than alone; its own attention keeps it below the prefill rank
    alone = cost.iteration(decodes)
    assert small.time_s > 2 * alone.time_s and small.time_s < big.time_s
    assert big.time_s == pytest.approx(cost.iteration(prefill).time_s, rel=0.35)


def test_a_data_parallel_run_is_in_lockstep_and_loses_nothing(tmp_path):
    setup = prepare("dgx-h100", "qwen3-30b-a3b", tp=1, calibration="none",
                    knobs={"data_parallel_size": 2, "enable_expert_parallel": True})
    result = run_setup(setup, _trace(tmp_path), out_dir=None)
    summary, steps = result.summary, result.iterations
    assert summary["requests"]["completed"] == 40 and summary["parallelism"]["ep"] == 2
    assert set(steps["replica"]) == {0, 1}
    # both ranks step at the same instants: every start of one is a start of the group
    starts = steps.groupby("replica")["start_s"].apply(set)
    assert starts[0] & starts[1]
    every = sorted(set(steps["start_s"]))
    ends = steps.groupby("start_s")["duration_s"].max()
    # a step of the group starts only once the group's previous step has ended
    assert all(b >= a + ends[a] - 1e-12 for a, b in zip(every, every[1:]))
    assert isinstance(result.requests, pd.DataFrame) and (result.requests["e2e_s"] >= result.requests["ttft_s"]).all()


def test_a_dense_model_ranks_are_replicas(tmp_path):
    trace = _trace(tmp_path)
    ranks = run_setup(prepare("dgx-h100", "llama-3.1-8b", tp=1, calibration="none",
                              knobs={"data_parallel_size": 2}), trace).summary
    replicas = run_setup(prepare("dgx-h100", "llama-3.1-8b", tp=1, replicas=2, calibration="none"), trace).summary
    for key in ("ttft_s", "tpot_s", "e2e_s", "makespan_s"):
        assert ranks[key] == replicas[key]


def test_tensorrt_llm_attention_data_parallelism_is_ranks_at_tp_1():
    setup = prepare("dgx-h100", "qwen3-30b-a3b", scheduler="trtllm", tp=4, calibration="none",
                    knobs={"enable_attention_dp": True, "moe_expert_parallel_size": 4})
    dep = setup.deployment
    assert (dep.tp, dep.data_parallel_size, dep.enable_expert_parallel) == (1, 4, True)
    with pytest.raises(InputError, match="moe_expert_parallel_size: 2 is modelled as 1"):
        prepare("dgx-h100", "qwen3-30b-a3b", scheduler="trtllm", tp=4, knobs={"moe_expert_parallel_size": 2})


@pytest.mark.parametrize("model, knobs, message", [
    ("llama-3.1-8b", {"enable_expert_parallel": True}, "has no experts to spread"),
    ("qwen3-30b-a3b", {"data_parallel_size": 3, "enable_expert_parallel": True}, "do not spread evenly"),
    ("qwen3-30b-a3b", {"data_parallel_size": 2, "pp": 2}, "set pp 1"),
    ("qwen3-30b-a3b", {"data_parallel_size": 2, "scheduler": "trtllm"}, "a vLLM knob"),
    ("qwen3-30b-a3b", {"data_parallel_size": 16}, "data_parallel_size=16 x replicas=1 needs 16"),
])
def test_data_parallel_errors_name_the_knob(model, knobs, message):
    with pytest.raises(InputError, match=message):
        prepare("dgx-h100", model, tp=1, calibration="none", knobs=knobs)
