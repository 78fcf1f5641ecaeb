"""Candidates of a plan, resolved: a validated deployment of one replica, or why there is none.

Two kinds of failure are kept apart. A mistake in the plan (a hardware name or model that
does not exist, an unknown scheduler, a knob value out of range, a missing calibration
file) is the user's to fix: it stops the plan at load with the field path (InputError).
A deployment that is well formed but cannot run (the model does not fit in memory, tp
does not divide the attention heads, the system has too few devices) is an answer: the
candidate is reported infeasible with `api.prepare`'s reason, and the others go on.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import Setup, prepare
from ..deployment import Deployment, build_deployment
from ..errors import InputError, InvalidFile
from ..hardware.loader import load_system
from ..models.config import load_model
from ..paths import shown_path
from ..schedulers.base import get_scheduler
from .plan_file import CandidateSpec, Plan


@dataclass(frozen=True)
class Candidate:
    """One candidate: `args` are `api.prepare`'s keyword arguments (paths resolved, one
    replica), `setup` the prepared deployment or None with `reason` why it cannot run."""

    name: str
    spec: CandidateSpec
    deployment: Deployment  # the knobs as merged (hardware defaults, plan, candidate)
    args: dict[str, Any]
    setup: Setup | None
    reason: str
    price_per_device_hour: float | None  # USD; None when infeasible or unpriced

    @property
    def feasible(self) -> bool:
        return self.setup is not None

    @property
    def devices_per_replica(self) -> int | None:
        return self.setup.devices if self.setup is not None else None

    @property
    def cost_per_replica_hour(self) -> float | None:
        if self.setup is None or self.price_per_device_hour is None:
            return None
        return self.setup.devices * self.price_per_device_hour

    @property
    def args_key(self) -> str:
        """`args` as a canonical string: equal strings prepare equal deployments."""
        return json.dumps(self.args, sort_keys=True)

    @property
    def calibration(self) -> str:
        """The profile the run uses (of the prefill pool, when disaggregated), or "none";
        relative to the project for a shipped profile, so reports read the same anywhere."""
        calib = self.setup.calibration if self.setup is not None else None
        if calib is None or calib.path is None:
            return "none"
        return shown_path(calib.path)

    @property
    def calibration_use(self) -> str:
        """How the run uses that profile (`AppliedProfile.use`), or "" without one."""
        calib = self.setup.calibration if self.setup is not None else None
        return calib.use if calib is not None else ""

    @property
    def calibration_error_p90(self) -> float | None:
        """The largest measured p90 error of the kernels the profile gives this deployment
        (held-out, dtype-scaling or transfer error, as the run uses it; perf/profile_use.py),
        over its pools, as a fraction; None when no profile gives it a kernel."""
        errors = [e for pool in (self.setup.pools() if self.setup is not None else [])
                  if pool.calibration is not None for e in pool.calibration.errors().values()]
        return max(errors) if errors else None


def resolve_candidates(plan: Plan) -> list[Candidate]:
    return [_resolve(plan, where, spec) for where, spec in plan.candidates]


def _resolve(plan: Plan, where: str, spec: CandidateSpec) -> Candidate:
    at = f"{plan.path}: {where}" if where != "sweep" else f"{plan.path}: sweep ({spec.name})"
    hardware = plan.relative(spec.hardware)
    system = _checked(f"{at}.hardware", load_system, hardware)
    model = spec.model or plan.spec.model
    _checked(f"{at}.model" if spec.model else f"{plan.path}: model", load_model, model)
    if spec.scheduler is not None:
        _checked(f"{at}.scheduler", get_scheduler, spec.scheduler)
    calibration = spec.calibration
    if calibration is not None and calibration.lower() != "none":
        calibration = plan.relative(calibration)
        if not Path(calibration).is_file():
            raise InputError(f"{at}.calibration: {spec.calibration}: no such file (paths are relative to the plan file)")
    knobs = spec.deployment_knobs()
    flags = {"model": model, "scheduler": spec.scheduler, "tp": spec.tp, "pp": spec.pp}
    deployment = build_deployment(system.deployment, flags, knobs, where=f"{at}.knobs", yaml_file=system.source_file)
    args: dict[str, Any] = {"hardware": hardware, **flags,
                            "replicas": None if deployment.scheduler == "disagg" else 1,
                            "knobs": knobs, "calibration": calibration}
    try:
        setup = prepare(**args)
    except InvalidFile as exc:  # a file it names cannot be used: the plan's input is wrong
        raise InvalidFile(f"{at}: {exc}") from None
    except InputError as exc:  # it does not fit, or its knobs do not go together: infeasible
        return Candidate(spec.name, spec, deployment, args, None, str(exc), None)
    return Candidate(spec.name, spec, deployment, args, setup, "", _price(spec, setup))


def _checked(where: str, load: Any, name: str) -> Any:
    """`load(name)`, its error re-worded for the plan's field (a CLI flag's name dropped)."""
    try:
        return load(name)
    except InputError as exc:
        raise InputError(f"{where}: {re.sub(r'^--[a-z-]+ ', '', str(exc))}") from None


def _price(spec: CandidateSpec, setup: Setup) -> float | None:
    """USD per device-hour: the plan's override, else the device-weighted mean of the
    pools' prices (`System.device_price_per_hour`; pools of a disaggregated deployment may be
    different hardware); None where a pool's spec states no price."""
    if spec.price_per_hour is not None:
        return spec.price_per_hour
    total = 0.0
    for pool in setup.pools():
        price = pool.system.device_price_per_hour
        if price is None:  # sized all the same, and ranked where the objective needs no price
            return None
        total += pool.devices * price
    return total / setup.devices
