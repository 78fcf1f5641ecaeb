"""The capacity-planning command: `simulate plan` runs a plan file's search for the cheapest
deployment that meets an SLO at a target load (resuming from the output directory's cache)
and prints the outcome.

Only argument handling and output are here; the search, its executors and its console
output are `planning`'s.
"""
from __future__ import annotations

import argparse
import sys


def cmd_plan(args: argparse.Namespace) -> int:
    from ..planning.console import PointProgress, print_outcome
    from ..planning.run_plan import run_plan

    progress = PointProgress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        outcome = run_plan(args.plan, args.out, args.executor, args.workers, args.ray_address, progress,
                           quiet=args.quiet)
    finally:
        progress.close()
    if not args.quiet:
        print_outcome(outcome, args.format)
    return 0
