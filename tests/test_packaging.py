"""The catalogues ship inside the package, and catalogue names work from any folder.

hardware_specs/, workloads/models/ and workloads/traces/ live at the repository root;
simulator/catalogue/ links to them and pyproject.toml's package-data patterns put the files into
the wheel. Building a wheel is too slow for these tests (`.ci/run` builds one, installs it in a
clean environment and runs the README's example from another folder), so they check what the
wheel depends on: the package reaches every catalogue through simulator/catalogue/, each is
non-empty, and the patterns match every file of every catalogue.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

import simulator
from simulator import paths
from simulator.api import simulate
from simulator.cli import main
from simulator.errors import InputError
from simulator.hardware.loader import catalogue
from simulator.models.config import model_catalogue
from simulator.planning.plan_file import load_plan
from simulator.planning.workload import load_workload
from simulator.workloads.generate import generate
from simulator.workloads.trace import TraceIndex, resolve_trace, trace_catalogue

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(simulator.__file__).resolve().parent
# each catalogue: where the package reads it, and the repository folder that holds its files
CATALOGUES = {
    "hardware_specs": (paths.HARDWARE_DIR, REPO / "hardware_specs"),
    "workloads/models": (paths.MODELS_DIR, REPO / "workloads" / "models"),
    "workloads/traces": (paths.TRACES_DIR, REPO / "workloads" / "traces"),
}


def _files(folder: Path) -> set[Path]:
    return {Path(root, name) for root, _, names in os.walk(folder, followlinks=True) for name in names}


@pytest.mark.parametrize("name", CATALOGUES)
def test_each_catalogue_is_read_through_the_package_from_the_repository_folder(name):
    package_dir, repo_dir = CATALOGUES[name]
    link = PACKAGE / "catalogue" / name
    assert link.is_symlink(), f"simulator/catalogue/{name} should link to the repository's {name}/"
    assert link.resolve() == package_dir == repo_dir.resolve()
    assert repo_dir.is_dir() and not repo_dir.is_symlink()  # the browsable folder is the real one
    assert _files(package_dir), f"{name} is empty"


def test_every_catalogue_lists_what_it_ships():
    assert {"h100-sxm", "a100-80gb-sxm", "dgx-h100", "xeon-8480", "wse-2"} <= set(catalogue())
    assert {p.parent.name for p in catalogue().values()} == {"gpus", "cpus", "wafers", "systems"}
    assert list((paths.HARDWARE_DIR / "profiles").glob("*.yaml"))
    assert "llama-3.1-8b" in model_catalogue()
    assert set(trace_catalogue()) == {"azure-code-2023", "azure-conv-2023", "example-chat", "mooncake-conversation-1k"}


def test_package_data_patterns_cover_every_catalogue_file():
    """What setuptools puts into the wheel: the files the patterns match, globbed as it globs them
    (recursive `**`, through the links). A catalogue file of a type no pattern names (a new
    extension, a licence under another name) would be left out of the wheel; this fails first."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["simulator"]
    shipped = {Path(p) for pattern in patterns for p in glob.glob(str(PACKAGE / pattern), recursive=True)
               if os.path.isfile(p)}
    for name in CATALOGUES:
        files = _files(PACKAGE / "catalogue" / name)
        missing = sorted(str(p.relative_to(PACKAGE)) for p in files - shipped)
        assert not missing, f"no package-data pattern in pyproject.toml matches {missing}"
    for kind in ("*.yaml", "*.csv", "*.jsonl", "LICENSE-*", "README.md"):  # the types that ship today
        assert any(p.match(kind) for p in shipped), kind


def test_shipped_files_are_named_relative_to_the_catalogue_root():
    """As outputs name them: the same in a checkout and an installed copy, through the link or not."""
    profile = paths.HARDWARE_DIR / "profiles" / "h100-sxm.yaml"
    assert paths.shown_path(profile) == "hardware_specs/profiles/h100-sxm.yaml"
    assert paths.shown_path(PACKAGE / "catalogue" / "hardware_specs" / "profiles" / "h100-sxm.yaml") == \
        "hardware_specs/profiles/h100-sxm.yaml"
    assert paths.shown_path(paths.MODELS_DIR / "llama-3.1-8b.yaml") == "workloads/models/llama-3.1-8b.yaml"
    assert paths.shown_path(trace_catalogue()["example-chat"]) == "workloads/traces/example-chat.jsonl"
    assert paths.shown_path(Path(__file__)) == str(Path(__file__).resolve())  # not shipped: absolute


def test_a_missing_catalogue_is_a_broken_installation_not_an_empty_one(tmp_path):
    assert paths.shipped(paths.TRACES_DIR) == paths.TRACES_DIR
    with pytest.raises(RuntimeError, match="lacks its package data"):
        paths.shipped(tmp_path / "hardware_specs")


def test_a_trace_is_a_path_or_a_catalogue_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository: names must not depend on the folder
    assert resolve_trace("example-chat") == paths.TRACES_DIR / "example-chat.jsonl"
    assert TraceIndex.build("azure-code-2023").fmt == "azure"
    own = tmp_path / "example-chat"  # a file that exists wins over the catalogue name
    own.write_text('{"arrival_s": 0, "input_tokens": 5, "output_tokens": 2}\n')
    assert resolve_trace("example-chat") == own.relative_to(tmp_path)
    assert TraceIndex.build("example-chat").count == 1
    with pytest.raises(InputError, match=r"^no-such: no such trace file or catalogue name \(known: azure-code-2023, "):
        resolve_trace("no-such")
    own.unlink()
    rows = list(generate(20, 1.0, input="empirical:azure-conv-2023", output="empirical:example-chat"))
    assert len(rows) == 20
    assert main(["trace", "convert", "mooncake-conversation-1k", "m.jsonl"]) == 0
    assert TraceIndex.build("m.jsonl").count == 1000


def test_the_cli_and_the_api_run_a_catalogue_trace_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "h100-sxm", "example-chat", "--model", "llama-3.1-8b", "--quiet", "--out", "x"]) == 0
    assert (tmp_path / "x" / "summary.json").is_file()
    result = simulate("h100-sxm", "example-chat", model="llama-3.1-8b", keep_frames=False)
    assert result.summary["requests"]["completed"] == 200
    assert result.summary["provenance"]["calibration"] == "hardware_specs/profiles/h100-sxm.yaml"
    capsys.readouterr()
    assert main(["run", "h100-sxm", "chat-example", "--quiet", "--out", "y"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "chat-example: no such trace file or catalogue name (known: " in err
    assert "example-chat" in err and not (tmp_path / "y").exists()


def test_a_plan_names_a_shipped_trace(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload: {trace: example-chat, max_requests: 20}\nmodel: llama-3.1-8b\n"
                    "slo: {ttft_p90: 1.0}\ntarget_rate: 1\ncandidates:\n  - {name: a, hardware: h100-sxm}\n")
    workload = load_workload(load_plan(plan))
    assert len(workload.records) == 20 and workload.description == "example-chat.jsonl, first 20 requests"
    plan.write_text(plan.read_text().replace("example-chat", "chat-example"))
    with pytest.raises(InputError, match=r"workload.trace: chat-example: no such file .* \(known: azure-code-2023"):
        load_workload(load_plan(plan))
