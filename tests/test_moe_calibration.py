"""The measured fused-MoE layer: Qwen3-30B-A3B on an RTX PRO 6000 (vLLM 0.19, `moe` rows converted
from validation/data/rtxpro6000-qwen3-30b-a3b/moe.csv) in the shipped rtx-pro-6000 profile. A run
of that model on that device takes its routed experts' time from the table; any other MoE layer,
dtype or device keeps the roofline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.api import prepare, simulate_setup
from simulator.hardware.loader import load_system
from simulator.models.config import load_model
from simulator.models.operators import Precision, Sharding, dense_ops
from simulator.perf.calibration import Calibration
from simulator.perf.fitting import kfold_errors
from simulator.perf.kernel_times import FIT, INTERP, ROOFLINE, SCALED, CalibratedKernelTimes
from simulator.perf.profile_use import AppliedProfile
from simulator.perf.roofline import operator_time_s
from validation.layer_tables import convert

ROOT = Path(__file__).resolve().parent.parent
PROFILE = ROOT / "hardware_specs" / "profiles" / "rtx-pro-6000.yaml"
FOLDER = ROOT / "validation" / "data" / "rtxpro6000-qwen3-30b-a3b"
SHORT = {"max_model_len": 4096}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    """The folder's `moe` rows (it also holds the model's attention skew tables)."""
    frame = convert(FOLDER)
    return frame[frame["op"] == "moe"].dropna(axis=1, how="all").reset_index(drop=True)


@pytest.fixture(scope="module")
def profile() -> Calibration:
    return Calibration.load(PROFILE)


def _trace(tmp_path: Path) -> Path:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.05 * i, "input_tokens": 200, "output_tokens": 24}) + "\n"
                             for i in range(6)))
    return trace


def _routed(setup, tokens: int):
    dep = setup.deployment
    return [op for op in dense_ops(setup.model, tokens, dep.sharding, dep.precision)
            if op.kind in ("grouped_gemm", "experts_act")]


def test_moe_rows_carry_the_models_layer_shape(rows):
    # moe.csv's 50 points: 1..2048 tokens reaching 8..128 of Qwen3-30B-A3B's 128 experts of 768
    assert len(rows) == 50 and set(rows["op"]) == {"moe"}
    assert {(r.hidden, r.intermediate, r.experts, r.top_k) for r in rows.itertuples()} == {(2048, 768, 128, 8)}
    assert rows["tokens"].between(1, 2048).all() and rows["experts_reached"].between(8, 128).all()


def test_held_out_moe_rows_within_the_profiles_recorded_error(rows, profile):
    """The profile records the 5-fold held-out |error| of its moe table (fold split seed 0).
    Another split (seed 1) predicts every row from a fit that never saw it; the recorded p90
    is a quantile of 50 rows, so on another split the share of rows within it is 0.9 up to
    sampling noise, sd sqrt(0.9 x 0.1 / 50) = 4.2 %: at least 0.9 - 2 sd = 81.5 % must be.
    The median is a more stable statistic: within half the recorded p90."""
    recorded = profile.ops[("moe", "bf16")].heldout_error_pct
    assert recorded["folds"] == 5 and recorded["p90"] < 15.0  # held-out p90 of the table, % (about 10)
    held = kfold_errors(rows, load_system("rtx-pro-6000"), k=5, seed=1)
    err = held["error_pct"].abs()
    assert (err <= recorded["p90"]).mean() >= 0.815
    assert err.median() <= recorded["p90"] / 2


def test_qwen3_30b_a3b_on_rtx_pro_6000_takes_the_measured_moe_layer(tmp_path, profile):
    """The routed experts of a step of T tokens take the table's layer time at T tokens and the
    expected experts reached, 128 (1 - (1 - 8/128)^T), spread over the two grouped GEMMs and
    the activation by their roofline shares: their sum is the table's time exactly."""
    setup = prepare("rtx-pro-6000", "qwen3-30b-a3b", knobs=SHORT)
    kernels = CalibratedKernelTimes(setup.system, setup.model, setup.deployment, setup.calibration)
    routed = _routed(setup, 4)
    times = [kernels.gpu_time_s(op) for op in routed]
    assert all(source == INTERP for _, source in times)
    reached = 128 * (1 - (1 - 8 / 128) ** 4)
    query = pd.DataFrame({"op": ["moe"], "tokens": [4], "experts_reached": [reached], "hidden": [2048],
                          "intermediate": [768], "experts": [128], "top_k": [8]})
    table_us = profile.ops[("moe", "bf16")].model.predict_us(query.assign(dtype="bf16"))[0]
    assert sum(t for t, _ in times) * 1e6 == pytest.approx(table_us, rel=1e-9)
    device = setup.system.accelerator
    roofline = [operator_time_s(device, op) for op in routed]
    assert times[0][0] / times[2][0] == pytest.approx(roofline[0] / roofline[2], rel=1e-9)

    # the run's share by source: without the moe table the routed experts (the model's largest
    # weights: 128 experts x 3 x 2048 x 768 per layer) take the dense GEMM fit's grouped
    # costing (calibrated-fit), with it the table's interpolation
    with_moe = simulate_setup(setup, _trace(tmp_path), keep_frames=False, uncertainty=True).summary
    without = Calibration(profile.device, profile.hardware, profile.sources, profile.fitted_on, profile.source_sha256,
                          {k: v for k, v in profile.ops.items() if k[0] != "moe"}, profile.path)
    path = tmp_path / "no-moe.yaml"
    without.save(path)
    plain = simulate_setup(prepare("rtx-pro-6000", "qwen3-30b-a3b", knobs=SHORT, calibration=str(path)),
                           _trace(tmp_path), keep_frames=False).summary
    share, share_plain = with_moe["provenance"]["share_of_time_by_source"], plain["provenance"]["share_of_time_by_source"]
    assert share_plain["calibrated-fit"] > 0.5 and share_plain["roofline"] < 0.05
    assert share["calibrated-interpolation"] > share_plain["calibrated-interpolation"] + 0.3
    assert share["roofline"] < 0.05  # what is left: norms, rotary, embedding, sampler
    assert share["calibrated-interpolation"] + share["calibrated-fit"] > 0.9
    # the band carries the moe table's own held-out p90 on the routed experts' operators
    by_source = with_moe["uncertainty"]["kernel_error_p90_by_source"]["calibrated-interpolation"]
    p90 = profile.ops[("moe", "bf16")].heldout_error_pct["p90"] / 100
    assert by_source["grouped_gemm"] == pytest.approx(p90) and by_source["experts_act"] == pytest.approx(p90)


