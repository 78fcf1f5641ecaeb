"""Wafer-scale meshes: `kind: wafer` specs, the PLMR mesh formulas by hand, the SRAM memory
plan, what happens when a model does not fit, the serving engine end to end, and the
published WaferLLM and Cerebras figures the model is checked against (validation/README.md).

Hand numbers for the small mesh: P = 4 (16 cores), each core 8 GFLOP/s with 16 GB/s of SRAM,
links of 4 GB/s per direction, 1 ns per hop, 10 ns per message.
"""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from simulator.api import prepare, run_setup, simulate
from simulator.cli import main
from simulator.engine.batch import BatchShape
from simulator.errors import InputError, InvalidFile
from simulator.hardware.loader import load_spec, load_system
from simulator.hardware.wafer import WaferDevice
from simulator.paths import HARDWARE_DIR, shipped
from simulator.perf import mesh as M
from simulator.planning.run_plan import run_plan
from simulator.workloads.trace import TraceIndex
from validation import wafer_checks as wc

SMALL = M.Mesh(side=4, sram_bandwidth=16e9, link_bandwidth=4e9, hop_s=1e-9, message_s=10e-9, routes=24)
CORE_FLOPS = 8e9
WSE2_CORES = 750 * 994
KIB48 = 48 * 1024
H100_PROFILE = str(shipped(HARDWARE_DIR) / "profiles" / "h100-sxm.yaml")


def decode_rate(setup, context: float) -> float:
    """Tokens per second of one sequence decoding with `context` tokens of KV."""
    return 1.0 / setup.cost.iteration(BatchShape(num_decodes=1, decode_context=context, sampled=1)).time_s


def unpublished_corners(tmp_path) -> list[str]:
    """The WSE-2 at the fast and the slow corner of its two unpublished per-core numbers: no
    message overhead and no vector-instruction overhead (the lanes alone), then 100 ns and the
    shipped 13 cycles (docs/wafer.md)."""
    specs = []
    for ns, cycles in ((0, 0), (100, 13)):
        spec = tmp_path / f"wse-2-{ns}ns-{cycles}.yaml"
        spec.write_text(f"extends: wse-2\nname: WSE-2 {ns} ns {cycles}\nfabric: {{message_overhead: {ns} ns}}\n"
                        f"core: {{vector_op_overhead_cycles: {cycles}}}\nsources: [\"test\"]\n")
        specs.append(str(spec))
    return specs


# --- specs -------------------------------------------------------------------------------

def test_a_wafer_spec_is_read_per_core_and_stands_for_one_device():
    device = load_spec("wse-2")
    assert isinstance(device, WaferDevice) and device.kind == "wafer"
    assert device.compute.units == WSE2_CORES == 745_500
    assert device.peak_flops("fp16") == pytest.approx(WSE2_CORES * 4 * 2 * 1.1e9)  # 6.56 PFLOPS
    assert device.peak_flops("bf16") == device.peak_flops("fp16")  # no bf16 rate listed: fp16's
    assert device.main_memory.capacity == WSE2_CORES * KIB48  # all the SRAM, 36.6 GB
    assert device.main_memory.bandwidth == pytest.approx(WSE2_CORES * 23.5e9)
    assert device.wafer.fabric.link_bandwidth == pytest.approx(4.04e9)
    assert device.wafer.fabric.hop_latency == pytest.approx(0.91e-9)
    system = load_system("wse-2")
    assert system.host_link is not None and system.host_link.bandwidth == pytest.approx(1.2e12 / 8)
    assert system.fabric_name == "system_io"  # wafers of a pipeline talk over the system I/O
    assert all(source for source in device.sources)


