"""The roofline line of `bench --all`: work per slice, fractions of the measured peak, rendering."""

from __future__ import annotations

import pytest

from sgf_deploy.bench.backends.render import roofline_lines
from sgf_deploy.bench.roofline import fractions, gflop_per_slice


def test_fraction_of_peak_uses_the_precision_peak():
    results = {"320x4": {"size": 320, "batch": 4, "backends": {
        "pytorch-fp32": {"latency_ms_per_slice": {"p50": 1000.0}},
        "ov-int8": {"latency_ms_per_slice": {"p50": 100.0}},
        "ort-fp32": {"skipped": "outside the engine's profile"}}}}
    specs = [{"name": "pytorch-fp32", "precision": "fp32"}, {"name": "ov-int8", "precision": "int8"},
             {"name": "ort-fp32", "precision": "fp32"}]
    peaks = {"fp32_gflops": 100.0, "int8_gops": 200.0, "threads": 2, "int8_dot_product": "none", "method": "m"}
    out = fractions(results, specs, {320: 20.0}, peaks)["320x4"]
    assert out["pytorch-fp32"] == {"gflops": 20.0, "peak": "fp32", "fraction_of_peak": 0.2, "vs_int8_gemm": None}
    assert out["ov-int8"] == {"gflops": 200.0, "peak": "fp32", "fraction_of_peak": 2.0, "vs_int8_gemm": 1.0}
    assert "ort-fp32" not in out
    lines = roofline_lines({"gflop_per_slice": {320: 20.0}, "peaks": peaks, "fractions": {"320x4": out}})
    assert "320x320 20.00 GFLOP/slice" in lines[0] and "INT8 200.0 GOP/s" in lines[0]
    assert "ov-int8 200.0 GFLOP/s = 200% of the FP32 peak" in lines[1]
    no_int8 = dict(peaks, int8_gops=None)
    assert fractions(results, specs, {320: 20.0}, no_int8)["320x4"]["ov-int8"]["vs_int8_gemm"] is None


def test_gflop_per_slice_scales_with_pixels(tmp_path):
    torch = pytest.importorskip("torch")
    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = tmp_path / "lite.pt"
    save_checkpoint(ckpt, build_model("lite").eval(), {"task": "recon4x", "pair": "t1-t2"})
    small, large = gflop_per_slice(str(ckpt), 32), gflop_per_slice(str(ckpt), 64)
    assert small > 0 and 3.5 < large / small < 4.5  # convolutions: linear in pixels (attention is small here)
