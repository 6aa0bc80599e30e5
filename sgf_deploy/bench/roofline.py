"""The roofline line of ``bench --all``: GFLOP per slice, this CPU's measured peak, each engine's
fraction of it.

* **Work**: PyTorch's FLOP counter (``torch.utils.flop_counter.FlopCounterMode``) on
  ``forward_core`` at (1, 1, S, S); a multiply-add counts 2 FLOP. MCNS is a custom op the counter
  does not see (elementwise; small next to the convolutions).
* **Peak, FP32**: a short FMA-bound microbenchmark: a 1024^3 single-precision matrix product
  (``torch.mm``: oneDNN/MKL SGEMM, whose inner loop is FMA), best of 5, with the benchmark's thread
  count. This is the *measured* peak under whatever load the machine had, not the data-sheet one.
* **Peak, INT8**: the same product with both operands FakeQuantized to 8 bits, compiled by
  OpenVINO (its u8s8 GEMM): on CPUs with VNNI / AMX one instruction does 8-bit dot products into
  32 bits; without them (AVX2 only) it takes ``vpmaddubsw`` + ``vpmaddwd`` (16-bit intermediate),
  so the INT8 peak is only about 2x the FP32 one. The record says which flags the CPU has.
* **Fraction**: (GFLOP per slice / seconds per slice at p50) / the measured FP32 FMA peak, for
  every engine (an INT8 engine above 100 % beats the FP32 roof). The INT8 GEMM figure is kept as
  ``vs_int8_gemm`` only: measured on the AVX2-only EPYC (2026-12-07) the lite INT8 engines reached
  1.5-2.1x that "peak", so OpenVINO's FakeQuantize MatMul is not a usable INT8 roof there (its
  8-bit MatMul is not the convolution kernels' path); on VNNI / AMX CPUs it may be.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from . import machine as M

SIZE = 1024
REPEATS = 5


def gflop_per_slice(ckpt: str, size: int) -> float:
    """GFLOP of one forward of the checkpoint's network on one size x size slice."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..model import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    x = torch.zeros(1, 1, size, size)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model.forward_core(x, x)
    return counter.get_total_flops() / 1e9


def _best(fn: Any, flop: float) -> float:
    fn()
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flop / best / 1e9


def fp32_peak_gflops(threads: int = M.THREADS) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
    return _best(lambda: torch.mm(a, b), 2.0 * SIZE**3)


def int8_peak_gops(threads: int = M.THREADS) -> float | None:
    """8-bit GEMM throughput through OpenVINO (None when OpenVINO is not installed)."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    a = ops.parameter([SIZE, SIZE], np.float32, name="a")
    b = ops.constant(np.random.default_rng(0).standard_normal((SIZE, SIZE)).astype(np.float32))

    def fq(x: Any, signed: bool) -> Any:
        lo, hi = (-1.0, 1.0) if signed else (0.0, 1.0)
        c = [ops.constant(np.array(v, np.float32)) for v in (lo, hi, lo, hi)]
        return ops.fake_quantize(x, *c, levels=256)

    model = ov.Model([ops.matmul(fq(a, False), fq(b, True), False, False)], [a], "int8_gemm")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).random((SIZE, SIZE), dtype=np.float32)
    return _best(lambda: request.infer({"a": x}), 2.0 * SIZE**3)


def measure_peaks(threads: int = M.THREADS) -> dict[str, Any]:
    from ..cpu import INT8_DOT_FLAGS, cpu_flags

    flags = cpu_flags()
    return {
        "fp32_gflops": fp32_peak_gflops(threads),
        "int8_gops": int8_peak_gops(threads),
        "threads": threads,
        "method": f"{SIZE}^3 GEMM, best of {REPEATS}: FP32 torch.mm (FMA), INT8 OpenVINO u8s8 (FakeQuantize)",
        "int8_dot_product": sorted(flags & INT8_DOT_FLAGS) or
        "none (no VNNI / AMX: 8-bit products go through 16-bit vpmaddubsw + vpmaddwd)",
        "loadavg": M.loadavg(),
    }


def fractions(results: dict[str, Any], specs: list[dict[str, Any]], gflop: dict[int, float],
              peaks: dict[str, Any]) -> dict[str, Any]:
    """``{"SxB": {name: {"gflops": achieved, "fraction_of_peak": f, "peak": which}}}``."""
    precision = {s["name"]: s.get("precision", "fp32") for s in specs}
    out: dict[str, Any] = {}
    for key, res in results.items():
        work = gflop.get(res["size"])
        rows = {}
        for name, row in res["backends"].items():
            lat = (row.get("latency_ms_per_slice") or {}).get("p50")
            if not work or not lat:
                continue
            achieved = work / (lat / 1e3)
            peak = peaks.get("fp32_gflops")
            int8_gemm = peaks.get("int8_gops")
            rows[name] = {"gflops": achieved, "peak": "fp32", "fraction_of_peak": achieved / peak if peak else None,
                          "vs_int8_gemm": achieved / int8_gemm if int8_gemm and precision.get(name) == "int8" else None}
        out[key] = rows
    return out
