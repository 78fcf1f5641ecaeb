"""The fitted model of one (op, dtype): which of its two parts answers a query, and its YAML form.

An `OpModel` holds the roofline-with-efficiency fit's parameters (`fit_roofline.py`) and the
interpolation table (`fit_table.py`). Inside the box of measured ranges the prediction is the
table; outside it, the fit corrected by the table's residual at the nearest point of the box,
fading with distance (`_DECAY`). Each prediction carries its source: "calibrated-
interpolation" inside the measured hull, "calibrated-fit" elsewhere (`fitting.py` states the
guarantees of both). This is the object a calibration profile stores per (op, dtype) and a
run loads back to time its kernels: predicting needs neither the measurements nor scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..models.op_kinds import TABLE_AXES
from .fit_inputs import features
from .fit_roofline import fit_predict
from .fit_table import Table

INTERPOLATION, FIT = "calibrated-interpolation", "calibrated-fit"
_DECAY = 4.0  # outside the box, the table's correction decays by e per factor 4 of distance


@dataclass
class OpModel:
    """A fitted (op, dtype) group: interpolation inside the measured grid, the fit outside."""

    op: str
    dtype: str
    method: str
    ranges: dict[str, list[float]]
    n_rows: int
    params: dict[str, float]
    device: dict[str, float]
    table: Table | None = None

    # -- prediction -------------------------------------------------------------------------
    def _rows(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(frame) and "op" in frame.columns and (frame["op"] != self.op).any():
            raise ValueError(f"rows of {sorted(set(frame['op']) - {self.op})} given to the {self.op} model")
        return features(self.op, frame)

    def fit_us(self, frame: pd.DataFrame) -> np.ndarray:
        """The roofline-with-efficiency fit alone, in microseconds."""
        return fit_predict(self.op, self.dtype, self._rows(frame), self.params, self.device)

    def inside(self, frame: pd.DataFrame) -> np.ndarray:
        if self.table is None or len(frame) == 0:
            return np.zeros(len(frame), dtype=bool)
        return self.table.lookup(self._rows(frame))[2]

    def measured_categories(self, frame: pd.DataFrame) -> np.ndarray:
        """Whether each row's categorical features (a model's sizes, a world size, a direction)
        are among the measured ones: where they are not, the table describes another thing."""
        f, ok = self._rows(frame), np.ones(len(frame), dtype=bool)
        if self.table is not None:
            for name, kind, axis in zip(self.table.names, self.table.kinds, self.table.axes):
                if kind == "cat":
                    ok &= np.isin(f[name], axis)
        return ok

    def source_of(self, frame: pd.DataFrame) -> np.ndarray:
        return np.where(self.inside(frame), INTERPOLATION, FIT).astype(object)

    def predict_us(self, frame: pd.DataFrame) -> np.ndarray:
        f = self._rows(frame)
        fit = fit_predict(self.op, self.dtype, f, self.params, self.device)
        if self.table is None or len(frame) == 0:
            return fit
        value, in_box, _ = self.table.lookup(f)
        out = np.where(in_box, np.exp(value), fit)
        if (~in_box).any():  # outside the box: the fit, corrected by the table's residual at its edge
            out_rows = np.flatnonzero(~in_box)
            g = {k: v[out_rows] for k, v in f.items()}
            near, dist = self.table.clamp(g)
            v_near, in_near, _ = self.table.lookup(near)
            fit_near = fit_predict(self.op, self.dtype, near, self.params, self.device)
            corr = np.where(in_near, v_near - np.log(fit_near), 0.0) * np.exp(-dist / math.log(_DECAY))
            out[out_rows] = fit[out_rows] * np.exp(corr)
        return out

    def efficiencies(self) -> dict[str, float]:
        """The fitted roofline parameters: what transfers to another device."""
        return {k: float(v) for k, v in self.params.items()}

    # -- YAML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op, "dtype": self.dtype, "method": self.method, "n_rows": int(self.n_rows),
            "ranges": {k: [float(a), float(b)] for k, (a, b) in self.ranges.items()},
            "params": {k: float(v) for k, v in self.params.items()},
            "device": {k: float(v) for k, v in self.device.items()},
            "table": self.table.to_dict() if self.table is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpModel:
        op = str(d["op"])
        if op not in TABLE_AXES:
            raise ValueError(f"unknown op {op!r}")
        table = Table.from_dict(op, d["table"]) if d.get("table") else None
        return cls(op, str(d["dtype"]), str(d["method"]),
                   {k: [float(a), float(b)] for k, (a, b) in d["ranges"].items()}, int(d["n_rows"]),
                   {k: float(v) for k, v in d["params"].items()}, {k: float(v) for k, v in d["device"].items()},
                   table)
