"""The grammar of the `simulate` command: every subcommand, its arguments and their help text.

Kept apart from what the commands do, so the whole surface a user types against reads in one
place. `simulate run --help` lists the registered scheduling policies, imported only when that
help is shown (`_RunHelp`), so no other command pays for importing them at start-up.
"""
from __future__ import annotations

import argparse

from .. import __version__


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


SCHEDULER_HELP = "serving policy (default vllm)"


def _add_format(parser: argparse.ArgumentParser, json_is: str) -> None:
    """`--format table|json|csv` (simulator/cli/output.py)."""
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table",
                        help=f"table (default; whole, without truncation, when stdout is not a terminal), json ({json_is}) "
                             "or csv (the table, unrounded)")


class _RunHelp(argparse.HelpFormatter):
    """`simulate run --help` lists the registered scheduling policies. They are imported only
    when help is shown: importing every policy takes most of a second, which every other
    command would otherwise pay at start-up."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help is SCHEDULER_HELP:
            from ..schedulers.base import REGISTRY, get_scheduler

            get_scheduler("vllm")  # importing the policies registers them
            return f"serving policy, one of: {', '.join(sorted(REGISTRY))} (default vllm)"
        return action.help


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate", description="Simulate LLM serving on hardware described in YAML.")
    parser.add_argument("--version", action="version", version=f"simulate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="replay a request trace on a deployment and report latency, throughput, cost",
                         formatter_class=_RunHelp)
    run.add_argument("hardware", help="hardware YAML path or catalogue name (see `simulate specs list`)")
    run.add_argument("trace", help="trace: contract JSONL, Azure LLM inference CSV, Mooncake JSONL or BurstGPT CSV; a "
                                   "path or a shipped trace's catalogue name (see `simulate traces`)")
    run.add_argument("--model", help="catalogue name (workloads/models/) or its Hugging Face id, path to a "
                     "config.json or a checkpoint folder holding one")
    run.add_argument("--scheduler", help=SCHEDULER_HELP)
    run.add_argument("--tp", type=_positive, help="tensor-parallel degree")
    run.add_argument("--pp", type=_positive, help="pipeline-parallel degree")
    run.add_argument("--replicas", type=_positive, help="model replicas behind the router")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="deployment knob, e.g. max_num_seqs=256 (repeatable)")
    run.add_argument("--vllm", metavar="'vllm serve MODEL FLAGS'",
                     help="the knobs of a vllm serve command line, e.g. \"vllm serve meta-llama/Llama-3.1-8B-Instruct "
                          "-tp 2 --max-num-seqs 128\" (flags it does not model are listed back)")
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
    run.add_argument("--plots", action="store_true",
                     help="also draw the run's figure into its directory (plots.png, as `simulate show`)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    _add_format(run, "summary.json's content")

    specs = sub.add_parser("specs", help="list, show or check hardware specs")
    specs_sub = specs.add_subparsers(dest="specs_command", required=True)
    _add_format(specs_sub.add_parser("list", help="the shipped catalogue"), "one object per spec")
    show = specs_sub.add_parser("show", help="one spec, resolved, in SI units")
    show.add_argument("name")
    check = specs_sub.add_parser("check", help="validate spec files")
    check.add_argument("files", nargs="+")

    _add_format(sub.add_parser("models", help="list the shipped model catalogue"), "one object per model")
    _add_format(sub.add_parser("traces", help="list the shipped traces (their catalogue names work as TRACE from any "
                                              "folder)"), "one object per trace")
    _add_format(sub.add_parser("knobs", help="list the deployment knobs (--set KEY=VALUE): default, meaning and "
                                             "the engine option each mirrors"), "one object per knob")

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
    convert.add_argument("--format", choices=("azure", "mooncake", "burstgpt", "jsonl"),
                         help="input format (default: detect)")
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
    plan.add_argument("--quiet", action="store_true", help="no progress bar, no table, no Ray start-up lines")
    _add_format(plan, "one object per candidate, as the table's rows")

    compare = sub.add_parser("compare", help="run summaries side by side, the differences from the first run, and "
                                             "a figure of their latency CDFs and throughput")
    compare.add_argument("runs", nargs="+", metavar="RUN", help="run folders (`simulate run --out`); the first is "
                                                                "the baseline")
    compare.add_argument("--out", metavar="FILE.png", help="where the figure goes: a PNG file or an existing folder "
                                                           "(default: beside the first run, compare-A-vs-B.png)")
    _add_format(compare, "the runs, then one object per metric with every run's value and the differences")
    show_run = sub.add_parser("show", help="draw a run's latency CDFs, queue and KV cache over time, and step "
                                           "time by batch size into RUN/plots.png")
    show_run.add_argument("run", metavar="RUN", help="run folder (`simulate run --out`)")
    return parser
