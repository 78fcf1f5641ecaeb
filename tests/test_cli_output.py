"""What the commands print when stdout is not a terminal (a pipe, a file, a CI log), in each
`--format`, and the list of knobs.

Under pytest, stdout is captured, so it is not a terminal: the tables must come out whole (no
"…", no wrapping at 80 columns, no trailing spaces), `--format json` must be the result and
nothing else, `--format csv` the table's columns. `simulate plan --executor ray --quiet` must
print nothing at all, Ray's start-up lines included.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.cli import main
from simulator.deployment import parse_set

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "workloads" / "traces" / "example-chat.jsonl"
LONG_NAME = "rtx4090-with-a-candidate-name-far-longer-than-any-column-rich-would-give-it"


def _assert_whole(text: str) -> None:
    """No cell cut short, no line ending in spaces."""
    assert "…" not in text, text
    trailing = [line for line in text.splitlines() if line != line.rstrip()]
    assert not trailing, trailing


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", "h100-sxm", str(TRACE), "--model", "llama-3.1-8b", "--out", str(out), "--quiet"]) == 0
    return out


def _run(run_dir: Path, *extra: str) -> list[str]:
    return ["run", "h100-sxm", str(TRACE), "--model", "llama-3.1-8b", "--out", str(run_dir), *extra]


def test_a_run_table_off_a_terminal_is_whole(run_dir, capsys):
    assert main(_run(run_dir)) == 0
    out = capsys.readouterr().out
    _assert_whole(out)
    lines = out.splitlines()
    assert lines[0].startswith("Llama-3.1-8B on H100") and "replicas=1" in lines[0]  # the title, on one line
    assert any(re.match(r"│ TTFT +│ [\d.]+ │", line) for line in lines), out
    # the lines below the table are not wrapped at 80 columns
    memory = next(line for line in lines if line.startswith("memory ("))
    assert memory.endswith("tokens)") and len(memory) > 80, memory


def test_run_json_is_summary_json(run_dir, capsys):
    assert main(_run(run_dir, "--format", "json")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads((run_dir / "summary.json").read_text())


def test_run_csv_is_the_latency_table(run_dir, capsys):
    assert main(_run(run_dir, "--format", "csv")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["latency (s)", "mean", "p50", "p90", "p99", "max"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [r[0] for r in rows[1:]] == ["TTFT", "TBT", "TPOT", "E2E", "QUEUE"]
    for row in rows[1:]:
        stats = summary[f"{row[0].lower()}_s"]
        assert [float(v) for v in row[1:]] == pytest.approx([stats[c] for c in rows[0][1:]])


def _tiny_plan(directory: Path) -> Path:
    """A plan of a few seconds: 20 short requests, one RTX 4090 candidate with a long name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "t.jsonl").write_text("".join(
        json.dumps({"arrival_s": 0.5 * i, "input_tokens": 200, "output_tokens": 20}) + "\n" for i in range(20)))
    plan = directory / "plan.yaml"
    plan.write_text("workload: {trace: t.jsonl}\nmodel: llama-3.1-8b\nslo: {ttft_p90: 1.0}\ntarget_rate: 1\n"
                    "rates: {min: 0.5, max: 8}\ncandidates:\n"
                    f"  - {{name: {LONG_NAME}, hardware: rtx4090, calibration: none, knobs: {{max_model_len: 4096}}}}\n"
                    "  - {name: too-small, hardware: rtx4090, model: llama-2-70b}\n")
    return plan


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny plan, run once (later runs read its points from the cache)."""
    directory = tmp_path_factory.mktemp("plan")
    plan, out = _tiny_plan(directory), directory / "out"
    assert main(["plan", str(plan), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    return plan, out


def test_a_plan_table_off_a_terminal_is_whole(plan_run, capsys):
    plan, out = plan_run
    assert main(["plan", str(plan), "--out", str(out), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    _assert_whole(text)
    lines = text.splitlines()
    assert lines[0] == "plan.yaml: llama-3.1-8b at 1 req/s, objective min_cost"
    header = next(line for line in lines if "rank" in line)
    for column in ("rank", "candidate", "req/s per replica", "replicas", "devices", "$/hour", "$/M output tok",
                   "J/output tok"):
        assert f" {column} " in header, header
    assert any(re.match(rf"│ +1 │ {LONG_NAME} +│", line) for line in lines), text
    assert any(line.startswith("too-small: infeasible: ") for line in lines), text  # the note, on one line


def test_plan_json_and_csv_are_the_table_rows(plan_run, capsys):
    plan, out = plan_run
    assert main(["plan", str(plan), "--out", str(out), "--workers", "1", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["candidate"] for r in rows] == [LONG_NAME, "too-small"]
    assert rows[0]["rank"] == 1 and rows[0]["recommended"] and rows[1]["rank"] is None and not rows[1]["feasible"]
    with open(out / "candidates.csv") as stream:
        written = {r["candidate"]: r for r in csv.DictReader(stream)}
    assert rows[0]["max_rate_req_s"] == pytest.approx(float(written[LONG_NAME]["max_rate_req_s"]))
    assert rows[0]["cost_per_hour"] == pytest.approx(float(written[LONG_NAME]["cost_per_hour"]))

    assert main(["plan", str(plan), "--out", str(out), "--workers", "1", "--format", "csv"]) == 0
    table = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert table[0] == ["rank", "candidate", "req/s per replica", "replicas", "devices", "$/hour", "$/M output tok",
                        "J/output tok"]
    assert [r[:2] for r in table[1:]] == [["1", LONG_NAME], ["", "too-small"]]
    assert float(table[1][2]) == pytest.approx(rows[0]["max_rate_req_s"])


def test_plan_on_ray_quiet_prints_nothing(tmp_path):
    """Ray's start-up lines (token authentication, the local instance) included: a real local
    Ray is started in a child process, whose stdout and stderr are read whole."""
    pytest.importorskip("ray")
    plan = _tiny_plan(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "plan", str(plan), "--out", str(tmp_path / "out"),
                           "--executor", "ray", "--workers", "1", "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
    with open(tmp_path / "out" / "results.csv") as stream:
        results = list(csv.DictReader(stream))
    assert results and all(r["cached"] == "false" for r in results)  # Ray simulated them


def test_ray_init_quiet_keeps_only_errors():
    from simulator.planning.executors import ray_init_args

    quiet, loud = ray_init_args(None, 2, quiet=True), ray_init_args(None, 2, quiet=False)
    assert quiet["log_to_driver"] is False and quiet["include_dashboard"] is False
    assert quiet["configure_logging"] and quiet["logging_level"] == 40 and loud["logging_level"] == 30
    assert quiet["num_cpus"] == 2 and ray_init_args("auto", 2, quiet=True)["num_cpus"] is None


def _knobs(capsys) -> list[dict]:
    assert main(["knobs", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_knobs_lists_exactly_what_set_accepts(capsys):
    listed = _knobs(capsys)
    names = [k["knob"] for k in listed]
    assert len(names) == len(set(names)) and "max_num_seqs" in names and "max_batch_size" in names
    for knob in listed:
        parse_set([f"{knob['knob']}=1"])  # accepted by --set
        assert knob["meaning"].strip() and "\n" not in knob["meaning"], knob
        assert knob["mirrors"] == "simulator-only" or knob["mirrors"].startswith(("vLLM ", "TensorRT-LLM ")), knob
    # and --set knows no knob the list leaves out: the unknown-knob error names the same ones
    assert main(["run", "h100-sxm", str(TRACE), "--set", "no_such_knob=1"]) == 2
    error = capsys.readouterr().err
    known = re.search(r"unknown knob \(known: ([^;)]*)", error)
    assert known, error
    assert known.group(1).split(", ") == names
    assert "simulate knobs" in error


def test_knob_defaults_are_the_deployments(capsys):
    from simulator.deployment import Deployment

    default = Deployment()
    for knob in _knobs(capsys):
        assert knob["default"] == getattr(default, knob["knob"]), knob
    vllm = {k["knob"]: k["mirrors"] for k in _knobs(capsys)}
    assert vllm["max_num_seqs"] == "vLLM --max-num-seqs" and vllm["router"] == "simulator-only"


def test_knobs_table_and_csv(capsys):
    assert main(["knobs"]) == 0
    text = capsys.readouterr().out
    _assert_whole(text)
    assert re.search(r"│ max_num_seqs +│ 256 +│ most sequences in one step \(unset, vllm on a GPU: 1024 .*│ vLLM "
                     r"--max-num-seqs +│", text), text
    assert main(["knobs", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["knob", "default", "meaning", "mirrors"]
    assert {r["knob"]: r["default"] for r in rows}["enable_chunked_prefill"] == "true"


def test_catalogue_lists_in_each_format(capsys):
    assert main(["specs", "list", "--format", "json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert {"name": "h100-sxm"}.items() <= next(s for s in specs if s["name"] == "h100-sxm").items()
    assert main(["specs", "list", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["name"] for r in rows] == [s["name"] for s in specs]
    assert main(["models", "--format", "json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert models["llama-3.1-8b"]["layers"] == 32 and models["llama-3.1-8b"]["experts"] is None
    assert (models["deepseek-r1"]["weights"], models["deepseek-r1"]["context"]) == ("fp8", 163840)
    assert models["llama-3.1-8b"]["source"] == "meta-llama/Llama-3.1-8B"  # what --model also takes
    assert main(["models", "--format", "csv"]) == 0
    assert next(csv.reader(io.StringIO(capsys.readouterr().out)))[:3] == ["name", "params_b", "layers"]


def test_traces_lists_the_shipped_traces_by_catalogue_name(tmp_path, monkeypatch, capsys):
    from simulator.paths import TRACES_DIR
    from simulator.workloads.trace import trace_catalogue

    monkeypatch.chdir(tmp_path)  # the names work from any folder
    assert main(["traces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(trace_catalogue())
    assert lines[0].split()[:3] == ["azure-code-2023", "azure", "8,819"]
    assert lines[-1] == f"origins and licences: {TRACES_DIR / 'README.md'}"
    assert main(["traces", "--format", "json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["example-chat"]["requests"] == 200 and rows["example-chat"]["format"] == "jsonl"
    assert rows["example-chat"]["file"] == "workloads/traces/example-chat.jsonl"
    assert rows["mooncake-conversation-1k"]["span_s"] == pytest.approx(330.0)
    assert main(["traces", "--format", "csv"]) == 0
    assert next(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        "name", "format", "requests", "span_s", "mean_input_tokens", "mean_output_tokens", "file"]
