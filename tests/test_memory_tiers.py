"""The memory hierarchy an accelerator sees: its own tiers, then the host's memory over the
host link, then the node's own tiers (NVMe, CXL); swapped KV blocks go to the nearest tier
outside the device, over its link."""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.errors import InputError
from simulator.hardware.loader import load_system
from simulator.topology.pools import swap_space


def test_gh200_reaches_grace_memory_over_nvlink_c2c():
    system = load_system("gh200-node")
    names = [t.name for t in system.memory_tiers]
    assert names[:2] == ["hbm3", "l2"] and names[2].startswith("host ")
    host = system.offload_tier
    assert host == system.memory_tiers[2]
    assert host.link.bandwidth == 450e9  # NVLink-C2C, per direction
    assert host.capacity == system.host.main_memory.capacity  # one superchip: the whole LPDDR5X


def test_a_tier_the_spec_reaches_over_a_link_takes_the_swapped_blocks(tmp_path):
    spec = tmp_path / "gpu.yaml"
    spec.write_text("extends: gh200\nname: G\nmemory:\n  - {name: hbm3, capacity: 95.2 GiB, bandwidth: 4 TB/s}\n"
                    "  - {name: lpddr5x, capacity: 2 GiB, bandwidth: 500 GB/s, link: nvlink_c2c}\n"
                    "sources: [test]\n")
    setup = prepare(str(spec), "llama-3.1-8b", knobs={"preemption_mode": "swap", "swap_space": 8},
                    calibration="none")
    (pool,) = setup.pools()
    swap = swap_space(pool)
    assert swap.bandwidth == 450e9
    assert swap.capacity_blocks == 2 * 2**30 // int(pool.plan.kv_bytes_per_block)  # the tier's 2 GiB, not 8


def test_a_tier_link_must_be_one_of_the_devices_links(tmp_path):
    spec = tmp_path / "gpu.yaml"
    spec.write_text("extends: h100-sxm\nname: G\nmemory:\n  - {name: hbm3, capacity: 79 GiB, bandwidth: 3.35 TB/s}\n"
                    "  - {name: cxl, capacity: 256 GiB, bandwidth: 64 GB/s, link: cxl0}\nsources: [test]\n")
    with pytest.raises(InputError, match=r"memory\[1\]\.link: 'cxl0' is not one of this device's links"):
        load_system(str(spec))


def test_a_nodes_own_tiers_come_after_the_hosts_memory_shared_by_its_accelerators():
    """DGX H100's eight U.2 drives (30.72 TB, 51.2 GB/s read, 30.4 GB/s write for the node)
    give each of its 8 GPUs 3.84 TB, 6.4 GB/s and 3.8 GB/s, after 5 us (PCIe) + 100 us (the
    drive); swapped blocks still go to the nearest tier, the hosts' DDR5."""
    system = load_system("dgx-h100")
    names = [t.name for t in system.memory_tiers]
    assert names == ["hbm3", "l2", "host ddr5", "nvme"]
    assert system.offload_tier.name == "host ddr5"
    host = system.memory_tiers[2]
    assert host.capacity == 2 * 1e12 / 8 and host.bandwidth == 2 * 307.2e9 / 8  # two sockets' share per GPU
    assert host.copy_bandwidth() == host.copy_bandwidth(write=True) == 64e9  # PCIe is the slower
    nvme = system.memory_tiers[3]
    assert nvme.capacity == 3.84e12 and nvme.link is system.accelerator.links["pcie"]
    assert nvme.copy_bandwidth() == 6.4e9 and nvme.copy_bandwidth(write=True) == 3.8e9
    assert nvme.copy_latency == pytest.approx(105e-6)


def test_a_node_tier_must_name_an_accelerator_link(tmp_path):
    spec = tmp_path / "sys.yaml"
    spec.write_text("name: S\nkind: system\nnode:\n  accelerator: {spec: h100-sxm, count: 8, fabric: nvlink}\n"
                    "  tiers:\n    - {name: nvme, capacity: 1 TB, bandwidth: 7 GB/s, link: cxl}\nsources: [test]\n")
    with pytest.raises(InputError, match=r"node\.tiers\[0\]\.link: 'cxl' is not one of H100-SXM5-80GB's links"):
        load_system(str(spec))