@pytest.mark.parametrize("text, message", [
    ("core: {clock: 1.1}\n", r'core\.clock: "1\.1" has no unit \(expected e\.g\. "1\.83 GHz"\)'),
    ("fabric: {link_bandwidth: 4 GB}\n", r'fabric\.link_bandwidth: "4 GB" is a bytes but a bandwidth is needed'),
    ("compute: {units: 4}\n", r"compute: unknown field .*known here: name, kind, vendor, architecture, mesh, core"),
    ("fabric: {routes_per_core: 2}\n", r"fabric\.routes_per_core: Input should be greater than or equal to 3"),
    ("core: {vector_op_overhead_cycles: 13 ns}\n",
     r'core\.vector_op_overhead_cycles: "13 ns" is not a number of cycles \(expected e\.g\. 13 or "13 cycles"\)'),
    ("core: {vector_op_overhead_cycles: -1}\n", r"core\.vector_op_overhead_cycles: Input should be greater than or equal to 0"),
])
def test_a_bad_wafer_field_is_one_line_naming_it(tmp_path, text, message):
    spec = tmp_path / "wafer.yaml"
    spec.write_text(f"extends: wse-2\nname: W\n{text}sources: [test]\n")
    with pytest.raises(InvalidFile, match=message):
        load_spec(str(spec))


def test_the_instruction_overhead_takes_a_count_or_cycles(tmp_path):
    for text in ("13", '"13 cycles"'):
        spec = tmp_path / "wafer.yaml"
        spec.write_text(f"extends: wse-2\nname: W\ncore: {{vector_op_overhead_cycles: {text}}}\nsources: [test]\n")
        device = load_spec(str(spec))
        assert isinstance(device, WaferDevice) and device.wafer.core.vector_op_overhead_cycles == 13.0


def test_a_hypothetical_wafer_extends_a_shipped_one(tmp_path):
    spec = tmp_path / "wafer.yaml"
    spec.write_text("extends: wse-2\nname: WSE-2-96K\ncore: {sram: 96 KiB}\nsources: [\"what-if: twice the SRAM\"]\n")
    knobs = {"wafer_mesh": 375}
    base, bigger = prepare("wse-2", "llama-3.1-8b", knobs=knobs), prepare(str(spec), "llama-3.1-8b", knobs=knobs)
    assert bigger.plan.usable_bytes == pytest.approx(2 * base.plan.usable_bytes)
    # the weights are the same: all the added SRAM goes to the KV cache
    extra = base.plan.usable_bytes // base.plan.kv_bytes_per_block
    assert bigger.plan.num_blocks - base.plan.num_blocks in (extra, extra + 1)


# --- the mesh formulas, by hand ----------------------------------------------------------

def test_tree_fan_in_is_the_smallest_that_covers_the_line():
    assert M.tree_fan_in(16, 3) == 3 and M.tree_fan_in(16, 4) == 2 and M.tree_fan_in(600, 2) == 25
    assert M.tree_fan_in(4, 1) == 4


def test_mesh_gemv_by_hand():
    # y[1 x 8] = x[1 x 8] W[8 x 8], fp16: 160 bytes (W 128, x and y 32). Local: each core's
    # 2 x 2 tile is 2 instructions (one per value of x) over a row of 2 weights; 4 lanes
    # (8 GFLOP/s at 1 GHz), so 1 cycle each: 2 ns, above the bytes' 160 / (16 x 16e9) = 0.6 ns.
    # Each column's slice of y is ceil(8/4) = 2 values = 4 bytes (1 ns on a link). Reduce over
    # 4 cores: one level (fan-in 4, 3 routes) costs 10 + 3 x 1 = 13 ns, two levels 2 x (10 + 1)
    # = 22 ns; plus 3 hops = 16 ns. Broadcast: 10 + 3 + 1 = 14 ns. Total 32 ns.
    assert M.gemv_s(SMALL, 1, 8, 8, CORE_FLOPS, 2.0, 2.0) == pytest.approx(32e-9)
    # Two tokens: 4 instructions (4 ns) and slices of 8 bytes (2 ns on a link): reduce one level
    # 10 + 3 x 2 + 3 hops = 19 ns, broadcast 10 + 3 + 2 = 15 ns: 38 ns. A core holds 2 + 2
    # values (8 bytes) a token; with 8 bytes set aside it runs two passes of one token, 2 x 32 ns.
    assert M.gemv_s(SMALL, 2, 8, 8, CORE_FLOPS, 2.0, 2.0) == pytest.approx(38e-9)
    assert M.gemv_s(SMALL, 2, 8, 8, CORE_FLOPS, 2.0, 2.0, buffer_bytes=8.0) == pytest.approx(64e-9)


