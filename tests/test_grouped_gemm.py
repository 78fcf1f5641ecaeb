"""Routed experts' grouped GEMMs costed from the device's dense GEMM fit (fit_compute.grouped_gemm_us).

Where no measured fused-MoE layer describes a layer, its two grouped GEMMs take the GEMM
route of their dtype: the fitted model of the device's dense GEMMs, every group's tiles in one
launch. The one measured fused-MoE table (RTX PRO 6000, Qwen3-30B-A3B, `moe.csv`) judges it
without being used: the same GPU's dense GEMM fit alone predicts its 50 layers.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from simulator.api import prepare
from simulator.models.op_kinds import GroupedGemmShape
from simulator.models.operators import Operator, gemm_bytes
from simulator.perf.fit_compute import grouped_gemm_us
from simulator.perf.fit_inputs import device_numbers
from simulator.perf.kernel_times import FIT, SCALED, TRANSFERRED, CalibratedKernelTimes
from simulator.perf.kernels import moe_operators
from simulator.perf.profile_use import GROUPED_GEMM_ERROR_P90
from simulator.perf.roofline import operator_time_s

MOE_TABLE = Path(__file__).resolve().parents[1] / "validation/data/rtxpro6000-qwen3-30b-a3b/moe.csv"
SHORT = {"max_model_len": 4096}


def gemm_params(setup, dtype="bf16"):
    return setup.calibration.profile.ops[("gemm", dtype)].model


def test_one_group_of_whole_tiles_is_the_dense_gemm_fit():
    """A grouped GEMM of one group whose rows fill whole tiles is that GEMM: the fit's own
    prediction of (m, n, k), to rounding."""
    setup = prepare("h100-sxm", "llama-3.1-8b", knobs=SHORT)
    model = gemm_params(setup)
    m, n, k = 4 * int(model.params["tile_m"]), 14336, 4096
    dense = model.fit_us(pd.DataFrame({"op": ["gemm"], "dtype": ["bf16"], "m": [m], "n": [n], "k": [k]}))[0]
    prec = setup.deployment.precision
    grouped = grouped_gemm_us(model.params, device_numbers(setup.system, "gemm", "bf16"), "bf16", m, n, k, 1,
                              gemm_bytes(m, 1, n, k, prec))
    assert grouped == pytest.approx(dense, rel=1e-9)


def test_groups_share_one_launch_and_read_every_weight():
    """Eight groups of a memory-bound GEMM read eight weight matrices, so they take about eight
    times the streaming time, but pay the fixed cost once."""
    setup = prepare("h100-sxm", "llama-3.1-8b", knobs=SHORT)
    q = gemm_params(setup).params
    dev = device_numbers(setup.system, "gemm", "bf16")
    prec = setup.deployment.precision
    one = grouped_gemm_us(q, dev, "bf16", 4, 4096, 4096, 1, gemm_bytes(4, 1, 4096, 4096, prec))
    eight = grouped_gemm_us(q, dev, "bf16", 4, 4096, 4096, 8, gemm_bytes(32, 8, 4096, 4096, prec))
    overhead = q["overhead_us"]
    assert overhead > 0
    assert eight - overhead == pytest.approx(8 * (one - overhead), rel=0.05)


def test_the_measured_fused_moe_layers_are_predicted_from_the_dense_gemm_fit():
    """The RTX PRO 6000's 50 measured fused-MoE layers, predicted from its dense GEMM fit alone
    (the moe table switched off) plus the activation's roofline: within the error the profile
    records for this costing, and closer than the roofline's grouped GEMMs."""
    setup = prepare("rtx-pro-6000", "qwen3-30b-a3b", knobs=SHORT)
    kernels = CalibratedKernelTimes(setup.system, setup.model, setup.deployment, setup.calibration)
    kernels._moe_usable = False  # the table under test is not to be used
    m, table = setup.model, pd.read_csv(MOE_TABLE)
    fitted, roofline = [], []
    for r in table.itertuples():
        ops = moe_operators(SimpleNamespace(tokens=r.tokens, experts_reached=r.activated_experts, hidden=m.hidden_size,
                                            intermediate=m.moe_intermediate_size, experts=m.num_experts,
                                            top_k=m.experts_per_token, dtype="bf16"))
        fitted.append(sum(kernels.gpu_time_s(op)[0] for op in ops) * 1e6)
        roofline.append(sum(operator_time_s(setup.system.accelerator, op) for op in ops) * 1e6)
    measured = table["time_us"].to_numpy()
    err = np.abs(np.array(fitted) / measured - 1)
    assert np.quantile(err, 0.9) <= GROUPED_GEMM_ERROR_P90  # recorded for --uncertainty (about 15 %)
    assert np.median(err) < 0.08 and err.max() < 0.2
    assert np.median(np.abs(np.array(roofline) / measured - 1)) > 1.5 * np.median(err)


@pytest.mark.parametrize("hardware, weight, source", [("h100-sxm", "fp8", FIT), ("h200", "fp8", TRANSFERRED),
                                                      ("rtx-pro-6000", "fp8", SCALED)])
def test_grouped_gemms_take_the_gemm_route_of_their_dtype(hardware, weight, source):
    """Mixtral-8x7B in fp8: on the H100 its measured fp8 GEMMs' fit, on the H200 the H100's
    transferred, on the RTX PRO 6000 (bf16 GEMMs measured) scaled."""
    setup = prepare(hardware, "mixtral-8x7b", knobs={**SHORT, "weight_dtype": weight})
    kernels = setup.cost.kernels
    shape = GroupedGemmShape(512, 2 * 14336, 4096, 8)
    op = Operator("experts_up", "grouped_gemm", 2.0 * 4096 * 2 * 14336 * 4096,
                  gemm_bytes(4096, 8, 2 * 14336, 4096, setup.deployment.precision), "fp8", 1, shape)
    time_s, got = kernels.gpu_time_s(op)
    assert got == source
    # compute-bound: slower than the roofline at compute_max, as the device's measured fp8 GEMMs are
    assert time_s > operator_time_s(setup.system.accelerator, op)
    # the same rows through one weight matrix: the same FLOPs, an eighth of the weight bytes
    one = op._replace(bytes=gemm_bytes(4096, 1, 2 * 14336, 4096, setup.deployment.precision),
                      shape=GroupedGemmShape(4096, 2 * 14336, 4096, 1))
    assert kernels.gpu_time_s(one)[0] < time_s
