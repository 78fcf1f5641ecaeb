"""Capacity planning (`simulate plan`): the search, a hand-derived capacity, resuming from
the cache, Ray against local processes, and plan validation.

The simulated plans use a workload whose answer can be derived by hand: every request is a
1024-token prompt with a one-token answer, arriving evenly spaced, on a replica that runs
one sequence at a time (max_num_seqs=1). The replica is then a deterministic single server
whose service time is one prefill step, t, so requests start queueing, and TTFT grows
without bound over the trace, exactly when arrivals come faster than 1/t.
"""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from simulator.api import simulate
from simulator.cli import main
from simulator.errors import InputError
from simulator.planning.executors import check_executor
from simulator.planning.plan_file import load_plan
from simulator.planning.run_plan import run_plan
from simulator.planning.search import CapacitySearch

REQUESTS = 100
TOLERANCE = 0.05
ONE_AT_A_TIME = "calibration: none, knobs: {max_num_seqs: 1, api_server: false}"


def _search(threshold: float, low: float = 0.01, high: float = 100.0, points_per_round: int = 1) -> CapacitySearch:
    """Run a search against 'meets the SLO iff rate <= threshold'; its number of bisection
    rounds (after bracketing) in `.bisections`."""
    search = CapacitySearch(low, high, TOLERANCE, points_per_round)
    search.bisections = 0
    while rates := search.propose():
        search.bisections += None not in search.bracket
        for rate in rates:
            search.observe(rate, rate <= threshold)
    return search


@pytest.mark.parametrize("threshold", [0.0137, 0.9, 3.3, 41.0, 99.0])
def test_search_brackets_then_bisects_to_the_tolerance(threshold):
    search = _search(threshold)
    passed, failed = search.bracket
    assert passed <= threshold < failed <= passed * (1 + TOLERANCE)
    assert not search.capped and not search.infeasible
    assert len(search.outcomes) <= 14  # 3 + 2 x 2 bracketing + about 6 bisections


@pytest.mark.parametrize("threshold", [0.0137, 0.9, 3.3, 41.0, 99.0])
@pytest.mark.parametrize("points_per_round", [2, 3, 7])
def test_more_points_per_round_take_fewer_rounds_to_the_same_precision(threshold, points_per_round):
    one, many = _search(threshold), _search(threshold, points_per_round=points_per_round)
    passed, failed = many.bracket
    assert passed <= threshold < failed <= passed * (1 + TOLERANCE)
    # Bracketing is the same for both; then the interval shrinks (k + 1)-fold per round
    # instead of 2-fold: log(k + 1) / log 2 times fewer rounds, give or take rounding up.
    assert one.bisections >= 3
    assert many.bisections <= math.ceil(one.bisections * math.log(2) / math.log(points_per_round + 1)) + 1
    assert many.bisections < one.bisections
    bracketing_points = len(one.outcomes) - one.bisections
    assert len(many.outcomes) <= bracketing_points + many.bisections * points_per_round


def test_search_ends_at_the_range_ends():
    low_fails = _search(0.001)
    assert low_fails.infeasible and low_fails.max_rate is None and 0.01 in low_fails.outcomes
    high_passes = _search(1000.0)
    assert high_passes.capped and high_passes.max_rate == 100.0


def _write_plan(directory: Path, candidates: str, slo: str, target: float) -> Path:
    path = directory / "plan.yaml"
    path.write_text(f"workload: {{trace: trace.jsonl}}\nmodel: llama-3.1-8b\nslo: {{{slo}}}\n"
                    f"target_rate: {target}\ntolerance: {TOLERANCE}\ncandidates:\n{candidates}")
    return path


def _rows(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with open(path) as stream:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(stream)]


@pytest.fixture(scope="module")
def workload_dir(tmp_path_factory) -> tuple[Path, float]:
    """A directory with the hand-derivable trace, and the prefill step time t on H100."""
    directory = tmp_path_factory.mktemp("plan")
    one = directory / "one.jsonl"
    one.write_text(json.dumps({"arrival_s": 0.0, "input_tokens": 1024, "output_tokens": 1}) + "\n")
    alone = simulate("h100-sxm", one, knobs={"max_num_seqs": 1, "api_server": False}, calibration="none")
    assert len(alone.iterations) == 1  # one prefill step, which also samples the only token
    step = float(alone.iterations["duration_s"].iloc[0])
    assert alone.summary["ttft_s"]["p50"] == pytest.approx(step)
    (directory / "trace.jsonl").write_text("".join(
        json.dumps({"arrival_s": float(i), "input_tokens": 1024, "output_tokens": 1}) + "\n" for i in range(REQUESTS)))
    return directory, step


