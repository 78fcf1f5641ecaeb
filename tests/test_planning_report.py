"""The capacity-planning report: written from a hand-made planner output directory (three
candidates: the recommended one, a feasible costlier one, an infeasible one), checked for the
answer first, every candidate in the table, a self-contained HTML file whose images all decode,
the no-feasible-candidate case, determinism and escaping of text from the files."""
from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from simulator.report.figures import pareto_mask
from simulator.report.formatting import money, sig
from simulator.report.planning_report import write_report

REPO = Path(__file__).resolve().parent.parent
RATES = (1.0, 2.0, 4.0, 6.0, 8.0, 10.0)
FIGURE_NAMES = ("latency_vs_load", "attainment_vs_rate", "cost_vs_capacity", "recommended_utilisation")
INFEASIBLE_REASON = "out of memory: weights need 16 GB per device, 12 GB available"


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _candidate(name: str, hardware: str, *, rank: int | str, feasible: bool, recommended: bool = False,
               reason: str = "", tp: int = 1, max_rate: float | str = "", price: float = 3.0,
               calibration: str = "none", error: float | str = "") -> dict:
    replicas = math.ceil(12.0 / max_rate) if feasible else ""
    devices = replicas * tp if feasible else ""
    return {
        "candidate": name, "hardware": hardware, "model": "Llama-3.1-8B", "scheduler": "vllm", "tp": tp, "pp": 1,
        "knobs": json.dumps({"max_num_seqs": 256}), "devices_per_replica": tp, "feasible": str(feasible).lower(),
        "reason": reason, "max_rate_req_s": max_rate, "replicas_needed": replicas, "devices_needed": devices,
        "price_per_device_hour": price, "cost_per_hour": devices * price if feasible else "",
        "cost_per_million_output_tokens": round(devices * price / (12 * 250 * 3600) * 1e6, 4) if feasible else "",
        "energy_per_output_token_j": 0.35 * tp if feasible else "", "calibration": calibration,
        "calibration_error_p90": error, "recommended": str(recommended).lower(), "rank": rank,
    }


def _points(name: str, capacity: float, required: float = 0.9) -> list[dict]:
    """Six simulated rates: latency grows and attainment falls past `capacity`."""
    rows = []
    for rate in RATES:
        load = rate / capacity
        attainment = 1.0 / (1.0 + math.exp(8.0 * (load - 1.1)))
        ttft = 0.05 * math.exp(3.0 * load)
        rows.append({
            "candidate": name, "rate_req_s": rate, "slo_met": str(attainment >= required).lower(),
            "attainment": round(attainment, 4), "ttft_p50_s": ttft / 2, "ttft_p90_s": ttft, "ttft_p99_s": 2 * ttft,
            "tpot_p50_s": 0.01 * load, "tpot_p90_s": 0.02 * load, "tpot_p99_s": 0.03 * load, "e2e_p90_s": 5 * load,
            "goodput_req_s": rate * attainment, "throughput_req_s": rate, "output_tokens_per_s": 250 * rate,
            "mfu": 0.1 * load, "mbu": 0.5 * load, "kv_cache_peak": min(load, 1.0), "kv_cache_mean": min(load, 1.0) / 2,
            "energy_j": 1000 * rate, "cost_usd": 0.01 * rate, "devices": 1, "makespan_s": 100.0, "completed": 200,
            "rejected": 0, "cached": "false", "point_key": f"{name}@{rate}",
        })
    return rows


def _iterations() -> list[dict]:
    """Two replicas busy for 20 s with a ramp of KV blocks."""
    rng = np.random.default_rng(0)
    rows = []
    for replica in (0, 1):
        start = 0.0
        for step in range(100):
            duration = 0.2
            rows.append({
                "replica": replica, "stage": "mixed", "start_s": round(start, 6), "duration_s": duration,
                "prefill_tokens": int(rng.integers(0, 512)), "decode_tokens": 16, "batch_size": 16,
                "kv_blocks_used": 100 + 4 * step, "mfu": round(0.3 + 0.1 * rng.random(), 4),
                "mbu": round(0.6 + 0.1 * rng.random(), 4), "role": "mixed",
            })
            start += duration
    return rows


