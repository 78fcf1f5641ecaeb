"""Calibration follows the hardware (simulator/perf/profile_use.py, device_identity.py): a profile's
measured times apply only to the device it was fitted against (told by the spec's numbers);
other devices transfer its efficiencies, other dtypes scale a measured one, and provenance,
uncertainty bands, `calibrate` and `validate` say which."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simulator.api import prepare, simulate_setup
from simulator.engine.batch import BatchShape
from simulator.hardware.loader import load_system
from simulator.perf.calibration import Calibration, predict_rows
from simulator.perf.device_identity import fingerprint, measured_elsewhere, same_device
from simulator.perf.kernel_times import HOST
from simulator.perf.measurements import read_measurements
from simulator.perf.profile_use import ERRORS_FILE, AppliedProfile, resolve_calibration

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "validation" / "data"
PROFILES = ROOT / "hardware_specs" / "profiles"
H100_SPEC = ROOT / "hardware_specs" / "gpus" / "h100-sxm.yaml"
SHORT = {"max_model_len": 4096}


def _spec(tmp_path: Path, name: str, body: str) -> Path:
    """A spec in another folder than the catalogue that `extends:` the H100 SXM."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"extends: {H100_SPEC}\n{body}\nsources: [\"test\"]\n")
    return path


def _trace(tmp_path: Path, n: int = 6, output: int = 24) -> Path:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.05 * i, "input_tokens": 200, "output_tokens": output}) + "\n"
                             for i in range(n)))
    return trace


def _kernel_s(setup, n: int = 8) -> float:
    """Device time of one decode step of n sequences (host time left out)."""
    cost = setup.cost.iteration(BatchShape(num_decodes=n, decode_context=n * 500.0, sampled=n))
    return cost.time_s - float(cost.sources_s[HOST])


def test_a_device_is_told_by_its_numbers_not_its_name(tmp_path):
    """Same name, twice the bandwidth: another device. Another name and memory capacity, same
    numbers: the same device."""
    h100 = load_system("h100-sxm").accelerator
    faster = load_system(_spec(tmp_path, "fast", "memory:\n  - {name: hbm3, capacity: 80 GB, bandwidth: 6.7 TB/s}"))
    renamed = load_system(_spec(tmp_path, "renamed", "name: my-gpu\nmemory:\n"
                                "  - {name: hbm3, capacity: 96 GB, bandwidth: 3.35 TB/s}"))
    assert faster.accelerator.name == h100.name
    assert not same_device(fingerprint(faster.accelerator), fingerprint(h100))
    assert same_device(fingerprint(renamed.accelerator), fingerprint(h100))
    profile = Calibration.load(PROFILES / "h100-sxm.yaml")
    assert profile.fitted_on["memory_bandwidth_bytes_per_s"] == 3.35e12
    assert AppliedProfile(profile, renamed).here and not AppliedProfile(profile, faster).here


def test_twice_the_bandwidth_halves_a_decode_step_instead_of_copying_the_h100s(tmp_path):
    """A GPU that extends h100-sxm (so inherits its profile) with twice the memory bandwidth:
    Llama-3.1-8B decode of 8 sequences is bandwidth bound, so its kernels take about half the
    H100's time (fixed per-kernel costs keep it a little above), not the H100's measured time."""
    h100 = prepare("h100-sxm", "llama-3.1-8b")
    fast = prepare(_spec(tmp_path, "fast", "memory:\n  - {name: hbm3, capacity: 80 GB, bandwidth: 6.7 TB/s}"),
                   "llama-3.1-8b")
    assert h100.calibration.here and not fast.calibration.here
    assert fast.calibration.use.startswith("transferred from h100-sxm.yaml")
    assert {r.kind for r in fast.calibration.routes()} == {"transferred"}
    assert _kernel_s(fast) / _kernel_s(h100) == pytest.approx(0.5, rel=0.15)


def test_an_a100_profile_on_an_h100_transfers_within_20_percent():
    """--calibration with the A100 profile on the H100 applies its efficiencies to the H100's
    peaks, bandwidth and SMs (it predicted A100 times before): median |error| on every measured
    H100 GEMM (bf16 and fp8) under 20 % (19.0 %; bf16 alone 11.3 %, fp8 29.0 %)."""
    system = load_system("h100-sxm")
    applied = resolve_calibration(system, str(PROFILES / "a100-80gb-sxm.yaml"))
    rows = read_measurements(DATA / "h100-sxm-gemm.csv")
    predicted, source = predict_rows(rows, system, applied)
    error = np.abs(predicted / rows["time_us"].to_numpy() - 1)
    assert set(source) == {"transferred"}
    assert np.median(error) < 0.20
    assert np.median(error[(rows["dtype"] == "bf16").to_numpy()]) < 0.15


