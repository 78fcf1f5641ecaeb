"""`simulate compare` and `simulate show` on real small runs, and the check that no text of a
figure overlaps another or leaves the canvas (text_layout.text_problems), which must fail on a
figure drawn badly on purpose and pass on the figures of show and compare."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.figure import Figure

from simulator.cli import main
from simulator.paths import TRACES_DIR
from simulator.report.run_data import PLOTS, load_run
from simulator.report.run_figures import compare_figure, run_figure
from simulator.report.text_layout import text_problems

TRACE = TRACES_DIR / "example-chat.jsonl"


def _run(out: Path, trace: Path = TRACE, *extra: str) -> Path:
    assert main(["run", "h100-sxm", str(trace), "--model", "llama-3.1-8b", "--out", str(out), "--quiet", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same trace with the default max_num_seqs and with 4 (requests queue for a seat)."""
    root = tmp_path_factory.mktemp("runs")
    return _run(root / "base"), _run(root / "seqs4", TRACE, "--set", "max_num_seqs=4")


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _row(output: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is `label`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_compare_prints_the_differences_from_the_first_run(runs, tmp_path, capsys):
    base, seqs4 = runs
    figure = tmp_path / "cmp.png"
    assert main(["compare", str(base), str(seqs4), "--out", str(figure)]) == 0
    out = capsys.readouterr().out
    a, b = _summary(base)["ttft_s"]["p90"], _summary(seqs4)["ttft_s"]["p90"]
    assert b > a  # 4 seats for ~10 concurrent requests: they wait for their first token
    cells = _row(out, "TTFT p90 (s)")
    assert cells[4] == f"{100 * (b - a) / a:+.1f}%"
    assert float(cells[3]) == pytest.approx(b - a, rel=1e-3)
    assert float(cells[1]) == pytest.approx(a, rel=1e-3) and float(cells[2]) == pytest.approx(b, rel=1e-3)
    completed = _row(out, "completed")
    assert completed[1:] == ["200", "200", "0", "0%"]
    assert "traces differ" not in out
    assert f"wrote {figure}" in out
    assert matplotlib.image.imread(figure).ndim == 3


def test_compare_as_json_and_csv_gives_the_unrounded_numbers(runs, tmp_path, capsys):
    """stdout is only the JSON or CSV (the figure's path goes to stderr); the numbers are the
    summaries' own, unrounded, with the differences from the first run."""
    base, seqs4 = runs
    a, b = _summary(base)["ttft_s"]["p90"], _summary(seqs4)["ttft_s"]["p90"]
    assert main(["compare", str(base), str(seqs4), "--out", str(tmp_path / "j.png"), "--format", "json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert [run["path"] for run in data["runs"]] == [str(base), str(seqs4)]
    row = next(r for r in data["metrics"] if r["metric"] == "TTFT p90 (s)")
    assert row["values"] == [a, b] and row["deltas"] == [pytest.approx(b - a)]
    assert row["percents"] == [pytest.approx(100 * (b - a) / a)]
    assert "wrote" in captured.err and (tmp_path / "j.png").is_file()
    assert main(["compare", str(base), str(seqs4), "--out", str(tmp_path / "c.png"), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("section,metric,")
    cells = next(line for line in lines if ",TTFT p90 (s)," in line).split(",")
    assert float(cells[2]) == a and float(cells[3]) == b and float(cells[4]) == pytest.approx(b - a)


def test_compare_says_when_the_traces_differ(runs, tmp_path, capsys):
    lines = TRACE.read_text().splitlines()[:50]
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines) + "\n")
    other = _run(tmp_path / "short", short)
    assert main(["compare", str(runs[0]), str(other), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the traces differ: 2: short replayed 50 requests, 1: base 200" in out
    assert (tmp_path / "compare-base-vs-short.png").is_file()  # --out a folder: the default name in it


def test_compare_says_when_the_calibrations_differ(runs, tmp_path, capsys):
    roofline = _run(tmp_path / "roofline", TRACE, "--calibration", "none")
    assert main(["compare", str(runs[0]), str(roofline), "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "not equally sure" in out
    assert "no calibration profile" in out
    assert _row(out, "busy time calibrated (%)")[2] == "0"


@pytest.mark.parametrize("name", ["missing", "empty", "other"])
def test_compare_refuses_what_is_not_a_run_folder(runs, tmp_path, capsys, name):
    target = tmp_path / name
    if name == "empty":
        target.mkdir()
    elif name == "other":
        target.mkdir()
        (target / "summary.json").write_text(json.dumps({"schema": "something.else/1"}))
    assert main(["compare", str(runs[0]), str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {target}")
    assert "simulate run" in err


def test_show_draws_the_run_into_its_folder(runs, capsys):
    base = runs[0]
    assert main(["show", str(base)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {base / PLOTS}"
    pixels = matplotlib.image.imread(base / PLOTS)
    assert pixels.ndim == 3 and pixels.shape[0] > 500 and pixels.std() > 0
    figure = run_figure(load_run(base))
    assert len(figure.axes) == 4
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["Latency CDFs", "Queue: waiting for a first step, and in service", "KV cache",
                      "Step time by batch size"]
    (base / PLOTS).unlink()  # the folder stays a plain run folder for the other tests


def test_run_plots_draws_after_the_run_and_a_rerun_replaces_them(tmp_path, capsys):
    out = tmp_path / "plotted"
    _run(out, TRACE, "--plots")
    assert (out / PLOTS).is_file()
    _run(out)  # the same folder again, without --plots: the old figure goes with the old outputs
    assert not (out / PLOTS).exists()
    assert sorted(p.name for p in out.iterdir()) == ["iterations.csv", "requests.csv", "summary.json"]


def test_the_figures_of_show_and_compare_have_no_colliding_text(runs):
    loaded = [load_run(path) for path in runs]
    assert [str(p) for p in text_problems(run_figure(loaded[0]))] == []
    assert [str(p) for p in text_problems(compare_figure(loaded))] == []


def test_text_problems_finds_overlapping_and_clipped_text():
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.annotate("first label", (0.5, 0.5))
    ax.annotate("second label", (0.52, 0.51))  # on top of the first
    ax.annotate("a name that runs far past the right edge", (0.9, 0.2))
    fig.legend(loc="lower center")  # over the x tick labels
    problems = text_problems(fig)
    pairs = {(p.box.name, p.other.name if p.other else None) for p in problems}
    assert ("axes 0 text 'first label'", "axes 0 text 'second label'") in pairs
    assert ("axes 0 text 'a name that runs far past the right edge'", None) in pairs
    assert any(p.kind == "overlap" and "tick label" in p.box.name and p.other is not None
               and p.other.name == "figure legend 0" for p in problems)
    fine = Figure(figsize=(4, 3), dpi=100, layout="constrained")
    ax = fine.subplots()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.legend(loc="upper left")
    assert text_problems(fine) == []
