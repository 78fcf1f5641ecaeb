"""Replay real vLLM serving runs and compare the simulator with what the engine measured.

    python -m validation.e2e                      # every run in validation/data/e2e/
    python -m validation.e2e RUNS_DIR --out DIR   # another folder of runs; figures and CSV in DIR

A run is a folder holding what a real vLLM server logged while it served a trace:
- `vllm_requests.jsonl`: per request the prompt and output token counts and the engine's own
  timestamps (`queued_ts`: the request entered the scheduler's waiting queue;
  `scheduled_ts`, `first_token_ts`, `last_token_ts`), all on one monotonic clock;
- `vllm_meta.json`: the engine arguments and versions (and, when logged, the KV-cache size,
  which the replay then uses as `num_gpu_blocks_override`);
- `vllm_timeseries.csv`: once a second, the running and waiting request counts;
- `run.yaml` (ours, optional): the hardware and model catalogue names the run maps to, its
  role (`development` runs may guide the model; `held-out` runs only judge it) and its source.
  Without it the model is the catalogue entry whose `source` is the run's Hugging Face id (else
  the folder's `config.json`), and the hardware is `--hardware`, else the catalogue spec named
  like the folder's first part (`rtxpro6000-vllm-...` -> `rtx-pro-6000`, or
  `rtx-pro-6000-x2` for a TP 2 run); what was inferred is printed with the results.

The trace replayed is the requests as the engine queued them (arrival = `queued_ts` from the
first one), so front-end time before queueing is in neither side. Latencies are measured as the
engine measures them: TTFT = first_token_ts - queued_ts, E2E = last_token_ts - queued_ts, TPOT =
(last_token_ts - first_token_ts) / (output tokens - 1), makespan = last token of the run - first
queued. The simulation uses the run's engine arguments under vLLM's names and nothing else.

Prints, per run, simulated against real TTFT, TPOT and E2E (mean and p90) and makespan, with the
relative error and the development-set targets; with --out also writes `comparison.csv` and one
figure per run (latency CDFs, running and waiting requests over time).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from simulator import simulate
from simulator.hardware.loader import catalogue as hardware_catalogue
from simulator.models.config import catalogue_name

RUNS = Path(__file__).resolve().parent / "data" / "e2e"
# Targets of the development set: relative error of the mean (and of the makespan).
TARGETS = {"ttft_s": 0.05, "tpot_s": 0.03, "e2e_s": 0.03, "makespan_s": 0.03}
METRICS = ("ttft_s", "tpot_s", "e2e_s")
# vLLM engine arguments that are knobs of the same name here; others are read below.
SAME_NAME = ("max_num_seqs", "max_num_batched_tokens", "max_model_len", "gpu_memory_utilization", "block_size",
             "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager")
DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16", "auto": None}


@dataclass
class Run:
    name: str
    folder: Path
    hardware: str
    model: str
    role: str
    knobs: dict[str, Any]
    requests: pd.DataFrame  # the engine's per-request log, times from the first queued request
    timeseries: pd.DataFrame | None
    inferred: bool = False  # no run.yaml: hardware and model inferred (infer_spec)

    @property
    def trace(self) -> pd.DataFrame:
        r = self.requests
        return pd.DataFrame({"id": r["request_id"], "arrival_s": r["queued_ts"].round(6),
                             "input_tokens": r["input_toks"], "output_tokens": r["output_toks"]})


def engine_knobs(meta: dict[str, Any]) -> dict[str, Any]:
    """The run's vLLM engine arguments as simulator knobs (vLLM's names are the knobs' names)."""
    kwargs = meta.get("engine_kwargs", {})
    if kwargs.get("data_parallel_size", 1) != 1 or kwargs.get("pipeline_parallel_size", 1) != 1:
        raise ValueError("data or pipeline parallel runs are not replayed yet")
    knobs = {key: kwargs[key] for key in SAME_NAME if kwargs.get(key) is not None}
    knobs["tp"] = int(kwargs.get("tensor_parallel_size", 1))
    knobs["api_server"] = False  # the trace's arrivals are the engine's own queued_ts
    dtype = DTYPES.get(str(kwargs.get("dtype", "auto")))
    if dtype:
        knobs["weight_dtype"] = dtype
    kv = str(kwargs.get("kv_cache_dtype", "auto"))
    if kv != "auto":
        knobs["kv_cache_dtype"] = kv
    # The KV cache the engine logged, where it did: the replay then judges the timing model on
    # the run's own memory (the memory plan is checked against such logs on its own)
    logged = (meta.get("kv_cache") or {}).get("num_gpu_blocks")
    if logged:
        knobs["num_gpu_blocks_override"] = int(logged)
    return knobs