@pytest.fixture(scope="module")
def two_candidate_run(workload_dir):
    """A one-candidate plan, then the same plan with two more candidates in the same
    output directory (the second run resumes from the first one's cache)."""
    directory, step = workload_dir
    slo = f"ttft_p90: {1.5 * step}"
    out = directory / "out"
    h100 = f"  - {{name: h100, hardware: h100-sxm, {ONE_AT_A_TIME}}}\n"
    first = run_plan(_write_plan(directory, h100, slo, 2 / step), out, workers=2, report=False)
    first_results = _rows(out / "results.csv")
    more = (f"  - {{name: h100-tp2, hardware: h100-sxm, tp: 2, {ONE_AT_A_TIME}}}\n"
            f"  - {{name: a100, hardware: a100-80gb-sxm, {ONE_AT_A_TIME}}}\n"  # prefills slower than the SLO
            "  - {name: too-big, hardware: l4, model: llama-3.1-70b}\n")
    second = run_plan(_write_plan(directory, h100 + more, slo, 2 / step), out, workers=2, report=False)
    return first, first_results, second, out


def test_capacity_matches_the_hand_derived_one(workload_dir, two_candidate_run):
    _, step = workload_dir
    first, *_ = two_candidate_run
    # Above 1/t, request k waits k (t - 1/rate): it misses TTFT <= 1.5 t once k (t - 1/rate) > 0.5 t,
    # so 90 of 100 requests meet it up to rate = 1 / (t (1 - 0.5 / 89)), just above 1/t.
    derived = 1 / step
    edge = 1 / (step * (1 - 0.5 / (0.9 * REQUESTS - 1)))
    sizing = first.sizings[0]
    assert derived / (1 + TOLERANCE) <= sizing.max_rate <= edge
    failing = min(p.rate for p in first.points if not p.metrics["slo_met"])
    assert derived < failing <= sizing.max_rate * (1 + TOLERANCE)
    assert sizing.replicas == math.ceil(2 / step / sizing.max_rate) == 3  # the target is 2/t


def test_resume_simulates_only_the_new_candidate(two_candidate_run):
    first, first_results, second, out = two_candidate_run
    assert first.cached == 0 and first.simulated == len(first.points) > 0
    assert second.cached == first.simulated  # every h100 point came from the cache
    new = [p for p in second.points if p.candidate != "h100"]
    assert second.simulated == len(new) > 0
    again = [row for row in _rows(out / "results.csv") if row["candidate"] == "h100"]
    assert all(row["cached"] == "true" for row in again)
    drop = ("cached",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in again] == \
        [{k: v for k, v in r.items() if k not in drop} for r in first_results]


def test_an_interrupted_plan_resumes_with_identical_results(tmp_path, workload_dir, two_candidate_run):
    *_, second, out = two_candidate_run
    before = _rows(out / "results.csv", drop=("cached",))
    lost = [p.key for p in second.points if p.candidate == "h100-tp2"][-3:]  # killed before these finished
    for key in lost:
        (out / "cache" / f"{key}.json").unlink()
    resumed = run_plan(second.plan.path, out, workers=2, report=False)
    assert resumed.simulated == len(lost) and resumed.cached == len(second.points) - len(lost)
    assert _rows(out / "results.csv", drop=("cached",)) == before


def test_outputs_rank_and_explain(two_candidate_run):
    *_, second, out = two_candidate_run
    candidates = {row["candidate"]: row for row in _rows(out / "candidates.csv")}
    assert candidates["too-big"]["feasible"] == "false" and "does not fit" in candidates["too-big"]["reason"]
    assert candidates["a100"]["feasible"] == "false" and candidates["too-big"]["rank"] == ""
    assert candidates["a100"]["reason"].startswith("misses SLO even at 0.") and "ttft_p90" in candidates["a100"]["reason"]
    feasible = sorted((row for row in candidates.values() if row["feasible"] == "true"),
                      key=lambda row: float(row["cost_per_hour"]))
    best, runner_up = feasible
    assert best["recommended"] == "true" and best["rank"] == "1" and runner_up["rank"] == "2"
    assert candidates["h100"]["reason"] == ""  # 100 requests at about one a step: a sustained load
    plan = json.loads((out / "plan.json").read_text())
    assert plan["recommended"] == best["candidate"] and plan["margin"]["runner_up"] == runner_up["candidate"]
    assert plan["margin"]["value"] == pytest.approx(float(runner_up["cost_per_hour"]) - float(best["cost_per_hour"]))
    assert plan["workload"]["requests"] == REQUESTS and plan["workload"]["trace_rate_req_s"] == pytest.approx(1.0)
    summary = json.loads((out / "recommended" / "summary.json").read_text())
    assert summary["slo"]["met"] and (out / "recommended" / "iterations.csv").is_file()
    assert summary["requests"]["completed"] == REQUESTS


