"""What `simulate run` prints on the terminal once a run is done: the latency table and one
line each for throughput, utilisation, provenance, uncertainty, memory and the optional
summary blocks (SLO, prefix cache, KV transfer, swaps).

Everything here reads the run's summary dict (`summary.json`), never the engine, so the
terminal shows exactly what the run wrote to disk.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .output import print_line, print_table

LATENCY_COLUMNS = ("latency (s)", "mean", "p50", "p90", "p99", "max")
LATENCIES = ("ttft_s", "tbt_s", "tpot_s", "e2e_s", "queue_s")


def latency_rows(summary: dict) -> list[list[Any]]:
    """The latency table's rows (`LATENCY_COLUMNS`), unrounded: TTFT, TBT, TPOT, E2E, QUEUE."""
    return [[key.removesuffix("_s").upper(), *(summary[key][c] for c in LATENCY_COLUMNS[1:])] for key in LATENCIES]


def print_run_summary(summary: dict, out_dir: Path | None) -> None:
    """The latency table and the lines below it, on stdout (output.py: whole when not on a
    terminal)."""
    from rich.table import Table

    req = summary["requests"]
    title = (f"{summary['model']} on {summary['hardware']} · {summary['scheduler']} · "
             f"tp={summary['parallelism']['tp']} pp={summary['parallelism']['pp']} "
             + ("(overlapped) " if summary['parallelism'].get('engines_per_replica', 1) > 1 else "")
             + f"replicas={summary['parallelism']['replicas']}" + _quantised(summary.get("precision")))
    table = Table(title=title, title_justify="left")
    table.add_column(LATENCY_COLUMNS[0])
    for col in LATENCY_COLUMNS[1:]:
        table.add_column(col, justify="right")
    for name, *values in latency_rows(summary):
        table.add_row(name, *(f"{v:.4f}" for v in values))
    print_table(table)
    tp, util = summary["throughput"], summary["utilization"]
    print_line(
        f"requests {req['completed']}/{req['total']} completed, {req['rejected']} rejected · "
        f"makespan {summary['makespan_s']:.1f} s · {tp['requests_per_s']:.2f} req/s · "
        f"{tp['output_tokens_per_s']:.0f} output tok/s\n"
        f"MFU {util['mfu']:.1%} · MBU {util['mbu']:.1%} · KV cache peak {util['kv_cache_peak']:.1%} "
        f"mean {util['kv_cache_mean']:.1%} · preemptions {summary['preemptions']} · "
        f"{_energy(summary['energy_j'])} · {_cost(summary['cost_usd'])}\n"
        f"simulated {summary['sim']['iterations']} iterations in {summary['sim']['wall_s']:.2f} s"
        + (f" · outputs in {out_dir}" if out_dir else "")
    )
    prov = summary["provenance"]
    shares = " · ".join(f"{k} {v:.0%}" for k, v in prov["share_of_time_by_source"].items() if v >= 0.005)
    print_line(f"time by source: {shares} ({prov['note']})")
    if "uncertainty" in summary and summary["uncertainty"].get("calibrated"):
        band = summary["uncertainty"]
        errors = "; ".join(f"{source} " + ", ".join(f"{op} ±{error:.0%}" for op, error in ops.items())
                           for source, ops in band["kernel_error_p90_by_source"].items())
        print_line("uncertainty (p90 kernel error: {}): TTFT mean {:.4f}-{:.4f} s · TPOT mean {:.4f}-{:.4f} s · "
                      "{:.0f}-{:.0f} output tok/s".format(
                          errors, band["ttft_s"]["mean"]["low"], band["ttft_s"]["mean"]["high"],
                          band["tpot_s"]["mean"]["low"], band["tpot_s"]["mean"]["high"],
                          band["throughput"]["output_tokens_per_s"]["low"],
                          band["throughput"]["output_tokens_per_s"]["high"]))
    if "batch_limits" in summary:  # a run written before the block existed has none
        limits = summary["batch_limits"]
        print_line(f"per step: at most {limits['sequences']} sequences, {limits['tokens']} tokens")
    print_line(_memory_line(summary["memory"]))
    for line in _extra_lines(summary):
        print_line(line)
    if req["rejected"]:
        print_line(f"rejected: {req['rejected_reasons']}")
    if req.get("skipped_trace_rows"):
        print_line(f"skipped trace rows: {req['skipped_trace_rows']}")


