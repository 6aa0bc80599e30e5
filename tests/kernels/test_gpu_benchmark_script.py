"""benchmarks/gpu_mcns.py cannot measure anything here; check that it says so and that its
report renders (the part of it that runs after the GPU work)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_mcns.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_mcns", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit path")
def test_exits_2_without_a_gpu_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no CUDA GPU" in proc.stderr
    assert not out.exists()


def test_report_renders():
    m = _load()
    env = {"device": "Fake GPU", "compute_capability": "8.6", "memory_gib": 24.0, "date": "2026-01-01T00:00:00+00:00"}
    checks = [
        {"shape": "B=1 C=8 H=5 W=7 G=2", "dtype": "float32", "max_abs_err": 1e-7, "passed": True},
        {"shape": "B=1 C=8 H=5 W=7 G=2", "dtype": "float16", "max_abs_err": 2e-4, "passed": True},
    ]
    t = lambda ms: {"median_ms": ms, "min_ms": ms}  # noqa: E731
    times = [
        {"B": 4, "HxW": "80x80", "dtype": "float32", "fused": t(0.1), "eager": t(1.0), "compiled": t(0.3),
         "speedup_vs_eager": 10.0, "speedup_vs_compiled": 3.0, "fused_gbps": 500.0},
        {"B": 4, "HxW": "160x160", "dtype": "float32", "fused": t(0.4), "eager": t(1.6),
         "compiled_error": "RuntimeError: no triton", "speedup_vs_eager": 4.0, "fused_gbps": 480.0},
        {"B": 1, "HxW": "40x40", "dtype": "float16", "error": "OutOfMemoryError: x"},
    ]
    text = m.render(env, checks, times, reps=50)
    assert "Fake GPU" in text and "Overall: **PASS**" in text
    assert "| 4 | 80x80 | float32 | 0.100 | 1.000 | 0.300 | 10.0x | 3.0x | 500 |" in text
    assert "failed: RuntimeError: no triton" in text and "error: OutOfMemoryError" in text
    assert "**NOT met** (smallest speedup 4.0x)" in text
