"""`vllm serve`'s defaults by device (vLLM 0.9-0.19, EngineArgs.get_batch_defaults): unset
max_num_batched_tokens and max_num_seqs are 8192 and 1024 on a GPU that reports at least 70 GiB
and is not an A100, else 2048 and 256; an unset max_num_seqs is at most a budget that is set.
Only the vllm policy (and disagg's vllm pools) on a GPU; set knobs always win."""
from __future__ import annotations

import json

import pytest

from simulator.api import prepare, simulate

MODEL = "llama-3.1-8b"


def limits(hardware: str, scheduler: str = "vllm", **knobs) -> tuple[int, int | None]:
    dep = prepare(hardware, MODEL, scheduler, knobs={"max_model_len": 8192, **knobs}).deployment
    return dep.max_num_seqs, dep.max_num_batched_tokens


@pytest.mark.parametrize("hardware, expected", [
    ("h100-sxm", (1024, 8192)),        # 79.18 GiB reported
    ("h100-pcie", (1024, 8192)),       # 79.19 GiB
    ("h200", (1024, 8192)),            # 139.8 GiB
    ("mi300x", (1024, 8192)),          # 191.98 GiB: vLLM's own comment names the MI300x
    ("rtx-pro-6000", (1024, 8192)),    # 95.01 GiB
    ("a100-80gb-sxm", (256, None)),    # 79.25 GiB but an A100 (vLLM PR #17885): 2048 chunked
    ("l40s", (256, None)),             # 44.42 GiB
])
def test_unset_knobs_take_the_devices_defaults(hardware, expected):
    assert limits(hardware) == expected


def test_set_knobs_win_and_an_unset_max_num_seqs_is_at_most_the_budget():
    assert limits("h100-sxm", max_num_seqs=64) == (64, 8192)
    assert limits("h100-sxm", max_num_batched_tokens=4096) == (1024, 4096)
    assert limits("h100-sxm", max_num_batched_tokens=512) == (512, 512)  # min(1024, 512)
    assert limits("h100-sxm", max_num_batched_tokens=512, max_num_seqs=600) == (600, 512)
    assert limits("l40s", max_num_batched_tokens=128) == (128, 128)  # min(256, 128)


def test_without_chunked_prefill_the_budget_stays_room_for_the_longest_prompt():
    assert limits("h100-sxm", enable_chunked_prefill=False) == (1024, None)


def test_other_policies_and_devices_keep_their_own_defaults():
    assert limits("h100-sxm", "sarathi") == (256, None)    # 512-token chunks (its own budget)
    assert limits("h100-sxm", "splitfuse") == (256, None)  # 768
    assert limits("h100-sxm", "orca") == (256, None)
    trt = prepare("h100-sxm", MODEL, "trtllm", knobs={"max_seq_len": 8192}).deployment
    assert (trt.max_batch_size, trt.max_num_tokens) == (2048, 8192)


def test_a_cpu_takes_vllm_serves_cpu_defaults_per_rank():
    """vLLM's CPU platform: 2048 tokens and 128 sequences per rank of the tp x pp group,
    whatever the memory (a socket's 256 GiB and more get no GPU-sized budget)."""
    assert limits("xeon-6980p") == (128, 2048)
    assert limits("xeon-6980p-2s", tp=2) == (256, 4096)
    assert limits("xeon-6980p", max_num_batched_tokens=64) == (64, 64)
    assert limits("xeon-6980p", max_num_seqs=8) == (8, 2048)


def test_disaggregated_vllm_pools_each_take_the_devices_defaults():
    split = prepare("dgx-h100", MODEL, "disagg", tp=1, knobs={"max_model_len": 8192}).disagg
    assert split is not None
    for pool in (split.prefill, split.decode):
        assert (pool.deployment.max_num_seqs, pool.deployment.max_num_batched_tokens) == (1024, 8192)


def test_summary_and_console_report_the_resolved_limits(tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"arrival_s": 0.0, "input_tokens": 100, "output_tokens": 2}) + "\n")
    summary = simulate("h100-sxm", trace, model=MODEL, knobs={"max_model_len": 8192}).summary
    assert summary["batch_limits"] == {"sequences": 1024, "tokens": 8192}
    from simulator.cli.run_summary import print_run_summary
    print_run_summary(summary, None)
    assert "per step: at most 1024 sequences, 8192 tokens" in capsys.readouterr().out
