"""The wafer model against published figures: `python -m validation.wafer_checks`.

Prints each comparison of validation/README.md ("Wafer-scale meshes") with its source, the
published figure, the model's and the error, then the sensitivity of the WaferLLM decode
figure to the one fabric number that is an assumption (the per-message overhead). Everything
comes from the shipped specs and models; no measurement is read.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from simulator.api import prepare
from simulator.engine.batch import BatchShape
from simulator.hardware.loader import load_spec
from simulator.hardware.wafer import WaferDevice
from simulator.models.operators import Precision, gemm_op
from simulator.perf import mesh
from simulator.perf.roofline import operator_time_s
from simulator.perf.wafer_cost import mesh_of


def decode_rate(hardware: str, model: str, context: float, **kwargs) -> float:
    """Tokens/s of one sequence decoding with `context` tokens of KV (the device's step, host included)."""
    setup = prepare(hardware, model, **kwargs)
    return 1.0 / setup.cost.iteration(BatchShape(num_decodes=1, decode_context=context, sampled=1)).time_s


def best_gemv_s(device: WaferDevice, size: int) -> float:
    """The fastest MeshGEMV of a [1 x size] x [size x size] fp16 matrix over square sub-meshes."""
    op = gemm_op("gemv", 1, size, size, Precision("fp16", "fp16", "fp16"))
    rate = device.peak_flops("fp16") / device.compute.units
    sides = range(16, min(device.wafer.mesh.rows, device.wafer.mesh.cols) + 1, 2)
    return min(float(mesh.gemv_s(mesh_of(device.wafer, side), 1, size, size, op.flops, op.bytes, rate, 2.0))
               for side in sides)


def rows() -> list[tuple[str, str, float, float]]:
    """(figure, source, published, model)."""
    wse2 = load_spec("wse-2")
    a100 = load_spec("a100-80gb-sxm")
    assert isinstance(wse2, WaferDevice)
    out = []
    for context in (1024.0, 4096.0):
        out.append((f"Llama3-8B decode, WSE-2, tokens/s per request ({context:.0f} tokens of KV)",
                    "WaferLLM arXiv 2502.04563v2 abstract", 2700.0, decode_rate("wse-2", "llama-3.1-8b", context)))
    out.append(("Qwen2-72B decode, WSE-2 (5 wafers pipelined here), tokens/s per request (1024 tokens)",
                "WaferLLM arXiv 2502.04563v2 abstract", 840.0, decode_rate("wse-2", "qwen2.5-72b", 1024.0, pp=5)))
    wafer = decode_rate("wse-2", "llama-3.1-8b", 1024.0)
    cluster = decode_rate("dgx-a100", "llama-3.1-8b", 1024.0, tp=8)
    single = decode_rate("a100-80gb-sxm", "llama-3.1-8b", 1024.0)
    out.append(("Llama3-8B decode speed-up over 8 x A100 (vLLM, TP 8), 1024 tokens",
                "WaferLLM OSDI'25 abstract: 10-20x (midpoint)", 15.0, wafer / cluster))
    out.append(("Llama3-8B decode speed-up over one A100 (vLLM), 1024 tokens",
                "WaferLLM v2 abstract: 39x 'faster decoding' (baseline not stated)", 39.0, wafer / single))
    op = gemm_op("gemv", 1, 32768, 32768, Precision("fp16", "fp16", "fp16"))
    out.append(("GEMV 32768 x 32768 fp16 speed-up over one A100 (roofline)",
                "WaferLLM OSDI'25 abstract: up to 606x (shapes not in the abstract)", 606.0,
                float(operator_time_s(a100, op)) / best_gemv_s(wse2, 32768)))
    fp32 = mesh.gemm_s(mesh_of(wse2.wafer, 750), 33000, 33000, 33000, wse2.peak_flops("fp32") / wse2.compute.units,
                       4.0, 4.0)
    out.append(("fp32 GEMM 33000^3 on 750 x 750 cores of a CS-2, TFLOPS",
                "Miyajima et al., SC24 workshop / J. Inf. Process. 34 (2026)", 349.0, 2 * 33000**3 / fp32 / 1e12))
    out.append(("Llama 3.1 8B, one CS-3, tokens/s per user (1024 tokens)", "Cerebras blog, 27 Aug 2024", 1800.0,
                decode_rate("wse-3", "llama-3.1-8b", 1024.0)))
    out.append(("Llama 3.1 70B, four CS-3s, tokens/s per user (1024 tokens)", "Cerebras blog; The Register, Aug 2024",
                450.0, decode_rate("wse-3", "llama-3.1-70b", 1024.0, pp=4)))
    return out


def overhead_sensitivity(overheads_ns: tuple[float, ...] = (0.0, 20.0, 45.0, 100.0)) -> list[tuple[float, float]]:
    """The Llama3-8B decode rate on the WSE-2 (1024 tokens) with other per-message overheads."""
    result = []
    with tempfile.TemporaryDirectory() as folder:
        for ns in overheads_ns:
            spec = Path(folder) / f"wse-2-{ns:g}ns.yaml"
            spec.write_text(f"extends: wse-2\nname: WSE-2 {ns:g} ns\nfabric: {{message_overhead: {ns:g} ns}}\n"
                            "sources: [\"sensitivity of validation/wafer_checks.py\"]\n")
            result.append((ns, decode_rate(str(spec), "llama-3.1-8b", 1024.0)))
    return result


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| figure | source | published | model | error |\n|---|---|---|---|---|")
    for figure, source, published, model in rows():
        print(f"| {figure} | {source} | {published:,.0f} | {model:,.0f} | {100 * (model / published - 1):+.0f} % |")
    print("\n| message_overhead | Llama3-8B decode on WSE-2, tokens/s (1024 tokens) |\n|---|---|")
    for ns, rate in overhead_sensitivity():
        print(f"| {ns:g} ns | {rate:,.0f} |")


if __name__ == "__main__":
    main()