def test_mesh_gemm_by_hand():
    # [8 x 8] x [8 x 8] on 4 x 4 cores: 2 x 2 tiles. A step's product is 2 x 2 = 4 instructions
    # (one per weight) over the tile's 2 rows, a cycle each on 4 lanes (4 ns), while a tile pair
    # shifts two hops: 10 + 2 + (8 + 8 bytes) / 4 GB/s = 16 ns, so 16 ns a step; 4 steps plus
    # the initial skew (10 + 3 hops): 64 + 13 = 77 ns.
    assert M.gemm_s(SMALL, 8, 8, 8, CORE_FLOPS, 2.0, 2.0) == pytest.approx(77e-9)
    # With 10 cycles of fixed cost a vector instruction, a step's product takes 4 x 11 = 44 ns,
    # longer than the shift: 4 x 44 + 13 = 189 ns.
    slow_issue = dataclasses.replace(SMALL, vector_op_overhead_cycles=10.0)
    assert M.gemm_s(slow_issue, 8, 8, 8, CORE_FLOPS, 2.0, 2.0) == pytest.approx(189e-9)


def test_short_vectors_leave_lanes_idle_and_pay_the_fixed_cost_per_instruction():
    # 4 lanes at 1 GHz: 36 instructions of 6 elements are 2 cycles each (the second half
    # empty), 72 ns; with 18 cycles of fixed cost, 36 x 20 = 720 ns, the same MACs over
    # 24-element vectors 9 x (18 + 6) = 216 ns.
    assert M.mac_s(SMALL, 36, 6, CORE_FLOPS) == pytest.approx(72e-9)
    issue = dataclasses.replace(SMALL, vector_op_overhead_cycles=18.0)
    assert M.mac_s(issue, 36, 6, CORE_FLOPS) == pytest.approx(720e-9)
    assert M.mac_s(issue, 9, 24, CORE_FLOPS) == pytest.approx(216e-9)


def test_decode_attention_reduces_scores_within_a_heads_group_by_hand():
    # 8 query heads over 2 KV heads of 4 dimensions (8 wide) on 4 x 4 cores, one sequence of
    # 8 tokens: a core holds 2 tokens and 2 dimensions, so a head spans a group of 2 cores and
    # a core serves the 4 query heads of its KV head. Products: 4 x 2 instructions over its 2
    # tokens and 4 x 2 over its 2 dimensions, a cycle each: 16 ns. The 4 x 2 partial scores
    # (16 bytes) all-reduce over the group of 2: (10 + 4 + 1) + (10 + 1 + 4) = 30 ns. Along the
    # 4 cores of the token axis: the maximum and the sum (8 bytes each): (10 + 3 x 2 + 3) + (10
    # + 3 + 2) = 34 ns each; the outputs, 4 heads x 2 dimensions (16 bytes): (10 + 3 x 4 + 3) +
    # (10 + 3 + 4) = 42 ns. Total 16 + 30 + 68 + 42 = 156 ns.
    assert M.decode_attention_s(SMALL, 1, 8, 8, 2, 4, 0.0, CORE_FLOPS, 2.0) == pytest.approx(156e-9)
    # one KV head of 8 dimensions: a head spans all 4 cores of the line, the scores reduce over it
    wide = M.decode_attention_s(SMALL, 1, 8, 4, 1, 8, 0.0, CORE_FLOPS, 2.0)
    assert wide > M.decode_attention_s(SMALL, 1, 8, 8, 2, 4, 0.0, CORE_FLOPS, 2.0)


