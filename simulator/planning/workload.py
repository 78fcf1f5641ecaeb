"""The plan's workload, held in memory and replayed at any arrival rate.

A capacity search asks "does one replica meet the SLO at R req/s?" for many R, always with
the same requests: only the arrival times change. `Workload.at_rate(R)` rescales them,
arrival_s * (trace_rate / R), keeping the trace's burstiness and its lengths, and hands the
engine an in-memory trace, so no scaled copy is written per point. The workload's
fingerprint (`sha256`, over every field of every request) is part of each point's cache key.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..workloads.generate import generate, write_jsonl
from ..workloads.trace import TraceIndex, TraceRecord, to_record, trace_catalogue
from .plan_file import Plan


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order, the first at 0 s, and what they are."""

    records: tuple[TraceRecord, ...]
    description: str

    @property
    def trace_rate(self) -> float:
        """The workload's own arrival rate: (requests - 1) over the span of arrivals, so
        that evenly spaced arrivals every g seconds have a rate of exactly 1/g."""
        return (len(self.records) - 1) / self.records[-1].arrival_s

    @property
    def mean_output_tokens(self) -> float:
        return float(np.mean([r.output_tokens for r in self.records]))

    @cached_property
    def sha256(self) -> str:
        names = [f.name for f in fields(TraceRecord)]
        text = json.dumps([[getattr(record, name) for name in names] for record in self.records])
        return hashlib.sha256(text.encode()).hexdigest()

    def scaled(self, rate: float) -> list[TraceRecord]:
        """The requests arriving at `rate` req/s on average. Times are rounded to the
        microsecond, as a trace file holds them, so that a point replayed from memory and
        the same point written out (`write`) are the same run."""
        factor = self.trace_rate / rate
        return [replace(r, arrival_s=round(r.arrival_s * factor, 6)) for r in self.records]

    def at_rate(self, rate: float) -> TraceIndex:
        """An in-memory trace of the requests at `rate` req/s, for `api.run_setup`."""
        records = self.scaled(rate)
        arrivals = np.array([r.arrival_s for r in records])
        return TraceIndex(Path(self.description), "memory", len(records), arrivals, None, None, True, Counter(),
                          cached=records)

    def write(self, rate: float, path: Path) -> Path:
        """The requests at `rate` req/s as a contract JSONL file (for a run with outputs)."""
        def fields(r: TraceRecord) -> dict:
            row = {"id": r.id, "arrival_s": r.arrival_s, "input_tokens": r.input_tokens,
                   "output_tokens": r.output_tokens, "slo_ttft_s": r.slo_ttft_s, "slo_tpot_s": r.slo_tpot_s}
            if r.prefix_hashes:
                row.update(prefix_hashes=list(r.prefix_hashes), prefix_block_tokens=r.prefix_block_tokens)
            return {k: v for k, v in row.items() if v is not None}

        write_jsonl(map(fields, self.scaled(rate)), path)
        return path


def load_workload(plan: Plan) -> Workload:
    """Read the plan's trace (any format `simulate run` reads) or generate its synthetic one."""
    spec = plan.spec.workload
    limit = spec.max_requests
    if spec.trace is not None:
        path = Path(plan.relative(spec.trace))
        if not path.is_file():
            path = trace_catalogue().get(spec.trace, path)
        if not path.is_file():
            raise InputError(f"{plan.path}: workload.trace: {spec.trace}: no such file (paths are relative to the "
                             f"plan file) or catalogue trace (known: {', '.join(trace_catalogue())})")
        records = list(itertools.islice(TraceIndex.build(path).requests(), limit))
        description = f"{path.name}" + (f", first {len(records)} requests" if limit else "")
    else:
        gen = spec.generate
        assert gen is not None  # the schema requires a trace or a generator
        try:
            count = gen.requests if limit is None else min(limit, gen.requests)
            rows = generate(count, gen.rate, arrival=gen.arrival, cv=gen.cv, input=gen.input, output=gen.output,
                            seed=gen.seed)
            records = [to_record(row, "generated", i + 1) for i, row in enumerate(rows)]
        except InputError as exc:  # generate's messages start with the argument's name
            field, _, reason = str(exc).partition(": ")
            field = {"n": "requests", "input_tokens": "input", "output_tokens": "output"}.get(field, field)
            raise InputError(f"{plan.path}: workload.generate.{field}: {reason}") from None
        description = (f"generated: {len(records)} requests, {gen.arrival} arrivals"
                       + (f" (cv {gen.cv:g})" if gen.arrival == "gamma" else "")
                       + f", input {gen.input}, output {gen.output}, seed {gen.seed}")
    if len(records) < 2 or records[-1].arrival_s <= records[0].arrival_s:
        raise InputError(f"{plan.path}: workload: {description}: needs at least 2 requests with distinct arrival "
                         "times, to be replayed at other rates")
    start = records[0].arrival_s
    return Workload(tuple(replace(r, arrival_s=r.arrival_s - start) for r in records), description)
