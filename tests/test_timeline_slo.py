"""SLO parsing, judging and the summary block (hand-computed attainments), the Perfetto
timeline written from iterations.csv, and the CLI's --slo/--timeline handling."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from simulator.cli import main
from simulator.cli.run_summary import _extra_lines
from simulator.errors import InputError
from simulator.metrics.slo import SloSpec, judge, parse_slo, slo_block
from simulator.metrics.timeline import COUNTER_RESOLUTION, write_timeline

REPO = Path(__file__).resolve().parent.parent
NAN = math.nan


# -- parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("items, expected", [
    (["ttft_p90=0.5", "tpot_p90=0.05"], SloSpec(0.5, 0.05, None, 0.9)),
    (["ttft_p90=0.5 tpot_p99=0.05"], SloSpec(0.5, 0.05, None, 0.99)),  # strictest percentile
    (["ttft_p90=0.5,e2e_p99.9=20"], SloSpec(0.5, None, 20.0, 0.999)),
    (["TTFT=0.5"], SloSpec(0.5, None, None, 0.9)),  # bare target: the default attainment
    (["ttft=0.5", "tpot_p95=0.1"], SloSpec(0.5, 0.1, None, 0.95)),
    (["ttft_p90=0.5", "attainment=0.8"], SloSpec(0.5, None, None, 0.8)),  # attainment overrides
    (["e2e_p100=30"], SloSpec(None, None, 30.0, 1.0)),
])
def test_parse_slo(items, expected):
    assert parse_slo(items) == expected


def test_no_slo_items_is_none():
    assert parse_slo([]) is None


@pytest.mark.parametrize("items, message", [
    (["ttft_p90"], "--slo ttft_p90: expected KEY=VALUE"),
    (["ttft_p90="], "--slo ttft_p90=: expected KEY=VALUE"),
    (["ttft_p90=fast"], "--slo ttft_p90=fast: 'fast' is not a number"),
    (["ttft_p90=inf"], "must be a finite number"),
    (["ttft_p90=0"], "--slo ttft_p90=0: the target must be > 0 seconds"),
    (["ttft_p0=1"], "percentile p0 must be in (0, 100]"),
    (["ttft_p101=1"], "percentile p101 must be in (0, 100]"),
    (["latency_p90=1"], "--slo latency_p90=1: unknown key 'latency_p90'"),
    (["ttft_q90=1"], "unknown key 'ttft_q90'"),
    (["tbt_p99=0.1"], "no per-request TBT target; use tpot"),
    (["ttft=1", "ttft_p90=2"], "--slo ttft_p90=2: ttft given twice"),
    (["attainment=1.5", "ttft=1"], "attainment must be in (0, 1]"),
    (["ttft=1", "attainment=0.9", "attainment=0.8"], "attainment given twice"),
    (["attainment=0.9"], "no target (ttft, tpot or e2e) given"),
])
def test_parse_slo_errors(items, message):
    with pytest.raises(InputError) as err:
        parse_slo(items)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


# -- judging -------------------------------------------------------------------------
# Five requests: 0 meets everything; 1 has a slow first token; 2 slow tokens; 3 has one
# output token (no TPOT); 4 was rejected (no times at all).
TTFT = np.array([0.2, 0.6, 0.3, 0.1, NAN])
TPOT = np.array([0.04, 0.01, 0.06, NAN, NAN])
E2E = np.array([2.0, 3.0, 4.0, 0.1, NAN])


def test_judge_global_targets():
    ok = judge(TTFT, TPOT, E2E, SloSpec(ttft_s=0.5, tpot_s=0.05))
    assert ok.tolist() == [True, False, False, True, False]


def test_judge_boundaries_pass():
    ok = judge(TTFT, TPOT, E2E, SloSpec(ttft_s=0.6, tpot_s=0.06))
    assert ok.tolist() == [True, True, True, True, False]


def test_judge_e2e_target():
    assert judge(TTFT, TPOT, E2E, SloSpec(e2e_s=2.5)).tolist() == [True, False, False, True, False]


def test_judge_rejected_fails_even_without_a_latency_it_could_miss():
    """Only a TPOT target: the rejected request has NaN TPOT, yet it never completed."""
    assert judge(TTFT, TPOT, E2E, SloSpec(tpot_s=0.05)).tolist() == [True, True, False, True, False]


def test_per_request_targets_override_the_spec():
    """Request 1's own 0.7 s TTFT lets its 0.6 s pass; request 3's own 0.05 s fails its
    0.1 s; request 2's own 0.1 s TPOT lets its 0.06 s pass."""
    own_ttft = [None, 0.7, None, 0.05, None]
    own_tpot = np.array([NAN, NAN, 0.1, NAN, NAN])
    ok = judge(TTFT, TPOT, E2E, SloSpec(ttft_s=0.5, tpot_s=0.05), own_ttft, own_tpot)
    assert ok.tolist() == [True, True, True, False, False]


