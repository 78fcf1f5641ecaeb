"""KV offloading (vLLM's --kv-offloading-size, native and LMCache connectors), end to end.

The main case: four 4,608-token prompts, each a 4,096-token prefix of its own (eight 512-token
hash blocks) and a 512-token suffix, sent one by one 10 s apart, then the same four prefixes
again with new suffixes. The device cache (600 blocks of 16 tokens, 288 per prompt) holds two
prompts, so every prefix has left the device when its second request comes: without
offloading the second round recomputes it, with offloading it loads its 256 blocks from the
tier. Each request runs alone, so TTFTs can be derived exactly: a second-round request saves
the two 2,048-token prefix chunks (d1 + d2, read from the run without offloading) and pays the
load, latency + 256 blocks x 2 MiB / bandwidth.
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.api import prepare, run_setup, simulate
from simulator.errors import InputError
from simulator.schedulers import base
from simulator.workloads.trace import TraceIndex

MODEL = "llama-3.1-8b"
MiB = 2**20
BLOCK_BYTES = 16 * 2 * 8 * 128 * 32 * 2  # 16 tokens x (K, V) x 8 KV heads x 128 dims x 32 layers x 2 bytes = 2 MiB
PREFIX_BLOCKS = 4096 // 16
PROMPT, SUFFIX, OUTPUT, GAP_S, K = 4608, 512, 8, 10.0, 4
SMALL_CACHE = {"num_gpu_blocks_override": 600}
# the hand derivations chunk prompts by 2,048 tokens (a GH200's own `vllm serve` budget is 8192)
BUDGET = {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def revisit_trace(path: Path) -> Path:
    rows = []
    for rnd in range(2):
        for i in range(K):
            rows.append({"id": f"r{rnd}-{i}", "arrival_s": GAP_S * (rnd * K + i), "input_tokens": PROMPT,
                         "output_tokens": OUTPUT,
                         "prefix_hashes": [1000 * i + j for j in range(8)] + [10**6 + 100 * rnd + i]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tier_spec(tmp_path: Path, read: str, write: str = "450 GB/s") -> Path:
    """A GH200 whose offload tier, reached over NVLink-C2C, reads at `read` and writes at `write`."""
    spec = tmp_path / f"gh200-{read.replace(' ', '').replace('/', '')}-{write.replace(' ', '').replace('/', '')}.yaml"
    spec.write_text("extends: gh200\nname: GH200-tier\nmemory:\n  - {name: hbm3, capacity: 95.2 GiB, bandwidth: 4 TB/s}\n"
                    f"  - {{name: far, capacity: 64 GiB, bandwidth: {read}, write_bandwidth: {write}, "
                    "link: nvlink_c2c}\nsources: [test]\n")
    return spec


def run(hardware, trace, calibration=None, **knobs):
    return simulate(str(hardware), trace, model=MODEL, tp=1, knobs={**SMALL_CACHE, **BUDGET, **knobs},
                    calibration=calibration)


def ttfts(result) -> dict[str, float]:
    return dict(zip(result.requests["id"], result.requests["ttft_s"]))


def prefix_steps_s(result, arrival_s: float) -> float:
    """d1 + d2: the two 2,048-token prefix chunks of the request that arrived at `arrival_s`."""
    it = result.iterations
    steps = it[(it["start_s"] >= arrival_s) & (it["start_s"] < arrival_s + GAP_S)]
    assert list(steps["prefill_tokens"][:3]) == [2048, 2048, SUFFIX]
    return float(steps["duration_s"].iloc[0] + steps["duration_s"].iloc[1])


def load_s(bandwidth: float, latency: float, blocks: int = PREFIX_BLOCKS) -> float:
    return latency + blocks * BLOCK_BYTES / bandwidth


# --- loads instead of recomputation, with the bytes derived by hand -----------------------------


def test_offloading_turns_recomputation_into_loads_of_exactly_the_prefix(tmp_path):
    trace = revisit_trace(tmp_path / "t.jsonl")
    off, on = run("gh200-node", trace), run("gh200-node", trace, kv_offloading_size=4)
    assert on.summary["memory"]["kv_blocks"] == 600
    # without: all eight prompts computed whole; with: the second round computes only its suffixes
    assert off.iterations["prefill_tokens"].sum() == 2 * K * PROMPT
    assert on.iterations["prefill_tokens"].sum() == K * PROMPT + K * SUFFIX
    kv = on.summary["kv_offload"]
    assert kv["backend"] == "native" and kv["tier"].startswith("host ") and kv["link"] == "nvlink_c2c"
    assert kv["bytes_per_block"] == BLOCK_BYTES
    assert kv["capacity_blocks"] == 4 * 2**30 // BLOCK_BYTES  # 4 GiB / 2 MiB
    assert kv["loads"] == K and kv["loaded_blocks"] == K * PREFIX_BLOCKS
    assert kv["bytes_loaded"] == K * PREFIX_BLOCKS * BLOCK_BYTES  # 2 GiB: blocks x block bytes, exactly
    # write-through: every full block once, (4,608 + 8 - 1) // 16 = 288 per first-round request, then the
    # 32 suffix blocks of each second-round request (its loaded prefix is not stored again)
    assert kv["stored_blocks"] == K * 288 + K * SUFFIX // 16
    assert kv["bytes_stored"] == kv["stored_blocks"] * BLOCK_BYTES
    assert kv["evicted_blocks"] == 0 and kv["store_stall_s"] == 0
    # hit rates over the prompt tokens of all eight first starts: none on the device, the 4 x 4,096 in the tier
    assert kv["lookup_tokens"] == 2 * K * PROMPT
    assert kv["device_hit_rate"] == 0 and on.summary["prefix_cache"]["hit_rate"] == 0
    assert kv["tier_hit_rate"] == pytest.approx(K * 4096 / (2 * K * PROMPT))
    assert kv["ttft_s"]["with_tier_hits"]["count"] == K and kv["ttft_s"]["without_tier_hits"]["count"] == K
    assert "kv_offload" not in off.summary


def test_a_fast_link_lowers_ttft_by_the_prefix_compute_less_the_load(tmp_path):
    """GH200: NVLink-C2C, 450 GB/s per direction, 2 us. The load, 2 us + 512 MiB / 450 GB/s =
    1.195 ms, replaces the two prefix chunks, at least 2 x 6.98e9 linear weights x 4,096
    tokens / 990 TFLOPS = 57.8 ms even at the peak: TTFT falls by at least 56 ms."""
    trace = revisit_trace(tmp_path / "t.jsonl")
    off, on = run("gh200-node", trace), run("gh200-node", trace, kv_offloading_size=4)
    t_off, t_on = ttfts(off), ttfts(on)
    load = load_s(450e9, 2e-6)
    assert on.summary["kv_offload"]["load_time_s"] == pytest.approx(K * load, rel=1e-12)
    for i in range(K):
        assert t_on[f"r0-{i}"] == pytest.approx(t_off[f"r0-{i}"], rel=1e-12)  # the stores delay nothing
        saved = prefix_steps_s(off, GAP_S * (K + i))
        assert saved >= 2 * 6.98e9 * 4096 / 990e12
        assert t_on[f"r1-{i}"] == pytest.approx(t_off[f"r1-{i}"] - saved + load, rel=1e-9)
        assert t_off[f"r1-{i}"] - t_on[f"r1-{i}"] > 0.056
    ttft = on.summary["kv_offload"]["ttft_s"]
    assert ttft["with_tier_hits"]["mean"] < ttft["without_tier_hits"]["mean"] - 0.056


def test_the_crossover_bandwidth_is_where_the_hand_derivation_puts_it(tmp_path):
    """Loading a prefix beats recomputing it when its KV bytes cross the link faster than the
    GPU recomputes them. Roofline by hand (GH200, 990 TFLOPS bf16, compute_max 0.82,
    attention_compute_max 0.50): 4,096 prefix tokens cost 2 x 6.98e9 x 4,096 = 57.2 TFLOP of
    linear layers and 2 x 4,096^2 x 4,096 x 32 = 4.40 TFLOP of causal attention, so
    57.2e12 / (990e12 x 0.82) + 4.40e12 / (990e12 x 0.50) = 79.3 ms; their KV is 512 MiB, so
    the crossover is 536.9 MB / 79.3 ms = 6.8 GB/s. A tier reading at half of that makes TTFT
    worse than recomputing, one at twice that better."""
    linear = 2 * 6.98e9 * 4096
    attention = 2 * 4096**2 * 4096 * 32
    compute_s = linear / (990e12 * 0.82) + attention / (990e12 * 0.50)
    crossover = PREFIX_BLOCKS * BLOCK_BYTES / compute_s
    assert 6.5e9 < crossover < 7.1e9
    trace = revisit_trace(tmp_path / "t.jsonl")
    off = run("gh200", trace, calibration="none")  # the tier spec's GPU on the same (reference) host
    t_off = ttfts(off)
    saved = prefix_steps_s(off, GAP_S * K)
    assert saved == pytest.approx(compute_s, rel=0.15)  # the simulator's roofline agrees with the hand one
    for factor, slower in ((0.5, True), (2.0, False)):
        bandwidth = factor * crossover
        on = run(tier_spec(tmp_path, f"{bandwidth / 1e9:.4f} GB/s"), trace, calibration="none",
                 kv_offloading_size=4)
        t_on = ttfts(on)
        load = load_s(float(f"{bandwidth / 1e9:.4f}") * 1e9, 2e-6)
        for i in range(K):
            assert t_on[f"r0-{i}"] == pytest.approx(t_off[f"r0-{i}"], rel=1e-12)
            assert t_on[f"r1-{i}"] == pytest.approx(t_off[f"r1-{i}"] - prefix_steps_s(off, GAP_S * (K + i)) + load,
                                                    rel=1e-9)
            assert (t_on[f"r1-{i}"] > t_off[f"r1-{i}"]) == slower


def test_dgx_h100_nvme_tier_reads_at_each_gpus_share_of_the_drives(tmp_path):
    """DGX H100's eight U.2 drives give each GPU 6.4 GB/s of reads after 5 us (PCIe) + 100 us
    (the drive): the loads take exactly that (tests/test_memory_tiers.py checks the shares)."""
    trace = revisit_trace(tmp_path / "t.jsonl")
    on = run("dgx-h100", trace, kv_offloading_size=4, kv_offloading_tier="nvme")
    kv = on.summary["kv_offload"]
    assert kv["tier"] == "nvme" and kv["link"] == "pcie"
    assert kv["load_time_s"] == pytest.approx(K * load_s(6.4e9, 105e-6), rel=1e-12)
    assert on.iterations["prefill_tokens"].sum() == K * PROMPT + K * SUFFIX


def test_a_saturated_store_link_delays_the_step_after_next(tmp_path):
    """Stores of a step's blocks must be done by the end of the next step. Writing at 1 GB/s,
    a 2,048-token chunk's 128 blocks take 2 us + 268 ms, longer than the next chunk's step
    (d2), so the third step of each first-round request waits 2 us + 268 ms - d2."""
    trace = revisit_trace(tmp_path / "t.jsonl")
    off = run("gh200", trace)  # the tier spec's GPU on the same (reference) host
    on = run(tier_spec(tmp_path, "450 GB/s", write="1 GB/s"), trace, kv_offloading_size=4)
    t_off, t_on = ttfts(off), ttfts(on)
    it = off.iterations
    for i in range(K):
        steps = it[(it["start_s"] >= GAP_S * i) & (it["start_s"] < GAP_S * (i + 1))]
        d2 = float(steps["duration_s"].iloc[1])
        wait = 2e-6 + 128 * BLOCK_BYTES / 1e9 - d2
        assert wait > 0.2
        assert t_on[f"r0-{i}"] == pytest.approx(t_off[f"r0-{i}"] + wait, rel=1e-9)
    assert on.summary["kv_offload"]["store_stall_s"] > K * 0.2


# --- LMCache: copies in the step -----------------------------------------------------------------


def test_lmcache_copies_in_the_step_the_prompt_in_256_token_chunks(tmp_path):
    """LMCache stores each step's prompt chunks in that step (2,048 tokens: 8 chunks of 16
    blocks; the 512-token suffix: 2), and loads in the step a request starts in."""
    trace = revisit_trace(tmp_path / "t.jsonl")
    off = run("gh200-node", trace)
    on = run("gh200-node", trace, kv_offloading_size=4, kv_offloading_backend="lmcache")
    t_off, t_on = ttfts(off), ttfts(on)
    bandwidth, latency = 450e9, 2e-6
    kv = on.summary["kv_offload"]
    assert kv["backend"] == "lmcache" and kv["stored_blocks"] == K * 288 + K * 32
    assert on.iterations["prefill_tokens"].sum() == K * PROMPT + K * SUFFIX
    for i in range(K):
        stores = 3 * latency + 288 * BLOCK_BYTES / bandwidth  # three steps, each copying its chunks
        assert t_on[f"r0-{i}"] == pytest.approx(t_off[f"r0-{i}"] + stores, rel=1e-9)
        copies = load_s(bandwidth, latency) + latency + 32 * BLOCK_BYTES / bandwidth  # load, then the suffix's store
        assert t_on[f"r1-{i}"] == pytest.approx(t_off[f"r1-{i}"] - prefix_steps_s(off, GAP_S * (K + i)) + copies,
                                                rel=1e-9)


def overlap_trace(path: Path) -> Path:
    """A long decode running when a request whose prefix is in the tier arrives."""
    rows = [{"id": "first", "arrival_s": 0.0, "input_tokens": PROMPT, "output_tokens": 2,
             "prefix_hashes": list(range(8)) + [99]},
            {"id": "filler", "arrival_s": 1.0, "input_tokens": 8000, "output_tokens": 8,
             "prefix_hashes": [500 + j for j in range(16)]},  # pushes the first prefix off the device
            {"id": "decoder", "arrival_s": 2.0, "input_tokens": 16, "output_tokens": 400},
            {"id": "again", "arrival_s": 2.5, "input_tokens": PROMPT, "output_tokens": 2,
             "prefix_hashes": list(range(8)) + [98]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backend", ["native", "lmcache"])
def test_native_loads_overlap_other_requests_steps_and_lmcache_loads_stall_them(tmp_path, backend):
    """Over a tier read at 1 GB/s (the prefix blocks the filler pushed off the device take
    0.2-0.5 s to load), vLLM's connector lets the decoding request step on while the load
    runs; LMCache copies it inside one step."""
    spec = tier_spec(tmp_path, "1 GB/s")
    on = run(spec, overlap_trace(tmp_path / "t.jsonl"), kv_offloading_size=4, kv_offloading_backend=backend)
    loaded = on.summary["kv_offload"]["loaded_blocks"]
    assert 96 <= loaded <= PREFIX_BLOCKS  # the filler evicted the prefix's tail, at least 96 of its blocks
    load = load_s(1e9, 2e-6, loaded)
    it = on.iterations.sort_values("start_s")
    again = on.requests.set_index("id").loc["again"]
    window = it[(it["start_s"] >= 2.5) & (it["start_s"] < 2.5 + load)]
    # a step's copies are not in its duration_s (its compute): they are the wait before the next step;
    # the decoder keeps the engine busy from 2 s on
    step_s = (it["start_s"].shift(-1) - it["start_s"])[(it["start_s"] >= 2.4) & (it["start_s"] < 2.5 + load)]
    if backend == "native":
        assert again["ttft_s"] > load
        assert len(window) > 20  # the decoder's steps went on, each a few ms
        assert step_s.max() < 0.2
    else:
        assert step_s.max() > load  # one step carried the whole load
        assert len(window) <= 4  # the decodes before the request reached the engine, then the long step


# --- a preempted request's blocks come back from the tier --------------------------------------


def test_a_preempted_request_resumes_from_the_tier(tmp_path):
    rows = [{"id": f"r{i}", "arrival_s": 0.0, "input_tokens": 1500, "output_tokens": 600} for i in range(4)]
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    knobs = {"num_gpu_blocks_override": 400}
    off = simulate("gh200-node", trace, model=MODEL, knobs=knobs)
    on = simulate("gh200-node", trace, model=MODEL, knobs={**knobs, "kv_offloading_size": 4})
    assert off.summary["preemptions"] > 0 and on.summary["preemptions"] > 0
    kv = on.summary["kv_offload"]
    assert kv["resumed_blocks"] > 0 and kv["tier_hit_tokens"] == 0  # no shared prefixes: only resumes hit
    recomputed_off = off.iterations["prefill_tokens"].sum() - 4 * 1500
    recomputed_on = on.iterations["prefill_tokens"].sum() - 4 * 1500
    assert recomputed_on < recomputed_off


# --- no effect where there is nothing to find, and the input errors ---------------------------------


def test_offloading_that_finds_nothing_changes_no_latency_on_a_link_that_keeps_up(tmp_path):
    """example-chat has no prefix hashes and the cache never preempts: every full block is
    stored (sum of (input + output - 1) // 16 over the requests) and nothing is ever loaded."""
    off = simulate("gh200-node", "example-chat", model=MODEL)
    on = simulate("gh200-node", "example-chat", model=MODEL, knobs={"kv_offloading_size": 64})
    a, b = (r.requests.sort_values("id").reset_index(drop=True) for r in (off, on))
    np.testing.assert_allclose(a["first_token_s"], b["first_token_s"], rtol=1e-9)
    np.testing.assert_allclose(a["finish_s"], b["finish_s"], rtol=1e-9)
    kv = on.summary["kv_offload"]
    assert kv["loads"] == 0 and kv["store_stall_s"] == 0 and on.summary["preemptions"] == 0
    assert kv["stored_blocks"] == int(((a["input_tokens"] + a["output_tokens"] - 1) // 16).sum())


@pytest.mark.parametrize("knobs, error", [
    ({"kv_offloading_size": 4, "scheduler": "orca"}, r"kv_offloading_size: KV offloading is modelled for the vllm"),
    ({"kv_offloading_size": 4, "enable_prefix_caching": False}, r"need enable_prefix_caching=true"),
    ({"kv_offloading_size": 4, "preemption_mode": "swap"}, r"use preemption_mode=recompute"),
    ({"kv_offloading_size": 4, "kv_offloading_tier": "tape"}, r"kv_offloading_tier: 'tape' is not a tier .*known: host"),
    ({"kv_offloading_size": 4000}, r"kv_offloading_size: 4000 GiB is more than the 447.0 GiB of host lpddr5x"),
    ({"kv_offloading_size": 0.001}, r"holds no KV block of 2.00 MiB"),
    ({"kv_offloading_size": 4, "kv_offloading_backend": "lmcache", "block_size": 48},
     r"chunks of 256 tokens, which block_size 48 does not divide"),
    ({"kv_offloading_tier": "nvme"}, r"kv_offloading_tier: read only with kv_offloading_size"),
    ({"kv_offloading_backend": "lmcache"}, r"kv_offloading_backend: read only with kv_offloading_size"),
    ({"kv_offloading_size": 4, "scheduler": "trtllm"}, r"kv_offloading_size: a vLLM knob"),
    ({"kv_offloading_size": 4, "scheduler": "disagg"}, r"prefill pool: kv_offloading_size: .*not a disaggregated pool"),
])
def test_offloading_input_errors_name_the_knob_and_the_fix(knobs, error):
    """Each refusal is one line naming the knob and what to do instead."""
    knobs = dict(knobs)
    scheduler = knobs.pop("scheduler", None)
    with pytest.raises(InputError, match=error):
        prepare("gh200-node", MODEL, scheduler=scheduler, knobs=knobs)


def test_offloading_errors_exit_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "simulator.cli", "run", "h100-sxm", "example-chat", "--set",
                           "kv_offloading_size=4", "--set", "kv_offloading_tier=tape", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "kv_offloading_tier: 'tape'" in done.stderr
    assert not (tmp_path / "o").exists()


# --- invariants under random traces and knobs ---------------------------------------------------

request = st.fixed_dictionaries({
    "arrival_s": st.one_of(st.sampled_from([0.0, 0.0, 0.5]), st.floats(0.0, 5.0)),
    "input_tokens": st.integers(1, 2500),
    "output_tokens": st.integers(1, 120),
    "conversation": st.integers(0, 3),
})
knobs = st.fixed_dictionaries({
    "scheduler": st.sampled_from(["vllm", "vllm", "sarathi", "splitfuse"]),
    "kv_offloading_backend": st.sampled_from(["native", "lmcache"]),
    "kv_offloading_size": st.sampled_from([0.05, 0.5, 8.0]),  # 25, 256, 4096 blocks of 2 MiB
    "block_size": st.sampled_from([16, 32]),
    "enable_chunked_prefill": st.booleans(),
    "num_blocks": st.integers(170, 800),
    "pp": st.sampled_from([1, 1, 2]),
})


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(1, 25).flatmap(lambda n: st.lists(request, min_size=n, max_size=n)), knobs)
def test_offloading_keeps_the_engine_invariants(tmp_path_factory, rows, knobs):
    knobs = dict(knobs, enable_prefix_caching=True)
    num_blocks = knobs.pop("num_blocks")
    trace = tmp_path_factory.mktemp("t") / "t.jsonl"
    trace.write_text("".join(json.dumps({"id": f"r{i}", "input_tokens": r["input_tokens"],
                                         "output_tokens": r["output_tokens"], "arrival_s": r["arrival_s"],
                                         "prefix_block_tokens": 64,
                                         "prefix_hashes": [1000 * r["conversation"] + j
                                                           for j in range(-(-r["input_tokens"] // 64))]}) + "\n"
                             for i, r in enumerate(rows)))
    setup = prepare("gh200", MODEL, tp=1, knobs=knobs, calibration="none")
    setup = dataclasses.replace(setup, plan=dataclasses.replace(setup.plan, num_blocks=num_blocks))
    made: list = []
    real = base.Scheduler.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    base.Scheduler.__init__ = spy
    try:
        result = run_setup(setup, TraceIndex.build(trace))
    finally:
        base.Scheduler.__init__ = real
    summary, frame = result.summary, result.requests
    assert summary["requests"]["completed"] + summary["requests"]["rejected"] == len(rows)
    done = frame[frame["status"] == "completed"]
    assert (done["first_token_s"] > done["arrival_s"]).all()
    assert (result.iterations["kv_blocks_used"] <= num_blocks).all()
    for sched in made:
        off = sched.offload
        assert sched.blocks.used == 0 and sched.running.n == 0 and not sched.loading and not sched.waiting
        assert not sched.blocks.cache.refs
        assert off.used == sum(off.lru.values()) <= off.capacity
        assert not off.tracked  # every request's state let go
    kv = summary["kv_offload"]
    assert kv["bytes_loaded"] == kv["loaded_blocks"] * kv["bytes_per_block"]
    assert 0 <= kv["hit_rate"] <= 1 and math.isclose(kv["hit_rate"], kv["device_hit_rate"] + kv["tier_hit_rate"])
