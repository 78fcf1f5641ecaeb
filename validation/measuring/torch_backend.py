"""The torch path of the measuring harness: which kernels it times, on what operands, and what it records.

It runs on a CUDA GPU or on the host CPU (oneDNN/MKL kernels, as vLLM's CPU backend runs them:
bf16 GEMMs and attention, the dtype CPU runs use). On the CPU, fp8 GEMMs and collectives are
skipped with a note (no CPU engine runs fp8 GEMMs; one socket has no collective), as is decode
attention (torch's CPU attention is not the kernel vLLM's CPU backend decodes with, and runs one
query token several times slower), and GEMMs and attention above `--cpu-max-gflop` are skipped
as on the numpy path.

GEMMs are `torch.mm(x, W.t())` (nn.Linear's layout), fp8 through `torch._scaled_mm` (probed
once; skipped with a note where this torch or GPU lacks it); attention is
`scaled_dot_product_attention` with the fastest fused backend that takes the shape (native GQA
where torch has it, else repeated KV heads); copies are pinned and pageable host<->device and
device-to-device. Operands are checked against free GPU memory before they are made (a shape
that does not fit, or runs out of memory, is skipped with a note).
The timing itself is TorchTimer's (`validation.measuring.torch_timing`); collectives run in
processes of their own (`validation.measuring.collectives`). torch is imported only when a
backend is made, so the rest of the harness runs without it.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from validation import shapes as S
from validation.measuring.cli import COLLECTIVES, Options
from validation.measuring.failures import Skip, first_line
from validation.measuring.gpu_monitor import nvidia_smi
from validation.measuring.host import cpu_mhz
from validation.measuring.torch_timing import TorchTimer

# the token count oneDNN's weight reorder is told to expect: vLLM's CPU backend prepacks every
# linear layer's weight once with this hint (its oneDNN matmul handler), whatever the batch
CPU_PACK_M = 32


def onednn_linear(torch, weight) -> Callable[[Any], Any]:
    """y = x @ weight.T as vLLM's CPU backend runs a linear layer: a oneDNN matmul on a copy of
    the weight reordered once into oneDNN's blocked layout (`create_onednn_mm(weight, 32)`)."""
    packed, pointwise = torch.ops.mkldnn._reorder_linear_weight(weight, CPU_PACK_M), torch.ops.mkldnn._linear_pointwise
    return lambda x: pointwise(x, packed, None, "none", [], "")


