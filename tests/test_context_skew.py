"""Decodes of unequal context in one attention call: the measured tail (perf/context_skew.py).

The RTX PRO 6000 profile carries alpha, the share of (uniform at the longest - uniform at the
mean) that a skewed call pays, fitted from the layer profiler's skew tables. These tests tie
a step's extra time to the medians of those tables, check which path's tail a step pays (the
unsplit one with a prefill chunk in the call, or inside a FULL CUDA graph on FlashAttention-2;
the split one for decodes alone run eagerly; none in a graph whose attention splits), that
decode spans stay exact with it, and the contract rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.api import prepare, run_setup
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.models.operators import attention_decode_op
from simulator.perf.context_skew import LONG_SHARE_FITTED, ContextSkew
from simulator.perf.measurements import read_measurements
from simulator.workloads.trace import TraceIndex

SKEW_TABLE = Path(__file__).resolve().parents[1] / "validation/data/rtxpro6000-llama-3.1-8b/tp1/skew.csv"
KNOBS = {"max_model_len": 8192, "api_server": False}
ROUNDED = 2e-3  # the profile stores alpha to 4 decimals


def measured_alpha(decodes: int, with_chunk: bool) -> float:
    """The median alpha of the published table's rows of this many decodes, at most a quarter
    of them long, with or without a prefill chunk in the call."""
    table = pd.read_csv(SKEW_TABLE)
    rows = table[(table["n"] == decodes) & (table["nb"] <= LONG_SHARE_FITTED * decodes)
                 & ((table["pc"] > 0) == with_chunk)]
    return float(((rows["t_skew_us"] - rows["t_mean_us"]) / (rows["t_max_us"] - rows["t_mean_us"])).median())


def attention_pair_s(setup, decodes: int, mean: float, longest: float) -> tuple[float, float]:
    """One layer's decode attention over `decodes` sequences at the mean and at the longest context."""
    cost = setup.cost
    at = [attention_decode_op(setup.model, decodes, decodes * c, cost.shard, cost.prec) for c in (mean, longest)]
    return tuple(cost.kernels.gpu_time_s(op)[0] for op in at)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def graphed():
    return prepare("rtx-pro-6000", "llama-3.1-8b", knobs=KNOBS)


@pytest.fixture(scope="module")
def eager():
    return prepare("rtx-pro-6000", "llama-3.1-8b", knobs={**KNOBS, "enforce_eager": True})


def test_a_step_with_a_prefill_chunk_pays_the_measured_share_of_its_longest_decode(graphed):
    n, mean, longest = 8, 1000.0, 4000.0
    uniform = BatchShape(prefill_tokens=256, prefill_context=256, prefill_pairs=256 * 257 / 2, num_decodes=n,
                         decode_context=n * mean, sampled=n + 1)
    skewed = uniform._replace(decode_max_context=longest)
    extra = graphed.cost.iteration(skewed).time_s - graphed.cost.iteration(uniform).time_s
    t_mean, t_max = attention_pair_s(graphed, n, mean, longest)
    factor = graphed.cost.kernels.mixed_decode_factor(n, mean)  # decodes in a mixed call (mixed_attention.py)
    layers = graphed.model.num_layers
    assert extra == pytest.approx(layers * factor * measured_alpha(n, True) * (t_max - t_mean), rel=ROUNDED)
    assert 0.2 < measured_alpha(n, True) < 0.4  # the varlen path: a long sequence is one block per head


def decode_step_extra_s(setup, n: int, mean: float, longest: float) -> float:
    uniform = BatchShape(num_decodes=n, decode_context=n * mean, sampled=n)
    cost = setup.cost
    return cost.iteration(uniform._replace(decode_max_context=longest)).time_s - cost.iteration(uniform).time_s


def test_decode_steps_pay_the_tail_of_the_path_they_run(graphed, eager):
    """Eagerly, decodes alone run FlashAttention-2's split-KV path (the tables' `decode` rows);
    replayed from a FULL CUDA graph on this GPU (compute capability 12.0) they run with the
    split fixed at capture on one-token dummy sequences, one part per sequence: the unsplit
    path's tail (the rows with a prefill chunk in the call)."""
    n, mean, longest = 64, 1000.0, 3500.0
    t_mean, t_max = attention_pair_s(eager, n, mean, longest)
    layers = eager.model.num_layers
    split, unsplit = measured_alpha(n, False), measured_alpha(n, True)
    assert decode_step_extra_s(eager, n, mean, longest) == pytest.approx(layers * split * (t_max - t_mean), rel=ROUNDED)
    assert decode_step_extra_s(graphed, n, mean, longest) == pytest.approx(layers * unsplit * (t_max - t_mean),
                                                                           rel=ROUNDED)
    # at 16 decodes the kernel splits long sequences when it may: the unsplit tail is far larger
    assert measured_alpha(16, False) < 0.05 < 0.15 < measured_alpha(16, True)