def _squeezed(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def infer_spec(folder: Path, meta: dict[str, Any], hardware: str | None) -> dict[str, Any]:
    """What run.yaml would say of a run folder without one (see the module docstring)."""
    model = catalogue_name(str(meta.get("model")))
    if model is None:
        if not (folder / "config.json").exists():
            raise ValueError(f"{folder}: no run.yaml, no catalogue model with source {meta.get('model')!r} "
                             "and no config.json")
        model = str(folder / "config.json")
    if hardware is None:
        tp = int(meta.get("engine_kwargs", {}).get("tensor_parallel_size", 1))
        device = _squeezed(folder.name.split("-vllm")[0])
        wanted = {device} if tp == 1 else {device + f"x{tp}"}
        names = [name for name in hardware_catalogue() if _squeezed(name) in wanted]
        if len(names) != 1:
            raise ValueError(f"{folder}: no run.yaml, and its name names no one catalogue spec for TP {tp}; "
                             "pass --hardware")
        hardware = names[0]
    return {"hardware": hardware, "model": model, "inferred": True}


def load_run(folder: Path, hardware: str | None = None) -> Run:
    meta = json.loads((folder / "vllm_meta.json").read_text())
    given = folder / "run.yaml"
    spec = yaml.safe_load(given.read_text()) if given.exists() else infer_spec(folder, meta, hardware)
    requests = pd.read_json(folder / "vllm_requests.jsonl", lines=True, dtype=False)
    start = requests["queued_ts"].min()
    for column in ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts"):
        requests[column] = requests[column] - start
    series = folder / "vllm_timeseries.csv"
    return Run(folder.name, folder, hardware or spec["hardware"], spec["model"], spec.get("role", "development"),
               engine_knobs(meta), requests.sort_values("queued_ts", kind="stable").reset_index(drop=True),
               pd.read_csv(series) if series.exists() else None, spec.get("inferred", False))


def real_metrics(run: Run) -> dict[str, Any]:
    r = run.requests
    per_request = {"ttft_s": r["first_token_ts"] - r["queued_ts"], "e2e_s": r["last_token_ts"] - r["queued_ts"],
                   "tpot_s": ((r["last_token_ts"] - r["first_token_ts"]) / (r["output_toks"] - 1))[r["output_toks"] > 1]}
    return {"per_request": per_request, "makespan_s": float(r["last_token_ts"].max())}


def simulate_run(run: Run):
    """The simulation of `run` (summary and per-request frame)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        run.trace.to_json(trace, orient="records", lines=True)
        return simulate(run.hardware, trace, model=run.model, knobs=dict(run.knobs))


def compare(run: Run, result) -> list[dict[str, Any]]:
    """One row per metric: real, simulated, relative error, the target and whether it holds."""
    real = real_metrics(run)
    sim = result.requests[result.requests["status"] == "completed"]
    rows = []
    for metric in METRICS:
        got, want = sim[metric].dropna(), real["per_request"][metric]
        for stat, fn in (("mean", np.mean), ("p90", lambda x: np.percentile(x, 90))):
            rows.append(_row(run, metric, stat, float(fn(want)), float(fn(got))))
    rows.append(_row(run, "makespan_s", "", real["makespan_s"], float(result.summary["makespan_s"])))
    return rows


def _row(run: Run, metric: str, stat: str, real: float, sim: float) -> dict[str, Any]:
    error = sim / real - 1.0
    target = TARGETS.get(metric) if stat in ("mean", "") else None
    return {"run": run.name, "role": run.role, "metric": metric, "stat": stat or "value", "real": real, "sim": sim,
            "error_pct": 100 * error, "target_pct": None if target is None else 100 * target,
            "met": None if target is None else abs(error) <= target}


def _is_run(folder: Path) -> bool:
    return (folder / "vllm_meta.json").exists() and (folder / "vllm_requests.jsonl").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="?", default=str(RUNS), help="a folder of runs, or one run's folder")
    parser.add_argument("--out", help="write comparison.csv and one figure per run here")
    parser.add_argument("--hardware", help="catalogue spec the runs ran on (default: run.yaml's, else inferred)")
    args = parser.parse_args(argv)
    root = Path(args.runs)
    folders = [root] if _is_run(root) else sorted(p for p in root.iterdir() if _is_run(p)) if root.is_dir() else []
    if not folders:
        print(f"error: {root}: no run folders (each needs vllm_meta.json and vllm_requests.jsonl)", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in folders:
        try:
            run = load_run(folder, args.hardware)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if run.inferred:
            print(f"{run.name}: hardware {run.hardware}, model {run.model} (inferred: no run.yaml)")
        result = simulate_run(run)
        rows += compare(run, result)
        if out is not None:
            from .e2e_plot import plot_run

            plot_run(run, real_metrics(run), result.requests, out / f"{run.name}.png")
    table = pd.DataFrame(rows)
    _print(table)
    if out is not None:
        table.to_csv(out / "comparison.csv", index=False)
    return 0


def _print(table: pd.DataFrame) -> None:
    for (name, role), rows in table.groupby(["run", "role"], sort=False):
        print(f"{name} ({role})")
        for r in rows.itertuples():
            label = f"{r.metric} {r.stat}" if r.stat != "value" else r.metric
            verdict = "" if r.met is None else (" ok" if r.met else f" MISSED (target ±{r.target_pct:.0f} %)")
            print(f"  {label:<16} real {r.real:10.4f}  sim {r.sim:10.4f}  {r.error_pct:+7.1f} %{verdict}")


if __name__ == "__main__":
    sys.exit(main())
