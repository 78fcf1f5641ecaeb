"""The busiest expert-parallel device's load (`busiest_rows`) against the routing statistics
NVIDIA publishes for DeepSeek-R1 in TensorRT-LLM's wide-EP load-balancer example
(examples/wide_ep/ep_load_balancer/README.md): routed rows counted per GPU for each MoE layer
and step, over 100 steps, as (max - mean) / mean.

Rebalanced with redundant experts (EPLB, 288 expert slots over 36 GPUs, 1024 routed rows per
GPU per step), the layers it lists span 0.082 to 0.113 and the average over all layers is
0.115: max / mean 1.082 to 1.115, which the band [1.08, 1.12] takes, rounded outward. Without
rebalancing (32 GPUs, the same 1024 rows per GPU) the average is 1.564 (max / mean 2.56): the
balls-into-bins maximum stands for a rebalanced deployment only (validation/README.md,
"Expert-load imbalance against published routing statistics")."""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.errors import InputError
from simulator.models.operators import busiest_rows, dense_ops


def test_busiest_device_within_the_published_rebalanced_spread():
    rows_per_device, devices = 1024, 36
    ratio = busiest_rows(rows_per_device * devices, devices) / rows_per_device
    assert 1.08 <= ratio <= 1.12


def test_a_stated_load_factor_sets_the_busiest_devices_rows():
    """`expert_load_factor`, e.g. the 2.56 published without rebalancing, replaces the balanced
    model: the busiest device gets that many times the mean rows, and the routed experts'
    grouped GEMMs compute that many rows."""
    assert busiest_rows(1024 * 32, 32, 2.56) == 2.56 * 1024
    knobs = {"enable_expert_parallel": True, "max_model_len": 4096}
    balanced = prepare("h100-sxm", "mixtral-8x7b", tp=4, knobs=knobs)
    skewed = prepare("h100-sxm", "mixtral-8x7b", tp=4, knobs={**knobs, "expert_load_factor": 2.56})

    def up_flops(setup, tokens=512):
        dep = setup.deployment
        return next(op.flops for op in dense_ops(setup.model, tokens, dep.sharding, dep.precision)
                    if op.name == "experts_up")

    mean_rows = 512 * 2 / 4  # 512 tokens, top-2 of 8 experts, over 4 devices
    assert up_flops(skewed) / up_flops(balanced) == busiest_rows(512 * 2, 4, 2.56) / busiest_rows(512 * 2, 4)
    assert up_flops(skewed) == 2.0 * 2.56 * mean_rows * 2 * 14336 * 4096


def test_a_load_factor_without_expert_parallelism_is_refused():
    with pytest.raises(InputError, match="expert_load_factor: the busiest expert-parallel device's load, which needs "
                                         "enable_expert_parallel"):
        prepare("h100-sxm", "mixtral-8x7b", tp=2, knobs={"expert_load_factor": 2.0, "max_model_len": 4096})
