"""A CPU measured in the dtype its runs use: the 2-vCPU EPYC (Zen 4) VM's bf16 tables.

`validation/data/epyc-genoa-2vcpu*.csv` were measured by the harness's torch path (prepacked
oneDNN bf16 GEMMs, prefill attention, host copies); the `epyc-genoa-2vcpu` profile is fitted
to them. A bf16 run on that spec takes its GEMMs and prefill attention from those tables, as
measured (not scaled from another dtype); the measurements sit under the spec's roofline, as
they must if the spec's peaks are the machine's; another CPU's spec refuses them; and whole
steps timed on the same machine come out within the profile's own error.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simulator.api import prepare, simulate_setup
from simulator.hardware.loader import load_system
from simulator.perf.calibration import Calibration
from simulator.perf.device_identity import measured_elsewhere
from simulator.perf.measurements import read_measurements
from simulator.perf.profile_use import CALIBRATED

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "validation" / "data"
PROFILES = ROOT / "hardware_specs" / "profiles"
GEMMS = DATA / "epyc-genoa-2vcpu.csv"
STEPS = DATA / "epyc-genoa-2vcpu-steps.csv"


def _trace(tmp_path: Path, n: int, prompt: int, output: int) -> Path:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.5 * i, "input_tokens": prompt, "output_tokens": output}) + "\n"
                             for i in range(n)))
    return trace


def test_a_bf16_cpu_run_takes_its_kernels_from_the_bf16_tables_measured_on_that_cpu(tmp_path):
    setup = prepare("epyc-genoa-2vcpu", "llama-3.2-1b", knobs={"max_model_len": 2048})
    assert setup.calibration.here
    for op in ("gemm", "attn_prefill"):
        route = setup.calibration.route(op, "bf16")
        assert (route.kind, route.measured_dtype) == (CALIBRATED, "bf16"), op
    summary = simulate_setup(setup, _trace(tmp_path, 3, 256, 8), keep_frames=False).summary
    shares = summary["provenance"]["share_of_time_by_source"]
    measured = shares.get("calibrated-interpolation", 0.0) + shares.get("calibrated-fit", 0.0)
    # a 1B model's decode steps stream 2.5 GB of weights through measured GEMMs; what is left is
    # norms, rotary, the sampler, decode attention over a few hundred tokens and the engine's steps
    assert measured > 0.8, shares
    assert shares.get("scaled", 0.0) == 0.0 and shares.get("transferred", 0.0) == 0.0


def test_the_measured_kernels_sit_under_the_specs_roofline():
    """No GEMM beats the spec's bf16 peak or streams its weights faster than the spec's memory
    bandwidth; the fastest come within 15 % of both, so the spec is not loose either."""
    device = load_system("epyc-genoa-2vcpu").accelerator
    peak, bandwidth = float(device.compute.peak["bf16"]), float(device.main_memory.bandwidth)
    gemm = pd.read_csv(GEMMS).query("op == 'gemm'")
    seconds = gemm["time_us"] * 1e-6
    flops_per_s = 2.0 * gemm["m"] * gemm["n"] * gemm["k"] / seconds
    weights_per_s = 2.0 * gemm["n"] * gemm["k"] / seconds
    assert flops_per_s.max() <= peak and flops_per_s.max() > 0.85 * peak
    assert weights_per_s.max() <= bandwidth and weights_per_s.max() > 0.75 * bandwidth


def test_another_cpus_spec_refuses_these_measurements():
    frame = read_measurements(GEMMS)
    assert measured_elsewhere(frame, load_system("epyc-genoa-2vcpu")) is None
    found = measured_elsewhere(frame, load_system("xeon-emr-2vcpu"))
    assert found is not None and "AMD EPYC" in found


def test_whole_measured_steps_are_predicted_within_the_profiles_own_gemm_error():
    """Whole forward steps of Llama-3.2-1B timed on the same VM (`python -m validation.cpu_step`:
    decodes at 1-16 sequences, prefills of 128-1024 tokens), held out from the kernel tables,
    against the simulator's steps on the profile: a step is mostly GEMMs, so each must land
    within the GEMM table's recorded held-out p90 error and the median within its median."""
    from validation.cpu_step import compare

    profile = Calibration.load(PROFILES / "epyc-genoa-2vcpu.yaml")
    gemm_error = profile.ops[("gemm", "bf16")].heldout_error_pct
    table = compare("epyc-genoa-2vcpu", STEPS)
    assert len(table) == 8 and set(table["phase"]) == {"decode", "prefill"}
    errors = table["error_pct"].abs()
    assert errors.max() <= gemm_error["p90"], table
    assert errors.median() <= gemm_error["median"], table
    assert (table["measured_share"] > 0.8).all()  # the steps' time came from the measured tables
