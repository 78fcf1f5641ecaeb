"""The wafer model against published figures: `python -m validation.wafer_checks`.

Prints each comparison of validation/README.md ("Wafer-scale meshes") with its source, the
published figure, the model's and the error, then how the WaferLLM figures move with the two
per-core numbers that are not published: the per-message overhead (assumed) and the
vector-instruction overhead (fitted to the prefill figure). Everything
comes from the shipped specs and models; no measurement is read.

WaferLLM's figures with their settings are from the OSDI'25 paper (He et al., "WaferLLM: Large
Language Model Inference at Wafer Scale", OSDI 2025, section 7): Table 2 (end to end, per
request), Table 3 (prefill of 4,096 tokens), Table 4 (decode), Table 6 (GEMV), Tables 7 and 8
(the same against SGLang on A100s, 4K context).
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


def prefill_rate(hardware: str, model: str, tokens: int, **kwargs) -> float:
    """Prompt tokens/s of one `tokens`-token prompt prefilled in one step (WaferLLM's prefill TPR)."""
    setup = prepare(hardware, model, **kwargs)
    shape = BatchShape(prefill_tokens=tokens, prefill_context=float(tokens),
                       prefill_pairs=tokens * (tokens + 1) / 2, sampled=1)
    return tokens / setup.cost.iteration(shape).time_s


def end_to_end_rate(hardware: str, model: str, prompt: int, output: int, prefill_mesh: int,
                    decode_mesh: int) -> float:
    """Output tokens/s of one request over its whole life (WaferLLM's end-to-end TPR): the prompt
    prefilled in one step on `prefill_mesh`-sided sub-meshes (it samples the first token), then
    output - 1 decode steps on `decode_mesh`-sided ones, the KV growing by a token a step.
    Moving the weights from one layout to the other is not costed (docs/wafer.md, "Not modelled")."""
    prefill_s = prompt / prefill_rate(hardware, model, prompt,
                                      knobs={"wafer_mesh": prefill_mesh, "max_num_batched_tokens": prompt})
    decode = prepare(hardware, model, knobs={"wafer_mesh": decode_mesh}).cost
    decode_s = sum(decode.iteration(BatchShape(num_decodes=1, decode_context=float(prompt + step), sampled=1)).time_s
                   for step in range(1, output))
    return output / (prefill_s + decode_s)


def best_gemv_s(device: WaferDevice, size: int) -> float:
    """The fastest MeshGEMV of a [1 x size] x [size x size] fp16 matrix over square sub-meshes."""
    rate = device.peak_flops("fp16") / device.compute.units
    sides = range(16, min(device.wafer.mesh.rows, device.wafer.mesh.cols) + 1, 2)
    return min(float(mesh.gemv_s(mesh_of(device.wafer, side), 1, size, size, rate, 2.0, 2.0))
               for side in sides)


def rows() -> list[tuple[str, str, float, float]]:
    """(figure, source, published, model)."""
    wse2 = load_spec("wse-2")
    a100 = load_spec("a100-80gb-sxm")
    assert isinstance(wse2, WaferDevice)
    osdi = "WaferLLM OSDI'25"
    out = []
    # decode per request (TPR), 16-bit, 4K tokens of context (Tables 4 and 8)
    out.append(("Llama3-8B decode, WSE-2, tokens/s per request (4096 tokens of KV)",
                f"{osdi} Tables 4, 8 (4K context; 420 x 420 cores)", 2699.9,
                decode_rate("wse-2", "llama-3.1-8b", 4096.0)))
    out.append(("the same at 1024 tokens of KV (not the figure's context)",
                "WaferLLM arXiv 2502.04563v2 abstract (context not stated there)", 2700.0,
                decode_rate("wse-2", "llama-3.1-8b", 1024.0)))
    out.append(("Llama2-13B decode, WSE-2, tokens/s per request (4096 tokens of KV)",
                f"{osdi} Tables 4, 8 (4K context; 420 x 420 cores)", 2039.2,
                decode_rate("wse-2", "llama-2-13b", 4096.0)))
    out.append(("Qwen2-72B decode (Qwen2.5-72B's shapes), 4096 tokens; 5 WSE-2s pipelined here",
                f"{osdi} Table 4 (a subset of layers on one WSE-2, scaled)", 839.7,
                decode_rate("wse-2", "qwen2.5-72b", 4096.0, pp=5)))
    for model, tp, published in (("llama-3.1-8b", 1, 78.9), ("llama-3.1-8b", 8, 260.4),
                                 ("llama-2-13b", 1, 48.7), ("llama-2-13b", 8, 175.8)):
        hardware = "dgx-a100" if tp > 1 else "a100-80gb-sxm"
        out.append((f"{model} decode on {tp} A100(s), TP {tp}, tokens/s per request (4096 tokens; SGLang there)",
                    f"{osdi} Tables 4, 8", published, decode_rate(hardware, model, 4096.0, tp=tp)))
    wafer = decode_rate("wse-2", "llama-3.1-8b", 4096.0)
    cluster = decode_rate("dgx-a100", "llama-3.1-8b", 4096.0, tp=8)
    single = decode_rate("a100-80gb-sxm", "llama-3.1-8b", 4096.0)
    out.append(("Llama3-8B decode speed-up over 8 x A100 (TP 8), 4096 tokens", f"{osdi} Table 8: 2700 / 260",
                2700.0 / 260.0, wafer / cluster))
    out.append(("Llama3-8B decode speed-up over one A100, 4096 tokens", f"{osdi} Table 8: 2700 / 78",
                2700.0 / 78.0, wafer / single))
    out.append(("Llama3-8B decode speed-up over 8 x A100 (TP 8), 1024 tokens",
                "WaferLLM OSDI'25 abstract: 10-20x (midpoint)", 15.0,
                decode_rate("wse-2", "llama-3.1-8b", 1024.0) / decode_rate("dgx-a100", "llama-3.1-8b", 1024.0, tp=8)))
    # end to end per request (Table 2): prefill on 660 x 660 cores, decode on 360 x 360
    for prompt, output, published in ((2048, 128, 764.0), (4096, 4096, 2459.0)):
        out.append((f"Llama3-8B end to end, WSE-2, {prompt} in / {output} out, output tokens/s per request",
                    f"{osdi} Table 2 (660 x 660 cores prefill, 360 x 360 decode)", published,
                    end_to_end_rate("wse-2", "llama-3.1-8b", prompt, output, 660, 360)))
    # prefill of a 4,096-token prompt (Tables 3 and 7)
    out.append(("Llama3-8B prefill of 4096 tokens, WSE-2, 720 x 720 cores, tokens/s", f"{osdi} Tables 3, 7", 27686.5,
                prefill_rate("wse-2", "llama-3.1-8b", 4096, knobs={"wafer_mesh": 720, "max_num_batched_tokens": 4096})))
    for tp, published in ((1, 13988.3), (8, 17361.6)):
        hardware = "dgx-a100" if tp > 1 else "a100-80gb-sxm"
        out.append((f"Llama3-8B prefill of 4096 tokens on {tp} A100(s), TP {tp}, tokens/s (SGLang there)",
                    f"{osdi} Tables 3, 7", published,
                    prefill_rate(hardware, "llama-3.1-8b", 4096, tp=tp, knobs={"max_num_batched_tokens": 4096})))
    # GEMV [1, n] x [n, n], 16-bit (Table 6); microseconds
    for size, wafer_us, gpu_us in ((16384, 1.2, 336.0), (32768, 2.03, 1231.0)):
        op = gemm_op("gemv", 1, size, size, Precision("fp16", "fp16", "fp16"))
        model_wafer = best_gemv_s(wse2, size) * 1e6
        model_gpu = float(operator_time_s(a100, op)) * 1e6
        out.append((f"MeshGEMV [1,{size}] x [{size},{size}] on WSE-2, us (the model's best sub-mesh)",
                    f"{osdi} Table 6 (core count not stated)", wafer_us, model_wafer))
        out.append(("the same GEMV on one A100 (cuBLAS there; roofline here), us", f"{osdi} Table 6", gpu_us, model_gpu))
        out.append((f"GEMV {size} speed-up of the WSE-2 over one A100", f"{osdi} Table 6 (280x, 606x)",
                    gpu_us / wafer_us, model_gpu / model_wafer))
    # energy: a memory-bound GEMV runs the A100 near its TDP; the wafer draws its one power figure
    assert wse2.power is not None and a100.power is not None
    out.append(("GEMV 32768 energy, the WSE-2 over one A100 (each device's power x the model's time)",
                f"{osdi} abstract: 16x more energy-efficient (the 606x GEMV)", 16.0,
                a100.power.tdp * model_gpu / (wse2.power.tdp * model_wafer)))
    fp32 = mesh.gemm_s(mesh_of(wse2.wafer, 750), 33000, 33000, 33000, wse2.peak_flops("fp32") / wse2.compute.units,
                       4.0, 4.0)
    out.append(("fp32 GEMM 33000^3 on 750 x 750 cores of a CS-2, TFLOPS",
                "Miyajima et al., SC24 workshop / J. Inf. Process. 34 (2026)", 349.0, 2 * 33000**3 / fp32 / 1e12))
    out.append(("Llama 3.1 8B, one CS-3, tokens/s per user (1024 tokens)", "Cerebras blog, 27 Aug 2024", 1800.0,
                decode_rate("wse-3", "llama-3.1-8b", 1024.0)))
    out.append(("Llama 3.1 70B, four CS-3s, tokens/s per user (1024 tokens)", "Cerebras blog; The Register, Aug 2024",
                450.0, decode_rate("wse-3", "llama-3.1-70b", 1024.0, pp=4)))
    out.append(("Qwen3-32B, two CS-3s assumed, tokens/s per user (1024 tokens)",
                "Cerebras inference docs, qwen-3-32b model page (undated; ~2100, later ~2600)", 2100.0,
                decode_rate("wse-3", "qwen3-32b", 1024.0, pp=2)))
    return out


SENSITIVITY_COLUMNS = ("Llama3-8B decode, 1024 tokens", "Llama3-8B, 4096", "Llama2-13B, 4096", "GEMV 16k (us)",
                       "GEMV 32k (us)", "prefill 4096 on 720 x 720", "2048 in / 128 out")


def sensitivity(section: str, field: str, values: tuple[float, ...], unit: str = "") -> list[tuple[float, ...]]:
    """The figures that move with one unpublished per-core number of the WSE-2 (`section.field`
    set to each of `values`): (value, then SENSITIVITY_COLUMNS: decode tokens/s, GEMV us,
    prefill tokens/s, a whole request's output tokens/s)."""
    result = []
    with tempfile.TemporaryDirectory() as folder:
        for value in values:
            spec = Path(folder) / f"wse-2-{field}-{value:g}.yaml"
            spec.write_text(f"extends: wse-2\nname: WSE-2 {field} {value:g}\n{section}: {{{field}: {value:g}{unit}}}\n"
                            "sources: [\"sensitivity of validation/wafer_checks.py\"]\n")
            device = load_spec(str(spec))
            assert isinstance(device, WaferDevice)
            result.append((value, decode_rate(str(spec), "llama-3.1-8b", 1024.0),
                           decode_rate(str(spec), "llama-3.1-8b", 4096.0),
                           decode_rate(str(spec), "llama-2-13b", 4096.0),
                           best_gemv_s(device, 16384) * 1e6, best_gemv_s(device, 32768) * 1e6,
                           prefill_rate(str(spec), "llama-3.1-8b", 4096,
                                        knobs={"wafer_mesh": 720, "max_num_batched_tokens": 4096}),
                           end_to_end_rate(str(spec), "llama-3.1-8b", 2048, 128, 660, 360)))
    return result


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print("| figure | source | published | model | error |\n|---|---|---|---|---|")
    for figure, source, published, model in rows():
        print(f"| {figure} | {source} | {_number(published)} | {_number(model)} | {100 * (model / published - 1):+.0f} % |")
    published = "| WaferLLM | 2,700 | 2,700 | 2,039 | 1.2 | 2.03 | 27,686 | 764 |"
    for section, field, values, unit in (("fabric", "message_overhead", (0.0, 20.0, 45.0, 100.0), " ns"),
                                         ("core", "vector_op_overhead_cycles", (0.0, 9.0, 18.0, 27.0), "")):
        print(f"\n| {field} | " + " | ".join(SENSITIVITY_COLUMNS) + " |\n|" + "---|" * (len(SENSITIVITY_COLUMNS) + 1))
        for value, *figures in sensitivity(section, field, values, unit):
            print(f"| {value:g}{unit} | " + " | ".join(_number(figure) for figure in figures) + " |")
        print(published)

if __name__ == "__main__":
    main()
