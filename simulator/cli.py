"""The `simulate` command: argument parsing and output only (the work is in `api`)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

from .errors import InputError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


SCHEDULER_HELP = "serving policy (default vllm)"


class _RunHelp(argparse.HelpFormatter):
    """`simulate run --help` lists the registered scheduling policies. They are imported only
    when help is shown: importing every policy takes most of a second, which every other
    command would otherwise pay at start-up."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help is SCHEDULER_HELP:
            from .schedulers.base import REGISTRY, get_scheduler

            get_scheduler("vllm")  # importing the policies registers them
            return f"serving policy, one of: {', '.join(sorted(REGISTRY))} (default vllm)"
        return action.help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate", description="Simulate LLM serving on hardware described in YAML.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="replay a request trace on a deployment and report latency, throughput, cost",
                         formatter_class=_RunHelp)
    run.add_argument("hardware", help="hardware YAML path or catalogue name (see `simulate specs list`)")
    run.add_argument("trace", help="trace: contract JSONL, Azure LLM inference CSV or Mooncake JSONL")
    run.add_argument("--model", help="catalogue name (workloads/models/) or path to a config.json")
    run.add_argument("--scheduler", help=SCHEDULER_HELP)
    run.add_argument("--tp", type=_positive, help="tensor-parallel degree")
    run.add_argument("--pp", type=_positive, help="pipeline-parallel degree")
    run.add_argument("--replicas", type=_positive, help="model replicas behind the router")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="deployment knob, e.g. max_num_seqs=256 (repeatable)")
    run.add_argument("--seed", type=int, default=0, help="seed for any randomness (default 0)")
    run.add_argument("--out", help="output directory (default runs/<hardware>-<model>-<time>/)")
    run.add_argument("--calibration", help="calibration profile (YAML); `none` for the uncalibrated roofline "
                                           "(default: the profile the hardware spec names, if any)")
    run.add_argument("--uncertainty", action="store_true",
                     help="add low/high bands from the measured error of the profile's predictions this run "
                          "used (held-out, dtype-scaling and transfer errors; two more runs)")
    run.add_argument("--slo", nargs="+", action="extend", default=[], metavar="SPEC",
                     help="SLO to judge every request by, e.g. ttft_p90=0.5 tpot_p90=0.05 (keys ttft, tpot, e2e "
                          "with an optional _pNN required percentile; attainment=0.95 overrides it)")
    run.add_argument("--timeline", metavar="FILE.json",
                     help="also write the engine iterations as a Chrome/Perfetto trace (ui.perfetto.dev)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")

    specs = sub.add_parser("specs", help="list, show or check hardware specs")
    specs_sub = specs.add_subparsers(dest="specs_command", required=True)
    specs_sub.add_parser("list", help="the shipped catalogue")
    show = specs_sub.add_parser("show", help="one spec, resolved, in SI units")
    show.add_argument("name")
    check = specs_sub.add_parser("check", help="validate spec files")
    check.add_argument("files", nargs="+")

    sub.add_parser("models", help="list the shipped model catalogue")

    cal = sub.add_parser("calibrate", help="fit a calibration profile from measured kernel timings")
    cal.add_argument("hardware", help="hardware YAML path or catalogue name the measurements were taken on")
    cal.add_argument("measured", nargs="+", help="measurement CSV files: op, dtype, time_us, device and each op's shape "
                                                  "columns (docs/contracts.md, Measurement CSV)")
    cal.add_argument("-o", "--output", required=True, help="calibration profile to write (YAML)")
    cal.add_argument("--device", help="keep only rows whose device column contains this text")
    cal.add_argument("--folds", type=_positive, default=5, help="folds of the held-out error estimate (default 5)")
    cal.add_argument("--force", action="store_true",
                     help="fit even when the measurements name another device than the spec")

    val = sub.add_parser("validate", help="compare predictions with measured kernel timings")
    val.add_argument("hardware")
    val.add_argument("measured", nargs="+", help="measurement CSV files")
    val.add_argument("--calibration", help="profile to use; `none` for the uncalibrated roofline "
                                           "(default: the spec's calibration:, if any)")
    val.add_argument("--device", help="keep only rows whose device column contains this text")
    val.add_argument("--out", help="output directory (default runs/validate-<hardware>-<time>/)")

    trace = sub.add_parser("trace", help="convert or generate traces")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    convert = trace_sub.add_parser("convert", help="convert an Azure CSV / Mooncake JSONL trace to contract JSONL")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--format", choices=("azure", "mooncake", "jsonl"), help="input format (default: detect)")
    gen = trace_sub.add_parser("gen", help="generate a synthetic trace (seeded)")
    gen.add_argument("output")
    gen.add_argument("-n", "--requests", type=_positive, required=True, help="number of requests")
    gen.add_argument("--rate", type=float, required=True, help="mean arrival rate in requests per second")
    gen.add_argument("--arrival", choices=("poisson", "gamma"), default="poisson")
    gen.add_argument("--cv", type=float, default=1.0, help="inter-arrival coefficient of variation (gamma)")
    gen.add_argument("--input", default="fixed:512",
                     help="input lengths: fixed:N | uniform:LO:HI | lognormal:MEAN:SIGMA | empirical:TRACE")
    gen.add_argument("--output", dest="output_lengths", default="fixed:128", help="output lengths, same forms")
    gen.add_argument("--seed", type=int, default=0)

    plan = sub.add_parser("plan", help="capacity planning: the cheapest deployment that meets an SLO at a target load")
    plan.add_argument("plan", metavar="PLAN.yaml", help="plan file (format: simulator/planning/plan_file.py)")
    plan.add_argument("--out", help="output directory (default: the plan file's directory); re-running with the "
                                    "same one resumes from its cache/")
    plan.add_argument("--executor", choices=("local", "ray"), default="local",
                      help="local worker processes (default) or a Ray cluster (pip install 'simulator[cluster]')")
    plan.add_argument("--workers", type=_positive, help="worker processes (default: one per CPU); with ray and no "
                                                        "--ray-address, the CPUs of the local Ray")
    plan.add_argument("--ray-address", help="address of a running Ray cluster (ray.init's address, e.g. auto)")
    plan.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    return parser