@pytest.mark.parametrize("hardware, source", [("h200", "h100-sxm.yaml"), ("b200", "rtx-pro-6000.yaml"),
                                              ("l40s", "rtx4090.yaml"), ("mi300x", "h100-sxm.yaml")])
def test_devices_without_a_profile_transfer_from_the_nearest(tmp_path, hardware, source):
    """Same architecture family first (H200: Hopper; B200: Blackwell; L40S: Ada), else the
    nearest spec (MI300X: the H100); the run's time is mostly transferred and says so."""
    setup = prepare(hardware, "llama-3.1-8b", knobs=SHORT)
    assert setup.calibration.use.startswith(f"transferred from {source}")
    summary = simulate_setup(setup, _trace(tmp_path), keep_frames=False).summary
    prov = summary["provenance"]
    assert prov["share_of_time_by_source"]["transferred"] > 0.5
    assert prov["calibration_use"].startswith("transferred from") and "transferred from" in prov["note"]


def test_the_console_and_the_band_show_the_transfer(tmp_path):
    """`simulate run h200 --uncertainty` prints the transferred share and a band as wide as the
    measured transfer error, wider than the H100's own calibrated band."""
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "run", "h200", str(_trace(tmp_path)), "--model",
                          "llama-3.1-8b", "--set", "max_model_len=4096", "--uncertainty", "--out",
                          str(tmp_path / "run")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "transferred" in out.stdout and "uncertainty (p90 kernel error: " in out.stdout
    band = json.loads((tmp_path / "run" / "summary.json").read_text())["uncertainty"]
    table = yaml.safe_load(ERRORS_FILE.read_text())
    assert band["kernel_error_p90_by_source"]["transferred"] == pytest.approx(
        {op: table["transferred"][op]["p90_pct"] / 100 for op in ("gemm", "attn_prefill", "attn_decode")})
    h100 = simulate_setup(prepare("h100-sxm", "llama-3.1-8b", knobs=SHORT), _trace(tmp_path), keep_frames=False,
                          uncertainty=True).summary["uncertainty"]
    width = {name: b["tpot_s"]["mean"]["high"] / b["tpot_s"]["mean"]["low"] for name, b in (("h200", band),
                                                                                           ("h100", h100))}
    assert width["h200"] > 1.5 * width["h100"]


def _without(profile: Calibration, *groups: tuple[str, str]) -> Calibration:
    return Calibration(profile.device, profile.hardware, profile.sources, profile.fitted_on, profile.source_sha256,
                       {k: v for k, v in profile.ops.items() if k not in groups}, profile.path)


def test_fp16_uses_the_bf16_tables_and_fp8_scales_by_the_peak_ratio():
    """On the H100 (bf16 and fp16 peaks equal) fp16 GEMMs read the bf16 table as measured; with
    the fp8 group gone, fp8 GEMMs scale the bf16 ones: half the time where compute bound."""
    system = load_system("h100-sxm")
    profile = Calibration.load(PROFILES / "h100-sxm.yaml")
    applied = AppliedProfile(_without(profile, ("gemm", "fp8")), system)
    fp16, fp8 = applied.route("gemm", "fp16"), applied.route("gemm", "fp8")
    assert (fp16.kind, fp16.measured_dtype) == ("calibrated", "bf16")
    assert (fp8.kind, fp8.measured_dtype) == ("scaled", "bf16")
    assert fp8.error_p90 > profile.ops[("gemm", "bf16")].heldout_error_pct["p90"] / 100
    big = pd.DataFrame({"op": ["gemm"], "m": [8192], "n": [8192], "k": [8192]})
    bf16_us, _ = applied.predict_us("gemm", "bf16", big)
    fp16_us, fp16_source = applied.predict_us("gemm", "fp16", big)
    fp8_us, fp8_source = applied.predict_us("gemm", "fp8", big)
    assert fp16_us[0] == bf16_us[0] and fp16_source[0].startswith("calibrated")
    assert fp8_us[0] == pytest.approx(bf16_us[0] / 2, rel=0.02) and fp8_source[0] == "scaled"