def make_plan_dir(root: Path, *, feasible: bool = True, infeasible_name: str = "l4-tp1",
                  infeasible_reason: str = INFEASIBLE_REASON, runner_error: float | None = None,
                  margin: float | None = 1.0) -> Path:
    """A planner output directory: plan.json, candidates.csv, results.csv and, when a candidate
    is recommended, recommended/{iterations.csv,summary.json}. The runner-up is uncalibrated
    unless `runner_error` is given; `margin` is its relative margin (None: no runner-up)."""
    candidates = [
        _candidate("h100-tp1", "H100-SXM5-80GB", rank=1 if feasible else 2, feasible=feasible, recommended=feasible,
                   max_rate=6.2 if feasible else "", reason="" if feasible else "TTFT p90 above target at 1 req/s",
                   calibration="hardware_specs/calibration/h100-sxm.yaml", error=0.042),
        _candidate("a100-tp2", "A100-SXM4-80GB", rank=2 if feasible else 1, feasible=feasible, tp=2,
                   max_rate=5.1 if feasible else "", price=2.0, error="" if runner_error is None else runner_error,
                   calibration="none" if runner_error is None else "a100.yaml",
                   reason="" if feasible else "attainment 80 % at the lowest rate"),
        _candidate(infeasible_name, "L4", rank="", feasible=False, reason=infeasible_reason),
    ]
    _write_csv(root / "candidates.csv", candidates)
    _write_csv(root / "results.csv", _points("h100-tp1", 6.2) + _points("a100-tp2", 5.1)
               + _points(infeasible_name, 0.8))
    no_margin = {"runner_up": None, "metric": "cost_per_hour", "value": None, "relative": None}
    plan = {
        "plan_file": "plans/llama8b.yaml", "objective": "min_cost", "target_rate_req_s": 12.0,
        "slo": {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None, "attainment": 0.9},
        "workload": {"description": "ShareGPT chat", "requests": 200, "trace_rate_req_s": 4.0},
        "tolerance": 0.05, "recommended": "h100-tp1" if feasible else None,
        "margin": {"runner_up": "a100-tp2", "metric": "cost_per_hour", "value": 6.0, "relative": margin}
        if feasible and margin is not None else no_margin,
    }
    (root / "plan.json").write_text(json.dumps(plan))
    if feasible:
        _write_csv(root / "recommended" / "iterations.csv", _iterations())
        (root / "recommended" / "summary.json").write_text(json.dumps(
            {"utilization": {"mfu": 0.35, "mbu": 0.65, "kv_cache_peak": 0.4, "kv_cache_mean": 0.25}}))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = make_plan_dir(tmp_path_factory.mktemp("plan"))
    write_report(out)
    return out


