"""Topologies: a disaggregated deployment runs a policy of its own in each pool.

A prefill pool under Sarathi-Serve's policy chunks prompts at 512 tokens (its OSDI'24
configuration) where vLLM's fills its 2048-token budget, while the decode pool, running
vLLM's policy, never prefills; the summary names each pool's policy. Policies that cannot
run a pool are refused naming the knob.
"""
from __future__ import annotations

import json

import pytest

from simulator.api import simulate
from simulator.errors import InputError


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("topology") / "trace.jsonl"
    rows = [{"arrival_s": 0.05 * i, "input_tokens": 1500 + 37 * i, "output_tokens": 40} for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(trace, **knobs):
    return simulate("dgx-h100", trace, model="llama-3.1-8b", tp=1, scheduler="disagg", knobs=knobs,
                    calibration="none")


def test_each_pool_runs_its_own_policy(trace):
    mixed = _run(trace, prefill_scheduler="sarathi", decode_scheduler="vllm")
    plain = _run(trace, max_num_batched_tokens=2048)  # unset, 8192 on an H100: prompts would not fill it
    for result, policy, budget in ((mixed, "sarathi", 512), (plain, "vllm", 2048)):
        pools = result.summary["pools"]
        assert (pools["prefill"]["scheduler"], pools["decode"]["scheduler"]) == (policy, "vllm")
        assert pools["prefill"]["batch_limits"]["tokens"] == budget
        assert result.summary["requests"]["completed"] == 40
        steps = result.iterations
        prefill = steps[steps["role"] == "prefill"]
        assert prefill["prefill_tokens"].max() == budget  # prompts of 1500+ tokens fill the budget
        assert steps.loc[steps["role"] == "decode", "prefill_tokens"].max() == 0  # the KV arrives computed
    # smaller chunks take more prefill steps for the same prompts
    assert (mixed.iterations["role"] == "prefill").sum() > (plain.iterations["role"] == "prefill").sum()


@pytest.mark.parametrize("knob, policy", [("prefill_scheduler", "trtllm"), ("decode_scheduler", "orca"),
                                          ("decode_scheduler", "nosuch")])
def test_a_policy_that_cannot_run_a_pool_is_refused(trace, knob, policy):
    with pytest.raises(InputError, match=rf"{knob}: '{policy}' cannot run a disaggregated pool"):
        _run(trace, **{knob: policy})
