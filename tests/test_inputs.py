"""Every kind of bad input (docs/contracts.md, sections 1-4 and 9) fails cleanly.

The contract: exit code 2, exactly one line on stderr starting with "error:", naming the file
and the line or field, no traceback, and no output directory left behind. The CLI is driven
through `simulator.cli.main` for every case, and as a user drives it (a subprocess of
`python -m simulator.cli`, run concurrently from one module fixture) for one case of each kind,
so the whole file stays fast. The same errors are also checked at the Python level
(`InputError`), which is cheaper still.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from simulator.api import prepare, simulate
from simulator.deployment import build_deployment, parse_set
from simulator.errors import InputError
from simulator.hardware.loader import load_system
from simulator.models.config import load_model
from simulator.workloads.trace import TraceIndex

REPO = Path(__file__).resolve().parent.parent

GOOD_LINE = json.dumps({"arrival_s": 0.0, "input_tokens": 16, "output_tokens": 2}) + "\n"

# A complete, valid GPU spec (H100-SXM numbers), written out here so the cases below are
# self-contained edits of it.
VALID_GPU = {
    "name": "Test-GPU",
    "kind": "gpu",
    "compute": {"units": 132, "clock": "1.83 GHz", "peak": {"bf16": "989 TFLOPS", "fp16": "989 TFLOPS"}},
    "memory": [{"name": "hbm3", "capacity": "80 GB", "bandwidth": "3.35 TB/s"}],
    "links": {"nvlink": {"bandwidth": "450 GB/s", "latency": "2 us"}},
    "power": {"tdp": "700 W", "idle": "80 W"},
    "sources": ["test"],
}

REQUIRED_DEVICES = ("a100-40gb-sxm", "a100-80gb-sxm", "a100-80gb-pcie", "h100-sxm", "h100-pcie", "h200", "b200",
                    "gh200", "l4", "l40s", "rtx4090", "mi300x", "xeon-8480")
REQUIRED_SYSTEMS = ("dgx-a100", "dgx-h100")


@pytest.fixture(scope="module")
def repo_root() -> Path:
    return REPO


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _gpu(d: Path, name: str, edit=None, text: str | None = None) -> Path:
    spec = copy.deepcopy(VALID_GPU)
    if edit is not None:
        edit(spec)
    return _write(d / name, text if text is not None else yaml.safe_dump(spec, sort_keys=False))


def _set(path: tuple, value):
    def edit(spec):
        node = spec
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _drop(key: str):
    return lambda spec: spec.pop(key)


# --- the cases ---------------------------------------------------------------------------------------
# Each builder gets an empty directory and returns (CLI args after `run`, fragments the one error
# line must contain). Every run gets `--out <dir>/outs/run` unless the case passes its own.


def _trace_case(name: str, text: str, *fragments: str):
    def build(d: Path):
        trace = _write(d / name, text)
        return ["h100-sxm", str(trace)], [str(trace), *fragments]

    return build


def _hw_case(name: str, *fragments: str, edit=None, text: str | None = None):
    def build(d: Path):
        hw = _gpu(d, name, edit, text)
        trace = _write(d / "ok.jsonl", GOOD_LINE)
        return [str(hw), str(trace), "--model", "llama-3.1-8b"], [name, *fragments]

    return build


def _flags_case(flags: list[str], *fragments: str):
    def build(d: Path):
        trace = _write(d / "ok.jsonl", GOOD_LINE)
        return ["h100-sxm", str(trace), *flags], list(fragments)

    return build


def _extends_missing(d: Path):
    hw = _write(d / "child.yaml", "extends: ./does-not-exist.yaml\nname: Child\n")
    trace = _write(d / "ok.jsonl", GOOD_LINE)
    # names the file holding the bad field, the field, and the file it could not find
    return [str(hw), str(trace)], ["child.yaml", "extends", "does-not-exist.yaml"]


def _system_case(deployment: dict, *fragments: str):
    """A system YAML (eight H100s) with this `deployment:` block: an error in one of its knobs
    names the file and the field path, as any other error in a hardware YAML does."""
    def build(d: Path):
        spec = {"name": "Box", "kind": "system", "node": {"accelerator": {"spec": "h100-sxm", "count": 8}},
                "deployment": deployment, "sources": ["test"]}
        hw = _write(d / "box.yaml", yaml.safe_dump(spec, sort_keys=False))
        trace = _write(d / "ok.jsonl", GOOD_LINE)
        return [str(hw), str(trace)], [f"{hw}: deployment.", *fragments]

    return build


def _missing_hidden_size(d: Path):
    cfg = {"num_attention_heads": 32, "num_hidden_layers": 2, "intermediate_size": 1024, "vocab_size": 1000,
           "num_key_value_heads": 8}
    path = _write(d / "config.json", json.dumps(cfg))
    trace = _write(d / "ok.jsonl", GOOD_LINE)
    return ["h100-sxm", str(trace), "--model", str(path)], [str(path), "hidden_size"]


def _unknown_hardware(d: Path):
    trace = _write(d / "ok.jsonl", GOOD_LINE)
    return ["no-such-gpu", str(trace)], ["no-such-gpu"]


def _missing_trace(d: Path):
    return ["h100-sxm", str(d / "nowhere.jsonl")], [str(d / "nowhere.jsonl")]


MALFORMED_YAML = "name: X\nkind: gpu\ncompute: units: 132\nmemory: []\n"  # line 3: mapping in a scalar

CASES = {
    # traces (contracts section 3): error: FILE:LINE: reason
    "trace_not_json": _trace_case("t.jsonl", GOOD_LINE + "{oops\n", "t.jsonl:2"),
    "trace_negative_input": _trace_case(
        "t.jsonl", json.dumps({"arrival_s": 0, "input_tokens": -5, "output_tokens": 3}) + "\n",
        "t.jsonl:1", "input_tokens"),
    "trace_missing_output": _trace_case(
        "t.jsonl", GOOD_LINE + json.dumps({"arrival_s": 1, "input_tokens": 5}) + "\n", "t.jsonl:2", "output_tokens"),
    "trace_zero_output": _trace_case(
        "t.jsonl", json.dumps({"arrival_s": 0, "input_tokens": 5, "output_tokens": 0}) + "\n",
        "t.jsonl:1", "output_tokens"),
    "trace_arrival_string": _trace_case(
        "t.jsonl", json.dumps({"arrival_s": "soon", "input_tokens": 5, "output_tokens": 3}) + "\n",
        "t.jsonl:1", "arrival_s"),
    "trace_empty": _trace_case("empty.jsonl", "", "empty"),
    # numbers JSON allows (Python's json reads NaN and Infinity) that are no token count
    "trace_nan_input": _trace_case(
        "t.jsonl", '{"arrival_s": 0, "input_tokens": NaN, "output_tokens": 3}\n', "t.jsonl:1", "input_tokens"),
    "trace_inf_output": _trace_case(
        "t.jsonl", '{"arrival_s": 0, "input_tokens": 5, "output_tokens": Infinity}\n', "t.jsonl:1", "output_tokens"),
    "trace_huge_float_input": _trace_case(
        "t.jsonl", '{"arrival_s": 0, "input_tokens": 1e308, "output_tokens": 3}\n', "t.jsonl:1", "input_tokens",
        "<= 2147483647"),
    "trace_huge_int_output": _trace_case(
        "t.jsonl", json.dumps({"arrival_s": 0, "input_tokens": 5, "output_tokens": 2**70}) + "\n", "t.jsonl:1",
        "output_tokens", "<= 2147483647"),
    "trace_nan_arrival": _trace_case(
        "t.jsonl", '{"arrival_s": NaN, "input_tokens": 5, "output_tokens": 3}\n', "t.jsonl:1", "arrival_s"),
    "azure_huge_count": _trace_case(
        "azure.csv", f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12,{2**70}\n",
        "azure.csv:2", "GeneratedTokens"),
    "trace_missing_file": _missing_trace,
    "azure_non_integer": _trace_case(
        "azure.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,12.5,44\n",
        "azure.csv:2", "ContextTokens"),
    # hardware YAML (contracts section 1): error: FILE: field.path: reason
    "hw_malformed_yaml": _hw_case("bad.yaml", "bad.yaml:3", "YAML", text=MALFORMED_YAML),
    "hw_bandwidth_no_unit": _hw_case("bad.yaml", "memory[0].bandwidth", '"3.35"', "no unit",
                                     edit=_set(("memory", 0, "bandwidth"), "3.35")),
    "hw_bandwidth_number": _hw_case("bad.yaml", "memory[0].bandwidth", "no unit",
                                    edit=_set(("memory", 0, "bandwidth"), 3.35)),
    "hw_capacity_is_bandwidth": _hw_case("bad.yaml", "memory[0].capacity", "80 GB/s",
                                         edit=_set(("memory", 0, "capacity"), "80 GB/s")),
    "hw_unknown_field": _hw_case("bad.yaml", "frobnicate", "unknown field", edit=_set(("frobnicate",), 3)),
    "hw_unknown_nested_field": _hw_case("bad.yaml", "memory[0].speed", "unknown field",
                                        "known here: name, capacity, bandwidth",
                                        edit=_set(("memory", 0, "speed"), "1 TB/s")),
    "hw_unknown_link_field": _hw_case("bad.yaml", "links.nvlink.speed", "known here: bandwidth, latency, efficiency",
                                      edit=_set(("links", "nvlink", "speed"), "1 TB/s")),
    "hw_missing_memory": _hw_case("bad.yaml", "memory", "missing", edit=_drop("memory")),
    "hw_negative_capacity": _hw_case("bad.yaml", "memory[0].capacity", "-80 GB",
                                     edit=_set(("memory", 0, "capacity"), "-80 GB")),
    "hw_idle_above_tdp": _hw_case("bad.yaml", "power", "idle", "tdp", edit=_set(("power", "idle"), "800 W")),
    "hw_unknown_catalogue_name": _unknown_hardware,
    "hw_extends_missing": _extends_missing,
    # models (contracts section 2)
    "model_unknown_name": _flags_case(["--model", "llama-9-1t"], "--model", "llama-9-1t"),
    "model_missing_hidden_size": _missing_hidden_size,
    # deployment (contracts section 4)
    "set_unknown_knob": _flags_case(["--set", "max_num_sequences=8"], "--set", "max_num_sequences", "unknown"),
    "set_max_num_seqs_zero": _flags_case(["--set", "max_num_seqs=0"], "max_num_seqs"),
    "scheduler_unknown": _flags_case(["--scheduler", "fifo-lottery"], "--scheduler", "fifo-lottery"),
    # a knob of the engine the policy does not model would do nothing: refused, naming the right one
    "trtllm_given_a_vllm_knob": _flags_case(["--scheduler", "trtllm", "--set", "max_num_seqs=64"],
                                            "max_num_seqs", "vLLM knob", "max_batch_size"),
    "vllm_given_a_trtllm_knob": _flags_case(["--set", "max_batch_size=64"], "max_batch_size", "TensorRT-LLM knob",
                                            "max_num_seqs"),
    "tp_not_dividing_heads": _flags_case(["--tp", "3"], "--tp 3", "32"),
    # ... and the same knobs set in a system YAML's deployment: block name that file
    "system_knob_out_of_range": _system_case({"max_num_seqs": 0}, "deployment.max_num_seqs:", "(got 0)"),
    "system_unknown_knob": _system_case({"max_num_sequences": 8}, "deployment.max_num_sequences:", "unknown knob"),
    "system_knob_of_the_other_engine": _system_case({"scheduler": "trtllm", "max_num_seqs": 64},
                                                    "deployment.max_num_seqs:", "vLLM knob", "max_batch_size"),
    "system_unknown_model": _system_case({"model": "llama-9-1t"}, "deployment.model: llama-9-1t"),
    "model_does_not_fit": _flags_case(["--model", "llama-3.1-70b"], "does not fit", "131.45 GiB", "71.26 GiB"),
}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(directory.rglob("*"))}


def _out_dir_with_other_files(d: Path):
    """--out names a directory holding someone else's files: refuse, touch nothing."""
    trace = _write(d / "ok.jsonl", GOOD_LINE)
    out = d / "outs" / "mine"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("precious\n")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return ["h100-sxm", str(trace)], ["--out", str(out), "notes.txt"], out


