"""Regenerate the shipped calibration profiles in hardware_specs/profiles/ from validation/data/.

    python -m validation.build_profiles            # all profiles (a few minutes on 2 cores)
    python -m validation.build_profiles rtx4090    # one

Each profile is what `simulate calibrate` writes for that device's measurements; the spec of
the device names it with `calibration:`. Files that mix devices or topologies are filtered
here, so every profile describes one device:
- h100-sxm: the H100 SXM GEMM (bf16, fp8) and attention (prefill, decode) tables.
- a100-80gb-sxm: the A100 GEMMs profiled by Vidur, and the DGX A100 all-reduce measured with
  8 GPUs per node (NVLink through NVSwitch, the fabric a single-node deployment uses).
- rtx4090: the Llama-3.1-8B layer tables converted by `validation.layer_tables`.
- rtx-pro-6000: the Llama-3.1-8B and Qwen3-32B layer tables at TP 1 and TP 2 (one device's
  shard), converted the same way, and Qwen3-30B-A3B's fused-MoE layer table (`moe` rows).
- xeon-emr-2vcpu: this project's 2-vCPU host, measured by `python -m validation.measure
  --device cpu --quick` (numpy GEMMs and copies; a loaded 2-core VM makes them noisy).
- epyc-genoa-2vcpu: another of the project's 2-vCPU hosts, measured through torch's CPU
  kernels in bf16, the dtype CPU runs use (prepacked oneDNN GEMMs, prefill attention, copies).

Building them all also rewrites `transfer-errors.yaml` beside them (`validation.transfer_errors`:
the measured errors of transferring each profile to the other GPUs and of scaling between dtypes).

The A100 GEMMs come from two sources (Vidur's profiling and the LLMCompass artifact), whose
device columns name the same GPU differently; they are fitted together as one device.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from simulator.hardware.loader import load_system
from simulator.paths import HARDWARE_DIR, shown_path
from simulator.perf.calibration import calibrate
from simulator.perf.measurements import read_measurements

from . import DATA, require_data
from .layer_tables import convert

OUT = HARDWARE_DIR / "profiles"  # the package's catalogue: in a checkout, the repository's hardware_specs/


def _h100(tmp: Path) -> list[Path]:
    return [DATA / "h100-sxm-gemm.csv", DATA / "h100-sxm-attn-prefill.csv", DATA / "h100-sxm-attn-decode.csv"]


def _a100(tmp: Path) -> list[Path]:
    allreduce = read_measurements(DATA / "a100-dgx-allreduce-vidur.csv", device="devices_per_node=8")
    allreduce = allreduce[allreduce["op"] == "allreduce"]
    allreduce = allreduce.assign(device="NVIDIA A100-SXM4-80GB")  # one device name across the profile's files
    path = tmp / "a100-dgx-allreduce-8gpu.csv"
    allreduce.to_csv(path, index=False)
    llmcompass = read_measurements(DATA / "llmcompass-gemm-a100.csv").assign(device="NVIDIA A100-SXM4-80GB")
    llmcompass_path = tmp / "llmcompass-gemm-a100.csv"
    llmcompass.to_csv(llmcompass_path, index=False)
    return [DATA / "a100-sxm-gemm-vidur.csv", llmcompass_path, path]


def _rtx4090(tmp: Path) -> list[Path]:
    path = tmp / "rtx4090-llama-3.1-8b-kernels.csv"
    convert(DATA / "rtx4090-llama-3.1-8b").to_csv(path, index=False)
    return [path]


def _rtx_pro_6000(tmp: Path) -> list[Path]:
    paths = []
    for model in ("llama-3.1-8b", "qwen3-32b", "qwen3-30b-a3b"):
        path = tmp / f"rtxpro6000-{model}-kernels.csv"
        convert(DATA / f"rtxpro6000-{model}").to_csv(path, index=False)
        paths.append(path)
    return paths


def _host_cpu(tmp: Path) -> list[Path]:
    return [DATA / "xeon-emr-2vcpu-quick.csv"]


def _genoa_vm(tmp: Path) -> list[Path]:
    return [DATA / "epyc-genoa-2vcpu.csv", DATA / "epyc-genoa-2vcpu-memcpy.csv"]


PROFILES = {"h100-sxm": _h100, "a100-80gb-sxm": _a100, "rtx4090": _rtx4090, "rtx-pro-6000": _rtx_pro_6000,
            "xeon-emr-2vcpu": _host_cpu, "epyc-genoa-2vcpu": _genoa_vm}


def build(name: str) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        files = PROFILES[name](Path(tmp))
        calib = calibrate(load_system(name), files)
    calib.sources = [f.name for f in files]
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.yaml"
    calib.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"profiles to build: {', '.join(PROFILES)} (default: all)")
    args = parser.parse_args()
    require_data()
    unknown = [n for n in args.names if n not in PROFILES]
    if unknown:
        parser.error(f"unknown profile {unknown[0]!r} (known: {', '.join(PROFILES)})")
    for name in args.names or PROFILES:
        path = build(name)
        print(f"wrote {shown_path(path)}")
    if not args.names:  # the errors of transferring and scaling them, measured from the new profiles
        from .transfer_errors import main as transfer_errors

        transfer_errors([])


if __name__ == "__main__":
    main()