def test_an_fp8_run_on_a_bf16_profile_says_scaled(tmp_path):
    profile = _without(Calibration.load(PROFILES / "h100-sxm.yaml"), ("gemm", "fp8"))
    path = tmp_path / "h100-bf16-only.yaml"
    profile.save(path)
    setup = prepare("h100-sxm", "llama-3.1-8b", knobs={**SHORT, "weight_dtype": "fp8"}, calibration=str(path))
    shares = simulate_setup(setup, _trace(tmp_path), keep_frames=False).summary["provenance"]["share_of_time_by_source"]
    assert shares["scaled"] > 0.5 and shares["calibrated-interpolation"] > 0.0  # GEMMs scaled, attention measured


def test_a_cpu_run_uses_the_cpu_profile_scaled_to_its_dtype(tmp_path):
    """The 2-vCPU host profile measured fp32 GEMMs; a bf16 run scales them by the peak ratio
    (AMX bf16 over AVX-512 fp32) and its band carries that profile's own error."""
    setup = prepare("xeon-emr-2vcpu", "llama-3.1-8b", knobs={"max_model_len": 2048})
    assert setup.calibration.here
    route = setup.calibration.route("gemm", "bf16")
    assert (route.kind, route.measured_dtype) == ("scaled", "fp32")
    summary = simulate_setup(setup, _trace(tmp_path, n=1, output=3), keep_frames=False, uncertainty=True).summary
    assert summary["provenance"]["share_of_time_by_source"]["scaled"] > 0.5
    assert summary["uncertainty"]["calibrated"]
    assert summary["uncertainty"]["kernel_error_p90_by_source"] == {"scaled": {"gemm": pytest.approx(route.error_p90)}}