def test_the_routing_limit_forces_a_deeper_tree():
    # 16 cores, 4 bytes (1 ns): with 24 routes one level of fan-in 16: 10 + 15 x 1 = 25 ns;
    # with 4 routes a root takes at most 2 members: 3 levels of fan-in 3 cost 3 x (10 + 2) = 36 ns,
    # 4 levels of 2 cost 4 x 11 = 44 ns. Each adds the 15 hops of the line.
    assert M.reduce_s(SMALL, 16, 4.0) == pytest.approx(40e-9)
    limited = M.Mesh(4, 16e9, 4e9, 1e-9, 10e-9, routes=4)
    assert M.reduce_s(limited, 16, 4.0) == pytest.approx(51e-9)


def test_collectives_by_hand():
    assert M.broadcast_s(SMALL, 16, 8.0) == pytest.approx((10 + 15 + 2) * 1e-9)
    assert M.allgather_s(SMALL, 4, 8.0) == pytest.approx((10 + 3 * (1 + 2)) * 1e-9)
    # a 4 x 4 transpose of 8-byte tiles: 10 + 2 x 3 hops + 3 tiles x 2 ns through the busiest link
    assert M.transpose_s(SMALL, 8.0) == pytest.approx((10 + 6 + 6) * 1e-9)


# --- memory plan and what does not fit ---------------------------------------------------

def test_the_kv_cache_is_the_sram_the_placement_leaves():
    setup = prepare("wse-2", "llama-3.1-8b", knobs={"wafer_mesh": 375})
    plan = setup.plan
    # 375 x 375 sub-meshes: (750 // 375) x (994 // 375) = 4 of them, 562,500 cores
    assert plan.usable_bytes == pytest.approx(4 * 375 * 375 * KIB48 * 0.9)
    gpu = prepare("h100-sxm", "llama-3.1-8b", calibration="none").plan
    assert plan.weights_bytes == gpu.weights_bytes  # the same 16.1 GB of weights, in SRAM
    # the live activations of a 2,048-token step: 2048 x (3 x 4096 + 3 x 14336) x 2 bytes
    assert plan.activation_bytes == 2048 * (3 * 4096 + 3 * 14336) * 2 == 226_492_416
    per_block = 16 * 32 * 8 * 128 * 2 * 2  # 16 tokens x 32 layers x 8 KV heads x 128 x (K, V) x bf16
    assert plan.kv_bytes_per_block == per_block
    assert plan.num_blocks == int((plan.usable_bytes - plan.weights_bytes - 226_492_416) // per_block) == 4082
    assert setup.deployment.max_model_len == 8192  # a wafer's default context (backends/wafer.py)
    assert plan.summary()["engine"] == "wafer: 4 sub-mesh(es) of 375 x 375 cores"


def test_a_model_that_does_not_fit_is_refused_with_both_ways_out_costed():
    with pytest.raises(InputError) as error:
        prepare("wse-2", "qwen2.5-72b")
    message = str(error.value)
    # 145.4 GB of weights over 32.6 GB of usable SRAM: five wafers, or stream 108 GiB a step
    assert "weights 145.4 GB" in message and "--pp 5" in message
    assert "cpu_offload_gb=108" in message and "773 ms or more" in message


def test_pipelining_over_wafers_holds_a_stage_per_wafer():
    setup = prepare("wse-2", "qwen2.5-72b", pp=5)
    plan = setup.plan
    assert plan.weights_bytes < plan.usable_bytes - plan.activation_bytes  # 16 of 80 layers per wafer
    # a decode's hidden state (8,192 bf16 values) crosses four stage boundaries over the system
    # I/O: 10 us of latency and 16,384 B at 150 GB/s each
    send = 4 * (1e-5 + 8192 * 2 / 150e9)
    assert setup.cost.pipeline_send_s(1) == pytest.approx(send)
    assert 1 / decode_rate(setup, 1024.0) > send


def test_streamed_weights_cost_every_step_their_trip_over_the_system_io():
    setup = prepare("wse-2", "qwen2.5-72b", knobs={"cpu_offload_gb": 120})
    streamed = 120 * 2**30
    assert setup.plan.offloaded_weights_bytes == streamed
    step = 1 / decode_rate(setup, 1.0)
    assert step >= 1e-5 + streamed / 150e9  # latency + 128.8 GB / 150 GB/s = 0.859 s


# --- the engine --------------------------------------------------------------------------

def test_simulate_run_on_a_wafer_gives_the_summary_contract(tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.05 * i, "input_tokens": 300 + 10 * i, "output_tokens": 40})
                             + "\n" for i in range(30)))
    out = tmp_path / "run"
    assert main(["run", "wse-2", str(trace), "--model", "llama-3.1-8b", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema"].startswith("simulator.summary/") and summary["hardware"] == "Cerebras-WSE-2"
    assert summary["requests"]["completed"] == 30 and summary["energy_j"] > 0
    # Cerebras publishes no hourly price: the cost is unknown, not $0
    assert summary["cost_usd"] is None
    assert "cost unknown (a device's spec states no price)" in capsys.readouterr().out
    memory = summary["memory"]
    assert {"device_capacity_bytes", "usable_bytes", "weights_bytes", "activation_bytes", "reserved_bytes",
            "kv_bytes", "kv_blocks", "kv_tokens", "block_size"} <= set(memory)
    assert memory["engine"].startswith("wafer:") and memory["device_capacity_bytes"] == WSE2_CORES * KIB48
    assert (out / "requests.csv").is_file() and (out / "iterations.csv").is_file()
    # the time's provenance says what the wafer model is, fitted constant included, not "roofline" alone
    assert "PLMR mesh model" in summary["provenance"]["note"]
    assert "fitted to a published prefill figure" in summary["provenance"]["note"]


def test_spans_give_what_single_steps_give_on_a_wafer(tmp_path):
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps({"arrival_s": 0.2 * i, "input_tokens": 500, "output_tokens": 60 + i})
                             + "\n" for i in range(8)))
    spans = simulate("wse-2", trace, model="llama-3.1-8b", keep_frames=False).summary
    steps = prepare("wse-2", "llama-3.1-8b")
    single = run_setup(steps, TraceIndex.build(trace), keep_frames=False, fast_forward=False).summary
    for block, key in (("ttft_s", "p90"), ("tpot_s", "mean"), ("e2e_s", "max")):
        assert spans[block][key] == pytest.approx(single[block][key], rel=1e-9)


