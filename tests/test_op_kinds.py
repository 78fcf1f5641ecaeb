"""The operator-kind registry: every kind's measurement columns, calibration axes and time
model agree, and the alpha-beta models match hand-computed values."""
from __future__ import annotations

import pytest

from simulator.hardware.spec import Link
from simulator.models.op_kinds import COLLECTIVE_KINDS, MEASURED, OP_KINDS, TABLE_AXES
from simulator.perf.collectives import TIME_MODELS


def test_every_table_axis_comes_from_the_rows_columns():
    for name, axes in TABLE_AXES.items():
        columns = set(MEASURED[name]) | ({"context"} if "kv_len" in MEASURED[name] else set())
        assert {feature for feature, _, _ in axes} <= columns, name
        assert OP_KINDS[name].monotone, f"{name}: a table needs a size axis"


def test_every_collective_kind_has_a_time_model():
    assert set(COLLECTIVE_KINDS) == set(TIME_MODELS)


@pytest.mark.parametrize("kind, steps, share", [("allreduce", 14, 14 / 8), ("allgather", 7, 7 / 8),
                                                 ("reducescatter", 7, 7 / 8), ("alltoall", 7, 7 / 8)])
def test_alpha_beta_models_by_hand(kind, steps, share):
    # 8 devices, 1 us latency, 100 GB/s at 80 % efficiency, a 64 MB message
    link = Link(bandwidth="100 GB/s", latency="1 us")
    expected = steps * 1e-6 + share * 64e6 / (100e9 * 0.8)
    assert TIME_MODELS[kind](64e6, 8, link, 0.8) == pytest.approx(expected, rel=1e-12)
