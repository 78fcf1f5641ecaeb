"""Seeded synthetic traces: arrival process plus input/output length distributions.

`generate` streams records in the trace contract's fields, in arrival order, drawing the
random numbers in fixed-size numpy chunks: a million requests take about a second and a
few megabytes, and the same arguments and seed always give the same trace.

Arrivals: "poisson" (exponential gaps at `rate` per second) or "gamma" (gamma gaps with the
same mean 1/rate and coefficient of variation `cv`, shape 1/cv^2: cv > 1 is burstier than
Poisson, cv < 1 more regular). The first request arrives at 0 s.

Lengths, as strings (the CLI's syntax) parsed by `parse_length`:
  fixed:N                  always N tokens
  uniform:LO:HI            integers LO..HI inclusive
  lognormal:MEAN:SIGMA     log-normal with mean MEAN tokens and SIGMA the standard deviation
                           of the underlying normal; rounded to whole tokens, at least 1
  empirical:PATH           drawn (with replacement) from a trace file's input_tokens for the
                           input length and output_tokens for the output length (PATH may
                           be a shipped trace's catalogue name, e.g. empirical:azure-conv-2023)
"""
from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.errors import InputError
from simulator.workloads.formats import iter_records
from simulator.workloads.trace import resolve_trace

CHUNK = 65536  # requests drawn per numpy call: large enough to be fast, small enough to stream
ARRIVALS = ("poisson", "gamma")


@dataclass(frozen=True, eq=False)  # eq would compare numpy arrays, which has no single truth
class LengthSpec:
    """A token-length distribution; `draw` returns `n` lengths >= 1 as int64.

    `kind` is "fixed", "uniform", "lognormal" or "empirical"; `values` holds the parameters
    (N / LO, HI / MEAN, SIGMA) or, for "empirical", the observed lengths to draw from.
    `text` is the spec as written.
    """

    kind: str
    values: tuple | np.ndarray
    text: str

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.values[0], dtype=np.int64)
        if self.kind == "uniform":
            low, high = self.values
            return rng.integers(low, high, size=n, endpoint=True, dtype=np.int64)
        if self.kind == "lognormal":
            mean, sigma = self.values
            # E[exp(N(mu, sigma^2))] = exp(mu + sigma^2 / 2), so this mu gives the asked mean.
            mu = math.log(mean) - sigma * sigma / 2
            lengths = np.rint(rng.lognormal(mu, sigma, size=n))
            return np.maximum(lengths, 1).astype(np.int64)
        return rng.choice(self.values, size=n)


def _spec_error(field: str, text: str, why: str) -> InputError:
    return InputError(
        f'{field}: "{text}" {why} (expected fixed:N, uniform:LO:HI, lognormal:MEAN:SIGMA '
        "or empirical:PATH)"
    )


def _parse_int(part: str, field: str, text: str, name: str) -> int:
    try:
        value = int(part)
    except ValueError:
        raise _spec_error(field, text, f"has {name} {part!r}, not an integer") from None
    if value < 1:
        raise _spec_error(field, text, f"has {name} {value}; token counts must be >= 1")
    return value