def test_prefill_gets_a_larger_mesh_than_decode():
    """WaferLLM runs prefill on more cores than decode: chosen per pool of a disaggregated
    deployment, for a prefill chunk and for a one-sequence decode step."""
    split = prepare("wse-2", "llama-3.1-8b", scheduler="disagg").disagg
    prefill, decode = split.prefill, split.decode
    assert prefill.deployment.wafer_mesh > decode.deployment.wafer_mesh
    chunk = BatchShape(prefill_tokens=2048, prefill_context=2048, prefill_pairs=2048 * 2049 / 2, sampled=1)
    one = BatchShape(num_decodes=1, decode_context=1.0, sampled=1)
    assert prefill.cost.iteration(chunk).time_s < decode.cost.iteration(chunk).time_s
    assert decode.cost.iteration(one).time_s < prefill.cost.iteration(one).time_s
    fixed = prepare("wse-2", "llama-3.1-8b", scheduler="disagg", knobs={"wafer_prefill_mesh": 497}).disagg
    assert fixed.prefill.deployment.wafer_mesh == 497  # two sub-meshes of 497 x 497
    assert fixed.decode.deployment.wafer_mesh == decode.deployment.wafer_mesh
    with pytest.raises(InputError, match=r"placement covers more cores \(leave wafer_mesh unset"):
        prepare("wse-2", "llama-3.1-8b", knobs={"wafer_mesh": 500})  # one sub-mesh of 250,000 cores: 11.1 GB


