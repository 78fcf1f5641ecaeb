"""Calibrated runs: decode TPOT justified from measured layer tables; provenance; the CPU path end to end."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulator.api import prepare, simulate_setup
from simulator.perf.calibration import Calibration

ROOT = Path(__file__).resolve().parent.parent
TABLES = ROOT / "validation" / "data" / "rtx4090-llama-3.1-8b"
PROFILE = ROOT / "hardware_specs" / "profiles" / "rtx4090.yaml"


def _table(name: str) -> pd.DataFrame:
    return pd.read_csv(TABLES / name)


def _at(frame: pd.DataFrame, layer: str, x: float, column: str = "tokens") -> float:
    """A layer's measured time at x tokens (log-log interpolation between measured points)."""
    rows = frame[frame["layer"] == layer].sort_values(column)
    return float(np.exp(np.interp(math.log(x), np.log(rows[column]), np.log(rows["time_us"]))))


def _decode_attention_us(kv_len: float) -> float:
    att = _table("attention.csv")
    rows = att[(att["prefill_chunk"] == 0) & (att["n_decode"] == 1) & (att["kv_decode"] > 0)].sort_values("kv_decode")
    return float(np.exp(np.interp(math.log(kv_len), np.log(rows["kv_decode"]), np.log(rows["time_us"]))))


def test_rtx4090_decode_tpot_follows_the_measured_layer_tables(tmp_path):
    """One Llama-3.1-8B request (128 in, 64 out) on an RTX 4090 with the shipped profile and vLLM's
    defaults (block 16, 256 seqs, 2048-token budget, chunked prefill). A decode step is, from the
    tables measured with vLLM on that card: 32 x (qkv, o, gate_up, down, act, 2 norms, rotary,
    attention at the current context) + embedding + final norm + lm_head + sampler, all at 1
    token, plus the host time the model adds (scheduler_per_iteration and one CUDA-graph gap per
    kernel). The simulated mean TPOT must match that sum within 5 %: the GEMMs and attention come
    from the profile (held-out error ~1-4 %), the small elementwise kernels from the roofline."""
    setup = prepare("rtx4090", "llama-3.1-8b", calibration=str(PROFILE), knobs={"max_model_len": 4096})
    dep = setup.deployment
    assert (dep.block_size, dep.max_num_seqs, dep.enable_chunked_prefill) == (16, 256, True)
    trace = tmp_path / "one.jsonl"
    trace.write_text(json.dumps({"arrival_s": 0, "input_tokens": 128, "output_tokens": 64}) + "\n")
    summary = simulate_setup(setup, trace, keep_frames=False).summary

    dense, per_seq = _table("dense.csv"), _table("per_sequence.csv")
    per_layer = sum(_at(dense, name, 1) for name in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "act_fn",
                                                      "rotary_emb")) + 2 * _at(dense, "layernorm", 1)
    once = (_at(dense, "embedding", 1) + _at(dense, "final_layernorm", 1)
            + _at(per_seq, "lm_head", 1, "sequences") + _at(per_seq, "sampler", 1, "sequences"))
    # decode step j (j = 1..63) reads 128 + j tokens of KV (the new token's included)
    steps_us = [32 * (per_layer + _decode_attention_us(128 + j)) + once for j in range(1, 64)]
    over = setup.system.accelerator.overheads
    kernels = sum(op.count for op in _decode_kernels(setup))
    expected_s = np.mean(steps_us) * 1e-6 + over.scheduler_per_iteration + kernels * over.graph_kernel_gap
    assert summary["tpot_s"]["mean"] == pytest.approx(expected_s, rel=0.05)
    assert summary["provenance"]["share_of_time_by_source"]["calibrated-interpolation"] > 0.8


def _decode_kernels(setup):
    from simulator.models.operators import attention_decode_op, dense_ops, head_ops

    dep = setup.deployment
    return (dense_ops(setup.model, 1, dep.sharding, dep.precision) + head_ops(setup.model, 1, dep.sharding, dep.precision)
            + [attention_decode_op(setup.model, 1, 129, dep.sharding, dep.precision)])


def test_uncalibrated_runs_say_so(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"arrival_s": 0, "input_tokens": 64, "output_tokens": 8}) + "\n")
    setup = prepare("l4", "llama-3.1-8b", calibration="none", knobs={"max_model_len": 4096})
    summary = simulate_setup(setup, trace, keep_frames=False, uncertainty=True).summary
    prov = summary["provenance"]
    assert prov["calibration"] is None and prov["outside_calibrated_range"] == pytest.approx(1.0)
    assert "uncalibrated" in prov["note"]
    assert summary["uncertainty"]["calibrated"] is False


def test_provenance_names_the_profile_resolved_and_a_shipped_one_relative_to_the_project(tmp_path):
    """The H100 spec names its profile as `../profiles/h100-sxm.yaml`: summary.json gives the
    shipped profile relative to the project (the same in every checkout, no machine's paths),
    a profile of the user's resolved, and the note printed with the run names it readably."""
    trace = tmp_path / "t.jsonl"
    trace.write_text(json.dumps({"arrival_s": 0, "input_tokens": 64, "output_tokens": 8}) + "\n")
    shipped = simulate_setup(prepare("h100-sxm", "llama-3.1-8b", knobs={"max_model_len": 4096}), trace,
                             keep_frames=False).summary["provenance"]
    assert shipped["calibration"] == "hardware_specs/profiles/h100-sxm.yaml"
    assert shipped["note"].startswith("measured on this device (h100-sxm.yaml); ")
    mine = tmp_path / "profiles" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_bytes(PROFILE.read_bytes())
    given = str(tmp_path / "profiles" / ".." / "profiles" / "mine.yaml")
    own = simulate_setup(prepare("rtx4090", "llama-3.1-8b", calibration=given, knobs={"max_model_len": 4096}), trace,
                         keep_frames=False).summary["provenance"]
    assert own["calibration"] == str(mine.resolve())