def test_no_band_for_a_profile_the_run_did_not_use(tmp_path):
    """A CPU profile of host copies only covers no kernel of a run: no ±band is printed."""
    profile = Calibration.load(PROFILES / "xeon-emr-2vcpu.yaml")
    path = tmp_path / "copies-only.yaml"
    _without(profile, ("gemm", "fp32")).save(path)
    out = subprocess.run([sys.executable, "-m", "simulator.cli", "run", "xeon-emr-2vcpu", str(_trace(tmp_path, 1, 3)),
                          "--model", "llama-3.1-8b", "--set", "max_model_len=2048", "--calibration", str(path),
                          "--uncertainty", "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "uncertainty (" not in out.stdout
    band = json.loads((tmp_path / "run" / "summary.json").read_text())["uncertainty"]
    assert not band["calibrated"] and "no kernel of this run came from the profile" in band["note"]


def test_calibrate_refuses_another_devices_measurements(tmp_path):
    """The 2-vCPU host's file against the H100 spec: exit 2, one line naming both; --force fits."""
    measured = DATA / "xeon-emr-2vcpu-quick.csv"
    out = tmp_path / "calib.yaml"
    cli = [sys.executable, "-m", "simulator.cli", "calibrate", "h100-sxm", str(measured), "-o", str(out), "--folds", "2"]
    refused = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and not out.exists()
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Intel(R) Xeon(R) Processor" in lines[0] and "H100-SXM5-80GB" in lines[0]
    assert "--force" in lines[0]
    forced = subprocess.run(cli + ["--force"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert forced.returncode == 0, forced.stderr
    assert Calibration.load(out).fitted_on["name"] == "H100-SXM5-80GB"


@pytest.mark.parametrize("file, hardware, problem", [
    ("a100-sxm-gemm-vidur.csv", "h100-sxm", "not on H100-SXM5-80GB"),
    ("h100-sxm-gemm.csv", "h200", "not on H200"),
    ("h100-sxm-gemm.csv", "h100-sxm", None),
    ("a100-dgx-allreduce-vidur.csv", "dgx-a100", None),
    ("xeon-emr-2vcpu-quick.csv", "xeon-emr-2vcpu", None),
])
def test_the_device_check_of_calibrate(file, hardware, problem):
    frame = read_measurements(DATA / file, "devices_per_node=8" if "allreduce" in file else None)
    found = measured_elsewhere(frame, load_system(hardware))
    assert found is None if problem is None else problem in found


def test_a_gemm_faster_than_the_specs_peak_is_another_devices():
    frame = read_measurements(DATA / "h100-sxm-gemm.csv").assign(device="NVIDIA A100-SXM4-80GB")
    assert "faster device" in measured_elsewhere(frame, load_system("a100-80gb-sxm"))


def test_validate_marks_in_sample_rows(tmp_path):
    """The host profile was fitted on the file validated: every row is in-sample, in the printed
    table and in predictions.csv; a new file of the same device's rows is not."""
    cli = [sys.executable, "-m", "simulator.cli", "validate", "xeon-emr-2vcpu"]
    same = subprocess.run(cli + [str(DATA / "xeon-emr-2vcpu-quick.csv"), "--out", str(tmp_path / "a")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert same.returncode == 0, same.stderr
    assert "in-sample" in same.stdout.splitlines()[1] and "in-sample: 24 of 24 rows" in same.stdout
    assert pd.read_csv(tmp_path / "a" / "predictions.csv")["in_sample"].all()
    other = tmp_path / "new-cpu-run.csv"
    frame = pd.read_csv(DATA / "xeon-emr-2vcpu-quick.csv")
    frame.assign(time_us=frame["time_us"] * 1.01).to_csv(other, index=False)
    fresh = subprocess.run(cli + [str(other), "--out", str(tmp_path / "b")], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
    assert fresh.returncode == 0 and "in-sample:" not in fresh.stdout
    assert not pd.read_csv(tmp_path / "b" / "predictions.csv")["in_sample"].any()


def test_the_shipped_error_table_says_where_its_numbers_come_from():
    table = yaml.safe_load(ERRORS_FILE.read_text())
    assert table["transfer_device_kinds"] == ["gpu"]
    gemm = table["transferred"]["gemm"]
    assert {(p["from"], p["to"]) for p in gemm["pairs"]} >= {("a100-80gb-sxm", "h100-sxm"), ("rtx4090", "rtx-pro-6000"),
                                                              ("rtx-pro-6000", "rtx4090")}
    assert 0 < gemm["median_pct"] < gemm["p90_pct"]
    assert {p["dtype"] for p in table["scaled"]["gemm"]["pairs"]} == {"bf16", "fp8"}


def test_validate_times_mixed_attention_with_the_profiles_measured_factor():
    """The RTX 4090 layer tables' mixed steps (decodes in one call with a prefill chunk) against
    the shipped profile fitted on them: each row is the profile's prefill chunk alone plus its
    decodes alone times the profile's measured factor for that shape, not the spec's default,
    within 10 % at the median (in-sample; the factor is a median over the chunks measured
    with each cell), far nearer than the uncalibrated roofline."""
    from simulator.perf.mixed_attention import default_factor
    from validation.layer_tables import convert

    system = load_system("rtx4090")
    applied = resolve_calibration(system, None)
    frame = convert(DATA / "rtx4090-llama-3.1-8b")
    mixed = frame[frame["op"] == "attn_mixed"].reset_index(drop=True)
    predicted, source = predict_rows(mixed, system, applied)
    error = np.abs(predicted / mixed["time_us"].to_numpy() - 1)
    assert np.median(error) < 0.10
    assert set(source) <= {"calibrated-interpolation", "calibrated-fit"}
    roofline, _ = predict_rows(mixed, system, None)
    assert np.median(error) < 0.5 * np.median(np.abs(roofline / mixed["time_us"].to_numpy() - 1))
    row = mixed.iloc[0]
    shape = {"dtype": "bf16", "heads": 32, "kv_heads": 8, "head_dim": 128}
    chunk = pd.DataFrame([{"op": "attn_prefill", "batch": 1, "seq_len": row["seq_len"],
                           "kv_len": row["prefill_kv_len"], **shape}])
    decodes = pd.DataFrame([{"op": "attn_decode", "batch": row["batch"], "kv_len": row["kv_len"], **shape}])
    factor = applied.profile.mixed.table(32, 8, 128)(row["batch"], row["kv_len"])
    assert factor != pytest.approx(default_factor(32, 8, system.accelerator.efficiency.mixed_decode_gqa_miss))
    assert predicted[0] == pytest.approx(predict_rows(chunk, system, applied)[0][0]
                                         + factor * predict_rows(decodes, system, applied)[0][0])
