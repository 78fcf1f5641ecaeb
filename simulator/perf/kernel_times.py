"""Where a kernel's time comes from: the uncalibrated roofline, or a calibration profile.

`KernelTimes.gpu_time_s(op)` returns the device time of one execution of an operator and
the index of its source in SOURCES. Without a profile every compute kernel is the roofline
of `roofline.py` and every collective the alpha-beta model of `collectives.py`.

With a profile, as the run applies it (`perf/profile_use.py`: measured on this device, scaled
to another dtype, or transferred from another device, each resolved once per (op, dtype)):
- GEMMs and collectives are predicted by the profile directly; they depend only on the token
  count of an iteration, which the cost model memoises, so the profile is asked once per
  shape.
- Attention depends on every batch's context, so at set-up the profile is evaluated on a
  log-spaced grid of this deployment's attention shapes (its heads, KV heads and head size
  after tensor parallelism) and each iteration interpolates that table bilinearly in log
  space: cheap enough for every step, and exact at the grid points. A decode step's batch
  size is an integer, so the decode table is also kept interpolated along its batch axis at
  every batch size (`_DecodeRows`): a step then interpolates along context only.
- The routed experts of an MoE layer (two grouped GEMMs and the activation between them)
  take a measured fused-MoE layer's time (`moe`) where the profile measured this layer's
  shape (hidden size, expert intermediate size and experts per device, top-k: the table's
  categorical axes) on this device in its dtype, with the weights stored in that dtype and no
  expert parallelism; the layer's time, looked up at its tokens and expected experts reached,
  is spread over the three operators in proportion to their roofline times. Any other MoE
  layer's grouped GEMMs take the profile's GEMM route of their dtype: its fitted model with
  every group's tiles in one launch (`fit_compute.grouped_gemm_us`; profile_use.py says why
  the moe table is neither scaled nor transferred); the activation keeps the roofline.
Ops or dtypes the profile does not cover stay on the roofline. The source of a calibrated
prediction is "calibrated-interpolation" inside the measured shape ranges and
"calibrated-fit" outside them (the profile's extrapolating model); "scaled" and
"transferred" mark the other two ways a profile answers.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import replace
from typing import cast

import numpy as np
import pandas as pd

from ..deployment import Deployment
from ..hardware.loader import System
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.op_kinds import ROUTED_EXPERT_KINDS, GroupedGemmShape, MoeShape
from ..models.operators import (
    DecodeShape,
    GemmShape,
    Operator,
    Precision,
    PrefillShape,
    Sharding,
    attention_decode_op,
    attention_prefill_op,
    routed_expert_ops,
)
from .context_skew import PATHS, SkewCurve
from .fit_compute import grouped_gemm_us
from .fit_inputs import device_numbers
from .fitting import transferred_params
from .kernels import attention_model
from .mixed_attention import default_factor
from .profile_use import CALIBRATED, AppliedProfile
from .profile_use import SCALED as SCALED_ROUTE
from .roofline import operator_time_s

_ONE_DEVICE = Sharding()
# GEMMs with up to this many rows (tokens of an iteration) are looked up in a per-shape table.
GEMM_TABLE_ROWS = 16384
SOURCES = ("calibrated-interpolation", "calibrated-fit", "roofline", "host-overhead", "transferred", "scaled")
INTERP, FIT, ROOFLINE, HOST, TRANSFERRED, SCALED = range(len(SOURCES))
KERNEL_SOURCES = (INTERP, FIT, ROOFLINE, TRANSFERRED, SCALED)  # all but host-overhead
_SOURCE_INDEX = {name: i for i, name in enumerate(SOURCES)}

# Attention table axes (log2): sequences 1..4096, mean context 16..1M tokens, chunk 1..32k tokens.
_BATCH_LOG2 = np.arange(0, 13)
_CONTEXT_LOG2 = np.arange(4, 21)
_CHUNK_LOG2 = np.arange(0, 16)
_BATCH_AXIS, _CONTEXT_AXIS, _CHUNK_AXIS = (a.astype(float) for a in (_BATCH_LOG2, _CONTEXT_LOG2, _CHUNK_LOG2))
_CACHED_AXIS = np.concatenate(([-1.0], _CONTEXT_AXIS))  # -1 stands for "no cached context"
_CHUNK_LIST, _CACHED_LIST = _CHUNK_AXIS.tolist(), _CACHED_AXIS.tolist()

# The decode rows (`_DecodeRows`) are looked up by half cell: the context axis split at its
# grid points and at the midpoints between them, each half cell closed on the left, plus one
# beyond each end. Within a half cell, the cell that interpolates (an edge cell outside the
# axis) and the nearest grid point are both fixed, so one lookup finds them.
_CONTEXT_WIDTH = np.diff(_CONTEXT_AXIS)
_HALF_EDGES = np.sort(np.concatenate((_CONTEXT_AXIS, _CONTEXT_AXIS[:-1] + _CONTEXT_WIDTH / 2)))
_HALF_INSIDE = np.concatenate(([_HALF_EDGES[0] - 0.5], (_HALF_EDGES[:-1] + _HALF_EDGES[1:]) / 2,
                               [_HALF_EDGES[-1] + 0.5]))  # a point inside each half cell
_HALF_CELL = np.clip(np.searchsorted(_CONTEXT_AXIS, _HALF_INSIDE) - 1, 0, len(_CONTEXT_AXIS) - 2)
_HALF_NEAREST = np.where((_HALF_INSIDE - _CONTEXT_AXIS[_HALF_CELL]) / _CONTEXT_WIDTH[_HALF_CELL] < 0.5,
                         _HALF_CELL, _HALF_CELL + 1)
_HALF_START = _CONTEXT_AXIS[_HALF_CELL]  # where the half cell's interpolating cell starts
_HALF_EDGES_LIST, _HALF_START_LIST = _HALF_EDGES.tolist(), _HALF_START.tolist()


class _Table:
    """An attention table: log(time) and sources on the grid, also as lists for scalar lookups."""

    def __init__(self, log_t: np.ndarray, sources: np.ndarray):
        self.log_t, self.sources = log_t, sources
        self.log_list, self.source_list = log_t.tolist(), sources.tolist()


def grown_size(size: int, needed: int, most: int) -> int:
    """A table's new size for index `needed`: doubled, up to `most` + 1 (the largest batch the
    deployment schedules), so that a few rebuilds cover a run, and at least `needed` + 1."""
    return max(needed + 1, min(2 * size, most + 1))


class _DecodeRows:
    """The decode table interpolated along its batch axis at batch sizes 0..sizes-1 (0 as 1).

    The bilinear interpolation of the table at (n, context) is a linear one along row n, so
    row n holds, for every half cell of the context axis, log(time) where its interpolating
    cell starts, the slope per unit of log2(context), and the source of the nearest grid
    point. Flat arrays, so that the steps of a span find theirs with one gather each; the
    lists serve single steps.
    """

    def __init__(self, table: _Table, sizes: int):
        x = np.log2(np.maximum(np.arange(sizes), 1.0))
        i = np.clip(np.searchsorted(_BATCH_AXIS, x) - 1, 0, len(_BATCH_AXIS) - 2)
        fx = ((x - _BATCH_AXIS[i]) / (_BATCH_AXIS[i + 1] - _BATCH_AXIS[i]))[:, None]
        log_t = (1 - fx) * table.log_t[i] + fx * table.log_t[i + 1]
        slope = np.diff(log_t, axis=1) / _CONTEXT_WIDTH
        nearest = table.sources[np.where(fx[:, 0] < 0.5, i, i + 1)]
        self.sizes, self.width = sizes, len(_HALF_CELL)
        self.log_t, self.slope = log_t[:, _HALF_CELL].ravel(), slope[:, _HALF_CELL].ravel()
        self.sources = nearest[:, _HALF_NEAREST].ravel()
        self.log_list, self.slope_list, self.source_list = (a.tolist() for a in (self.log_t, self.slope, self.sources))


class KernelTimes:
    """Roofline kernel times (the default, and the fallback of a calibrated model)."""

    calibration: AppliedProfile | None = None

    def __init__(self, system: System, model: ModelConfig, dep: Deployment):
        self.device = system.accelerator
        heads, kv_heads = model.heads_per_device(dep.tp), model.kv_heads_per_device(dep.tp)
        self._mixed_default = default_factor(heads, kv_heads, self.device.efficiency.mixed_decode_gqa_miss)

    def gpu_time_s(self, op: Operator):
        return operator_time_s(self.device, op), ROOFLINE

    def gpu_time_many(self, op: Operator) -> tuple[np.ndarray, np.ndarray | int] | None:
        """gpu_time_s of a GEMM or elementwise operator whose shape is an array (one entry per
        token count, `CostModel._eager_dense`); None for another kind."""
        if op.kind not in ("gemm", "elementwise"):
            return None
        return operator_time_s(self.device, op), ROOFLINE

    def collective_time_s(self, kind: str, nbytes: float, world: int) -> tuple[float, int] | None:
        """Measured time of one collective and its source; None: not measured (the roofline's)."""
        return None

    def collective_times_many(self, kind: str, nbytes: np.ndarray, world: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Measured times of a collective of many sizes; None: not measured (the roofline's)."""
        return None

    def mixed_decode_factor(self, decodes: int, context_per_decode: float) -> float:
        """How much longer decodes take in a step with prefill chunks (perf/mixed_attention.py)."""
        return self._mixed_default

    def context_skew(self, path: str) -> SkewCurve | None:
        """The measured tail of decodes of unequal context on `path` ('decode' or 'mixed',
        perf/context_skew.py); None: not measured (every decode at the mean context)."""
        return None


class CalibratedKernelTimes(KernelTimes):
    calibration: AppliedProfile

    def __init__(self, system: System, model: ModelConfig, dep: Deployment, calibration: AppliedProfile):
        super().__init__(system, model, dep)
        self.calibration, self.system = calibration, system
        calibration.route("gemm", dep.precision.gemm_compute)  # resolved now: the run's routes are known at set-up
        if dep.tp > 1:
            for kind in ("allreduce", "allgather"):
                calibration.route(kind, dep.activation_dtype)
        self.tp = dep.tp
        self.heads = {"heads": model.heads_per_device(dep.tp), "kv_heads": model.kv_heads_per_device(dep.tp),
                      "head_dim": model.head_dim}
        self.dtype = dep.activation_dtype
        # one layer of this deployment's attention, at the KV dtype stored and (if it differs) measured
        self._shape = attention_model(self.heads["heads"], self.heads["kv_heads"], self.heads["head_dim"])
        measured = Precision(kv=dep.activation_dtype, activations=dep.activation_dtype)
        stored = replace(measured, kv=dep.kv_cache_dtype)
        self._kv_precisions = [stored] if DTYPE_BYTES[dep.kv_cache_dtype] == DTYPE_BYTES[self.dtype] else [stored, measured]
        self._memo: dict[tuple, tuple[float, int]] = {}
        self._gemm_tables: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._decode = self._decode_table() if calibration.covers("attn_decode", self.dtype) else None
        self._decode_rows = _DecodeRows(self._decode, 0) if self._decode is not None else None  # see _rows
        self._max_batch = dep.max_num_seqs
        self._prefill = self._prefill_table() if calibration.covers("attn_prefill", self.dtype) else None
        # the routed experts' measured layers by shape: (time s, source, roofline s of its operators) or None
        self._moe_layers: dict[MoeShape, tuple[float, int, float] | None] = {}
        self._moe_usable = (model.num_experts > 1 and not dep.sharding.ep
                            and dep.precision.weights == dep.precision.gemm_compute
                            and any(op == "moe" for op, _ in calibration.profile.ops))
        self._moe_dtype, self._prec, self._gated = dep.precision.gemm_compute, dep.precision, model.gated_mlp
        # measured mixed-step factors hold for the device they were measured on, with its decode times
        route, mixed = calibration.route("attn_decode", self.dtype), calibration.profile.mixed
        self._mixed = (mixed.table(self.heads["heads"], self.heads["kv_heads"], self.heads["head_dim"])
                       if mixed is not None and route is not None and route.kind == CALIBRATED else None)
        # so do the measured tails of unequal contexts
        skew = calibration.profile.skew if route is not None and route.kind == CALIBRATED else None
        self._skew = {path: skew.curve(self.heads["heads"], self.heads["kv_heads"], self.heads["head_dim"], path)
                      for path in PATHS} if skew is not None else {}

    # -- profile queries ---------------------------------------------------------------
    def _predict(self, op: str, dtype: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        times, names = self.calibration.predict_us(op, dtype, frame)
        codes, distinct = pd.factorize(np.asarray(names, dtype=object))  # hashing: no sort of strings
        sources = np.array([_SOURCE_INDEX[name] for name in distinct], dtype=np.int64)[codes]
        return np.asarray(times, dtype=float) * 1e-6, sources

    def _decode_table(self) -> _Table:
        b, ctx = np.meshgrid(2.0 ** _BATCH_LOG2, 2.0 ** _CONTEXT_LOG2, indexing="ij")
        frame = pd.DataFrame({"op": "attn_decode", "dtype": self.dtype, "batch": b.ravel().astype(int),
                              "kv_len": ctx.ravel().astype(int), **self.heads})
        times, sources = self._predict("attn_decode", self.dtype, frame)
        ops = [attention_decode_op(self._shape, b.ravel(), (b * ctx).ravel(), _ONE_DEVICE, prec)
               for prec in self._kv_precisions]
        times, sources = self._kv_scaled(times, sources, ops)
        return _Table(np.log(times).reshape(b.shape), sources.reshape(b.shape))

    def _prefill_table(self) -> _Table:
        # one sequence per point: chunk c new tokens after `cached` tokens of context
        c, cached = np.meshgrid(2.0 ** _CHUNK_LOG2, np.concatenate(([0.0], 2.0 ** _CONTEXT_LOG2)), indexing="ij")
        frame = pd.DataFrame({"op": "attn_prefill", "dtype": self.dtype, "batch": 1, "seq_len": c.ravel().astype(int),
                              "kv_len": (c + cached).ravel().astype(int), **self.heads})
        times, sources = self._predict("attn_prefill", self.dtype, frame)
        shape = c.shape
        ops = [[attention_prefill_op(self._shape, x, x + y, x * (y + (x + 1) / 2.0), _ONE_DEVICE, prec)
                for x, y in zip(c.ravel().tolist(), cached.ravel().tolist())] for prec in self._kv_precisions]
        times, sources = self._kv_scaled(times, sources, ops)
        return _Table(np.log(times).reshape(shape), sources.reshape(shape))

    def _kv_scaled(self, times: np.ndarray, sources: np.ndarray, ops: list) -> tuple[np.ndarray, np.ndarray]:
        """Attention measured with the KV cache in the activation dtype, on a deployment that
        stores it narrower (fp8, int8...): the measured time times the roofline's ratio of the
        two (reading the cache is most of decode attention), and the source "scaled". `ops`:
        the grid's operator (or a list of one per point) at each KV precision."""
        if len(ops) == 1:
            return times, sources

        def roofline(op) -> np.ndarray:
            if isinstance(op, list):
                return np.array([operator_time_s(self.device, one) for one in op])
            return operator_time_s(self.device, op)

        stored, measured = (roofline(op) for op in ops)
        return times * stored / measured, np.full_like(sources, SCALED)

    # -- runtime -----------------------------------------------------------------------
    def gpu_time_s(self, op: Operator):
        if op.kind in ROUTED_EXPERT_KINDS and self._moe_usable:
            shape = cast(GroupedGemmShape | MoeShape, op.shape)
            layer = shape.layer if isinstance(shape, GroupedGemmShape) else shape
            measured = self._moe_layer(layer) if layer is not None else None
            if measured is not None:
                layer_s, source, roofline_s = measured
                return layer_s * operator_time_s(self.device, op) / roofline_s, source
        if op.kind == "grouped_gemm":
            grouped = self._grouped_gemm_s(op)
            if grouped is not None:
                return grouped
        if op.kind == "attn_decode" and self._decode is not None:
            return self._attention_decode_s(op)
        if op.kind == "attn_prefill" and self._prefill is not None:
            return self._attention_prefill_s(op)
        if op.kind == "gemm" and self.calibration.covers("gemm", op.dtype):
            m, n, k = cast(GemmShape, op.shape)
            if m <= GEMM_TABLE_ROWS:
                times, sources = self._gemm_table(op.dtype, n, k)
                return float(times[m - 1]), int(sources[m - 1])
            return self._memoised(("gemm", op.dtype, m, n, k), op)
        return super().gpu_time_s(op)

    def gpu_time_many(self, op: Operator) -> tuple[np.ndarray, np.ndarray | int] | None:
        if op.kind == "gemm" and self.calibration.covers("gemm", op.dtype):
            m, n, k = cast(GemmShape, op.shape)
            if np.maximum.reduce(m) > GEMM_TABLE_ROWS:
                return None
            times, sources = self._gemm_table(op.dtype, n, k)
            return times[m - 1], sources[m - 1]
        return super().gpu_time_many(op)

    def collective_times_many(self, kind: str, nbytes: np.ndarray, world: int) -> tuple[np.ndarray, np.ndarray] | None:
        dtype = self.calibration.collective_dtype(kind)
        if dtype is None:
            return None
        frame = pd.DataFrame({"op": kind, "dtype": dtype, "bytes": nbytes.astype(np.int64), "world_size": world})
        return self._predict(kind, dtype, frame)

    def mixed_decode_factor(self, decodes: int, context_per_decode: float) -> float:
        if self._mixed is None:
            return self._mixed_default
        return self._mixed(decodes, context_per_decode)

    def context_skew(self, path: str) -> SkewCurve | None:
        return self._skew.get(path)

    def _gemm_table(self, dtype: str, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The profile's time for m = 1..GEMM_TABLE_ROWS of one (n, k) weight shape, asked once:
        a model has a handful of weight shapes, and one vectorised query costs about as much as
        a single-row one."""
        key = (dtype, n, k)
        if key not in self._gemm_tables:
            m = np.arange(1, GEMM_TABLE_ROWS + 1)
            frame = pd.DataFrame({"op": "gemm", "dtype": dtype, "m": m, "n": n, "k": k})
            self._gemm_tables[key] = self._predict("gemm", dtype, frame)
        return self._gemm_tables[key]

    def _moe_layer(self, layer: MoeShape) -> tuple[float, int, float] | None:
        """A routed-expert layer's measured time, its source and the roofline time of its
        operators; None where the profile has not measured this layer's shape in the run's
        dtype (the route is resolved only for a layer it describes, so that the run's
        errors name it only then)."""
        if layer not in self._moe_layers:
            frame = pd.DataFrame({"op": ["moe"], "dtype": [self._moe_dtype], **{k: [v] for k, v in layer._asdict().items()}})
            candidate = self.calibration.candidate_route("moe", self._moe_dtype)
            described = candidate is not None and bool(
                self.calibration.profile.ops[("moe", candidate.measured_dtype)].model.measured_categories(frame)[0])
            if not described or not self.calibration.covers("moe", self._moe_dtype):
                self._moe_layers[layer] = None
            else:
                times, sources = self._predict("moe", self._moe_dtype, frame)
                parts = routed_expert_ops(layer, layer.tokens * layer.top_k, self._gated, self._prec, 1)
                roofline = sum(operator_time_s(self.device, part) for part in parts)
                self._moe_layers[layer] = (float(times[0]), int(sources[0]), roofline)
        return self._moe_layers[layer]

    def collective_time_s(self, kind: str, nbytes: float, world: int) -> tuple[float, int] | None:
        dtype = self.calibration.collective_dtype(kind)
        if dtype is None:
            return None
        key = (kind, dtype, int(nbytes), world)
        if key not in self._memo:
            frame = pd.DataFrame({"op": [kind], "dtype": [dtype], "bytes": [int(nbytes)], "world_size": [world]})
            times, sources = self._predict(kind, dtype, frame)
            self._memo[key] = (float(times[0]), int(sources[0]))
        return self._memo[key]

    def _grouped_gemm_s(self, op: Operator) -> tuple[float, int] | None:
        """A routed experts' grouped GEMM under this device's fitted GEMM model (the profile's
        route for GEMMs of its dtype; `fit_compute.grouped_gemm_us`), its source that route's
        kind: calibrated-fit here, else scaled or transferred. None where the profile has no
        GEMM route for the dtype."""
        key = ("grouped", op.dtype, op.shape, op.bytes)
        if key not in self._memo:
            route = self.calibration.route("gemm", op.dtype)
            if route is None:
                return None
            self.calibration.grouped_dtypes.add(op.dtype)  # its band (AppliedProfile.errors)
            model = self.calibration.profile.ops[("gemm", route.measured_dtype)].model
            params, _ = transferred_params(model, self.system)
            m, n, k, groups, _layer = cast(GroupedGemmShape, op.shape)
            time_us = grouped_gemm_us(params, device_numbers(self.system, "gemm", op.dtype), op.dtype, m, n, k,
                                      groups, cast(float, op.bytes))
            source = {CALIBRATED: FIT, SCALED_ROUTE: SCALED}.get(route.kind, TRANSFERRED)
            self._memo[key] = (time_us * 1e-6, source)
        return self._memo[key]

    def _memoised(self, key: tuple, op: Operator) -> tuple[float, int]:
        if key not in self._memo:
            m, n, k = cast(GemmShape, op.shape)
            frame = pd.DataFrame({"op": ["gemm"], "dtype": [op.dtype], "m": [m], "n": [n], "k": [k]})
            times, sources = self._predict("gemm", op.dtype, frame)
            self._memo[key] = (float(times[0]), int(sources[0]))
        return self._memo[key]

    def _rows(self, batch: int) -> _DecodeRows:
        """The decode rows, grown to cover batch size `batch`: by doubling, up to the largest
        batch the deployment schedules, so that a few rebuilds cover a run."""
        rows = cast(_DecodeRows, self._decode_rows)  # set with the decode table, which decode attention needs
        if batch >= rows.sizes:
            rows = self._decode_rows = _DecodeRows(cast(_Table, self._decode),
                                                   grown_size(rows.sizes, batch, self._max_batch))
        return rows

    def _attention_decode_s(self, op: Operator):
        """Decode attention of `sequences` (at least one) reading `context_tokens` KV tokens in
        all: row `sequences` of the decode rows at log2 of the mean context."""
        n, context = cast(DecodeShape, op.shape)
        if isinstance(n, np.ndarray):  # the steps of a span
            rows = self._rows(int(n.max()))
            y = np.log2(np.maximum(context / n, 1.0))
            halves = _HALF_EDGES.searchsorted(y, side="right")
            cells = n * rows.width + halves
            return np.exp(rows.log_t[cells] + (y - _HALF_START[halves]) * rows.slope[cells]), rows.sources[cells]
        rows = self._rows(n)
        y_one = math.log2(max(context / n, 1.0))
        h = bisect.bisect_right(_HALF_EDGES_LIST, y_one)
        cell = n * rows.width + h
        return (math.exp(rows.log_list[cell] + (y_one - _HALF_START_LIST[h]) * rows.slope_list[cell]),
                rows.source_list[cell])

    def _attention_prefill_s(self, op: Operator):
        """Prefill attention of a batch's chunks as one sequence with the same query-key pairs
        and chunk tokens."""
        table = cast(_Table, self._prefill)  # gpu_time_s comes here only with a prefill table
        shape = cast(PrefillShape, op.shape)
        chunk = max(float(shape.chunk_tokens), 1.0)  # new tokens of all chunks
        cached = max(shape.pair_tokens / chunk - (chunk + 1) / 2.0, 0.0)
        cached_log2 = math.log2(cached) if cached >= 1.0 else -1.0
        return _bilinear_scalar(table.log_list, table.source_list, math.log2(chunk), _CHUNK_LIST, cached_log2,
                                _CACHED_LIST)


def _bilinear_scalar(log_t: list, sources: list, x: float, xs: list, y: float, ys: list) -> tuple[float, int]:
    """exp of the bilinear interpolation of log_t over (xs, ys) at (x, y), and the source of the
    nearest grid point; points outside the axes extrapolate linearly from the edge cells. On
    nested lists: it runs once per simulated iteration, where numpy's per-call overhead would
    dominate."""
    i = min(max(bisect.bisect_left(xs, x) - 1, 0), len(xs) - 2)
    j = min(max(bisect.bisect_left(ys, y) - 1, 0), len(ys) - 2)
    fx = (x - xs[i]) / (xs[i + 1] - xs[i])
    fy = (y - ys[j]) / (ys[j + 1] - ys[j])
    row0, row1 = log_t[i], log_t[i + 1]
    value = ((1 - fx) * (1 - fy) * row0[j] + fx * (1 - fy) * row1[j]
             + (1 - fx) * fy * row0[j + 1] + fx * fy * row1[j + 1])
    return math.exp(value), int(sources[i if fx < 0.5 else i + 1][j if fy < 0.5 else j + 1])


def kernel_times(system: System, model: ModelConfig, dep: Deployment,
                 calibration: AppliedProfile | None) -> KernelTimes:
    if calibration is None:
        return KernelTimes(system, model, dep)
    return CalibratedKernelTimes(system, model, dep, calibration)
