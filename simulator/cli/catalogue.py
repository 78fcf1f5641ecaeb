"""The commands that show what ships with the simulator: `simulate specs` (list the hardware
catalogue, show one spec resolved in SI units, check spec files), `simulate models` (list
the model catalogue with each model's shape), `simulate traces` (list the shipped traces, whose
catalogue names work as TRACE from any folder) and `simulate knobs` (list the deployment knobs).
The lists print as aligned lines, or `--format json|csv` (output.py)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from .output import print_csv, print_json, print_table

SPEC_COLUMNS = ("name", "kind", "device", "file")
MODEL_COLUMNS = ("name", "params_b", "layers", "hidden_size", "heads", "kv_heads", "attention", "experts",
                 "experts_per_token", "moe_layers", "sliding_window", "context", "weights", "source")
KNOB_COLUMNS = ("knob", "default", "meaning", "mirrors")
TRACE_COLUMNS = ("name", "format", "requests", "span_s", "mean_input_tokens", "mean_output_tokens", "file")


def _print_rows(fmt: str, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """json: a list of objects; csv: a header and one line per row."""
    if fmt == "json":
        print_json(rows)
    else:
        print_csv(columns, ([row[c] for c in columns] for row in rows))


def cmd_specs(args: argparse.Namespace) -> int:
    from ..hardware.loader import catalogue, load_spec

    if args.specs_command == "list":
        rows = [{"name": name, "kind": spec.kind, "device": spec.name, "file": f"{path.parent.name}/{path.name}"}
                for name, path in catalogue().items() for spec in (load_spec(path),)]
        if args.format != "table":
            _print_rows(args.format, SPEC_COLUMNS, rows)
            return 0
        for row in rows:
            print(f"{row['name']:22} {row['kind']:7} {row['device']:26} {row['file']}")
    elif args.specs_command == "show":
        spec = load_spec(args.name)
        print(json.dumps(spec.model_dump(), indent=2))
    else:
        for file in args.files:
            system = check_spec(file)
            print(f"ok {file}: {system.name} ({system.total_devices} x {system.accelerator.name})")
    return 0


def check_spec(file: str):
    """Everything a run reads from a spec before it simulates, so `specs check` fails where a
    run would: the spec and what it extends, its `deployment:` knobs, and the calibration
    profile it names (or the shipped one it would use)."""
    from ..deployment import build_deployment
    from ..hardware.loader import load_system
    from ..perf.profile_use import resolve_calibration

    system = load_system(file)
    build_deployment(system.deployment, yaml_file=system.source_file)
    resolve_calibration(system, None)
    return system


def cmd_models(args: argparse.Namespace) -> int:
    from ..models.config import catalogue_sources, load_model, model_catalogue

    models = {name: load_model(name) for name in model_catalogue()}
    sources = catalogue_sources()
    if args.format != "table":
        _print_rows(args.format, MODEL_COLUMNS, [
            {"name": name, "params_b": m.total_params() / 1e9, "layers": m.num_layers, "hidden_size": m.hidden_size,
             "heads": m.num_heads, "kv_heads": m.num_kv_heads, "attention": m.attention_kind,
             "experts": m.num_experts if m.is_moe else None, "experts_per_token": m.experts_per_token if m.is_moe
             else None, "moe_layers": m.moe_layers if m.is_moe else None, "sliding_window": m.sliding_window or None,
             "context": m.max_context, "weights": m.checkpoint_weight_dtype, "source": sources[name]}
            for name, m in models.items()])
        return 0
    for name, m in models.items():
        moe = f"  MoE {m.num_experts} experts top-{m.experts_per_token} in {m.moe_layers} layers" if m.is_moe else ""
        window = f"  sliding window {m.sliding_window}" if m.sliding_window else ""
        weights = f"  {m.checkpoint_weight_dtype} weights" if m.checkpoint_weight_dtype != "bf16" else ""
        print(f"{name:16} {m.total_params() / 1e9:6.2f} B params  {m.num_layers} layers  hidden {m.hidden_size}  "
              f"heads {m.num_heads}/{m.num_kv_heads} kv ({m.attention_kind}){moe}{window}  context {m.max_context:,}"
              f"{weights}  {sources[name]}")
    return 0


def cmd_traces(args: argparse.Namespace) -> int:
    """The shipped traces by catalogue name, with what a user picks one by: its size, the time
    its arrivals span and its mean prompt and output lengths."""
    from ..paths import TRACES_DIR, shown_path
    from ..workloads.trace import TraceIndex, trace_catalogue

    rows = []
    for name, path in trace_catalogue().items():
        index = TraceIndex.build(path)
        inputs = outputs = 0
        for request in index.requests():
            inputs += request.input_tokens
            outputs += request.output_tokens
        rows.append({"name": name, "format": index.fmt, "requests": index.count,
                     "span_s": float(index.arrivals_s.max() - index.arrivals_s.min()),
                     "mean_input_tokens": inputs / index.count, "mean_output_tokens": outputs / index.count,
                     "file": shown_path(path)})
    if args.format != "table":
        _print_rows(args.format, TRACE_COLUMNS, rows)
        return 0
    for row in rows:
        print(f"{row['name']:26} {row['format']:8} {row['requests']:7,} requests over {row['span_s']:7.1f} s  "
              f"mean {row['mean_input_tokens']:5.0f} in {row['mean_output_tokens']:4.0f} out tokens  {row['file']}")
    print(f"origins and licences: {TRACES_DIR / 'README.md'}")
    return 0


def cmd_knobs(args: argparse.Namespace) -> int:
    """Every `--set` knob, from the one place they are declared (deployment.py: `knob`)."""
    from rich.table import Table

    from ..deployment import knob_list

    rows = knob_list()
    if args.format != "table":
        _print_rows(args.format, KNOB_COLUMNS, rows)
        return 0
    table = Table(title="deployment knobs (--set KEY=VALUE, a hardware YAML's deployment: block, a plan's knobs:)",
                  title_justify="left")
    longest = max(len(row["knob"]) for row in rows)
    for column in KNOB_COLUMNS:  # on a narrow terminal, names stay whole and long words fold (no "…")
        table.add_column(column, overflow="fold", no_wrap=column == "knob",
                         min_width=longest if column == "knob" else None)
    for row in rows:
        table.add_row(row["knob"], _shown(row["default"]), row["meaning"], row["mirrors"])
    print_table(table)
    return 0


def _shown(default: Any) -> str:
    """A default as it is written in YAML and --set (true, 0.9, fp8); unset for None."""
    if default is None:
        return "unset"
    return json.dumps(default) if isinstance(default, (bool, list)) else str(default)