def _memory_line(memory: dict) -> str:
    """The memory plan of one engine, as its start-up log states it (TensorRT-LLM gives the KV
    cache a fraction of what the rest leaves, vLLM what is left of a fraction of the device)."""
    gib = 2**30
    fraction = memory.get("free_gpu_memory_fraction")
    budget = "" if fraction is not None else f" x utilisation = {memory['usable_bytes'] / gib:.2f} GiB"
    share = "" if fraction is None else f" (free_gpu_memory_fraction {fraction} of the rest)"
    return (f"memory ({memory['engine']}, per device): {memory['device_capacity_bytes'] / gib:.2f} GiB{budget} · "
            f"weights {memory['weights_bytes'] / gib:.2f} · activations "
            f"{memory['activation_bytes'] / gib:.2f} · non-torch {memory['reserved_bytes'] / gib:.2f} · KV cache "
            f"{memory['kv_bytes'] / gib:.2f} GiB{share} = {memory['kv_blocks']} blocks of {memory['block_size']} "
            f"tokens ({memory['kv_tokens']:,} tokens)")


def _extra_lines(summary: dict) -> list[str]:
    """One line for each optional summary block the run produced (SLO, prefix cache, KV
    offload, KV transfer, swaps)."""
    lines = []
    if "slo" in summary:
        slo = summary["slo"]
        targets = ", ".join(f"{key.removesuffix('_s').upper()} ≤ {_seconds(slo[key])}"
                           for key in ("ttft_s", "tpot_s", "e2e_s") if slo.get(key) is not None)
        attained = "n/a" if slo["attainment"] is None else f"{slo['attainment']:.1%}"
        required = slo.get("required_attainment")
        verdict = "" if required is None else f" vs {required:.1%} required ({'met' if slo['met'] else 'missed'})"
        lines.append(f"SLO {targets}: attainment {attained}{verdict} over {slo['judged_requests']} requests · "
                     f"goodput {slo['goodput_requests_per_s']:.2f} req/s")
    cache = summary.get("prefix_cache")
    if cache and (cache["lookup_tokens"] or cache.get("resumed_tokens")):  # else it had nothing to find
        parts = [f"hit rate {cache['hit_rate']:.1%} · {cache['hit_tokens']} prompt tokens reused"] if cache[
            "lookup_tokens"] else []
        if cache.get("resumed_tokens"):
            parts.append(f"{cache['resumed_tokens']} tokens found again by preempted requests")
        lines.append("prefix cache: " + " · ".join(parts))
    if "kv_offload" in summary:
        lines.append(_offload_line(summary["kv_offload"]))
    if "kv_transfer" in summary:
        kv = summary["kv_transfer"]
        lines.append(f"KV transfer: {kv['bytes'] / 1e9:.2f} GB in {kv['time_s']:.3f} s")
    if "swaps" in summary:
        swaps = summary["swaps"]
        lines.append(f"swaps: {swaps['count']} ({swaps['bytes'] / 1e9:.2f} GB)")
    return lines


def _offload_line(kv: dict) -> str:
    """KV offloading: where the blocks went, what the tier served, what crossed its link, and
    the TTFT of requests it served against the others'."""
    ttft = kv["ttft_s"]
    parts = [f"prompt tokens found {kv['device_hit_rate']:.1%} on the device + {kv['tier_hit_rate']:.1%} in the tier",
             f"{kv['bytes_loaded'] / 1e9:.2f} GB loaded in {kv['loads']} loads ({kv['load_time_s']:.3f} s)"
             + (f", {kv['resumed_blocks']} blocks by resumed requests" if kv["resumed_blocks"] else ""),
             f"{kv['bytes_stored'] / 1e9:.2f} GB stored"
             + (f", steps waited {kv['store_stall_s']:.3f} s for stores" if kv["store_stall_s"] else "")]
    if ttft["with_tier_hits"]["count"]:
        parts.append(f"TTFT mean {ttft['with_tier_hits']['mean']:.4f} s with tier hits, "
                     f"{ttft['without_tier_hits']['mean']:.4f} s without")
    return f"KV offload ({kv['backend']}, {kv['tier']} over {kv['link']}): " + " · ".join(parts)


def _seconds(target: float | str) -> str:
    """An SLO target as shown: seconds, or the trace's own per-request targets."""
    return target if isinstance(target, str) else f"{target:g} s"


def _quantised(precision: dict | None) -> str:
    """The title's note of weights stored below 16 bits (and the checkpoint's scheme, if any)."""
    if not precision or precision["weights"] in ("bf16", "fp16", "fp32"):
        return ""
    scheme = precision.get("checkpoint_quantization")
    return f" · {precision['weights']} weights" + (f" (checkpoint: {scheme})" if scheme else "")


def _energy(energy_j: float | None) -> str:
    """The run's energy, or why there is none."""
    return f"energy {energy_j / 3.6e6:.3f} kWh" if energy_j is not None else "energy unknown (a device's spec states no power)"


def _cost(cost_usd: float | None) -> str:
    """The run's cost, or why there is none (an unpriced device is not a free one)."""
    return f"cost ${cost_usd:.2f}" if cost_usd is not None else "cost unknown (a device's spec states no price)"