def _parse_float(part: str, field: str, text: str, name: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise _spec_error(field, text, f"has {name} {part!r}, not a number") from None
    if not math.isfinite(value):
        raise _spec_error(field, text, f"has {name} {part}, not a finite number")
    return value


def _empirical_lengths(path: str, field: str, text: str) -> np.ndarray:
    """All of a trace file's values of `field` ("input_tokens" or "output_tokens")."""
    if not path:
        raise _spec_error(field, text, "names no trace file")
    lengths = np.fromiter((record[field] for _, record in iter_records(resolve_trace(path))), dtype=np.int64)
    if lengths.size == 0:
        raise _spec_error(field, text, "names a trace with no requests")
    return lengths


def parse_length(text: str | LengthSpec, field: str) -> LengthSpec:
    """Parse a length spec string for `field` ("input_tokens" or "output_tokens").

    `field` names the spec in error messages and picks the column an empirical spec draws
    from. An already parsed LengthSpec is returned as is.
    """
    if isinstance(text, LengthSpec):
        return text
    kind, _, rest = text.strip().partition(":")
    if kind == "empirical":
        # Everything after the first colon is the path, which may itself contain colons.
        return LengthSpec(kind, _empirical_lengths(rest, field, text), text)
    parts = rest.split(":") if rest else []
    if kind == "fixed":
        if len(parts) != 1:
            raise _spec_error(field, text, "needs one value, fixed:N")
        return LengthSpec(kind, (_parse_int(parts[0], field, text, "N"),), text)
    if kind == "uniform":
        if len(parts) != 2:
            raise _spec_error(field, text, "needs two values, uniform:LO:HI")
        low = _parse_int(parts[0], field, text, "LO")
        high = _parse_int(parts[1], field, text, "HI")
        if low > high:
            raise _spec_error(field, text, f"has LO {low} > HI {high}")
        return LengthSpec(kind, (low, high), text)
    if kind == "lognormal":
        if len(parts) != 2:
            raise _spec_error(field, text, "needs two values, lognormal:MEAN:SIGMA")
        mean = _parse_float(parts[0], field, text, "MEAN")
        sigma = _parse_float(parts[1], field, text, "SIGMA")
        if mean < 1:
            raise _spec_error(field, text, f"has MEAN {parts[0]}; the mean length must be >= 1 token")
        if sigma <= 0:
            raise _spec_error(field, text, f"has SIGMA {parts[1]}; it must be > 0 (use fixed:N for no spread)")
        return LengthSpec(kind, (mean, sigma), text)
    raise _spec_error(field, text, f"has unknown kind {kind!r}")


def _gaps(rng: np.random.Generator, n: int, rate: float, arrival: str, cv: float) -> np.ndarray:
    """n inter-arrival gaps in seconds, mean 1/rate."""
    if arrival == "poisson":
        return rng.exponential(1.0 / rate, size=n)
    shape = 1.0 / (cv * cv)
    # Mean of Gamma(shape, scale) is shape * scale; choose scale so it is 1/rate.
    return rng.gamma(shape, 1.0 / (rate * shape), size=n)


def generate(
    n: int,
    rate: float,
    arrival: str = "poisson",
    cv: float = 1.0,
    input: str | LengthSpec = "fixed:512",
    output: str | LengthSpec = "fixed:128",
    seed: int = 0,
) -> Iterator[dict]:
    """Stream `n` synthetic requests: {"id", "arrival_s", "input_tokens", "output_tokens"}.

    `rate` is the mean arrival rate in requests per second. `cv` applies to gamma arrivals
    only (Poisson arrivals have cv 1 by definition). Arguments are checked here, before the
    first record is asked for, so a bad option fails at once.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise InputError(f"n: {n!r} is not a request count (expected an integer >= 0)")
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
        raise InputError(f"rate: {rate!r} is not a rate (expected requests per second > 0)")
    if arrival not in ARRIVALS:
        raise InputError(f'arrival: "{arrival}" is unknown (expected {" or ".join(ARRIVALS)})')
    if not (isinstance(cv, (int, float)) and math.isfinite(cv) and cv > 0):
        raise InputError(f"cv: {cv!r} is not a coefficient of variation (expected a number > 0)")
    if arrival == "poisson" and cv != 1.0:
        raise InputError(f"cv: {cv} needs arrival gamma (Poisson arrivals always have cv 1)")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed: {seed!r} is not a seed (expected an integer >= 0)")
    input_spec = parse_length(input, "input_tokens")
    output_spec = parse_length(output, "output_tokens")
    return _stream(int(n), float(rate), arrival, float(cv), input_spec, output_spec, int(seed))


def _stream(
    n: int, rate: float, arrival: str, cv: float, input_spec: LengthSpec, output_spec: LengthSpec, seed: int
) -> Iterator[dict]:
    rng = np.random.default_rng(seed)
    clock_s = 0.0
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        gaps_s = _gaps(rng, size, rate, arrival, cv)
        if start == 0:
            gaps_s[0] = 0.0  # the first request opens the trace at 0 s
        arrivals_s = clock_s + np.cumsum(gaps_s)
        clock_s = float(arrivals_s[-1])
        inputs = input_spec.draw(rng, size)
        outputs = output_spec.draw(rng, size)
        # tolist() turns the chunk into Python numbers in one call, much faster per request
        # than indexing numpy arrays, and gives JSON-serialisable ints and floats.
        for offset, (arrival_s, input_tokens, output_tokens) in enumerate(
            zip(arrivals_s.tolist(), inputs.tolist(), outputs.tolist(), strict=True)
        ):
            yield {
                "id": start + offset,
                "arrival_s": arrival_s,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }


def write_jsonl(records: Iterable[dict], path: str | Path) -> int:
    """Write records as compact JSONL, atomically; return how many were written.

    The lines go to a temporary file in the target's directory, which then replaces the
    target in one step, so a reader never sees half a trace and a failure leaves any old
    file intact. `arrival_s` is rounded to microseconds: finer digits carry no information
    and would bloat the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    # One encoder for all lines: json.dumps with options builds a new one per call, which
    # costs more than the encoding itself.
    encode = json.JSONEncoder(separators=(",", ":")).encode
    count = 0
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            for record in records:
                if "arrival_s" in record:
                    record = {**record, "arrival_s": round(record["arrival_s"], 6)}
                stream.write(encode(record) + "\n")
                count += 1
        # mkstemp makes the file private (0600); a trace is ordinary data, readable by all.
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, path)
    except BaseException:
        os.unlink(temp_name)
        raise
    return count
