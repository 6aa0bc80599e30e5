"""Measurement mechanics: machine record, statistics, power-law fits, memory helpers, workers."""

from __future__ import annotations

import math

import pytest

from sgf_deploy.bench import machine as M


def test_machine_info_has_what_a_figure_needs():
    info = M.machine_info()
    for key in ("cpu", "logical_cores", "libraries", "threads", "gpus", "child_environment", "recorded_at"):
        assert key in info
    assert info["threads"]["torch.set_num_threads"] == 2 and info["threads"]["ort.intra_op_num_threads"] == 2
    assert "numpy" in info["libraries"] and info["libraries"]["numpy"]
    assert info["child_environment"]["OMP_WAIT_POLICY"]


def test_power_law_recovers_exponent_and_crossover():
    xs = [1e4, 4e4, 1.6e5, 2.6e5]
    lin = M.power_law(xs, [3e-6 * x for x in xs])
    quad = M.power_law(xs, [1e-12 * x**2 for x in xs])
    assert lin["exponent"] == pytest.approx(1.0, abs=1e-9) and lin["r2"] == pytest.approx(1.0)
    assert quad["exponent"] == pytest.approx(2.0, abs=1e-9)
    # 1e-12 x^2 == 3e-6 x  at  x = 3e6
    assert M.crossover(quad, lin) == pytest.approx(3e6, rel=1e-6)
    assert M.power_law([1.0], [1.0]) is None
    assert M.crossover(None, lin) is None


def test_rotations_and_summaries():
    items = ["a", "b", "c"]
    assert [M.rotations(items, r) for r in range(4)] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    s = M.summarize([3.0, 1.0, 2.0, float("nan")])
    assert s["n"] == 3 and s["median"] == 2.0 and s["min"] == 1.0
    assert M.summarize([]) == {"n": 0}
    assert M.percentile([1, 2, 3, 4], 50) == 2.5


def test_memory_helpers_return_numbers():
    """In a fresh process (freed heap pages of a long-lived one would hide a new block)."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from sgf_deploy.bench import machine as M\n"
        "assert M.current_rss_mb() > 0\n"
        "if M.reset_peak_rss():\n"
        "    before = M.current_rss_mb(); block = np.ones(40_000_000 // 8)\n"
        "    assert M.peak_rss_mb() >= before + 30, (before, M.peak_rss_mb())\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert not math.isnan(M.peak_rss_mb())


def test_loadavg():
    la = M.loadavg()
    assert la is None or len(la) == 3