def test_trace_targets_alone():
    """No spec: only the requests' own targets apply (request 0 has 0.1 s and fails)."""
    own_ttft = np.array([0.1, NAN, NAN, NAN, NAN])
    assert judge(TTFT, TPOT, E2E, None, own_ttft).tolist() == [False, True, True, True, False]


def test_slo_block_from_hand_counts():
    spec = SloSpec(ttft_s=0.5, tpot_s=0.05)
    met = int(judge(TTFT, TPOT, E2E, spec).sum())
    block = slo_block(met, 5, 4.0, spec)
    assert block == {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None, "attainment": 0.4, "required_attainment": 0.9,
                     "met": False, "goodput_requests_per_s": 0.5, "judged_requests": 5}
    assert slo_block(9, 10, 2.0, SloSpec(ttft_s=1.0))["met"] is True  # 0.9 >= 0.9


def test_slo_block_trace_targets_only():
    block = slo_block(3, 4, 0.0, None, {"ttft_s": "per-request", "tpot_s": 0.05})
    assert block == {"ttft_s": "per-request", "tpot_s": 0.05, "e2e_s": None, "attainment": 0.75,
                     "required_attainment": None, "met": None, "goodput_requests_per_s": 0.0, "judged_requests": 4}
    assert slo_block(0, 0, 1.0, SloSpec(ttft_s=1.0))["attainment"] is None


# -- timeline ------------------------------------------------------------------------
HEADER = ["replica", "stage", "start_s", "duration_s", "prefill_tokens", "decode_tokens", "batch_size",
          "kv_blocks_used", "mfu", "mbu"]


def write_iterations(path: Path, rows: list[list], role: bool) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER + (["role"] if role else []))
        w.writerows(rows)


def events(path: Path) -> list[dict]:
    return json.loads(path.read_text())["traceEvents"]


ROWS = [  # replica, stage, start, duration, prefill, decode, batch, kv, mfu, mbu
    [0, "mixed", 0.0, 0.0125, 512, 0, 1, 10, 0.25, 0.5],
    [1, "mixed", 0.001, 0.002, 0, 64, 64, 300, 0.01, 0.9],
    [0, "mixed", 0.0125, 0.00875, 512, 31, 32, 10, 0.3, 0.6],
    [0, "mixed", 0.02125, 0.007, 0, 32, 32, 11, 0.02, 0.8],
    [0, "mixed", 0.02825, 0.007, 0, 32, 32, 200, 0.02, 0.8],
    [0, "mixed", 0.03525, 0.007, 0, 32, 32, 201, 0.02, 0.8],
    [0, "mixed", 0.04225, 0.007, 0, 32, 32, 203, 0.02, 0.8],
    [0, "mixed", 0.04925, 0.007, 0, 1, 1, 0, 0.001, 0.7],
]


@pytest.mark.parametrize("role", [False, True])
def test_timeline_events(tmp_path, role):
    rows = [r + (["prefill" if r[0] == 0 else "decode"] if role else []) for r in ROWS]
    write_iterations(tmp_path / "iterations.csv", rows, role)
    count = write_timeline(tmp_path / "iterations.csv", tmp_path / "t.json", {1: "H100 #1"})
    evs = events(tmp_path / "t.json")
    assert count == len(evs)
    steps = [e for e in evs if e["ph"] == "X"]
    assert len(steps) == len(ROWS)
    for e, r in zip(steps, ROWS):
        assert (e["pid"], e["tid"]) == (r[0], 0)
        assert e["ts"] == pytest.approx(r[2] * 1e6, abs=1e-3) and e["dur"] == pytest.approx(r[3] * 1e6, abs=1e-3)
        assert e["args"] == {"prefill_tokens": r[4], "decode_tokens": r[5], "batch_size": r[6],
                             "kv_blocks_used": r[7], "mfu": r[8], "mbu": r[9]}
    assert [e["name"] for e in steps[:3]] == ["prefill 512", "decode 64", "prefill 512 + decode 31"]
    names = {e["pid"]: e["args"]["name"] for e in evs if e["name"] == "process_name"}
    assert names == ({0: "replica 0 (prefill)", 1: "H100 #1 (decode)"} if role else {0: "replica 0", 1: "H100 #1"})
    # replica 0's KV blocks 10 10 10 11 200 201 203 0: kept when moved by >= max(1, 1 % of the last kept)
    counters = [(e["pid"], e["args"]["blocks"]) for e in evs if e["ph"] == "C"]
    assert [v for pid, v in counters if pid == 0] == [10, 11, 200, 203, 0]
    assert [v for pid, v in counters if pid == 1] == [300]