class _Refs(HTMLParser):
    """Every tag name, and every src and href, of an HTML document."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.src: list[str] = []
        self.href: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for key, value in attrs:
            if key in ("src", "href"):
                getattr(self, key).append(value or "")


def _refs(page: Path) -> _Refs:
    parser = _Refs()
    parser.feed(page.read_text())
    return parser


def test_report_leads_with_the_recommendation_and_its_cost(report):
    paragraphs = report.joinpath("report.md").read_text().split("\n\n")
    assert paragraphs[0].startswith("# Capacity plan: ShareGPT chat")
    lead = paragraphs[1]
    assert lead.startswith("**Serve ShareGPT chat at 12 req/s within TTFT ≤ 500 ms, TPOT ≤ 50 ms for ≥ 90 %")
    assert "2 × H100-SXM5-80GB (Llama-3.1-8B, TP 1, vllm)" in lead and "“h100-tp1”" in lead
    assert "$6.00/hour" in lead and "2 devices" in lead
    assert "Runner-up: “a100-tp2”, $6.00/hour (100 %) behind on cost per hour." in paragraphs[2]
    assert "±4.2 % p90 kernel error" in paragraphs[2]
    assert "model error of “a100-tp2”, which is not quantified" in paragraphs[2]  # the runner-up is uncalibrated


def test_a_margin_within_the_calibration_error_is_called_a_tie(tmp_path):
    write_report(make_plan_dir(tmp_path, runner_error=0.08, margin=0.05))
    assert ("The 5 % margin is within the p90 kernel error (8 %): treat the two as a tie and check both."
            in (tmp_path / "report.md").read_text())


def test_table_lists_every_candidate_in_rank_order_with_reasons(report):
    text = report.joinpath("report.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Rank" not in line]
    assert [row.split(" | ")[1] for row in rows] == ["h100-tp1 (recommended)", "a100-tp2", "l4-tp1"]
    assert INFEASIBLE_REASON in rows[2] and "| no |" in rows[2]
    assert "calibrated (h100-sxm.yaml), ±4.2 % p90 kernel error" in rows[0]
    assert "roofline only — uncalibrated, expect larger error" in rows[1]


def test_html_is_self_contained_and_every_image_decodes(report):
    import matplotlib.image

    refs = _refs(report / "index.html")
    assert not {"script", "link", "iframe"} & set(refs.tags)
    assert refs.src and all(src.startswith("data:image/png;base64,") for src in refs.src)
    assert all(not urlparse(href).scheme and not href.startswith("//") for href in refs.href)
    for src in refs.src:
        png = base64.b64decode(src.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert matplotlib.image.imread(io.BytesIO(png), format="png").ndim == 3
    assert len(refs.src) == len(FIGURE_NAMES)
    assert all((report / "figures" / f"{name}.png").is_file() for name in FIGURE_NAMES)


def test_without_a_runner_up_the_report_says_so(tmp_path):
    write_report(make_plan_dir(tmp_path, margin=None))
    paragraphs = (tmp_path / "report.md").read_text().split("\n\n")
    assert paragraphs[2].startswith("No other candidate meets the SLO, so there is no runner-up to compare with.")
    assert "±4.2 % p90 kernel error." in paragraphs[2]


def test_no_feasible_candidate_says_so_and_names_the_closest(tmp_path):
    write_report(make_plan_dir(tmp_path, feasible=False))
    paragraphs = (tmp_path / "report.md").read_text().split("\n\n")
    assert paragraphs[1].startswith("**No candidate meets the SLO: none of the 3 candidates serves ShareGPT chat")
    assert paragraphs[2].startswith("Closest: “a100-tp2”") and "attainment 80 % at the lowest rate" in paragraphs[2]
    assert "recommended/iterations.csv is absent" in "\n\n".join(paragraphs)
    assert not (tmp_path / "figures" / "cost_vs_capacity.png").exists()
    assert not (tmp_path / "figures" / "recommended_utilisation.png").exists()


def test_the_report_is_deterministic(report, tmp_path):
    write_report(make_plan_dir(tmp_path))
    for name in ("report.md", "index.html", *(f"figures/{figure}.png" for figure in FIGURE_NAMES)):
        assert (tmp_path / name).read_bytes() == (report / name).read_bytes(), name


def test_text_from_the_files_is_escaped(tmp_path):
    write_report(make_plan_dir(tmp_path, infeasible_name="<b>x</b>", infeasible_reason="<script>alert(1)</script>"))
    page = (tmp_path / "index.html").read_text()
    assert "<b>x</b>" not in page and "<script>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("value, text", [(12.345, "12.3"), (0.012345, "0.0123"), (1234.5, "1,234"), (90.0, "90"),
                                         (0, "0"), (math.nan, "—")])
def test_significant_figures(value, text):
    assert sig(value) == text


def test_money_keeps_cents_and_small_amounts():
    assert (money(29.4), money(0.0042), money(math.nan)) == ("$29.40", "$0.0042", "—")


def test_pareto_mask_keeps_points_nothing_beats_on_both_axes():
    capacity = np.array([1.0, 2.0, 2.0, 3.0])
    cost = np.array([1.0, 3.0, 2.0, 5.0])
    assert pareto_mask(capacity, cost).tolist() == [True, False, True, True]


def test_render_check_fallback_flags_a_broken_image(report, tmp_path):
    spec = importlib.util.spec_from_file_location("render_check", REPO / "reports" / "render_check.py")
    render_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_check)
    assert render_check.check_images(report / "index.html") == []
    broken = tmp_path / "index.html"
    broken.write_text('<img src="data:image/png;base64,AAAA"><img src="https://example.com/a.png"><img>')
    assert len(render_check.check_images(broken)) == 3


def _edit_plan(root: Path, time_by_source: dict[str, dict], margin: dict) -> None:
    """Give candidates their capacity runs' time by source, and plan.json's margin more keys."""
    with (root / "candidates.csv").open() as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["time_by_source"] = json.dumps(time_by_source[row["candidate"]]) if row["candidate"] in time_by_source \
            else ""
    _write_csv(root / "candidates.csv", rows)
    plan = json.loads((root / "plan.json").read_text())
    plan["margin"].update(margin)
    (root / "plan.json").write_text(json.dumps(plan))


def test_a_transferred_candidate_is_not_headlined_calibrated(tmp_path):
    """A candidate whose profile came from another device reads "transferred", with the share of
    its run's time by source; a measured one "calibrated", with its shares too."""
    root = make_plan_dir(tmp_path, runner_error=0.44)
    _edit_plan(root, {"h100-tp1": {"calibrated-interpolation": 0.8, "calibrated-fit": 0.05, "roofline": 0.03,
                                   "host-overhead": 0.12},
                      "a100-tp2": {"transferred": 0.86, "roofline": 0.04, "host-overhead": 0.1}}, {})
    write_report(root)
    rows = [line for line in (root / "report.md").read_text().splitlines() if line.startswith("| ")]
    h100, a100 = (next(r for r in rows if f"| {name}" in r) for name in ("h100-tp1", "a100-tp2"))
    assert "calibrated (h100-sxm.yaml); time: calibrated 85 % · roofline 3 % · host 12 %; ±4.2 % p90" in h100
    assert "transferred from a100.yaml; time: transferred 86 % · roofline 4 % · host 10 %; ±44 % p90" in a100
    assert "calibrated" not in a100


