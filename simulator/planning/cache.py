"""The on-disk cache of simulated points: DIR/cache/<key>.json, one file per point.

A point is one simulation: one replica of a candidate serving the workload at one rate.
Its key is the sha256 of everything its result depends on: the resolved hardware of every
pool (the specs after `extends:`, prices included), the model's shape, the deployment's
knobs, the calibration profile's bytes, the workload's requests, the rate, the SLO, the
seed, and the simulator's version and source code (so a changed engine never reuses old
points). A candidate's name is not part of it: renaming a candidate, or adding one,
re-simulates nothing that was already simulated.

Each file is written to a temporary name and moved into place (os.replace), so a plan
killed midway leaves only whole points, and re-running it resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .. import __version__
from ..api import Setup
from ..metrics.slo import SloSpec
from .outputs import write_atomic

SEED = 0  # every point runs with the simulator's default seed
# parts of the package that cannot change a simulation's result
_NOT_SIMULATION = ("planning", "report", "cli")


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 of the simulator's version and of the source files a simulation runs."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(__version__.encode())
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative.parts[0] not in _NOT_SIMULATION:
            digest.update(str(relative).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _file_sha(path: Path | None) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


def point_key(setup: Setup, workload_sha: str, rate: float, slo: SloSpec) -> str:
    """The cache key of one point (see the module docstring)."""
    pools = []
    for pool in setup.pools():
        system = dataclasses.asdict(pool.system)
        for where in ("source_file", "accelerator_file"):  # where the files are does not matter
            system.pop(where)
        calibration = pool.calibration.path if pool.calibration is not None else None
        pools.append({"role": pool.role, "system": system, "deployment": pool.deployment.model_dump(mode="json"),
                      "calibration": _file_sha(calibration)})
    inputs = {"code": code_fingerprint(), "model": dataclasses.asdict(setup.model),
              "deployment": setup.deployment.model_dump(mode="json"), "pools": pools,
              "link": dataclasses.asdict(setup.disagg.link) if setup.disagg is not None else None,
              "workload": workload_sha, "rate": rate, "slo": dataclasses.asdict(slo), "seed": SEED}
    text = json.dumps(inputs, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


class PointCache:
    """Finished points' metrics by key, in one directory."""

    def __init__(self, directory: Path):
        self.directory = directory

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.directory / f"{key}.json").read_text())["metrics"]
        except (OSError, ValueError, KeyError):  # absent, or not a point this version wrote
            return None

    def put(self, key: str, metrics: dict[str, Any], about: dict[str, Any]) -> None:
        """Store a point atomically; `about` (candidate, rate) is for people reading the file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.directory / f"{key}.json", json.dumps({"about": about, "metrics": metrics}, indent=1))
