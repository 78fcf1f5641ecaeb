"""The plan file of `simulate plan`: its schema, loading, and the expansion of `sweep:`.

A plan says what must be served (a workload, a model, a target rate and an SLO), what to
try (candidate deployments, listed or swept) and how to choose (an objective). Everything a
plan can get wrong on its own is checked here, at load, before anything is simulated: a bad
plan fails with one line naming the field path, e.g.
`plan.yaml: candidates[2].tp: Input should be greater than 0` (an InputError, exit 2).
Paths in a plan (trace, hardware, calibration) are relative to the plan file; a trace or a
hardware spec may also be a catalogue name (`simulate traces`, `simulate specs list`).

```yaml
workload: {trace: azure-conv-2023, max_requests: 400}   # or a path: ../../workloads/traces/azure-conv-2023.csv
#   or    {generate: {requests: 400, rate: 2, input: "lognormal:2000:0.6", output: "fixed:200"}}
model: llama-3.1-70b
slo: {ttft_p90: 2.0, tpot_p90: 0.1}        # the keys of --slo (see metrics/slo.py)
target_rate: 20                             # req/s the whole service must sustain
rates: {min: 0.05, max: 50}                 # where one replica's capacity is searched
tolerance: 0.05                             # relative precision of that capacity
points_per_round: 1                         # rates per bisection round (more: fewer rounds)
objective: min_cost                         # or max_goodput_per_dollar, min_devices
candidates:
  - {name: h100-tp4, hardware: dgx-h100, tp: 4}
sweep: {hardware: [dgx-a100, h200], tp: [4, 8]}   # the cartesian product, named h200-tp4 ...
```
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from ..deployment import KNOBS
from ..errors import InputError
from ..hardware.loader import _read_yaml, format_location
from ..metrics.slo import SloSpec, parse_slo
from ..strict_model import StrictModel
from ..vllm_args import knobs_from_vllm

# knobs a candidate may not set: the planner decides the replica count, and the model and
# the deployment's own fields have their own candidate fields
RESERVED_KNOBS = ("replicas", "model", "scheduler", "tp", "pp", "weight_dtype", "kv_cache_dtype")


class GenerateSpec(StrictModel):
    """A synthetic workload (simulator/workloads/generate.py). `rate` only shapes the
    arrival process: the search rescales arrivals to every rate it tries."""

    requests: PositiveInt
    rate: PositiveFloat = 1.0
    arrival: Literal["poisson", "gamma"] = "poisson"
    cv: PositiveFloat = 1.0
    input: str = "fixed:512"
    output: str = "fixed:128"
    seed: NonNegativeInt = 0


class WorkloadSpec(StrictModel):
    """A trace file (or a shipped trace's catalogue name), or a generated trace; `max_requests`
    keeps the first N requests."""

    trace: str | None = None
    generate: GenerateSpec | None = None
    max_requests: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_source(self) -> WorkloadSpec:
        if (self.trace is None) == (self.generate is None):
            raise ValueError("give exactly one of trace: (a file) or generate: (a synthetic trace)")
        return self


class RateRange(StrictModel):
    """Where one replica's capacity is searched (req/s); unset bounds derive from target_rate."""

    min: PositiveFloat | None = None
    max: PositiveFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> RateRange:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self


def _known_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    for key in knobs:
        if key in RESERVED_KNOBS:
            why = ("the planner sizes the replica count" if key == "replicas" else
                   f"set the candidate's own `{key}:` field instead")
            raise ValueError(f"{key}: not a candidate knob ({why})")
        if key not in KNOBS:
            raise ValueError(f"{key}: unknown knob (known: {', '.join(k for k in KNOBS if k not in RESERVED_KNOBS)})")
    return knobs


class CandidateSpec(StrictModel):
    """One deployment to size: a replica of it is searched for its capacity. Unset fields
    come from the hardware YAML's `deployment:` block, then the simulator's defaults."""

    name: str = Field(min_length=1)
    hardware: str
    model: str | None = None  # default: the plan's model
    tp: PositiveInt | None = None
    pp: PositiveInt | None = None
    scheduler: str | None = None
    knobs: dict[str, Any] = {}
    weight_dtype: str | None = None
    kv_cache_dtype: str | None = None
    calibration: str | None = None  # a profile path, or "none"; default: the spec's profile
    price_per_hour: PositiveFloat | None = None  # USD per device-hour; default: the spec's price
    # a `vllm serve` command line (simulator/vllm_args.py): its model, tp, pp and dtypes fill
    # those fields and its other knobs `knobs`; one given both ways is an error
    vllm: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_vllm(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("vllm"), str):
            return data
        try:
            knobs, _ = knobs_from_vllm(data["vllm"])
        except InputError as exc:
            raise ValueError(str(exc).removeprefix("--vllm: ")) from None
        data = {**data, "knobs": dict(data.get("knobs") or {})}
        for key, value in knobs.items():
            place = data if key in cls.model_fields else data["knobs"]
            if place.get(key) is not None:
                raise ValueError(f"vllm sets {key}, and so does {'' if place is data else 'knobs.'}{key}; give it once")
            place[key] = value
        return data

    def not_simulated(self) -> list[str]:
        """The flags of `vllm` that change nothing a run models (`--port`...)."""
        return knobs_from_vllm(self.vllm)[1] if self.vllm else []

    @field_validator("knobs")
    @classmethod
    def _check_knobs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _known_knobs(value)

    def deployment_knobs(self) -> dict[str, Any]:
        """The knobs, with the dtype fields that are set (they are knobs too)."""
        dtypes = {"weight_dtype": self.weight_dtype, "kv_cache_dtype": self.kv_cache_dtype}
        return {**self.knobs, **{k: v for k, v in dtypes.items() if v is not None}}


def _listed(value: Any) -> Any:
    return value if isinstance(value, list) or value is None else [value]


# the fields a sweep may list, and how each shows in a candidate's default name
# (dgx-h100-tp4, l4-wfp8, h200-kvfp8); the hardware always leads the name
_NAME_PARTS = {"hardware": "{}", "model": "{}", "tp": "tp{}", "pp": "pp{}", "scheduler": "{}",
               "weight_dtype": "w{}", "kv_cache_dtype": "kv{}"}


class SweepSpec(StrictModel):
    """Candidate fields as lists (a scalar is a list of one), expanded into their cartesian
    product. `name` is a format template over the fields (e.g. "{hardware}-tp{tp}"); by
    default the hardware plus every field that takes more than one value (`_NAME_PARTS`;
    a knob as key=value): dgx-h100-tp4, l4-tp2-wfp8, h100-sxm-max_num_seqs=64."""

    name: str | None = None
    hardware: list[str] = Field(min_length=1)
    model: list[str] | None = Field(None, min_length=1)
    tp: list[PositiveInt] | None = Field(None, min_length=1)
    pp: list[PositiveInt] | None = Field(None, min_length=1)
    scheduler: list[str] | None = Field(None, min_length=1)
    weight_dtype: list[str] | None = Field(None, min_length=1)
    kv_cache_dtype: list[str] | None = Field(None, min_length=1)
    knobs: dict[str, list[Any]] = {}
    calibration: str | None = None
    price_per_hour: PositiveFloat | None = None

    @field_validator(*_NAME_PARTS, mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return _listed(value)

    @field_validator("knobs", mode="before")
    @classmethod
    def _knob_lists(cls, value: Any) -> Any:
        return {k: _listed(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("knobs")
    @classmethod
    def _check_knobs(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return _known_knobs(value)

    def expand(self) -> list[dict[str, Any]]:
        """The candidates, as CandidateSpec fields, in a fixed order (hardware slowest)."""
        axes = [(f, getattr(self, f)) for f in _NAME_PARTS if getattr(self, f) is not None]
        axes += [(f"knobs.{k}", v) for k, v in self.knobs.items()]
        varying = {f for f, values in axes if len(values) > 1}
        fixed = {k: v for k, v in (("calibration", self.calibration), ("price_per_hour", self.price_per_hour))
                 if v is not None}
        out = []
        for combo in itertools.product(*(values for _, values in axes)):
            fields = dict(zip((f for f, _ in axes), combo))
            knobs = {f.removeprefix("knobs."): fields.pop(f) for f in list(fields) if f.startswith("knobs.")}
            out.append({"name": self._name(fields, knobs, varying), **fields, "knobs": knobs, **fixed})
        return out

    def _name(self, fields: dict[str, Any], knobs: dict[str, Any], varying: set[str]) -> str:
        if self.name is not None:
            try:
                return self.name.format(**fields, **knobs)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"name: template {self.name!r} names an unknown field ({exc}); "
                                 f"known: {', '.join([*fields, *knobs])}") from None
        parts = [str(fields["hardware"])]
        parts += [_NAME_PARTS[f].format(fields[f]) for f in fields if f in varying and f != "hardware"]
        parts += [f"{k}={v}" for k, v in knobs.items() if f"knobs.{k}" in varying]
        return "-".join(parts)


class PlanSpec(StrictModel):
    """The whole plan file (see the module docstring)."""

    workload: WorkloadSpec
    model: str
    slo: dict[str, float] = Field(min_length=1)
    target_rate: PositiveFloat
    rates: RateRange = RateRange()
    tolerance: float = Field(0.05, ge=0.001, le=1.0)
    points_per_round: int = Field(1, ge=1, le=64)
    objective: Literal["min_cost", "max_goodput_per_dollar", "min_devices"] = "min_cost"
    candidates: list[CandidateSpec] = []
    sweep: SweepSpec | None = None

    @model_validator(mode="after")
    def _has_candidates(self) -> PlanSpec:
        if not self.candidates and self.sweep is None:
            raise ValueError("no candidates: give candidates: (a list) or sweep: (lists to combine)")
        return self


@dataclass(frozen=True)
class Plan:
    """A loaded plan: its file, the validated fields, the SLO, and every candidate with the
    place it came from (`candidates[2]`, or `sweep` for expanded ones) for error messages."""

    path: Path
    spec: PlanSpec
    slo: SloSpec
    candidates: tuple[tuple[str, CandidateSpec], ...]

    def relative(self, name: str) -> str:
        """A path written in the plan, as seen from the current directory, when it exists
        relative to the plan file (a catalogue name such as h100-sxm is kept as is)."""
        near = self.path.parent / name
        return str(near) if near.exists() else name

    @property
    def rate_range(self) -> tuple[float, float]:
        """The capacity search range: by default from a thousandth to a hundred times the
        target rate, wide enough for a replica that serves a sliver or all of the load."""
        target = self.spec.target_rate
        low = self.spec.rates.min if self.spec.rates.min is not None else target / 1000
        high = self.spec.rates.max if self.spec.rates.max is not None else target * 100
        if low >= high:
            raise InputError(f"{self.path}: rates: min {low:g} must be below max {high:g}")
        return low, high


def load_plan(path: str | Path) -> Plan:
    """Read and validate a plan file; InputError names the file and the field path."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such plan file")
    try:
        spec = PlanSpec.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise InputError(_message(path, exc)) from None
    candidates = [(f"candidates[{i}]", c) for i, c in enumerate(spec.candidates)]
    if spec.sweep is not None:
        try:
            expanded = spec.sweep.expand()
        except ValueError as exc:  # the name template
            raise InputError(f"{path}: sweep.{exc}") from None
        for fields in expanded:
            try:
                candidates.append(("sweep", CandidateSpec.model_validate(fields)))
            except ValidationError as exc:  # e.g. a template that makes an empty name
                raise InputError(_message(path, exc, ("sweep",))) from None
    seen: dict[str, str] = {}
    for where, cand in candidates:
        if cand.name in seen:
            raise InputError(f"{path}: {where}.name: {cand.name!r} is also the name of {seen[cand.name]}; "
                             "names must be unique")
        seen[cand.name] = where
    return Plan(path, spec, _slo(path, spec.slo), tuple(candidates))


def _slo(path: Path, items: dict[str, float]) -> SloSpec:
    """The `slo:` mapping read with --slo's rules; errors name the key (`slo.ttft_p90`)."""
    try:
        spec = parse_slo([f"{key}={value}" for key, value in items.items()])
    except InputError as exc:
        token, _, reason = str(exc).removeprefix("--slo ").partition(": ")
        key = token.partition("=")[0]
        reason = reason.split(", e.g. --slo")[0]
        about_key = key in items and not reason.startswith("no target")
        raise InputError(f"{path}: slo.{key}: {reason}" if about_key else f"{path}: slo: {reason}") from None
    assert spec is not None  # the schema requires at least one item
    return spec


def _message(path: Path, exc: ValidationError, where: tuple[str, ...] = ()) -> str:
    """One line for the first pydantic error: file, field path (under `where`), reason."""
    err = exc.errors()[0]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field (check its spelling; see the plan format in simulator/planning/plan_file.py)"
    elif err["type"] == "missing":
        message = "required field is missing"
    elif "input" in err and not isinstance(err["input"], (dict, list)):
        message += f" (got {err['input']!r})"
    return f"{path}: {format_location(where + tuple(err['loc']))}: {message}"
