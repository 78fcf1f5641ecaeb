"""The `simulate` command: argument parsing and output only (the work is in `api` and the
packages). `main` is the console script's entry point (`simulator.cli:main`); it parses the
arguments, hands them to the subcommand's handler and turns an input error into a message on
stderr and exit code 2.

- `parser.py`: the grammar of every subcommand, with its help text;
- `running.py`: `simulate run` and `simulate trace`;
- `run_summary.py`: what `simulate run` prints once a run is done;
- `progress.py`: the delayed progress bar of the long commands;
- `catalogue.py`: `simulate specs`, `simulate models`, `simulate traces` and `simulate knobs`;
- `output.py`: how results print (`--format table|json|csv`; whole tables off a terminal);
- `calibration.py`: `simulate calibrate` and `simulate validate`;
- `planning.py`: `simulate plan`;
- `showing.py`: `simulate compare` and `simulate show` (and `simulate run --plots`).
"""
from __future__ import annotations

import os
import sys

from ..errors import InputError
from .calibration import cmd_calibrate, cmd_validate
from .catalogue import cmd_knobs, cmd_models, cmd_specs, cmd_traces
from .parser import build_parser
from .planning import cmd_plan
from .running import cmd_run, cmd_trace
from .showing import cmd_compare, cmd_show

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "specs": cmd_specs, "models": cmd_models, "traces": cmd_traces, "trace": cmd_trace,
               "calibrate": cmd_calibrate, "validate": cmd_validate, "plan": cmd_plan,
               "knobs": cmd_knobs, "compare": cmd_compare, "show": cmd_show}[args.command]
    try:
        return handler(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`simulate models | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
