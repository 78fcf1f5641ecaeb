"""Server CPUs as serving devices (backends/cpu.py, hardware_specs/cpus/).

Peaks by hand from each core's units (see each spec's header): per core and cycle, Sapphire,
Emerald and Granite Rapids do 64 fp32 FLOP on AVX-512 (2 FMA ports x 16 lanes x 2) and 1024
bf16 FLOP / 2048 int8 OP on AMX (512 bf16 / 1024 int8 MAC); Zen 4 does AVX-512 on 2 x 256-bit
pipes, 32 fp32 / 64 bf16 / 128 int8; Zen 5 on full 512-bit pipes, 64 / 128 / 256. DDR5
bandwidth is channels x MT/s x 8 B.

Llama-3.1-8B decodes one token at batch 1 by reading its bf16 weights, 15.15 GB (the step's
bytes), so on one Xeon 6980P socket (614.4 GB/s x memory_max 0.76 = 467 GB/s) it takes at least
15.15 / 467 = 32.4 ms; every operator adds the CPU backend's 5 us dispatch, 32 layers of at
most 20 operators adding at most 3.2 ms, and the engine's 0.2 ms per step.
"""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.backends.cpu import OP_DISPATCH_S, CpuCostModel
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.hardware.loader import load_system

# (spec, cores, clock Hz, FLOP per cycle per core by dtype, DDR channels, MT/s)
CPUS = [
    ("xeon-6980p", 128, 2.0e9, {"fp32": 64, "bf16": 1024, "fp16": 1024, "int8": 2048}, 12, 6400),
    ("xeon-8592", 64, 1.9e9, {"fp32": 64, "bf16": 1024, "fp16": 128, "int8": 2048}, 8, 5600),
    ("epyc-9654", 96, 2.4e9, {"fp32": 32, "bf16": 64, "int8": 128}, 12, 4800),
    ("epyc-9755", 128, 2.7e9, {"fp32": 64, "bf16": 128, "int8": 256}, 12, 6000),
]
DECODE = BatchShape(num_decodes=1, decode_context=1024, sampled=1)
PREFILL = BatchShape(prefill_tokens=2048, prefill_context=2048, prefill_pairs=2048 * 2049 / 2, sampled=1)
KNOBS = {"max_model_len": 8192}


@pytest.mark.parametrize(("name", "cores", "clock", "per_cycle", "channels", "mts"), CPUS)
def test_cpu_peaks_and_bandwidth_follow_from_their_units(name, cores, clock, per_cycle, channels, mts):
    device = load_system(name).accelerator
    assert device.kind == "cpu" and device.compute.units == cores and device.compute.clock == pytest.approx(clock)
    for dtype, flop in per_cycle.items():
        assert device.peak_flops(dtype) == pytest.approx(cores * clock * flop, rel=0.005), dtype
    assert device.main_memory.bandwidth == pytest.approx(channels * mts * 1e6 * 8)


def test_a_cpu_engine_pays_each_operators_dispatch_on_top_of_it():
    setup = prepare("xeon-6980p", "llama-3.1-8b", knobs=KNOBS, calibration="none")
    assert isinstance(setup.cost, CpuCostModel) and OP_DISPATCH_S == 5e-6
    step = setup.cost.iteration(DECODE)
    assert step.bytes == pytest.approx(15.15e9, rel=0.01)
    floor = 15.15e9 / (614.4e9 * 0.76)
    assert floor < step.time_s < floor + 32 * 20 * OP_DISPATCH_S + 2e-4


def test_tensor_parallel_across_two_sockets_halves_each_sockets_reads_over_upi():
    one = prepare("xeon-6980p", "llama-3.1-8b", knobs=KNOBS, calibration="none").cost
    two = prepare("xeon-6980p-2s", "llama-3.1-8b", tp=2, knobs=KNOBS, calibration="none").cost
    assert two.tp_link is not None and two.tp_link.bandwidth == 288e9  # 6 UPI links x 48 GB/s
    single, split = one.iteration(DECODE).time_s, two.iteration(DECODE).time_s
    # each socket reads half the weights from its own DDR (at least half the time), plus 64
    # all-reduces over UPI of at least its 10 us latency each, and no more than the tp=1 step
    assert single / 2 + 64 * 10e-6 < split < 0.7 * single


def test_amx_prefills_many_times_faster_than_avx512_alone():
    """The 6980P's AMX bf16 peak is 262.1 / 14.7 = 17.8 times the 9654's AVX-512 one; a 2048-token
    prefill is mostly GEMMs, so it runs at least 8 times faster (attention and dispatch dilute it)."""
    amx = prepare("xeon-6980p", "llama-3.1-8b", knobs=KNOBS, calibration="none").cost.iteration(PREFILL).time_s
    avx = prepare("epyc-9654", "llama-3.1-8b", knobs=KNOBS, calibration="none").cost.iteration(PREFILL).time_s
    assert 8 < avx / amx < 17.8


@pytest.mark.parametrize(("hardware", "tp", "knobs", "message"), [
    ("epyc-7742", 2, {}, r"tp=2 pp=1 runs one rank per socket, and EPYC-7742 has no socket-to-socket link"),
    ("xeon-6980p", 2, {"replicas": 2}, r"a bare CPU spec stands for a server of up to 2 sockets, and .* needs 4"),
])
def test_what_the_cpu_model_refuses_across_sockets(hardware, tp, knobs, message):
    with pytest.raises(InputError, match=message):
        prepare(hardware, "llama-3.1-8b", tp=tp, knobs={**KNOBS, **knobs}, calibration="none")


def test_a_cpu_spec_states_no_gpu_kernel_launch(tmp_path):
    spec = tmp_path / "cpu.yaml"
    spec.write_text("extends: xeon-6980p\nname: X\noverheads: {kernel_launch: 1 us}\nsources: [test]\n")
    with pytest.raises(InputError, match="kernel_launch: a CPU launches no GPU kernels"):
        prepare(str(spec), "qwen3-0.6b", knobs=KNOBS, calibration="none")
