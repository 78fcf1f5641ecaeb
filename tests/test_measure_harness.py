"""The measuring harness `python -m validation.measure` (docs/contracts.md, section 6), CPU path.

One `--quick` CPU run through numpy (a few seconds) is shared by the output checks: it must
pass the simulator's own reader, hold positive times, grow with GEMM FLOPs, and leave a metadata
sidecar naming the CPU. Where torch is installed, a `--quick` run through torch's CPU kernels
must do the same in bf16, with prepacked oneDNN GEMMs and attention rows. Bad arguments (an
unknown op, `--device cuda` or `--cpu-kernels torch` without torch) exit 2 with one line. The
CUDA path needs a GPU and is not run here.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from simulator.models.config import load_model, model_catalogue
from simulator.models.operators import Precision, Sharding, dense_ops, head_ops
from simulator.perf.measurements import read_measurements
from validation import shapes as S
from validation.measure import CUDA_NEEDS_TORCH
from validation.measuring.cli import CPU_TORCH_NEEDED
from validation.measuring.host import cpu_model_name
from validation.measuring.output import meta_path

ROOT = Path(__file__).resolve().parent.parent


def _measure(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "validation.measure", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_cpu(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("measure") / "cpu.csv"
    return out, _measure("--device", "cpu", "--cpu-kernels", "numpy", "--quick", "--out", str(out))


def test_quick_cpu_run_passes_the_reader(quick_cpu):
    out, proc = quick_cpu
    assert proc.returncode == 0, proc.stderr
    frame = read_measurements(out)  # the contract's own validator
    assert {"gemm", "memcpy"} <= set(frame["op"])
    assert (frame["time_us"] > 0).all()
    assert (frame["p10_us"] <= frame["time_us"]).all() and (frame["time_us"] <= frame["p90_us"]).all()
    assert set(frame["dtype"]) == {"fp32"}  # numpy measures fp32 whatever was asked
    assert set(frame.loc[frame["op"] == "memcpy", "direction"]) == {"d2d"}
    assert frame["device"].nunique() == 1 and frame["device"].iloc[0] == cpu_model_name()
    assert frame["source"].iloc[0].startswith("validation.measure ")
    assert not list(out.parent.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_gemm_time_grows_with_flops(quick_cpu):
    out, proc = quick_cpu
    assert proc.returncode == 0, proc.stderr
    gemm = pd.read_csv(out).query("op == 'gemm'").copy()
    gemm["flops"] = 2.0 * gemm["m"] * gemm["n"] * gemm["k"]
    gemm = gemm.sort_values("flops")
    smallest, largest = gemm.iloc[0], gemm.iloc[-1]
    assert largest["flops"] / smallest["flops"] > 1000
    assert largest["time_us"] > 10 * smallest["time_us"]
    assert gemm["flops"].corr(gemm["time_us"], method="spearman") > 0.5


def test_metadata_sidecar(quick_cpu):
    out, proc = quick_cpu
    assert proc.returncode == 0, proc.stderr
    meta = yaml.safe_load(meta_path(out).read_text())
    assert meta_path(out).name == "cpu.meta.yaml"
    assert meta["device"] == cpu_model_name() and meta["cpu"]["model"] == cpu_model_name()
    assert meta["quick"] is True and "--quick" in meta["command"]
    assert meta["cpu_count"] >= 1 and meta["cpu"]["llc_bytes"] > 0
    assert {"python", "numpy"} <= set(meta["versions"])
    assert meta["rows"]["gemm"] == int((pd.read_csv(out)["op"] == "gemm").sum())
    assert meta["dtypes"] == ["fp32"] and meta["interrupted"] is False


def _without_torch(args: list[str]) -> subprocess.CompletedProcess:
    # hide torch even where it is installed: find_spec answers None for a None entry in sys.modules
    code = f"import sys; sys.modules['torch'] = None; from validation.measure import main; sys.exit(main({args!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cuda_without_torch_exits_2_with_one_line(tmp_path):
    out = tmp_path / "gpu.csv"
    proc = _without_torch(["--device", "cuda", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {CUDA_NEEDS_TORCH}"]
    assert proc.stderr.strip() == "error: --device cuda needs torch with a CUDA GPU (pip install -e '.[gpu]')"
    assert not out.exists() and not meta_path(out).exists()


def test_cpu_kernels_torch_without_torch_exits_2_and_the_default_falls_back_to_numpy(tmp_path):
    out = tmp_path / "cpu.csv"
    proc = _without_torch(["--device", "cpu", "--cpu-kernels", "torch", "--out", str(out)])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {CPU_TORCH_NEEDED}"]
    assert not out.exists()
    fallback = _without_torch(["--device", "cpu", "--quick", "--ops", "memcpy", "--out", str(out)])
    assert fallback.returncode == 0, fallback.stderr
    assert yaml.safe_load(meta_path(out).read_text())["dtypes"] == ["fp32"]  # numpy's dtype, not torch's bf16


def test_quick_cpu_run_through_torch_measures_bf16(tmp_path):
    """torch's CPU kernels, as vLLM's CPU backend runs them: bf16 GEMMs on prepacked oneDNN weights
    and attention, cold-cache times that grow with the work; the sidecar names torch."""
    pytest.importorskip("torch")
    out = tmp_path / "cpu.csv"
    proc = _measure("--device", "cpu", "--cpu-kernels", "torch", "--quick", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    frame = read_measurements(out)
    assert {"gemm", "attn_prefill", "memcpy"} <= set(frame["op"]) and "attn_decode" not in set(frame["op"])
    assert set(frame["dtype"]) == {"bf16"} and (frame["time_us"] > 0).all()
    gemm = frame[frame["op"] == "gemm"]
    assert set(gemm["backend"]) == {"onednn-prepacked"}
    big, small = gemm.loc[(gemm["m"] * gemm["n"] * gemm["k"]).idxmax()], gemm.loc[(gemm["m"] * gemm["n"] * gemm["k"]).idxmin()]
    assert big["time_us"] > 10 * small["time_us"]
    meta = yaml.safe_load(meta_path(out).read_text())
    assert "torch" in meta["versions"] and meta["cpu"]["torch_threads"] >= 1
    assert frame["device"].iloc[0] == cpu_model_name()


@pytest.mark.parametrize(("args", "expected"), [
    (["--device", "cuda", "--cpu-kernels", "numpy"], "error: --cpu-kernels numpy: only with --device cpu"),
    (["--device", "cpu", "--ops", "gemm,conv2d"], "error: --ops: unknown op 'conv2d'"),
    (["--device", "cpu", "--dtype", "int3"], "error: --dtype: unknown dtype 'int3'"),
    (["--device", "tpu"], "error: argument --device: invalid choice"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, expected):
    out = tmp_path / "x.csv"
    proc = _measure(*args, "--out", str(out), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stderr
    assert not out.exists()


def test_missing_output_folder_exits_2(tmp_path):
    proc = _measure("--device", "cpu", "--out", str(tmp_path / "nowhere" / "x.csv"), timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


# --- shapes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(model_catalogue()))
@pytest.mark.parametrize("tp", S.TP_DEGREES)
def test_layer_gemms_match_the_cost_model(name, tp):
    """The harness times exactly the GEMM shapes the simulator costs for each layer."""
    model, shard, prec = load_model(name), Sharding(tp=tp), Precision()
    ops = dense_ops(model, 7, shard, prec) + head_ops(model, 7, shard, prec)
    # routed experts: one expert's matrix of the grouped GEMM
    simulated = {(op.name, op.shape.n, op.shape.k) for op in ops if op.kind in ("gemm", "grouped_gemm")}
    assert set(S.layer_gemms(model, tp)) == simulated


def test_shape_grids():
    models = {n: load_model(n) for n in model_catalogue()}
    full, quick = S.gemm_shapes(models), S.gemm_shapes(models, quick=True)
    assert len(quick) < 40 < len(full)
    assert len({(g.m, g.n, g.k) for g in full}) == len(full)  # no shape timed twice
    assert {g.m for g in full} >= {1, 8192}
    assert S.message_sizes()[0] == 4 * S.KIB and S.message_sizes()[-1] == S.GIB
    for s in S.attn_prefill_shapes(models) + S.attn_decode_shapes(models):
        assert s.heads % s.kv_heads == 0
    assert all(s.kv_len >= s.seq_len for s in S.attn_prefill_shapes(models))
