"""Service-level objectives: the `--slo` spec, the per-request verdict and the summary block.

The definition is DistServe's (Zhong et al., OSDI 2024): a request meets the SLO when it
completed with TTFT <= the TTFT target, TPOT <= the TPOT target and (here also) E2E <= the
E2E target, each condition applying only when its target is set; the run meets the SLO
when the share of requests that meet it (the attainment) is at least the required
attainment; goodput is the rate of requests that meet it.

`--slo` items (space- or comma-separated, the flag repeatable):
- `ttft_p90=0.5`: TTFT target 0.5 s, and at least 90 % of requests must meet the SLO;
  the same for `tpot` and `e2e`. The percentile may have decimals (`e2e_p99.9=20`).
- `ttft=0.5`: the target alone; the required attainment then comes from the other items.
- `attainment=0.95`: the required attainment, overriding every percentile.
With several percentiles the strictest (largest) is required, since one attainment is
judged over the joint condition; with none and no `attainment=`, 0.9 (DistServe's usual
goal). A trace's per-request `slo_ttft_s`/`slo_tpot_s` override the targets for their
request. TBT has no per-request target: TPOT is a request's mean gap between tokens.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from ..errors import InputError

DEFAULT_ATTAINMENT = 0.9
METRICS = ("ttft", "tpot", "e2e")
_ITEM = re.compile(r"(?P<metric>[a-z0-9]+)(?:_p(?P<pct>\d+(?:\.\d+)?))?")
EXAMPLE = "e.g. --slo ttft_p90=0.5 tpot_p90=0.05"


@dataclass(frozen=True)
class SloSpec:
    """Targets in seconds (None: not judged) and the share of requests that must meet them."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    attainment: float = DEFAULT_ATTAINMENT


NO_TARGETS = SloSpec()  # stands in for "no --slo": every condition passes unless the trace sets a target


def parse_slo(items: Iterable[str]) -> SloSpec | None:
    """`--slo` items as an SloSpec (None when there are none); InputError names a bad item."""
    tokens = [t for item in items for t in re.split(r"[,\s]+", item.strip()) if t]
    if not tokens:
        return None
    targets: dict[str, float] = {}
    percentiles: list[float] = []
    override: float | None = None
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep or not raw:
            raise InputError(f"--slo {token}: expected KEY=VALUE, {EXAMPLE}")
        value = _number(token, raw)
        key = key.strip().lower()
        if key == "attainment":
            if override is not None:
                raise InputError(f"--slo {token}: attainment given twice; give it once")
            if not 0 < value <= 1:
                raise InputError(f"--slo {token}: attainment must be in (0, 1], e.g. attainment=0.95")
            override = value
            continue
        match = _ITEM.fullmatch(key)
        metric = match["metric"] if match else key
        if metric == "tbt":
            raise InputError(f"--slo {token}: there is no per-request TBT target; use tpot "
                             f"(a request's mean time per output token), e.g. tpot_p90={raw}")
        if match is None or metric not in METRICS:
            raise InputError(f"--slo {token}: unknown key {key!r} (expected ttft, tpot or e2e with an optional "
                             f"_pNN percentile, or attainment), {EXAMPLE}")
        if metric in targets:
            raise InputError(f"--slo {token}: {metric} given twice; give one target per metric")
        if value <= 0:
            raise InputError(f"--slo {token}: the target must be > 0 seconds")
        targets[metric] = value
        if match["pct"] is not None:
            pct = Decimal(match["pct"])  # decimal, so that p99.9 is exactly an attainment of 0.999
            if not 0 < pct <= 100:
                raise InputError(f"--slo {token}: percentile p{match['pct']} must be in (0, 100], e.g. p90")
            percentiles.append(float(pct / 100))
    if not targets:
        raise InputError(f"--slo {' '.join(tokens)}: no target (ttft, tpot or e2e) given, {EXAMPLE}")
    attainment = override if override is not None else max(percentiles, default=DEFAULT_ATTAINMENT)
    return SloSpec(targets.get("ttft"), targets.get("tpot"), targets.get("e2e"), attainment)


def _number(token: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InputError(f"--slo {token}: {raw!r} is not a number (seconds, or a share for attainment), "
                         f"{EXAMPLE}") from None
    if not math.isfinite(value):
        raise InputError(f"--slo {token}: {raw!r} must be a finite number")
    return value


def judge(ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray, spec: SloSpec | None,
          per_request_ttft: np.ndarray | None = None, per_request_tpot: np.ndarray | None = None) -> np.ndarray:
    """Which requests meet the SLO, as a boolean array.

    Inputs are per-request seconds, NaN where a value does not exist: a rejected request
    has NaN E2E and fails (it never completed); a one-token output has NaN TPOT and passes
    the TPOT condition (it has no inter-token time to judge). `per_request_*` hold the
    trace's own targets, NaN (or None) where a request has none; a request's own target
    replaces the spec's for that request. A condition with no target anywhere passes, so
    `spec=None` judges the trace's targets alone.
    """
    ttft, tpot, e2e = (np.asarray(a, dtype=np.float64) for a in (ttft, tpot, e2e))
    spec = spec or NO_TARGETS
    ok = ~np.isnan(e2e)
    if spec.e2e_s is not None:
        ok &= e2e <= spec.e2e_s
    for values, own, default, nan_passes in ((ttft, per_request_ttft, spec.ttft_s, False),
                                             (tpot, per_request_tpot, spec.tpot_s, True)):
        target = np.full(len(values), np.nan if default is None else default)
        if own is not None:
            own = np.asarray(own, dtype=np.float64)
            target = np.where(np.isnan(own), target, own)
        passes = np.isnan(target) | (values <= target)
        if nan_passes:
            passes |= np.isnan(values)
        ok &= passes
    return ok


def slo_block(met_count: int, judged_count: int, makespan_s: float, spec: SloSpec | None,
              targets: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary.json `slo` block.

    `targets` are the values to report per key (`ttft_s`, `tpot_s`, `e2e_s`) when they are
    not simply the spec's, e.g. "per-request" when the trace sets its own; by default the
    spec's targets. Without a spec (trace SLOs only) nothing is required, so
    `required_attainment` and `met` are None. Attainment is None when nothing was judged.
    """
    given = spec or NO_TARGETS
    shown = {"ttft_s": given.ttft_s, "tpot_s": given.tpot_s, "e2e_s": given.e2e_s, **(targets or {})}
    attainment = met_count / judged_count if judged_count else None
    required = spec.attainment if spec is not None else None
    return {
        **shown,
        "attainment": attainment,
        "required_attainment": required,
        "met": None if required is None or attainment is None else attainment >= required,
        "goodput_requests_per_s": met_count / makespan_s if makespan_s > 0 else 0.0,
        "judged_requests": judged_count,
    }