def test_uncertainty_band_brackets_the_nominal_run(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": i * 0.05, "input_tokens": 256, "output_tokens": 32}) + "\n"
                             for i in range(20)))
    setup = prepare("rtx4090", "llama-3.1-8b", calibration=str(PROFILE), knobs={"max_model_len": 4096})
    summary = simulate_setup(setup, trace, keep_frames=False, uncertainty=True).summary
    band = summary["uncertainty"]
    assert band["calibrated"] and 0 < band["kernel_error_p90"] < 0.5
    for block, key in (("ttft_s", "mean"), ("tpot_s", "mean"), ("e2e_s", "mean")):
        assert band[block][key]["low"] <= summary[block][key] <= band[block][key]["high"]
    assert band["tpot_s"]["mean"]["low"] < band["tpot_s"]["mean"]["high"]


def test_cpu_harness_calibrates_the_host_spec_end_to_end(tmp_path):
    """The CPU path of the harness (numpy GEMMs and copies) calibrates the 2-vCPU host spec, and the
    profile predicts the measurements better than the uncalibrated roofline. The machine running
    the tests may have another CPU than the spec's, whose name `calibrate` would refuse: --force."""
    measured = tmp_path / "cpu.csv"
    run = [sys.executable, "-m", "validation.measure", "--device", "cpu", "--quick", "--out", str(measured)]
    subprocess.run(run, check=True, capture_output=True, cwd=ROOT, timeout=300)
    calib = tmp_path / "cpu-calib.yaml"
    cli = [sys.executable, "-m", "simulator.cli"]
    subprocess.run(cli + ["calibrate", "xeon-emr-2vcpu", str(measured), "-o", str(calib), "--folds", "3", "--force"],
                   check=True, capture_output=True, cwd=ROOT, timeout=300)
    profile = Calibration.load(calib)
    assert ("gemm", "fp32") in profile.ops
    errors = {}
    for name, option in (("calibrated", str(calib)), ("roofline", "none")):
        out = tmp_path / f"val-{name}"
        subprocess.run(cli + ["validate", "xeon-emr-2vcpu", str(measured), "--calibration", option, "--out", str(out)],
                       check=True, capture_output=True, cwd=ROOT, timeout=300)
        errors[name] = pd.read_csv(out / "predictions.csv")["error_pct"].abs().median()
    assert errors["calibrated"] < errors["roofline"]
    # In-sample, the table reproduces its grid up to the monotone smoothing of timings that a
    # loaded 2-core machine makes noisy; 25 % leaves room for that noise.
    assert errors["calibrated"] < 25.0


def test_calibrated_h100_keeps_the_hand_bounds():
    """With the shipped H100 profile, a single Llama-3.1-8B decode step still costs between
    weights / HBM bandwidth (16.06 GB / 3.35 TB/s = 4.79 ms) and 1.4x that, and an 8k-token
    prefill stays within 1.6x of FLOPs / peak: measured kernels sit inside the roofline's bounds."""
    from simulator.engine.batch import BatchShape

    setup = prepare("h100-sxm", "llama-3.1-8b")
    assert setup.calibration is not None
    floor_s = 16_060_522_496 / 3.35e12
    decode = setup.cost.iteration(BatchShape(num_decodes=1, decode_context=160, sampled=1)).time_s
    assert floor_s <= decode <= 1.4 * floor_s
    T = 8192
    prefill = setup.cost.iteration(BatchShape(prefill_tokens=T, prefill_context=T, prefill_pairs=T * (T + 1) / 2,
                                              sampled=1))
    assert 1.0 <= prefill.time_s / (prefill.flops / 989e12) <= 1.6


def test_an_fp8_kv_cache_speeds_up_calibrated_decode_attention():
    """The H100 attention tables were measured with a bf16 KV cache. Decode attention reads
    the cache: stored in fp8 it moves about half the bytes, so the calibrated time is scaled
    by the roofline's ratio (close to 0.5 here: 64 decodes of 4000 tokens, the queries are a
    sliver of the bytes) and says so; prefill attention, compute bound, barely changes."""
    from simulator.engine.batch import BatchShape
    from simulator.perf.kernel_times import SCALED

    decode = BatchShape(num_decodes=64, decode_context=64 * 4000, sampled=64)
    prefill = BatchShape(prefill_tokens=2048, prefill_context=6048, prefill_pairs=2048 * (4000 + 1024.5), sampled=1)
    times = {}
    for kv in ("bf16", "fp8"):
        cost = prepare("h100-sxm", "llama-3.1-70b", tp=4, knobs={"kv_cache_dtype": kv, "max_model_len": 8192}).cost
        times[kv] = (cost._attention_part(decode, True), cost._attention_part(prefill, False))
    ratio = times["fp8"][0].time_s / times["bf16"][0].time_s
    assert 0.49 < ratio < 0.55
    assert times["fp8"][0].sources_s[SCALED] > 0 and times["bf16"][0].sources_s[SCALED] == 0
    assert times["fp8"][1].time_s == pytest.approx(times["bf16"][1].time_s, rel=0.02)