def test_a_graph_whose_attention_splits_keeps_the_mean(tmp_path):
    """The same GPU described with a Hopper's compute capability: vLLM would run
    FlashAttention-3, whose ahead-of-time scheduler keeps splitting under graphs; the tables
    do not time that, so a graphed decode step keeps the mean (an eager one still pays)."""
    from simulator.perf.cuda_graphs import graphed_decode_unsplit

    assert [graphed_decode_unsplit(c) for c in ("8.0", "8.9", "9.0", "10.0", "12.0", None)] == [
        True, True, False, False, True, False]
    spec = tmp_path / "sm90.yaml"
    catalogue = Path(__file__).resolve().parents[1] / "hardware_specs/gpus/rtx-pro-6000.yaml"
    spec.write_text(f'extends: {catalogue}\ncompute_capability: "9.0"\nsources: ["test"]\n')
    setup = prepare(str(spec), "llama-3.1-8b", knobs=KNOBS)
    assert setup.calibration is not None and setup.calibration.here  # the same device: its profile applies
    assert decode_step_extra_s(setup, 64, 1000.0, 3500.0) == 0.0
    eager = prepare(str(spec), "llama-3.1-8b", knobs={**KNOBS, "enforce_eager": True})
    assert decode_step_extra_s(eager, 64, 1000.0, 3500.0) > 0


def test_devices_without_skew_measurements_cost_every_decode_at_the_mean():
    setup = prepare("rtx4090", "llama-3.1-8b", knobs={**KNOBS, "max_model_len": 4096})
    batch = BatchShape(prefill_tokens=256, prefill_context=256, prefill_pairs=256 * 257 / 2, num_decodes=8,
                       decode_context=8000.0, sampled=9)
    assert setup.cost.iteration(batch._replace(decode_max_context=4000.0)).time_s == setup.cost.iteration(batch).time_s


@pytest.mark.parametrize("mode", ["graphed", "eager"])
def test_decode_spans_stay_exact_with_the_tail(mode, request, tmp_path):
    """Spans compute each step's longest decode in closed form (spans.plan_span); stepping one
    iteration at a time must give the same run."""
    setup = request.getfixturevalue(mode)
    rng = np.random.default_rng(7)
    path = tmp_path / "trace.jsonl"
    with path.open("w") as f:
        for i in range(40):
            f.write(json.dumps({"id": f"r{i}", "arrival_s": float(i // 10) * 0.5,
                                "input_tokens": int(rng.choice([60, 300, 2500])),
                                "output_tokens": int(rng.integers(5, 120))}) + "\n")
    index = TraceIndex.build(path)
    fast = run_setup(setup, index, fast_forward=True)
    slow = run_setup(setup, index, fast_forward=False)
    np.testing.assert_allclose(fast.requests.sort_values("id")["finish_s"].to_numpy(),
                               slow.requests.sort_values("id")["finish_s"].to_numpy(), rtol=1e-9)
    assert fast.summary["makespan_s"] == pytest.approx(slow.summary["makespan_s"], rel=1e-9)


def test_the_fit_takes_the_median_of_the_long_tail_rows():
    def row(batch: int, long: int, alpha: float, chunk: int = 0) -> dict:
        mean_us, max_us = 100.0, 300.0
        return {"op": "attn_skew", "batch": batch, "kv_len": 600, "kv_max": 2000, "long": long,
                "seq_len": chunk or np.nan, "heads": 32, "kv_heads": 8, "head_dim": 128,
                "time_us": mean_us + alpha * (max_us - mean_us), "mean_us": mean_us, "max_us": max_us}

    rows = pd.DataFrame([row(8, 1, 0.2, 64), row(8, 2, 0.4, 64), row(8, 1, 0.3, 64), row(8, 6, 0.9, 64),
                         row(32, 1, 0.1, 64), row(32, 4, 0.05), row(32, 8, 0.01)])
    skew = ContextSkew.fit(rows)
    mixed, decode = skew.curve(32, 8, 128, "mixed"), skew.curve(32, 8, 128, "decode")
    assert mixed is not None and decode is not None
    assert mixed(8) == pytest.approx(0.3)  # 6 of 8 long is not the long tail: left out
    assert mixed(16) == pytest.approx(0.2)  # halfway (in log2 decodes) to 32's 0.1
    assert decode(32) == pytest.approx(0.03)  # the median of 0.05 and 0.01
    assert skew.curve(16, 8, 128, "mixed") is None
    again = ContextSkew.from_dict(skew.to_dict())
    assert again.curve(32, 8, 128, "mixed")(16) == pytest.approx(0.2)


def test_an_attn_skew_row_needs_its_uniform_references(tmp_path):
    path = tmp_path / "skew.csv"
    path.write_text("op,dtype,batch,kv_len,kv_max,long,heads,kv_heads,head_dim,mean_us,time_us,device\n"
                    "attn_skew,bf16,8,600,2000,1,32,8,128,100,120,GPU-A\n")
    with pytest.raises(InputError, match=r"skew\.csv:2: max_us: column missing \(op attn_skew needs"):
        read_measurements(path)


def test_an_engine_with_its_own_attention_kernels_pays_no_measured_tail():
    """The tables time vLLM's FlashAttention calls; TensorRT-LLM runs its own attention kernels."""
    setup = prepare("rtx-pro-6000", "llama-3.1-8b", scheduler="trtllm", knobs={"max_seq_len": 8192})
    batch = BatchShape(prefill_tokens=256, prefill_context=256, prefill_pairs=256 * 257 / 2, num_decodes=8,
                       decode_context=8000.0, sampled=9)
    assert setup.cost.iteration(batch._replace(decode_max_context=4000.0)).time_s == setup.cost.iteration(batch).time_s
    assert decode_step_extra_s(setup, 64, 1000.0, 3500.0) == 0.0