def test_a_step_holding_a_prompt_runs_meshgemm_as_waferllm_prefills():
    """MeshGEMV serves a step of up to max_num_seqs tokens (a decode batch); more tokens hold a
    prompt and run MeshGEMM, WaferLLM's prefill, whose P steps cost about the same whatever
    the tokens (each step's instructions run over a tile's few token rows). On Llama-3.1-8B's
    decode layout (P = 256) that is 24 ms for 256 tokens and 348 ms for 257 (docs/wafer.md)."""
    def step_s(setup, tokens):
        return setup.cost.iteration(BatchShape(prefill_tokens=tokens, prefill_context=float(tokens),
                                               prefill_pairs=tokens * (tokens + 1) / 2, sampled=1)).time_s
    setup = prepare("wse-2", "llama-3.1-8b")
    assert setup.deployment.max_num_seqs == 256
    assert step_s(setup, 257) > 10 * step_s(setup, 256)
    assert step_s(setup, 2048) < 1.2 * step_s(setup, 257)
    larger_batch = prepare("wse-2", "llama-3.1-8b", knobs={"max_num_seqs": 512, "wafer_mesh": 256})
    assert step_s(larger_batch, 300) < step_s(setup, 300) / 5


@pytest.mark.parametrize("hardware, kwargs, message", [
    ("h100-sxm", {"knobs": {"wafer_mesh": 200}}, r"wafer_mesh: a wafer knob, and H100-SXM5-80GB is a gpu"),
    ("wse-2", {"tp": 2}, r"--tp 2: a layer runs on one wafer's mesh .* with --pp instead"),
    ("wse-2", {"scheduler": "trtllm"}, r"TensorRT-LLM has no wafer backend"),
    ("wse-2", {"knobs": {"wafer_mesh": 800}}, r"wafer_mesh 800: Cerebras-WSE-2's mesh is 750 x 994 cores; set it <= 750"),
    ("wse-2", {"model": "mixtral-8x7b"}, r"mixture of experts: the wafer cost model covers dense models"),
    ("wse-2", {"calibration": H100_PROFILE}, r"--calibration: Cerebras-WSE-2 is a wafer"),
])
def test_what_a_wafer_refuses(hardware, kwargs, message):
    kwargs = {"model": "llama-3.1-8b", **kwargs}
    with pytest.raises(InputError, match=message):
        prepare(hardware, **kwargs)


def test_a_plan_puts_a_wafer_beside_a_gpu_with_cost_and_power(tmp_path):
    (tmp_path / "t.jsonl").write_text("".join(
        json.dumps({"arrival_s": 0.5 * i, "input_tokens": 200, "output_tokens": 20}) + "\n" for i in range(20)))
    plan = tmp_path / "plan.yaml"
    plan.write_text("workload: {trace: t.jsonl}\nmodel: llama-3.1-8b\nslo: {ttft_p90: 1.0}\ntarget_rate: 4\n"
                    "rates: {min: 0.5, max: 8}\ncandidates:\n"
                    "  - {name: wafer, hardware: wse-2, price_per_hour: 60}\n"
                    "  - {name: gpu, hardware: h100-sxm, calibration: none}\n")
    run_plan(plan, tmp_path / "out", workers=1, report=False)
    with open(tmp_path / "out" / "candidates.csv") as stream:
        rows = {row["candidate"]: row for row in csv.DictReader(stream)}
    wafer = rows["wafer"]
    assert wafer["feasible"] == "true" and wafer["devices_per_replica"] == "1"
    assert float(wafer["price_per_device_hour"]) == 60.0
    assert float(wafer["cost_per_hour"]) == 60.0 * int(wafer["replicas_needed"])
    assert float(wafer["energy_per_output_token_j"]) > 0  # 20 kW, busy or not
    assert rows["gpu"]["feasible"] == "true"