def test_ray_gives_the_same_results_as_local_processes(tmp_path, two_candidate_run):
    ray = pytest.importorskip("ray")
    *_, second, out = two_candidate_run
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        on_ray = run_plan(second.plan.path, tmp_path / "ray", executor="ray", report=False)
    finally:
        ray.shutdown()
    assert on_ray.cached == 0
    assert _rows(tmp_path / "ray" / "results.csv", drop=("cached",)) == _rows(out / "results.csv", drop=("cached",))
    assert _rows(tmp_path / "ray" / "candidates.csv") == _rows(out / "candidates.csv")


GOOD = {"workload": "{trace: trace.jsonl}", "model": "llama-3.1-8b", "slo": "{ttft_p90: 0.5}", "target_rate": "3",
        "candidates": "[{name: a, hardware: h100-sxm}, {name: b, hardware: l4}]"}


@pytest.mark.parametrize("change, message", [
    ({"candidates": "[{name: a, hardware: h100-sxm}, {name: b, hardware: l4, tp: 0}]"},
     "candidates[1].tp: Input should be greater than 0"),
    ({"candidates": "[{name: a, hardware: h100-sxm, knobs: {replicas: 2}}]"},
     "candidates[0].knobs: replicas: not a candidate knob (the planner sizes the replica count)"),
    ({"candidates": "[{name: a, hardware: nowhere}]"}, "candidates[0].hardware: nowhere: no such hardware"),
    ({"candidates": "[{name: a, hardware: l4, knobs: {max_num_seqs: 0}}]"},
     "candidates[0].knobs: max_num_seqs: Input should be greater than or equal to 1"),
    ({"candidates": "[{name: a, hardware: l4}, {name: a, hardware: l4}]"}, "candidates[1].name: 'a' is also"),
    ({"candidates": "[]"}, "(top level): no candidates"),
    ({"slo": "{ttft_p90: -1}"}, "slo.ttft_p90: the target must be > 0 seconds"),
    ({"objective": "fastest"}, "objective: Input should be 'min_cost', 'max_goodput_per_dollar' or 'min_devices'"),
    ({"workload": "{trace: missing.jsonl}"}, "workload.trace: missing.jsonl: no such file"),
    ({"workload": "{generate: {requests: 10, input: 'fixed:0'}}"}, "workload.generate.input: \"fixed:0\" has N 0"),
    ({"rates": "{min: 5, max: 1}"}, "rates: min (5.0) must be below max (1.0)"),
    ({"points_per_round": "0"}, "points_per_round: Input should be greater than or equal to 1"),
    ({"sweep": "{hardware: [l4], tp: [1, 2], name: '{gpu}'}"}, "sweep.name: template '{gpu}' names an unknown"),
    ({"colour": "red"}, "colour: unknown field"),
])
def test_a_bad_plan_fails_at_load_with_the_field_path(workload_dir, tmp_path, capsys, change, message):
    directory, _ = workload_dir
    plan = tmp_path / "bad.yaml"
    (tmp_path / "trace.jsonl").write_text((directory / "trace.jsonl").read_text())
    plan.write_text("".join(f"{key}: {value}\n" for key, value in {**GOOD, **change}.items()))
    assert main(["plan", str(plan), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {plan}: ") and err.count("\n") == 1
    assert message in err
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "cache").exists()


def test_a_sweep_expands_into_named_candidates(tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload: {generate: {requests: 10}}\nmodel: llama-3.1-8b\nslo: {tpot_p99: 0.1}\n"
                    "target_rate: 1\ncandidates: [{name: first, hardware: h100-sxm}]\n"
                    "sweep: {hardware: [l4, l40s], tp: 1, knobs: {max_num_seqs: [64, 128]}}\n")
    loaded = load_plan(plan)
    assert [c.name for _, c in loaded.candidates] == [
        "first", "l4-max_num_seqs=64", "l4-max_num_seqs=128", "l40s-max_num_seqs=64", "l40s-max_num_seqs=128"]
    assert loaded.candidates[2][1].knobs == {"max_num_seqs": 128} and loaded.candidates[2][1].tp == 1
    assert loaded.slo.tpot_s == 0.1 and loaded.slo.attainment == 0.99
    with pytest.raises(InputError, match="sweep.knobs: replicas: not a candidate knob"):
        plan.write_text(plan.read_text().replace("max_num_seqs: [64, 128]", "replicas: [1, 2]"))
        load_plan(plan)


@pytest.mark.parametrize("executor, address, message", [
    ("local", "auto", "--ray-address: only with --executor ray"),
    ("dask", None, "--executor dask: unknown (known: local, ray)"),
])
def test_an_unusable_executor_fails_before_any_work(executor, address, message):
    with pytest.raises(InputError, match=re.escape(message)):
        check_executor(executor, address)


def test_plan_json_flags_a_pick_within_the_model_error():
    """The margin over the runner-up and the capacity headroom over the target are compared
    with the candidates' p90 kernel error (None when one is roofline only)."""
    from types import SimpleNamespace

    from simulator.planning.sizing import Sizing, rank

    def sizing(name: str, cost: float, max_rate: float, replicas: int, error: float | None) -> Sizing:
        candidate = SimpleNamespace(name=name, calibration_error_p90=error)
        return Sizing(candidate, max_rate=max_rate, replicas=replicas, devices=replicas, cost_per_hour=cost,
                      headroom=replicas * max_rate / 10.0 - 1.0)

    close = rank([sizing("a", 10.0, 5.2, 2, 0.08), sizing("b", 10.5, 6.0, 2, 0.05)], "min_cost")
    assert close["runner_up"] == "b" and close["uncertainty"] == 0.08
    assert close["margin_within_uncertainty"] and close["headroom_within_uncertainty"]  # 4.8 % and 4 % < 8 %
    assert close["headroom_over_target"] == pytest.approx(0.04)
    clear = rank([sizing("a", 10.0, 6.0, 2, 0.08), sizing("b", 20.0, 6.0, 4, 0.05)], "min_cost")
    assert clear["margin_within_uncertainty"] is False and clear["headroom_within_uncertainty"] is False
    unknown = rank([sizing("a", 10.0, 6.0, 2, None), sizing("b", 10.5, 6.0, 2, 0.05)], "min_cost")
    assert unknown["uncertainty"] is None and unknown["margin_within_uncertainty"] is None
    assert unknown["headroom_within_uncertainty"] is None


def test_an_unusable_candidate_file_is_an_error_not_an_infeasible_candidate(tmp_path, capsys):
    """A candidate whose spec names a calibration profile that does not exist cannot be judged:
    the plan stops with exit 2 naming the candidate and the file, before simulating anything,
    where a candidate that does not fit (a 70B model on one 24 GB card) is only infeasible."""
    (tmp_path / "gpu.yaml").write_text("extends: rtx4090\nname: R\ncalibration: missing-profile.yaml\n"
                                       "sources: [test]\n")
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.5 * i, "input_tokens": 200, "output_tokens": 20}) + "\n"
                             for i in range(20)))
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload: {trace: t.jsonl}\nmodel: llama-3.1-8b\nslo: {ttft_p90: 1.0}\ntarget_rate: 1\n"
                    "candidates:\n  - {name: broken, hardware: gpu.yaml}\n"
                    "  - {name: too-small, hardware: rtx4090, model: llama-2-70b}\n")
    assert main(["plan", str(plan), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert re.search(r"candidates\[0\].*missing-profile.yaml: cannot read calibration", error), error
    assert not (tmp_path / "out").exists()
    plan.write_text(plan.read_text().replace("  - {name: broken, hardware: gpu.yaml}\n",
                                             "  - {name: fits, hardware: rtx4090}\n"))
    assert main(["plan", str(plan), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = {r["candidate"]: r for r in csv.DictReader((tmp_path / "out" / "candidates.csv").open())}
    assert rows["too-small"]["feasible"] in ("False", "false") and "does not fit" in rows["too-small"]["reason"]


def test_a_capacity_found_on_a_burst_is_flagged_as_optimistic(tmp_path):
    """Twenty short requests on a fast GPU: at the rates the search reaches they all arrive
    in a fraction of the time the last one takes to finish, so the SLO is met by a burst the
    replica drains, not by a rate it sustains; the candidate says so."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload:\n  generate: {requests: 20, rate: 1, input: 'fixed:200', output: 'fixed:50', seed: 1}\n"
                    "model: llama-3.2-1b\nslo: {ttft_p90: 1.0, tpot_p90: 0.05}\ntarget_rate: 1\nrates: {max: 100000}\n"
                    "candidates:\n  - {name: h100, hardware: h100-sxm}\n")
    outcome = run_plan(plan, tmp_path / "out", workers=1, report=False)
    sizing = outcome.sizings[0]
    served = outcome.points[[p.rate for p in outcome.points].index(sizing.max_rate)].metrics["throughput_req_s"]
    assert served < 0.5 * sizing.max_rate
    assert "a burst more than a sustained load, so this capacity is optimistic; give the workload more requests" \
        in sizing.reason