def _job(case_id: str, d: Path):
    """(argv after the program name, fragments the error line must contain, --out path)."""
    if case_id == "out_dir_with_other_files":
        args, fragments, out = _out_dir_with_other_files(d)
    else:
        args, fragments = CASES[case_id](d)
        (d / "outs").mkdir()
        out = d / "outs" / "run"
    return ["run", *args, "--out", str(out), "--quiet"], fragments, out


def _check(case_id: str, rc: int, stdout: str, stderr: str, fragments: list[str], out: Path, before: dict) -> None:
    assert "Traceback" not in stderr and "Traceback" not in stdout, stderr
    assert rc == 2, (case_id, rc, stderr)
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    # nothing written: the output directory's parent is exactly as it was (no run dir, no
    # staging dir, the other files of an existing directory untouched)
    assert _snapshot(out.parent) == before, "output directory left behind or touched"
    assert stdout == ""


ALL_CASES = [*CASES, "out_dir_with_other_files"]


@pytest.mark.parametrize("case_id", ALL_CASES)
def test_bad_input_in_process(tmp_path, capsys, case_id):
    """Every case through `simulator.cli.main` in this process (no interpreter start-up)."""
    from simulator.cli import main

    argv, fragments, out = _job(case_id, tmp_path)
    before = _snapshot(out.parent)
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    _check(case_id, rc, captured.out, captured.err, fragments, out, before)