@pytest.mark.parametrize("objective, wafer_rank", [("min_cost", ""), ("min_devices", "2")])
def test_an_unpriced_wafer_is_sized_and_ranked_only_where_no_price_is_needed(tmp_path, objective, wafer_rank):
    """Cerebras publishes no hourly price: the wafer's capacity is still searched and reported,
    without a cost; a cost objective leaves it unranked, saying why, and min_devices ranks it
    (a tie on devices goes to the priced candidate, the unpriced one costing more than any)."""
    (tmp_path / "t.jsonl").write_text("".join(
        json.dumps({"arrival_s": 0.5 * i, "input_tokens": 200, "output_tokens": 20}) + "\n" for i in range(20)))
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"workload: {{trace: t.jsonl}}\nmodel: llama-3.1-8b\nslo: {{ttft_p90: 1.0}}\ntarget_rate: 4\n"
                    f"objective: {objective}\nrates: {{min: 0.5, max: 8}}\ncandidates:\n"
                    "  - {name: wafer, hardware: wse-2}\n  - {name: gpu, hardware: h100-sxm, calibration: none}\n")
    run_plan(plan, tmp_path / "out", workers=1, report=False)
    with open(tmp_path / "out" / "candidates.csv") as stream:
        rows = {row["candidate"]: row for row in csv.DictReader(stream)}
    wafer = rows["wafer"]
    assert wafer["feasible"] == "true" and float(wafer["max_rate_req_s"]) > 0
    assert wafer["cost_per_hour"] == "" and wafer["rank"] == wafer_rank
    assert "no price in its spec, so no cost: set its price_per_hour to rank it by cost" in wafer["reason"]
    assert rows["gpu"]["rank"] == "1" and rows["gpu"]["recommended"] == "true"


# --- published figures (validation/README.md, "Wafer-scale meshes") -----------------------

@pytest.mark.parametrize("model, best, worst", [
    ("llama-3.1-8b", 2699.9, 2243.3),
    ("llama-2-13b", 2039.2, 1739.8),
])
def test_waferllm_decode_per_request_at_4k_tokens_on_wse2(tmp_path, model, best, worst):
    """WaferLLM (OSDI'25, Tables 4 and 8): decode tokens/s per request on a WSE-2, 16-bit, 4K
    tokens of context, from its best core configuration (420 x 420) to its worst (660 x 660).
    Those configurations do not hold a whole model (420 x 420 x 48 KiB is 8.7 GB), so the model
    keeps its own placement. The bound comes from the two per-core numbers that are not
    published (docs/wafer.md): over message overheads of 0 to 100 ns and vector-instruction
    overheads of 0 (the lanes alone) to the shipped 13 cycles, the model's rates must overlap
    WaferLLM's range. At the shipped 45 ns and 13 cycles it gives 2,778 (+3 %) and 2,251 (+10 %)."""
    rates = [decode_rate(prepare(spec, model), 4096.0) for spec in unpublished_corners(tmp_path)]
    fastest, slowest = rates
    assert fastest >= worst and slowest <= best
    shipped_rate = decode_rate(prepare("wse-2", model), 4096.0)
    assert slowest < shipped_rate < fastest


def test_waferllm_10_to_20x_over_an_a100_cluster():
    """WaferLLM (OSDI'25 abstract): 10-20x end-to-end over A100 clusters running vLLM and
    SGLang. Per-request decode of Llama-3.1-8B at 1,024 tokens: the wafer against eight A100s
    at tensor parallelism 8 (the calibrated A100 profile): 2,679 / 219 = 12.2x."""
    wafer = decode_rate(prepare("wse-2", "llama-3.1-8b"), 1024.0)
    cluster = decode_rate(prepare("dgx-a100", "llama-3.1-8b", tp=8), 1024.0)
    assert 10 <= wafer / cluster <= 20


