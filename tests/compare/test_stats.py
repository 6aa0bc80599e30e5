"""sgf_deploy.validate.stats: paired per-slice comparison (reference a vs engine b)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from sgf_deploy.compare.stats import PairedComparison, paired_comparison

scipy_stats = pytest.importorskip("scipy.stats", reason="the CI and Wilcoxon test use scipy")

T975_DF4 = 2.7764451051977987  # Student t, 97.5 % quantile, 4 degrees of freedom


def test_ci_hand_computation_and_contains_true_mean():
    a = np.array([30.0, 31.0, 29.5, 32.0, 30.5])
    true_mu = -0.05
    d = np.array([-0.2, -0.1, 0.0, 0.1, 0.2]) + true_mu  # sample mean == true_mu exactly
    r = paired_comparison(a, a + d)
    sd = math.sqrt(0.025)  # sum of squares 0.1 over n-1 = 4
    half = T975_DF4 * sd / math.sqrt(5)
    assert r.n == 5
    assert r.mean_diff == pytest.approx(true_mu, abs=1e-12)
    assert r.ci95_low == pytest.approx(true_mu - half, abs=1e-12)
    assert r.ci95_high == pytest.approx(true_mu + half, abs=1e-12)
    assert r.ci95_low < true_mu < r.ci95_high
    assert r.mean_a == pytest.approx(a.mean()) and r.mean_b == pytest.approx((a + d).mean())
    assert r.worst_index == 0


def test_ci_coverage_is_about_95_percent():
    rng = np.random.default_rng(7)
    hits = 0
    reps = 400
    for _ in range(reps):
        a = rng.normal(30, 1, 12)
        b = a + rng.normal(0.1, 0.05, 12)
        r = paired_comparison(a, b)
        hits += r.ci95_low <= 0.1 <= r.ci95_high
    assert 0.91 <= hits / reps <= 0.99


def test_wilcoxon_matches_scipy():
    a = np.array([29.1, 30.2, 28.7, 31.0, 30.0, 29.5, 30.8, 28.9, 29.9, 30.4, 31.2])
    d = np.array([0.03, -0.01, 0.02, 0.05, -0.02, 0.04, 0.0, 0.01, 0.06, -0.03, 0.02])
    r = paired_comparison(a, a + d)
    diff = (a + d) - a
    ref = scipy_stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue
    assert r.wilcoxon_p == pytest.approx(float(ref), rel=1e-12)
    assert 0 < r.wilcoxon_p < 1


def test_all_zero_differences():
    a = np.array([30.0, 31.0, 29.0, 28.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = paired_comparison(a, a.copy())
    assert r.wilcoxon_p == 1.0
    assert (r.mean_diff, r.ci95_low, r.ci95_high) == (0.0, 0.0, 0.0)
    assert r.worst_index == 0


def test_n_equals_one():
    r = paired_comparison(np.array([30.0]), np.array([29.9]))
    assert r.n == 1 and r.wilcoxon_p is None
    assert r.ci95_low == -math.inf and r.ci95_high == math.inf
    assert r.mean_diff == pytest.approx(-0.1)
    d = r.to_dict()
    assert d["ci95_low"] is None and d["ci95_high"] is None and d["wilcoxon_p"] is None
    json.dumps(d, allow_nan=False)


def test_sign_convention_engine_worse_is_negative():
    a = np.array([30.0, 31.0, 29.0, 30.5, 28.0])
    b = a - np.array([0.04, 0.05, 0.12, 0.06, 0.04])
    r = paired_comparison(a, b)
    assert r.mean_diff < 0 and r.ci95_high < 0
    assert r.worst_index == 2
    assert r.mean_diff == pytest.approx(r.mean_b - r.mean_a)


def test_to_dict_roundtrips_json():
    a = np.linspace(29, 31, 6)
    r = paired_comparison(a, a + 0.01 * np.arange(6))
    d = r.to_dict()
    assert set(d) == {"n", "mean_a", "mean_b", "mean_diff", "ci95_low", "ci95_high", "wilcoxon_p", "worst_index"}
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert isinstance(r, PairedComparison)


def test_infinite_psnr_slices():
    inf = math.inf
    # Both exact on slice 1 -> difference 0 there.
    r = paired_comparison(np.array([30.0, inf, 29.0]), np.array([29.9, inf, 29.0]))
    assert r.mean_diff == pytest.approx(-0.1 / 3)
    assert r.mean_a == inf and r.to_dict()["mean_a"] is None
    with pytest.raises(ValueError, match=r"slice\(s\) \[1\]"):
        paired_comparison(np.array([30.0, inf]), np.array([30.0, 40.0]))


def test_input_errors():
    with pytest.raises(ValueError, match="equal length"):
        paired_comparison(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="1-D"):
        paired_comparison(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty"):
        paired_comparison(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        paired_comparison(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
