"""vLLM's --cpu-offload-gb: weights kept in host memory make room for KV blocks on the device
and are read over the host link by every forward pass."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.api import prepare
from simulator.engine.batch import BatchShape
from simulator.errors import InputError

GiB = 2**30
PCIE5_BYTES_PER_S, PCIE5_LATENCY_S = 64e9, 5e-6  # the H100 PCIe spec's host link
C2C_BYTES_PER_S = 450e9  # GH200's NVLink-C2C, per direction


def test_offloaded_weights_leave_room_for_kv_blocks():
    base = prepare("h100-pcie", "llama-3.1-8b", calibration="none").plan
    off = prepare("h100-pcie", "llama-3.1-8b", calibration="none", knobs={"cpu_offload_gb": 4}).plan
    assert base.weights_bytes - off.weights_bytes == 4 * GiB == off.offloaded_weights_bytes
    # the freed 4 GiB hold 4 GiB / (16 tokens x 128 KiB) = 2048 more blocks
    assert off.num_blocks - base.num_blocks == pytest.approx(4 * GiB / base.kv_bytes_per_block, abs=1)
    assert off.summary()["offloaded_weights_bytes"] == 4 * GiB and "offloaded_weights_bytes" not in base.summary()


@pytest.mark.parametrize("hardware, bandwidth", [("h100-pcie", PCIE5_BYTES_PER_S), ("gh200", C2C_BYTES_PER_S)])
def test_every_step_reads_the_offloaded_weights_over_the_host_link(hardware, bandwidth):
    batch = BatchShape(num_decodes=8, decode_context=8 * 500.0, sampled=8)
    base = prepare(hardware, "llama-3.1-8b", calibration="none").cost
    off = prepare(hardware, "llama-3.1-8b", calibration="none", knobs={"cpu_offload_gb": 4}).cost
    extra = off.iteration(batch).time_s - base.iteration(batch).time_s
    assert extra == pytest.approx(4 * GiB / bandwidth, rel=0.01)  # 67 ms over PCIe 5, 9.5 ms over C2C
    # a span of decode steps pays it every step too
    span = off.decode_span(np.array([8, 8]), np.array([4000.0, 4000.0]))
    assert span.time_s[0] == pytest.approx(off.iteration(batch).time_s, rel=1e-9)


def test_offload_errors_name_the_knob():
    with pytest.raises(InputError, match="cpu_offload_gb: on a CPU"):
        prepare("xeon-8480", "llama-3.1-8b", knobs={"cpu_offload_gb": 2})
    with pytest.raises(InputError, match="cpu_offload_gb"):
        prepare("h100-pcie", "llama-3.1-8b", scheduler="trtllm", knobs={"cpu_offload_gb": 2})