def _table(summary: dict, out_dir: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    req = summary["requests"]
    title = (f"{summary['model']} on {summary['hardware']} · {summary['scheduler']} · "
             f"tp={summary['parallelism']['tp']} pp={summary['parallelism']['pp']} "
             + ("(overlapped) " if summary['parallelism'].get('engines_per_replica', 1) > 1 else "")
             + f"replicas={summary['parallelism']['replicas']}")
    table = Table(title=title, title_justify="left")
    table.add_column("latency (s)")
    for col in ("mean", "p50", "p90", "p99", "max"):
        table.add_column(col, justify="right")
    for key in ("ttft_s", "tbt_s", "tpot_s", "e2e_s", "queue_s"):
        d = summary[key]
        table.add_row(key.removesuffix("_s").upper(), *(f"{d[c]:.4f}" for c in ("mean", "p50", "p90", "p99", "max")))
    console.print(table)
    tp, util = summary["throughput"], summary["utilization"]
    console.print(
        f"requests {req['completed']}/{req['total']} completed, {req['rejected']} rejected · "
        f"makespan {summary['makespan_s']:.1f} s · {tp['requests_per_s']:.2f} req/s · "
        f"{tp['output_tokens_per_s']:.0f} output tok/s\n"
        f"MFU {util['mfu']:.1%} · MBU {util['mbu']:.1%} · KV cache peak {util['kv_cache_peak']:.1%} "
        f"mean {util['kv_cache_mean']:.1%} · preemptions {summary['preemptions']} · "
        f"energy {summary['energy_j'] / 3.6e6:.3f} kWh · cost ${summary['cost_usd']:.2f}\n"
        f"simulated {summary['sim']['iterations']} iterations in {summary['sim']['wall_s']:.2f} s"
        + (f" · outputs in {out_dir}" if out_dir else "")
    )
    prov = summary["provenance"]
    shares = " · ".join(f"{k} {v:.0%}" for k, v in prov["share_of_time_by_source"].items() if v >= 0.005)
    console.print(f"time by source: {shares} ({prov['note']})")
    if "uncertainty" in summary and summary["uncertainty"].get("calibrated"):
        band = summary["uncertainty"]
        errors = "; ".join(f"{source} " + ", ".join(f"{op} ±{error:.0%}" for op, error in ops.items())
                           for source, ops in band["kernel_error_p90_by_source"].items())
        console.print("uncertainty (p90 kernel error: {}): TTFT mean {:.4f}-{:.4f} s · TPOT mean {:.4f}-{:.4f} s · "
                      "{:.0f}-{:.0f} output tok/s".format(
                          errors, band["ttft_s"]["mean"]["low"], band["ttft_s"]["mean"]["high"],
                          band["tpot_s"]["mean"]["low"], band["tpot_s"]["mean"]["high"],
                          band["throughput"]["output_tokens_per_s"]["low"],
                          band["throughput"]["output_tokens_per_s"]["high"]))
    console.print(_memory_line(summary["memory"]))
    for line in _extra_lines(summary):
        console.print(line)
    if req["rejected"]:
        console.print(f"rejected: {req['rejected_reasons']}")
    if req.get("skipped_trace_rows"):
        console.print(f"skipped trace rows: {req['skipped_trace_rows']}")


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
    transfer, swaps)."""
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
    if "kv_transfer" in summary:
        kv = summary["kv_transfer"]
        lines.append(f"KV transfer: {kv['bytes'] / 1e9:.2f} GB in {kv['time_s']:.3f} s")
    if "swaps" in summary:
        swaps = summary["swaps"]
        lines.append(f"swaps: {swaps['count']} ({swaps['bytes'] / 1e9:.2f} GB)")
    return lines


def _seconds(target: float | str) -> str:
    """An SLO target as shown: seconds, or the trace's own per-request targets."""
    return target if isinstance(target, str) else f"{target:g} s"