@pytest.mark.parametrize("model, knobs, source", [("qwen3-30b-a3b", {"tp": 2}, FIT),  # 384 of 768 columns a device
                                                  ("qwen3-30b-a3b", {"weight_dtype": "fp8"}, SCALED),  # another dtype
                                                  ("mixtral-8x7b", {"weight_dtype": "fp8"}, SCALED)])  # another model
def test_a_moe_layer_the_table_does_not_describe_takes_the_gemm_route(model, knobs, source):
    """Not the table: its grouped GEMMs are costed from the device's dense GEMM fit in their
    dtype (tests/test_grouped_gemm.py), the activation by the roofline."""
    setup = prepare("rtx-pro-6000", model, knobs={**SHORT, **knobs})
    kernels = CalibratedKernelTimes(setup.system, setup.model, setup.deployment, setup.calibration)
    for op in _routed(setup, 64):
        time_s, got = kernels.gpu_time_s(op)
        if op.kind == "grouped_gemm":
            assert got == source, op.name
        else:
            assert (time_s, got) == (operator_time_s(setup.system.accelerator, op), ROOFLINE), op.name
    assert "moe" not in {route.op for route in setup.calibration.routes()}


def test_the_moe_table_is_neither_transferred_nor_scaled(profile):
    # measured on one device for one model's tile configurations: no measured transfer error
    assert AppliedProfile(profile, load_system("h100-sxm")).candidate_route("moe", "bf16") is None
    here = AppliedProfile(profile, load_system("rtx-pro-6000"))
    assert here.candidate_route("moe", "fp8") is None
    assert here.route("moe", "bf16").kind == "calibrated"
    # a model whose routed experts are not the measured shape: the kernels find no layer
    model = load_model("qwen3-235b-a22b")
    ops = [op for op in dense_ops(model, 8, Sharding(tp=8), Precision()) if op.kind == "grouped_gemm"]
    frame = pd.DataFrame([{"op": "moe", "dtype": "bf16", **ops[0].shape.layer._asdict()}])
    assert not profile.ops[("moe", "bf16")].model.measured_categories(frame)[0]
    assert np.all(profile.ops[("moe", "bf16")].model.measured_categories(
        frame.assign(hidden=2048, intermediate=768, experts=128, top_k=8)))


def test_validate_predicts_only_the_measured_layer_from_the_table(rows, profile):
    """`simulate validate`'s predictions: the measured shapes from the table (in-sample, so
    within the interpolation's rounding and isotonic smoothing), a moe row of another layer
    (twice the intermediate size) from the roofline, as a run would cost it."""
    from simulator.perf.calibration import predict_rows
    from simulator.perf.kernels import roofline_us

    system = load_system("rtx-pro-6000")
    applied = AppliedProfile(profile, system)
    other = rows.head(5).assign(intermediate=1536)
    frame = pd.concat([rows, other], ignore_index=True)
    predicted, source = predict_rows(frame, system, applied)
    assert set(source[:50]) <= {"calibrated-interpolation"}
    assert list(source[50:]) == ["roofline"] * 5
    assert np.allclose(predicted[50:], roofline_us(other, system))
    # in-sample: the table passes through its measured nodes except where the data decrease
    # with size (8 tokens on 8 experts is faster than 4), which the isotonic fit averages
    assert np.median(np.abs(predicted[:50] / rows["time_us"].to_numpy() - 1)) < 0.01