def test_waferllm_prefill_fits_its_one_figure_and_a_whole_request_holds_out():
    """The vector-instruction overhead (13 cycles on the WSE-2) is fitted to WaferLLM's one
    prefill figure (OSDI'25, Tables 3 and 7: 27,686 tokens/s for a 4,096-token Llama3-8B prompt
    on 720 x 720 cores, MeshGEMM throughout); the lanes alone would give 192,948 (7x). The
    held-out check is Table 2's shorter request, prefill on 660 x 660 cores of a 2,048-token
    prompt, then 127 decode steps on 360 x 360: 764 output tokens/s, 168 ms, of which 127 steps
    at WaferLLM's 2,700 tokens/s are 47 ms and the prefill the other ~121 ms. The model gives
    617 (-19 %): its decode steps take about what WaferLLM's rate gives, and its prefill, 161 ms,
    is a third longer (MeshGEMM's P steps cost nearly as much for 2,048 tokens as for 4,096)."""
    fitted = wc.prefill_rate("wse-2", "llama-3.1-8b", 4096, knobs={"wafer_mesh": 720, "max_num_batched_tokens": 4096})
    assert fitted == pytest.approx(27686.5, rel=0.05)
    held_out = wc.end_to_end_rate("wse-2", "llama-3.1-8b", 2048, 128, 660, 360)
    assert held_out == pytest.approx(764.0, rel=0.25)
    implied_decode_s = 127 / 2700
    prefill_s = 2048 / wc.prefill_rate("wse-2", "llama-3.1-8b", 2048,
                                       knobs={"wafer_mesh": 660, "max_num_batched_tokens": 2048})
    assert 128 / held_out - prefill_s == pytest.approx(implied_decode_s, rel=0.2)
    assert 0.168 - implied_decode_s < prefill_s < 1.5 * (0.168 - implied_decode_s)


def test_waferllm_long_request_is_decode_bound(tmp_path):
    """WaferLLM (OSDI'25, Table 2): Llama3-8B, 4,096 tokens in and 4,096 out, 2,459 output
    tokens/s per request. The decode is 99 % of the time, its context growing from 4K to 8K
    tokens, so the rate is below output / the decode steps' time and below the model's 4K
    decode rate (2,778, the test above). WaferLLM's own 4K rate is 2,700, so the figure is 0.91
    of it; the model's rate must sit, as a fraction of the figure, within its 4K decode rates
    at the two corners of the unpublished per-core numbers as fractions of 2,700. It gives
    2,276 (-7 %)."""
    prompt = output = 4096
    rate = wc.end_to_end_rate("wse-2", "llama-3.1-8b", prompt, output, 660, 360)
    decode = prepare("wse-2", "llama-3.1-8b", knobs={"wafer_mesh": 360}).cost
    steps_s = sum(decode.iteration(BatchShape(num_decodes=1, decode_context=float(prompt + step), sampled=1)).time_s
                  for step in range(1, output))
    assert rate < output / steps_s
    assert rate < decode_rate(prepare("wse-2", "llama-3.1-8b"), 4096.0)
    fastest, slowest = (decode_rate(prepare(spec, "llama-3.1-8b"), 4096.0) / 2700.0 for spec in unpublished_corners(tmp_path))
    assert slowest < rate / 2459.0 < fastest


@pytest.mark.parametrize("model, pp, published", [
    ("llama-3.1-8b", 1, 1800),  # one CS-3
    ("llama-3.1-70b", 4, 450),  # four CS-3s, the layers pipelined
])
def test_cerebras_per_user_rates_on_wse3(model, pp, published):
    """Cerebras Inference at launch (Cerebras blog, 27 August 2024; The Register, same week):
    1,800 tokens/s per user for Llama 3.1 8B, 450 for 70B over four CS-3s, 16-bit weights.
    The model is optimistic: 3,041 (+69 %) and 867 (+93 %) at 1,024 tokens of context; it
    leaves out Cerebras's serving stack, and the WSE-3's per-core numbers are assumptions."""
    rate = decode_rate(prepare("wse-3", model, pp=pp), 1024.0)
    assert published < rate < 2 * published