def test_a_pick_within_the_model_error_is_flagged(tmp_path):
    """plan.json says the margin over the runner-up and the headroom over the target are within
    the p90 kernel error; report.md and index.html say so as cautions."""
    root = make_plan_dir(tmp_path, runner_error=0.08, margin=0.05)
    _edit_plan(root, {}, {"uncertainty": 0.08, "margin_within_uncertainty": True, "headroom_over_target": 0.033,
                          "headroom_within_uncertainty": True})
    write_report(root)
    text = (root / "report.md").read_text()
    assert ("Caution: the 5 % margin over “a100-tp2” is smaller than the model's p90 kernel error (8 %)" in text)
    assert "Caution: its capacity exceeds the target rate by 3.3 %, less than its p90 kernel error (4.2 %)" in text
    assert "Caution: its capacity exceeds the target rate by 3.3 %" in (root / "index.html").read_text()
    _edit_plan(root, {}, {"margin_within_uncertainty": False, "headroom_within_uncertainty": False})
    write_report(root)
    assert "Caution" not in (root / "report.md").read_text()


def _crowded_plan_dir(root: Path) -> Path:
    """Ten candidates with long names whose Pareto-optimal points sit close together: more
    legend entries than fit a row, and names that collide where they are first tried."""
    names = [f"dgx-h100-tp{i}-max_num_seqs-{64 * i}-chunked" for i in range(1, 11)]
    candidates = [_candidate(name, "H100-SXM5-80GB", rank=i + 1, feasible=True, recommended=i == 0,
                             max_rate=1.7 + 0.7 * i, price=2.1 + 0.1 * i) for i, name in enumerate(names)]
    _write_csv(root / "candidates.csv", candidates)
    _write_csv(root / "results.csv", [row for i, name in enumerate(names) for row in _points(name, 1.7 + 0.7 * i)])
    (root / "plan.json").write_text(json.dumps({
        "objective": "min_cost", "target_rate_req_s": 12.0, "recommended": names[0],
        "slo": {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None, "attainment": 0.9}}))
    _write_csv(root / "recommended" / "iterations.csv", _iterations())
    return root


@pytest.mark.parametrize("crowded", [False, True])
def test_report_figures_have_no_colliding_text(tmp_path, crowded):
    """No tick label, axis label, legend or point name of a report figure overlaps another or
    runs off the figure (the latency-versus-load legend and the Pareto names were reported)."""
    from simulator.report import figures
    from simulator.report.plan_data import load
    from simulator.report.text_layout import text_problems

    data = load(_crowded_plan_dir(tmp_path) if crowded else make_plan_dir(tmp_path))
    drawn = {"latency": figures.draw_latency(data), "attainment": figures.draw_attainment(data),
             "pareto": figures.draw_pareto(data, figures.feasible_points(data)),
             "utilisation": figures.draw_utilisation(data)}
    assert {name: [str(p) for p in text_problems(fig)] for name, fig in drawn.items()} == {
        name: [] for name in drawn}
    points = figures.feasible_points(data)
    best = pareto_mask(points["max_rate_req_s"].to_numpy(float), points["cost_per_hour"].to_numpy(float))
    named = sorted(t.get_text() for t in drawn["pareto"].axes[0].texts)
    assert named == sorted(points["candidate"][best]) and len(named) >= (3 if crowded else 1)