class TorchBackend(TorchTimer):
    """Kernels through torch, timed by TorchTimer on the GPU or the host CPU."""

    TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

    def __init__(self, opts: Options, notes: Counter, device: str = "cuda"):
        super().__init__(opts, notes, device)
        self.F = self.torch.nn.functional
        self._host: dict[bool, Any] = {}
        self._dev: dict[str, Any] = {}
        self._fp8: str | None | bool = None  # None: not probed; True: works; str: why not
        self._gqa_kwarg: bool | None = None

    def _tdtype(self, dtype: str):
        return getattr(self.torch, self.TORCH_DTYPES[dtype])

    def _check_fits(self, nbytes: float) -> None:
        if not self.is_cuda:
            return
        torch = self.torch
        free, _ = torch.cuda.mem_get_info()
        reusable = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        if nbytes > 0.8 * (free + reusable):
            raise Skip("operands do not fit in free GPU memory")

    # planning
    def world_sizes(self) -> list[int]:
        count = self.torch.cuda.device_count() if self.is_cuda else 2
        if self.opts.world_sizes is not None:
            too_many = [w for w in self.opts.world_sizes if w > count]
            if too_many:
                self.notes[f"collectives: world sizes {too_many} skipped ({count} GPUs visible)"] += 1
            return [w for w in self.opts.world_sizes if w <= count]
        return sorted({w for w in (2, 4, 8) if w <= count} | ({count} if count >= 2 else set()))

    def plan(self, opts: Options, models) -> list[tuple[str, str, Any]]:
        tasks: list[tuple[str, str, Any]] = []
        copy_dtype = next((d for d in opts.dtypes if d in ("bf16", "fp16", "fp32")), "bf16")
        for op in opts.ops:
            if op == "gemm":
                for dtype in opts.dtypes:
                    if dtype == "fp8" and not self.is_cuda:
                        self.notes["cpu: fp8 gemm skipped (no CPU engine runs fp8 GEMMs; vLLM's CPU backend "
                                   "computes in bf16)"] += 1
                        continue
                    if dtype == "fp8":
                        why = self._fp8_support()
                        if why is not True:
                            self.notes[f"fp8 gemm skipped: {why}"] += 1
                            continue
                    tasks += [("gemm", dtype, s) for s in S.gemm_shapes(models, opts.quick)]
            elif op == "attn_decode" and not self.is_cuda:
                self.notes["cpu: attn_decode skipped (torch's CPU attention runs one query token at under 1 GB/s of "
                           "KV, far below vLLM's paged CPU decode kernel: its table would make CPU runs several "
                           "times too slow)"] += 1
            elif op in ("attn_prefill", "attn_decode"):
                for dtype in opts.dtypes:
                    if dtype not in ("bf16", "fp16"):
                        self.notes[f"{op} {dtype} skipped: fused attention kernels take bf16/fp16 inputs"] += 1
                        continue
                    grid = S.attn_prefill_shapes if op == "attn_prefill" else S.attn_decode_shapes
                    tasks += [(op, dtype, s) for s in grid(models, opts.quick)]
            elif op == "memcpy":
                directions = ("h2d", "d2h", "d2d") if self.is_cuda else ("d2d",)
                tasks += [("memcpy", copy_dtype, s) for s in S.memcpy_shapes(directions, opts.quick)]
        wanted = [op for op in opts.ops if op in COLLECTIVES]
        if wanted and not self.is_cuda:
            self.notes[f"cpu: {', '.join(wanted)} skipped (collectives are measured between GPUs)"] += 1
        elif wanted:
            worlds = self.world_sizes()
            if not worlds:
                self.notes[f"{', '.join(wanted)} skipped: 1 GPU visible (collectives need at least 2)"] += 1
            else:
                tasks += [(c.op, copy_dtype, c) for c in S.collective_shapes(wanted, worlds, opts.quick)]
        return tasks

    def _fp8_support(self) -> str | bool:
        if self._fp8 is not None:
            return self._fp8
        torch = self.torch
        if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
            self._fp8 = f"torch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn"
        elif self.is_cuda and (self.props.major, self.props.minor) < (8, 9):
            self._fp8 = f"needs compute capability 8.9 or newer (this GPU is {self.props.major}.{self.props.minor})"
        else:
            try:
                fn = self._gemm_fns(S.Gemm(32, 32, 32, "probe"), "fp8", 1)[0]
                fn()
                self._sync()
                self._fp8 = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not supported here"
                self._fp8 = f"torch._scaled_mm failed ({first_line(exc)})"
        return self._fp8

    def _cpu_cap(self, flops: float) -> None:
        if not self.is_cuda and flops > self.opts.cpu_max_gflop * 1e9:
            raise Skip(f"cpu: kernels above --cpu-max-gflop {self.opts.cpu_max_gflop:g} GFLOP skipped")

    def measure(self, op: str, dtype: str, shape) -> dict[str, Any]:
        try:
            if op == "gemm":
                self._cpu_cap(shape.flops)
                row = self._time(self._gemm_fns(shape, dtype), graph=True)
                kernel = self.gemm_kernel(dtype)
                return {**row, "backend": kernel} if kernel else row
            if op in ("attn_prefill", "attn_decode"):
                return self._attention(op, dtype, shape)
            if op == "memcpy":
                return self._memcpy(shape, dtype)
        except Skip:
            raise
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                if self.is_cuda:
                    self.torch.cuda.empty_cache()
                raise Skip("out of GPU memory") from None
            raise
        raise ValueError(f"{op} is not measured one shape at a time")

    # GEMM
    def _gemm_fns(self, s: S.Gemm, dtype: str, sets: int | None = None) -> list[Callable[[], Any]]:
        torch = self.torch
        eb = 1 if dtype == "fp8" else {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]
        set_bytes = (s.m * s.k + s.n * s.k) * eb + s.m * s.n * max(eb, 2)
        sets = self._sets(set_bytes) if sets is None else sets
        self._check_fits(sets * set_bytes + (s.m + s.n) * s.k * 2)
        fns = []
        for _ in range(sets):
            if dtype == "fp8":
                f8 = torch.float8_e4m3fn
                a = torch.randn(s.m, s.k, device=self.dev, dtype=torch.bfloat16).to(f8)
                w = torch.randn(s.n, s.k, device=self.dev, dtype=torch.bfloat16).to(f8)
                one = torch.ones((), device=self.dev, dtype=torch.float32)
                # mat2 column-major (k, n), as _scaled_mm requires; scales as keywords work on torch 2.1..2.x
                fns.append(partial(torch._scaled_mm, a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
            else:
                td = self._tdtype(dtype)
                a = torch.randn(s.m, s.k, device=self.dev, dtype=td)
                w = torch.randn(s.n, s.k, device=self.dev, dtype=td)
                if self._cpu_prepacked(dtype):
                    fns.append(partial(onednn_linear(torch, w), a))
                    continue
                c = torch.empty(s.m, s.n, device=self.dev, dtype=td)
                fns.append(partial(torch.mm, a, w.t(), out=c))
        return fns

    def _cpu_prepacked(self, dtype: str) -> bool:
        """bf16 linear layers on the CPU run as vLLM's CPU backend runs them: a oneDNN matmul on a
        weight reordered once into oneDNN's blocked layout, not torch.mm on the plain one (which
        repacks the weight on every call and is several times slower at a few tokens)."""
        mkldnn = getattr(self.torch.ops, "mkldnn", None)
        return (not self.is_cuda and dtype == "bf16" and self.torch.backends.mkldnn.is_available()
                and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))

    def gemm_kernel(self, dtype: str) -> str:
        """What the `backend` column of a GEMM row says ran it."""
        return "onednn-prepacked" if self._cpu_prepacked(dtype) else ""

    # attention
    def _sdpa_backends(self) -> list[tuple[str, Callable[[], Any]]]:
        torch = self.torch
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            names = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"),
                     ("math", "MATH"))
            return [(label, partial(sdpa_kernel, [getattr(SDPBackend, attr)])) for label, attr in names
                    if hasattr(SDPBackend, attr)]
        except ImportError:  # torch < 2.3
            ctx = torch.backends.cuda.sdp_kernel
            return [("flash", partial(ctx, enable_flash=True, enable_math=False, enable_mem_efficient=False)),
                    ("efficient", partial(ctx, enable_flash=False, enable_math=False, enable_mem_efficient=True)),
                    ("math", partial(ctx, enable_flash=False, enable_math=True, enable_mem_efficient=False))]

    def _attention(self, op: str, dtype: str, s) -> dict[str, Any]:
        torch, F = self.torch, self.F
        decode = op == "attn_decode"
        b, hq, hkv, d = s.batch, s.heads, s.kv_heads, s.head_dim
        q_len, kv_len = (1, s.kv_len) if decode else (s.seq_len, s.kv_len)
        mask, causal = None, not decode
        if not decode and kv_len != q_len:
            try:
                from torch.nn.attention.bias import causal_lower_right
            except ImportError:
                raise Skip("chunked attn_prefill (kv_len > seq_len) needs torch.nn.attention.bias."
                           "causal_lower_right (torch 2.3+)") from None
            mask, causal = causal_lower_right(q_len, kv_len), False
        # scores and values: 4 FLOP per query-key pair and head dimension, half the pairs under a fresh causal mask
        pairs = b * hq * q_len * (kv_len - (q_len - 1) / 2 if causal else kv_len)
        self._cpu_cap(4.0 * pairs * d)
        td, eb = self._tdtype(dtype), 2
        group = hq // hkv
        set_bytes = (2 * b * q_len * hq * d + 2 * b * kv_len * hkv * d) * eb
        sets = self._sets(set_bytes)
        self._check_fits(sets * set_bytes * (1 + (group > 1)))

        def tensors():
            # (batch, len, heads, dim) storage seen as (batch, heads, len, dim), as models lay it out
            q = torch.randn(b, q_len, hq, d, device=self.dev, dtype=td).transpose(1, 2)
            k = torch.randn(b, kv_len, hkv, d, device=self.dev, dtype=td).transpose(1, 2)
            v = torch.randn(b, kv_len, hkv, d, device=self.dev, dtype=td).transpose(1, 2)
            return q, k, v

        def make(qkv, ctx, gqa):
            q, k, v = qkv
            kw: dict[str, Any] = {}
            if gqa == "native":
                kw["enable_gqa"] = True
            elif gqa == "repeated":
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

            def call():
                with ctx():
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **kw)
            return call

        base = tensors()
        scores = b * hq * q_len * kv_len * 4.0
        modes = ["native", "repeated"] if group > 1 else [""]
        if group > 1 and self._gqa_kwarg is False:
            modes = ["repeated"]
        chosen = None
        backends = self._sdpa_backends()
        fused = [x for x in backends if x[0] != "math"]
        math_b = [x for x in backends if x[0] == "math" and scores <= 2 * S.GIB]
        order = [(bk, m) for m in modes for bk in fused] + [(bk, m) for m in modes for bk in math_b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for (label, ctx), gqa in order:
                try:
                    make(base, ctx, gqa)()
                    self._sync()
                except TypeError:
                    if gqa == "native" and mask is None:  # this torch has no enable_gqa (before 2.5)
                        self._gqa_kwarg = False
                    continue
                except (RuntimeError, NotImplementedError, ValueError) as exc:
                    if "out of memory" in str(exc).lower():
                        raise
                    continue
                chosen = (label, ctx, gqa)
                break
        if chosen is None:
            raise Skip(f"{op}: no scaled_dot_product_attention backend takes this shape")
        label, ctx, gqa = chosen
        fns = [make(base, ctx, gqa)] + [make(tensors(), ctx, gqa) for _ in range(sets - 1)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = self._time(fns, graph=True)
        row["backend"] = label
        if gqa:
            row["gqa"] = gqa
        return row

    # copies
    def _buffer(self, store: dict, key, nbytes: int, make: Callable[[int], Any]):
        buf = store.get(key)
        if buf is None or buf.numel() < nbytes:
            store.pop(key, None)
            size = 1 << max(12, (nbytes - 1).bit_length())
            self._check_fits(size if key in ("a", "b") else 0)
            store[key] = buf = make(size)
        return buf[:nbytes]

    def _memcpy(self, s: S.Memcpy, dtype: str) -> dict[str, Any]:
        torch = self.torch
        u8 = torch.uint8

        def dev_buf(key):
            return self._buffer(self._dev, key, s.nbytes, lambda n: torch.zeros(n, dtype=u8, device=self.dev))

        if s.direction == "d2d":
            src, dst = dev_buf("a"), dev_buf("b")
            fns = [partial(dst.copy_, src)]
        else:
            if not self.is_cuda:
                raise Skip("host<->device copies need a GPU")
            pinned = bool(s.pinned)
            host = self._buffer(self._host, pinned, s.nbytes,
                                lambda n: torch.zeros(n, dtype=u8, pin_memory=pinned))
            gpu = dev_buf("a")
            src, dst = (host, gpu) if s.direction == "h2d" else (gpu, host)
            fns = [partial(dst.copy_, src, non_blocking=pinned)]
        row = self._time(fns, graph=False)
        if s.pinned is not None:
            row["pinned"] = bool(s.pinned)
        return row

    def meta(self) -> dict[str, Any]:
        torch = self.torch
        info: dict[str, Any] = {"torch": torch.__version__}
        if not self.is_cuda:
            return {**info, **self._cpu_meta()}
        p = self.props
        info["cuda"] = torch.version.cuda
        try:
            info["cudnn"] = torch.backends.cudnn.version()
        except Exception:  # noqa: BLE001
            pass
        try:
            info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            pass
        gpu = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory),
               "sm_count": int(p.multi_processor_count), "l2_bytes": self.l2, "count": torch.cuda.device_count()}
        nv = self.monitor.info() if self.monitor else {}
        gpu.update({k: v for k, v in nv.items() if v is not None and k != "driver"})
        info["driver"] = nv.get("driver") or nvidia_smi("driver_version")
        clocks = self.monitor.summary() if self.monitor else {}
        if not clocks:
            smi = nvidia_smi("clocks.sm,clocks.max.sm")
            clocks = {"nvidia_smi_sm_clock_now_max": smi} if smi else {}
        info["gpu"] = gpu
        info["clocks"] = clocks
        info["timing"] = {
            "method": "CUDA events on the current stream around each call (or each graph replay / graph_calls); "
                      "median, p10, p90 over trials",
            "warmup_s": self.timing[0], "trial_budget_s": self.timing[1], "flush_bytes": int(self.flush_buf.numel() * 4),
            "flush": "the flush buffer is zeroed before every trial (larger than L2)", "cuda_graph_calls": self.graph_calls,
            "tf32": False}
        return info

    def _cpu_meta(self) -> dict[str, Any]:
        torch = self.torch
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: None)()
        return {
            "cpu": {"model": self.name, "count": os.cpu_count(), "llc_bytes": self.l2, "llc_source": self.llc_source,
                    "torch_threads": torch.get_num_threads(), "torch_cpu_capability": capability,
                    "mkldnn": bool(torch.backends.mkldnn.is_available())},
            "clocks": {"cpu_mhz_start": self.mhz_start, "cpu_mhz_end": cpu_mhz()},
            "load_average": {"start": self.load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
            "timing": {"method": "time.perf_counter_ns around each call, after the last-level cache was flushed "
                                 "(a buffer of twice its size zeroed); median, p10, p90 over trials",
                       "warmup_s": self.timing[0], "trial_budget_s": self.timing[1],
                       "flush_bytes": int(self.flush_buf.numel() * 4)},
        }

    def close(self) -> None:
        self._host.clear()
        self._dev.clear()
