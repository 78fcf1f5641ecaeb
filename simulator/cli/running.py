"""The commands that simulate and the traces they replay: `simulate run` (replay a trace on a
deployment, write the run's outputs, print its summary) and `simulate trace` (convert a
published trace to the contract JSONL, or generate a seeded synthetic one).

Only argument handling and output are here; the simulation is `api`'s, the traces are
`workloads`'.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from .output import print_csv
from .progress import ProgressBar
from .run_summary import LATENCY_COLUMNS, latency_rows, print_run_summary


def cmd_run(args: argparse.Namespace) -> int:
    from ..api import OUTPUT_FILES, check_out_dir, prepare, simulate_setup
    from ..deployment import parse_set
    from ..metrics.slo import parse_slo

    given = parse_set(args.set)
    knobs = {**_vllm_knobs(args, given), **given}
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
    progress = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = simulate_setup(setup, args.trace, out=out, keep_frames=False, progress=progress,
                                uncertainty=args.uncertainty, slo=slo, seed=args.seed, extra_outputs=extra)
    finally:
        progress.close()
    if timeline is not None:
        from ..metrics.timeline import write_timeline

        assert result.out_dir is not None  # the run was given its directory (`out`)
        write_timeline(result.out_dir / "iterations.csv", timeline)
    if args.plots:  # the figure of `simulate show`, into the run's directory
        from ..report.run_data import load_run
        from .showing import show_run

        assert result.out_dir is not None  # the run was given its directory (`out`)
        for path in show_run(load_run(result.out_dir)):
            if not args.quiet:  # on stderr when stdout carries --format json or csv
                print(f"wrote {path}", file=sys.stdout if getattr(args, "format", "table") == "table" else sys.stderr)
    if args.quiet:
        return 0
    assert result.out_dir is not None  # the run was given its directory (`out`)
    if args.format == "json":  # summary.json as written, byte for byte
        sys.stdout.write((result.out_dir / "summary.json").read_text())
    elif args.format == "csv":
        print_csv(LATENCY_COLUMNS, latency_rows(result.summary))
    else:
        print_run_summary(result.summary, result.out_dir)
    return 0


def _vllm_knobs(args: argparse.Namespace, set_knobs: dict[str, Any]) -> dict[str, Any]:
    """The knobs of `--vllm`'s command line; one also given by a flag or by --set (`set_knobs`)
    is an error (which of the two the user meant cannot be told), and the flags a run does not
    model are said on stderr, so nothing given is dropped unseen."""
    from ..vllm_args import knobs_from_vllm

    if args.vllm is None:
        return {}
    knobs, ignored = knobs_from_vllm(args.vllm)
    given = {**{key: f"--{key}" for key in ("model", "scheduler", "tp", "pp", "replicas")
                if getattr(args, key) is not None},
             **{key: f"--set {key}" for key in set_knobs}}
    for key in knobs:
        if key in given:
            raise InputError(f"--vllm: sets {key}, and so does {given[key]}; give it once")
    if ignored:
        print(f"--vllm: not simulated (no effect on the timing): {', '.join(ignored)}", file=sys.stderr)
    return knobs


def cmd_trace(args: argparse.Namespace) -> int:
    from ..workloads.generate import generate, write_jsonl
    from ..workloads.trace import TraceIndex

    records: Iterable[dict[str, Any]]
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
