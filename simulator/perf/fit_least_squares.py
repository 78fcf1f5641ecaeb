"""The solver every calibration fit uses: bounded robust least squares over named parameters.

A fit (`fit_compute.py` for GEMM and attention, `fit_links.py` for collectives and copies)
declares its parameters with a start and physical bounds (`Param`; positive scale parameters
are searched as log(value)) and a residual on log(time). `robust_fit` minimises it with a
soft-L1 loss (scipy.optimize.least_squares) from one or more starts and keeps the best, so a
few outlying measurements, and the few local minima of the fits, do not decide the
parameters. scipy is imported only when fitting: a run that only predicts never needs it.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class Param:
    name: str
    start: float
    lo: float
    hi: float
    log: bool = True  # fitted as log(value) (positive scale parameters)


def robust_fit(residual: Callable[[dict[str, float]], np.ndarray], spec: list[Param],
               starts: list[dict[str, float]] | None = None) -> tuple[dict[str, float], float]:
    """Bounded soft-L1 least squares over named parameters; the best of a few starts."""
    from scipy.optimize import least_squares  # imported here: runs only need predictions

    def unpack(x):
        return {p.name: (math.exp(v) if p.log else v) for p, v in zip(spec, x)}

    def pack(vals):
        return [math.log(vals[p.name]) if p.log else vals[p.name] for p in spec]

    lo = [math.log(p.lo) if p.log else p.lo for p in spec]
    hi = [math.log(p.hi) if p.log else p.hi for p in spec]
    best, best_cost = None, np.inf
    for start in [{p.name: p.start for p in spec}] + list(starts or []):
        x0 = np.clip(pack({**{p.name: p.start for p in spec}, **start}), lo, hi)
        try:
            res = least_squares(lambda x: residual(unpack(x)), x0, bounds=(lo, hi), loss="soft_l1",
                                f_scale=0.05, max_nfev=100, tr_solver="lsmr")
        except ValueError:
            continue
        if res.cost < best_cost:
            best, best_cost = unpack(res.x), res.cost
    if best is None:
        best = {p.name: p.start for p in spec}
    return best, float(best_cost)