def test_timeline_streams_many_blocks(tmp_path):
    """Enough rows for several CSV blocks: every row is an event and the thinned counter
    stays within its resolution of every row's value, across block boundaries."""
    rng = np.random.default_rng(0)
    n = 120_000
    replica = rng.integers(0, 2, n)
    kv = np.abs(np.cumsum(rng.integers(-3, 4, n))) + rng.integers(0, 2, n) * 1000 * (np.arange(n) > n // 2)
    rows = [[r, "mixed", i * 1e-3, 1e-3, 0, 8, 8, k, 0.1, 0.5] for i, (r, k) in enumerate(zip(replica, kv))]
    write_iterations(tmp_path / "iterations.csv", rows, role=False)
    assert (tmp_path / "iterations.csv").stat().st_size > 3 * (1 << 20)  # pyarrow's default block is 1 MiB
    count = write_timeline(tmp_path / "iterations.csv", tmp_path / "t.json")
    evs = events(tmp_path / "t.json")
    assert count == len(evs)
    assert sum(e["ph"] == "X" for e in evs) == n
    for r in (0, 1):
        samples = {round(e["ts"]): e["args"]["blocks"] for e in evs if e["ph"] == "C" and e["pid"] == r}
        assert len(samples) < (replica == r).sum()
        last = None
        for i in np.flatnonzero(replica == r).tolist():
            last = samples.get(round(i * 1e3), last)
            assert abs(kv[i] - last) < max(1.0, COUNTER_RESOLUTION * last)


# -- CLI -----------------------------------------------------------------------------

def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["run", "h100-sxm", str(REPO / "workloads/traces/example-chat.jsonl"), "--quiet", *args])
    return code, capsys.readouterr().err


def test_cli_bad_slo_exits_2(capsys, tmp_path):
    code, err = run_cli(capsys, "--slo", "ttft_p90=0.5", "tbt_p99=0.1", "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --slo tbt_p99=0.1:")
    assert not (tmp_path / "o").exists()


def test_cli_timeline_directory_must_exist(capsys, tmp_path):
    code, err = run_cli(capsys, "--timeline", str(tmp_path / "nope" / "t.json"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert err.count("\n") == 1 and "does not exist" in err
    assert not (tmp_path / "o").exists()


def test_cli_run_with_slo_and_timeline(capsys, tmp_path):
    """End to end: the timeline has one step event per iterations.csv row, and the summary
    judges every request against --slo."""
    out = tmp_path / "o"
    code, _ = run_cli(capsys, "--slo", "ttft_p90=0.5", "tpot_p90=0.05", "--timeline", str(out / "timeline.json"),
                      "--out", str(out))
    assert code == 0
    with (out / "iterations.csv").open() as f:
        rows = sum(1 for _ in f) - 1
    assert sum(e["ph"] == "X" for e in events(out / "timeline.json")) == rows
    slo = json.loads((out / "summary.json").read_text())["slo"]
    assert slo["judged_requests"] == 200 and slo["required_attainment"] == 0.9
    assert (slo["ttft_s"], slo["tpot_s"]) == (0.5, 0.05)


def test_console_lines_for_optional_blocks():
    summary = {
        "slo": {"ttft_s": 0.5, "tpot_s": "per-request", "e2e_s": None, "attainment": 0.4,
                "required_attainment": 0.9, "met": False, "goodput_requests_per_s": 0.5, "judged_requests": 5},
        "prefix_cache": {"hit_rate": 0.25, "hit_tokens": 1024, "lookup_tokens": 4096, "resumed_tokens": 48},
        "kv_transfer": {"bytes": 2.5e9, "time_s": 0.125},
        "swaps": {"count": 3, "bytes": 1.5e9},
    }
    assert _extra_lines(summary) == [
        "SLO TTFT ≤ 0.5 s, TPOT ≤ per-request: attainment 40.0% vs 90.0% required (missed) over 5 requests · "
        "goodput 0.50 req/s",
        "prefix cache: hit rate 25.0% · 1024 prompt tokens reused · 48 tokens found again by preempted requests",
        "KV transfer: 2.50 GB in 0.125 s",
        "swaps: 3 (1.50 GB)",
    ]
    assert _extra_lines({}) == []
    # on by default (vLLM v1), the cache says nothing of a trace that names no shared prefixes
    # and a run that preempted nobody
    idle = {"hit_rate": 0.0, "hit_tokens": 0, "lookup_tokens": 0, "resumed_tokens": 0}
    assert _extra_lines({"prefix_cache": idle}) == []
    assert _extra_lines({"prefix_cache": {**idle, "resumed_tokens": 32}}) == [
        "prefix cache: 32 tokens found again by preempted requests"]