class _Progress:
    """A progress bar with ETA on stderr, shown only once a run has taken a couple of seconds."""

    DELAY_S = 2.0

    def __init__(self, enabled: bool, label: str = "simulating"):
        self.enabled, self.started, self.bar, self.task = enabled, time.monotonic(), None, None
        self.label = label

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < self.DELAY_S:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(self.label), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("run", total=total)
        self.bar.update(self.task, completed=done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def cmd_run(args: argparse.Namespace) -> int:
    from .api import OUTPUT_FILES, check_out_dir, prepare, simulate_setup
    from .deployment import parse_set
    from .metrics.slo import parse_slo

    knobs = parse_set(args.set)
    slo = parse_slo(args.slo)
    timeline = Path(args.timeline) if args.timeline else None
    # the run's own --out directory is created by the run, so it is a valid place too
    if timeline is not None and not timeline.parent.is_dir() and not (
            args.out and timeline.parent.resolve() == Path(args.out).resolve()):
        raise InputError(f"--timeline {timeline}: directory {timeline.parent} does not exist; create it first")
    setup = prepare(args.hardware, args.model, args.scheduler, args.tp, args.pp, args.replicas, knobs,
                    args.calibration)
    out = args.out or f"runs/{Path(setup.system.source_file).stem}-{Path(setup.deployment.model).stem}-" \
                      f"{time.strftime('%Y%m%d-%H%M%S')}"
    # a timeline written into the run's directory belongs to the run (a re-run replaces it)
    extra = (timeline.name,) if timeline is not None and timeline.parent.resolve() == Path(out).resolve() else ()
    check_out_dir(Path(out), OUTPUT_FILES + extra)
    progress = _Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = simulate_setup(setup, args.trace, out=out, keep_frames=False, progress=progress,
                                uncertainty=args.uncertainty, slo=slo, seed=args.seed, extra_outputs=extra)
    finally:
        progress.close()
    if timeline is not None:
        from .metrics.timeline import write_timeline

        write_timeline(result.out_dir / "iterations.csv", timeline)
    if not args.quiet:
        _table(result.summary, result.out_dir)
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from .hardware.loader import catalogue, load_spec, load_system

    if args.specs_command == "list":
        for name, path in catalogue().items():
            spec = load_spec(path)
            print(f"{name:22} {spec.kind:7} {spec.name:26} {path.parent.name}/{path.name}")
    elif args.specs_command == "show":
        spec = load_spec(args.name)
        print(json.dumps(spec.model_dump(), indent=2))
    else:
        for file in args.files:
            system = load_system(file)
            print(f"ok {file}: {system.name} ({system.total_devices} x {system.accelerator.name})")
    return 0


def cmd_models(_: argparse.Namespace) -> int:
    from .models.config import load_model, model_catalogue

    for name in model_catalogue():
        m = load_model(name)
        moe = f"  MoE {m.num_experts} experts top-{m.experts_per_token} in {m.moe_layers} layers" if m.is_moe else ""
        window = f"  sliding window {m.sliding_window}" if m.sliding_window else ""
        print(f"{name:16} {m.total_params() / 1e9:6.2f} B params  {m.num_layers} layers  hidden {m.hidden_size}  "
              f"heads {m.num_heads}/{m.num_kv_heads} kv ({m.attention_kind}){moe}{window}")
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from .workloads.generate import generate, write_jsonl
    from .workloads.trace import TraceIndex

    if args.trace_command == "convert":
        index = TraceIndex.build(args.input, args.format)
        records = ({k: v for k, v in (("id", r.id), ("arrival_s", r.arrival_s), ("input_tokens", r.input_tokens),
                                       ("output_tokens", r.output_tokens), ("prefix_hashes", r.prefix_hashes),
                                       ("prefix_block_tokens", r.prefix_block_tokens if r.prefix_hashes else None),
                                       ("slo_ttft_s", r.slo_ttft_s), ("slo_tpot_s", r.slo_tpot_s))
                    if v is not None} for r in index.requests())
        count = write_jsonl(records, args.output)
        skipped = Counter(index.skipped)
        note = f"; skipped {sum(skipped.values())} rows: {dict(skipped)}" if skipped else ""
        print(f"wrote {count} requests to {args.output}{note}")
    else:
        records = generate(args.requests, args.rate, arrival=args.arrival, cv=args.cv, input=args.input,
                           output=args.output_lengths, seed=args.seed)
        count = write_jsonl(records, args.output)
        print(f"wrote {count} requests to {args.output}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .hardware.loader import load_system
    from .perf.calibration import calibrate

    system = load_system(args.hardware)
    progress = _Progress(enabled=sys.stderr.isatty(), label="fitting")
    try:
        calib = calibrate(system, args.measured, args.device, args.folds, progress, force=args.force)
    finally:
        progress.close()
    calib.save(args.output)
    print(f"wrote {args.output}: {calib.device}, {len(calib.ops)} op groups")
    for (op, dtype), profile in calib.ops.items():
        err = profile.heldout_error_pct
        print(f"  {op:13} {dtype:5} {profile.model.n_rows:6} rows  held-out |error| median {err['median']:.2f} % "
              f"p90 {err['p90']:.2f} %  ({profile.model.method})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .api import check_out_dir
    from .hardware.loader import load_system
    from .perf.calibration import error_table, in_sample, predict_rows
    from .perf.measurements import read_all
    from .perf.profile_use import resolve_calibration
    from .report.validation_plot import plot_predictions

    system = load_system(args.hardware)
    calib = resolve_calibration(system, args.calibration)
    frame = read_all(args.measured, args.device)
    out = Path(args.out or f"runs/validate-{Path(system.source_file).stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    check_out_dir(out, ("predictions.csv", "predicted_vs_measured.png"))
    predicted, source = predict_rows(frame, system, calib)
    frame["predicted_us"] = predicted
    frame["error_pct"] = 100.0 * (predicted - frame["time_us"]) / frame["time_us"]
    # `source` is where each prediction came from; the measurement's own origin moves to measurement_source
    frame = frame.rename(columns={"source": "measurement_source"})
    frame["source"] = source
    # rows the profile was fitted on: their error is in-sample, not a held-out one
    frame["in_sample"] = in_sample(frame, args.measured, calib.profile if calib is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "predictions.csv", index=False)
    which = f"calibration {calib.use}" if calib is not None else "uncalibrated roofline"
    plot_predictions(frame, out / "predicted_vs_measured.png", f"{system.name}: {which}")
    table = error_table(frame)
    print(f"{system.name} vs {frame['device'].iloc[0]} ({which})")
    print(f"{'op':14} {'rows':>7} {'in-sample':>9} {'median |err| %':>15} {'p90 |err| %':>12} {'MAPE %':>8}")
    for row in table.itertuples(index=False):
        print(f"{row.op:14} {row.rows:7d} {row.in_sample:9d} {row.median_pct:15.2f} {row.p90_pct:12.2f} "
              f"{row.mape_pct:8.2f}")
    if frame["in_sample"].any():
        print(f"in-sample: {int(frame['in_sample'].sum())} of {len(frame)} rows come from the files the profile was "
              "fitted on, so their errors are not held out (the profile's held-out errors: `simulate calibrate`)")
    print(f"outputs in {out}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .planning.console import PointProgress, print_outcome
    from .planning.run_plan import run_plan

    progress = PointProgress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        outcome = run_plan(args.plan, args.out, args.executor, args.workers, args.ray_address, progress)
    finally:
        progress.close()
    if not args.quiet:
        print_outcome(outcome)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "specs": cmd_specs, "models": cmd_models, "trace": cmd_trace,
               "calibrate": cmd_calibrate, "validate": cmd_validate, "plan": cmd_plan}[args.command]
    try:
        return handler(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