def test_good_input_control_run_succeeds_and_can_rerun(tmp_path, capsys):
    """The control for the cases above: the same command with good input writes its outputs,
    and a directory holding only a previous run's outputs may be reused."""
    from simulator.cli import main

    trace = _write(tmp_path / "ok.jsonl", GOOD_LINE)
    out = tmp_path / "outs" / "run"
    argv = ["run", "h100-sxm", str(trace), "--model", "llama-3.1-8b", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["iterations.csv", "requests.csv", "summary.json"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no staging directory left
    assert json.loads((out / "summary.json").read_text())["requests"]["completed"] == 1
    assert capsys.readouterr().err == ""


# One case of each kind also runs as a real `python -m simulator.cli` process (about 1 s of
# start-up each), concurrently.
SUBPROCESS_CASES = ["trace_not_json", "trace_missing_file", "azure_non_integer", "hw_malformed_yaml",
                    "hw_bandwidth_no_unit", "hw_extends_missing", "model_missing_hidden_size",
                    "set_unknown_knob", "model_does_not_fit", "out_dir_with_other_files"]


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Run the subprocess cases once, concurrently: id -> (proc, fragments, out, snapshot before)."""
    base = tmp_path_factory.mktemp("bad_inputs")
    jobs = {}
    for case_id in SUBPROCESS_CASES:
        d = base / case_id
        d.mkdir()
        argv, fragments, out = _job(case_id, d)
        jobs[case_id] = (argv, fragments, out, _snapshot(out.parent))
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {case_id: pool.submit(_cli, job[0], REPO) for case_id, job in jobs.items()}
        return {case_id: (futures[case_id].result(), *jobs[case_id][1:]) for case_id in jobs}


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_subprocess(cli_results, case_id):
    proc, fragments, out, before = cli_results[case_id]
    _check(case_id, proc.returncode, proc.stdout, proc.stderr, fragments, out, before)


# --- shipped specs --------------------------------------------------------------------------------------


def test_specs_check_accepts_every_shipped_yaml(repo_root):
    files = sorted(str(p.relative_to(repo_root)) for p in (repo_root / "hardware_specs").rglob("*.yaml")
                   if p.parent.name != "profiles")  # profiles/ holds calibration profiles, not specs
    assert len(files) >= 15
    proc = _cli(["specs", "check", *files], repo_root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for file in files:
        assert f"ok {file}:" in proc.stdout, file


@pytest.mark.parametrize("body, message", [
    ("extends: h100-sxm\nname: x\ncalibration: missing.yaml\n", "cannot read calibration"),
    ("extends: h100-sxm\nname: x\ncalibration: spec.yaml\n", "not a calibration profile"),
    ("name: x\nkind: system\nnode:\n  accelerator: {spec: h100-sxm, count: 8, fabric: nvlink}\n"
     "deployment: {max_num_seqs: -3}\nsources: [a test]\n", "deployment.max_num_seqs"),
])
def test_specs_check_fails_where_a_run_would(tmp_path, repo_root, body, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(body)
    for command in (["specs", "check", str(spec)], ["run", str(spec), "example-chat", "--out", str(tmp_path / "o")]):
        proc = _cli(command, repo_root)
        assert proc.returncode == 2 and message in proc.stderr, (command, proc.stderr)


def test_specs_list_has_the_required_catalogue(repo_root):
    proc = _cli(["specs", "list"], repo_root)
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines() if line.strip()}
    for name in REQUIRED_DEVICES:
        assert name in rows, name
        assert rows[name] in ("gpu", "cpu"), (name, rows[name])
    assert rows["xeon-8480"] == "cpu"
    for name in REQUIRED_SYSTEMS:
        assert rows.get(name) == "system", name


def test_shipped_specs_list_their_sources(repo_root):
    for path in (repo_root / "hardware_specs").rglob("*.yaml"):
        if path.parent.name == "profiles":
            continue
        data = yaml.safe_load(path.read_text())
        assert data.get("sources"), path


# --- the same errors at the Python level ----------------------------------------------------------------


def test_valid_gpu_fixture_loads(tmp_path):
    system = load_system(_gpu(tmp_path, "ok.yaml"))
    assert system.accelerator.main_memory.bandwidth == 3.35e12


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (GOOD_LINE + "not json\n", ":2: "),
        (json.dumps({"arrival_s": 0, "input_tokens": 0, "output_tokens": 3}) + "\n", ":1: input_tokens"),
        (json.dumps({"arrival_s": 0, "input_tokens": 2.5, "output_tokens": 3}) + "\n", ":1: input_tokens"),
        (json.dumps({"arrival_s": -1, "input_tokens": 2, "output_tokens": 3}) + "\n", ":1: arrival_s"),
        (json.dumps({"arrival_s": 0, "input_tokens": True, "output_tokens": 3}) + "\n", ":1: input_tokens"),
        (json.dumps({"input_tokens": 2, "output_tokens": 3, "arrival_s": None}) + "\n", ":1: arrival_s"),
        (GOOD_LINE + "\n\n" + json.dumps({"arrival_s": 1, "input_tokens": 2}) + "\n", ":4: output_tokens"),
        (GOOD_LINE + "[1, 2]\n", ":2: "),
        (GOOD_LINE + json.dumps({"arrival_s": 1, "input_tokens": 2, "output_tokens": 1, "id": [1]}) + "\n", ":2: id"),
    ],
)
def test_trace_errors_name_file_and_line(tmp_path, text, where):
    path = _write(tmp_path / "t.jsonl", text)
    with pytest.raises(InputError) as info:
        TraceIndex.build(path)
    assert f"{path}{where}" in str(info.value)


def test_blank_lines_are_allowed(tmp_path):
    path = _write(tmp_path / "t.jsonl", "\n" + GOOD_LINE + "\n   \n" + GOOD_LINE)
    assert TraceIndex.build(path).count == 2


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (_set(("memory", 0, "bandwidth"), "3.35"), "memory[0].bandwidth"),
        (_set(("memory", 0, "capacity"), "640 Gb"), "memory[0].capacity"),  # bits, not a unit here
        (_set(("compute", "peak", "bf16"), "989 TB/s"), "compute.peak.bf16"),
        (_set(("compute", "units"), 0), "compute.units"),
        (_set(("links", "nvlink", "latency"), "2"), "links.nvlink.latency"),
        (_set(("power", "tdp"), "700 J"), "power.tdp"),
        (_drop("sources"), "sources"),
        (_drop("compute"), "compute"),
        (_set(("kind",), "tpu"), "kind"),
        (_set(("compute_capability",), "sm90"), 'compute_capability: \'sm90\' is not a CUDA compute capability: write it as "major.minor"'),
        (_set(("kind",), []), "kind: [] is not one of"),
        # a number that is not finite would poison every cost it touches
        (_set(("compute", "peak", "bf16"), "1e400 TFLOPS"), "compute.peak.bf16"),
        (_set(("links", "nvlink", "efficiency"), float("nan")), "links.nvlink.efficiency: Input should be a finite number"),
        (_set(("power", "tdp"), "nan W"), "power.tdp"),
        # YAML's true is not the number 1: one SM would be a silent misreading
        (_set(("compute", "units"), True), "compute.units: true is not a number"),
    ],
)
def test_hardware_errors_name_the_field(tmp_path, edit, fragment):
    path = _gpu(tmp_path, "bad.yaml", edit)
    with pytest.raises(InputError) as info:
        load_system(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert fragment in message, message
    assert "\n" not in message


@pytest.mark.parametrize("macs", [-1, float("nan"), 0])
def test_a_wafer_core_needs_a_positive_finite_mac_rate(tmp_path, macs):
    spec = yaml.safe_load((REPO / "hardware_specs/wafers/wse-2.yaml").read_text())
    spec["core"]["macs_per_cycle"]["fp32"] = macs
    path = _write(tmp_path / "wafer.yaml", yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(InputError) as info:
        load_system(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "core.macs_per_cycle.fp32" in message, message
    assert "\n" not in message


def test_an_unquoted_compute_capability_is_read_as_major_minor(tmp_path):
    assert load_system(_gpu(tmp_path, "cc.yaml", _set(("compute_capability",), 12.0))).accelerator.compute_capability == "12.0"


def test_extends_merges_and_overrides(tmp_path):
    _gpu(tmp_path, "parent.yaml")
    child = _write(tmp_path / "child.yaml", "extends: parent.yaml\nname: Child\n"
                                            "memory:\n  - {name: hbm3e, capacity: 141 GB, bandwidth: 4.8 TB/s}\n")
    system = load_system(child)
    assert system.name == "Child"
    assert system.accelerator.main_memory.capacity == 141e9
    assert system.accelerator.compute.units == 132  # inherited


def test_model_errors(tmp_path):
    with pytest.raises(InputError, match="llama-9-1t"):
        load_model("llama-9-1t")
    bad = _write(tmp_path / "config.json", json.dumps({"num_attention_heads": 4, "num_hidden_layers": 1,
                                                        "intermediate_size": 8, "vocab_size": 10}))
    with pytest.raises(InputError, match="hidden_size"):
        load_model(str(bad))


def test_deployment_errors():
    with pytest.raises(InputError, match="max_num_sequences"):
        parse_set(["max_num_sequences=8"])
    with pytest.raises(InputError, match="max_num_seqs"):
        build_deployment(parse_set(["max_num_seqs=0"]))
    with pytest.raises(InputError, match="gpu_memory_utilization"):
        build_deployment({"gpu_memory_utilization": 1.5})
    with pytest.raises(InputError, match="--scheduler"):
        prepare("h100-sxm", model="llama-3.1-8b", scheduler="fifo-lottery")
    with pytest.raises(InputError, match="--tp 3"):
        prepare("h100-sxm", model="llama-3.1-8b", tp=3)
    with pytest.raises(InputError, match="does not fit"):
        prepare("h100-sxm", model="llama-3.1-70b")


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        (["swap_space=inf"], "deployment: swap_space: Input should be a finite number"),
        (["expert_load_factor=.nan"], "deployment: expert_load_factor: Input should be a finite number"),
        (["kv_transfer_bandwidth=1e400 GB/s"], 'deployment: kv_transfer_bandwidth: "1e400 GB/s" is too large to be a bandwidth'),
        (["kv_transfer_bandwidth=0 GB/s"], 'deployment: kv_transfer_bandwidth: "0 GB/s" must be positive'),
        (["kv_transfer_latency=-1 ms"], 'deployment: kv_transfer_latency: "-1 ms" must be zero or more'),
        (["kv_transfer_latency=5"], 'deployment: kv_transfer_latency: "5" has no unit'),
        (["max_num_seqs=true"], "deployment: max_num_seqs: true is not a number"),
        (["gpu_memory_utilization=false"], "deployment: gpu_memory_utilization: false is not a number"),
    ],
)
def test_knob_values_that_are_not_finite_quantities_are_refused(knobs, message):
    with pytest.raises(InputError) as info:
        build_deployment(parse_set(knobs))
    assert str(info.value).startswith(message), info.value


def test_a_disaggregation_knob_without_disaggregation_is_refused_not_ignored():
    """prefill_replicas on a colocated vLLM run would change nothing; the user hears so."""
    with pytest.raises(InputError, match="deployment: prefill_replicas: a disaggregated-serving knob, which "
                                         "--scheduler vllm does not read; add --scheduler disagg"):
        prepare("h100-sxm", model="llama-3.1-8b", knobs={"prefill_replicas": 2})
    with pytest.raises(InputError, match="kv_transfer_link: a disaggregated-serving knob, which --scheduler sarathi"):
        prepare("h100-sxm", model="llama-3.1-8b", scheduler="sarathi", knobs={"kv_transfer_link": "pcie"})


def _box(d: Path, deployment: dict, **extra) -> Path:
    """A system YAML of eight H100s with this `deployment:` block."""
    spec = {"name": "Box", "kind": "system", "node": {"accelerator": {"spec": "h100-sxm", "count": 8}},
            "deployment": deployment, **extra, "sources": ["test"]}
    return _write(d / "box.yaml", yaml.safe_dump(spec, sort_keys=False))


def test_a_knob_error_names_the_system_yaml_only_when_the_yaml_set_the_knob(tmp_path):
    """The system YAML's knob, not overridden: `FILE: deployment.KEY`; the same knob given by
    --set (over the YAML's, or alone): the flags' own `deployment: KEY` message."""
    bad = _box(tmp_path, {"max_num_seqs": 0})
    with pytest.raises(InputError, match=f"^{bad}: deployment.max_num_seqs: "):
        prepare(bad, model="llama-3.1-8b")
    assert prepare(bad, model="llama-3.1-8b", knobs={"max_num_seqs": 8, "max_model_len": 4096})
    (tmp_path / "b").mkdir()
    good = _box(tmp_path / "b", {"max_num_seqs": 64})
    with pytest.raises(InputError, match=f"^{good}: deployment.max_num_seqs: a vLLM knob"):
        prepare(good, model="llama-3.1-8b", scheduler="trtllm")
    with pytest.raises(InputError, match="^deployment: max_num_seqs: Input should be greater"):
        prepare(good, model="llama-3.1-8b", knobs={"max_num_seqs": 0})
    with pytest.raises(InputError, match="^deployment: max_batch_size: a TensorRT-LLM knob"):
        prepare(good, model="llama-3.1-8b", knobs={"max_batch_size": 8})


def test_messages_and_help_point_inside_the_repository(capsys):
    """Messages, help texts and the documents next to the code cite files of this repository (the
    contracts are docs/contracts.md), never a design document that does not ship with it."""
    from simulator.cli import main

    cited = re.compile(r"\bDESIGN\b|\bdocs/[\w.-]+\.md")  # this repository's docs/, not a cited project's
    sources = [*(REPO / "simulator").rglob("*.py"), *(REPO / "validation").rglob("*.py"),
               *(REPO / "validation").rglob("*.md"), *(REPO / "validation").rglob("*.txt")]
    for path in sources:
        for match in cited.finditer(path.read_text()):
            assert match[0] != "DESIGN", f"{path} cites DESIGN, which is not in the repository"
            assert (REPO / match[0]).is_file(), f"{path} cites {match[0]}, which does not exist"
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "docs/contracts.md" in capsys.readouterr().out


def test_a_config_json_is_named_by_its_name_or_path(tmp_path):
    """--model path/config.json: `name`, else the last part of `_name_or_path`, else the folder of
    a file named config.json, else the file's stem; never just "config"."""
    shape = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "intermediate_size": 128,
             "vocab_size": 100}
    cases = {"hub/config.json": ({"_name_or_path": "meta-llama/Llama-3.1-8B"}, "Llama-3.1-8B"),
             "saved/config.json": ({"_name_or_path": "/data/ckpt/my-finetune/"}, "my-finetune"),
             "Tiny-Llama/config.json": ({}, "Tiny-Llama"),
             "named/config.json": ({"name": "Mine", "_name_or_path": "org/Other"}, "Mine"),
             "empty/config.json": ({"_name_or_path": ""}, "empty"),
             "shapes/tiny.json": ({}, "tiny")}
    for relative, (keys, name) in cases.items():
        path = tmp_path / relative
        path.parent.mkdir(exist_ok=True)
        _write(path, json.dumps({**shape, **keys}))
        assert load_model(str(path)).name == name, relative


def test_a_checkpoint_folder_is_read_by_its_config_json(tmp_path):
    """--model FOLDER reads FOLDER/config.json, as vLLM reads a checkpoint's folder; a folder
    without one is one clear error, not a traceback."""
    folder = tmp_path / "My-Checkpoint"
    folder.mkdir()
    _write(folder / "config.json", json.dumps({"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
                                                "intermediate_size": 128, "vocab_size": 100}))
    model = load_model(str(folder))
    assert (model.name, model.num_layers) == ("My-Checkpoint", 2)
    with pytest.raises(InputError, match="a folder without a config.json"):
        load_model(str(tmp_path))


def test_files_edited_between_runs_of_one_process_are_read_again(tmp_path):
    """A notebook edits a spec or a config.json and runs again: the second run sees the edit (the
    parsed files are cached under their modification time and size, not their path alone)."""
    gpu = _gpu(tmp_path, "gpu.yaml")
    cfg = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
           "vocab_size": 100}
    config = _write(tmp_path / "config.json", json.dumps(cfg))
    before = (load_system(gpu).accelerator.main_memory.bandwidth, load_model(str(config)).num_layers)
    _gpu(tmp_path, "gpu.yaml", edit=_set(("memory", 0, "bandwidth"), "1.675 TB/s"))
    _write(config, json.dumps({**cfg, "num_hidden_layers": 12}))
    after = (load_system(gpu).accelerator.main_memory.bandwidth, load_model(str(config)).num_layers)
    assert before == (pytest.approx(3.35e12), 2)
    assert after == (pytest.approx(1.675e12), 12)


def test_a_system_price_is_shared_by_its_devices(tmp_path):
    """A system's `price:` is what the whole system costs per hour: each accelerator a run uses
    costs its share (80 USD/h over 8 H100s: 10 USD/h), in place of the H100 spec's 2.5 USD/h."""
    box = _box(tmp_path, {}, price={"per_hour": "80 USD/h"})
    system = load_system(box)
    assert system.device_price_per_hour == pytest.approx(10.0)
    assert load_system("dgx-h100").device_price_per_hour == pytest.approx(2.5)  # no price of its own
    trace = _write(tmp_path / "ok.jsonl", GOOD_LINE)
    result = simulate(box, trace, model="llama-3.1-8b", tp=2, knobs={"max_model_len": 4096}, keep_frames=False)
    summary = result.summary
    assert summary["cost_usd"] == pytest.approx(2 * 10.0 * summary["makespan_s"] / 3600, rel=1e-12)


def test_a_device_without_power_or_price_has_unknown_energy_and_cost_not_zero(tmp_path):
    """A spec may leave out `power:` and `price:`; the run's energy and cost are then unknown
    (null in summary.json), never a silent 0 that would make the device look free."""
    trace = _write(tmp_path / "ok.jsonl", GOOD_LINE)
    priced = _gpu(tmp_path, "priced.yaml", _set(("price",), {"per_hour": "2 USD"}))
    summary = simulate(priced, trace, model="llama-3.2-1b", keep_frames=False).summary
    assert summary["energy_j"] > 0
    assert summary["cost_usd"] == pytest.approx(2.0 * summary["makespan_s"] / 3600, rel=1e-12)
    bare = _gpu(tmp_path, "bare.yaml", _drop("power"))  # VALID_GPU states no price either
    summary = simulate(bare, trace, model="llama-3.2-1b", keep_frames=False).summary
    assert summary["energy_j"] is None and summary["cost_usd"] is None


def test_a_gpu_without_bfloat16_takes_fp16_as_vllm_does():
    """A T4 (Turing, compute capability 7.5) has no bf16: vLLM refuses a bf16 model there unless
    told --dtype half; with fp16 the run serves, the 16-bit weights at their 2 bytes."""
    with pytest.raises(InputError, match=r"deployment: activation_dtype: bf16 on T4-16GB \(compute capability 7.5\), "
                                         r"which has no bfloat16, so vLLM refuses to start; set activation_dtype=fp16"):
        prepare("t4", model="llama-3.2-1b")
    setup = prepare("t4", model="llama-3.2-1b", knobs={"activation_dtype": "fp16"})
    assert setup.deployment.activation_dtype == "fp16"
    assert setup.plan.weights_bytes == pytest.approx(prepare("l4", model="llama-3.2-1b").plan.weights_bytes, rel=1e-3)
