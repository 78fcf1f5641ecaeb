"""The host side of a step as a property of the host CPU (loader.host_overheads) and the
CPU-bound regime of small-batch decode on a GH200 (validation/coupled_hosts.py).

Hand numbers: the GPU specs state kernel_launch 4 us and scheduler_per_iteration 200 us for the
reference x86 host; Grace's host_speed is 0.7, so on gh200-node they are 4 / 0.7 = 5.714 us and
200 / 0.7 = 285.7 us. An eager Llama-3.2-1B step launches 148 kernels (the embedding; per layer
2 norms, rotary, activation, 4 GEMMs (qkv, o, gate_up, down) and attention, 16 x 9; the final
norm, LM head and sampler: 1 + 144 + 3 = 148), so the host's time per step is 148 x 5.714 + 285.7 = 1131.4 us on
gh200-node and 148 x 4 + 200 = 792 us on an x86 host.
"""
from __future__ import annotations

import pytest

from simulator.errors import InputError
from simulator.hardware.loader import load_spec, load_system
from validation import coupled_hosts as ch

US = 1e-6


def test_grace_host_scales_launch_and_scheduler_but_not_graph_gap():
    over = load_system("gh200-node").overheads
    assert over.kernel_launch == pytest.approx(4 * US / 0.7, rel=1e-12)
    assert over.scheduler_per_iteration == pytest.approx(200 * US / 0.7, rel=1e-12)
    assert over.graph_kernel_gap == pytest.approx(1 * US)


@pytest.mark.parametrize("name", ["gh200", "h100-sxm", "dgx-h100", "dgx-a100", "rtx-pro-6000-x2"])
def test_reference_hosts_keep_the_spec_figures(name):
    system = load_system(name)
    assert system.overheads == system.accelerator.overheads


def test_host_speed_on_a_gpu_is_one_clear_line(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text("extends: h100-sxm\nhost_speed: 0.5\n")
    with pytest.raises(InputError) as err:
        load_spec(spec)
    message = str(err.value)
    assert "\n" not in message and "host_speed" in message and "only a cpu" in message


def test_host_time_per_step_by_hand():
    assert ch.kernels_per_step(ch.eager_cost("gh200-node")) == 148
    assert ch.host_time_s(ch.eager_cost("gh200-node")) == pytest.approx(148 * 4 * US / 0.7 + 200 * US / 0.7, rel=1e-9)
    assert ch.host_time_s(ch.eager_cost("h100-sxm")) == pytest.approx(148 * 4 * US + 200 * US, rel=1e-9)


def test_grace_host_slows_a_small_decode_by_at_most_its_extra_host_time():
    # the same GPU (GH200) with the reference host (bare spec) and with its Grace (gh200-node):
    # the scheduler's share is added whole (285.7 - 200 = 85.7 us); each launch-bound kernel adds
    # at most 5.714 - 4 = 1.714 us, 148 of them at most 253.7 us
    grace = ch.step(ch.eager_cost("gh200-node"), 1, "decode")[0]
    x86 = ch.step(ch.eager_cost("gh200"), 1, "decode")[0]
    extra = grace - x86
    assert 200 * US / 0.7 - 200 * US - 1e-9 <= extra <= (200 / 0.7 - 200 + 148 * (4 / 0.7 - 4)) * US + 1e-9


def test_gh200_decode_is_host_bound_to_a_larger_batch_than_x86_hosts():
    # the step can be no shorter than the host's time: 1131 us on gh200-node
    gh200 = ch.eager_cost("gh200-node")
    assert ch.step(gh200, 1, "decode")[0] >= ch.host_time_s(gh200)
    grace = ch.crossover(gh200, "decode")
    assert grace is not None
    for name in ("h100-sxm", "h100-pcie", "a100-80gb-pcie"):
        x86 = ch.crossover(ch.eager_cost(name), "decode")
        assert x86 is not None and grace >= 4 * x86
    # the reference host on the same GPU crosses over earlier: the host, not the GPU, moves it
    same_gpu = ch.crossover(ch.eager_cost("gh200"), "decode")
    assert same_gpu is not None and same_gpu < grace


def test_gh200_advantage_over_h100_sxm_appears_only_at_larger_batch():
    gh200, h100 = ch.eager_cost("gh200-node"), ch.eager_cost("h100-sxm")
    small = ch.step(h100, 1, "decode")[0] / ch.step(gh200, 1, "decode")[0]
    large = ch.step(h100, 256, "decode")[0] / ch.step(gh200, 256, "decode")[0]
    # at batch 1 the Grace host costs more (+339 us at most) than the faster HBM saves
    assert small < 1.0 < large
    # at large batch the ratio is bounded by the memory bandwidths (4 / 3.35 = 1.19)
    assert large <= 4 / 3.35


def test_gb200_node_shares_one_grace_between_two_gpus():
    # one Grace (480 GB LPDDR5X at 512 GB/s) for two GPUs: 240 GB and 256 GB/s each, over NVLink-C2C
    system = load_system("gb200-node")
    host = system.memory_tiers[-1]
    assert system.devices_per_node == 2 and host.name == "host lpddr5x"
    assert host.capacity == pytest.approx(240e9) and host.bandwidth == pytest.approx(256e9)
    assert host.link is not None and host.link.bandwidth == pytest.approx(450e9)
    assert system.overheads.kernel_launch == pytest.approx(4 * US / 0.7, rel=1e-12)
