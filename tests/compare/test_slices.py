"""compare_outputs: per-slice figures, data range convention, aggregates, non-finite outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgf_deploy.metrics import psnr
from sgf_deploy.compare import compare_outputs

pytest.importorskip("scipy.stats", reason="paired statistics use scipy")


def _volumes(seed=0):
    rng = np.random.default_rng(seed)
    gt = [rng.uniform(0, 1, (2, 24, 20)).astype(np.float32), rng.uniform(0, 5, (1, 24, 20)).astype(np.float32)]
    pt = [g + rng.normal(0, 0.05 * g.max(), g.shape).astype(np.float32) for g in gt]
    return gt, pt, rng


def test_identical_outputs():
    gt, pt, _ = _volumes()
    r = compare_outputs(gt, pt, [p.copy() for p in pt], ["a", "b"])
    s = r["summary"]
    assert s["n_slices"] == 3 and s["n_scored"] == 3
    assert s["parity_psnr"]["min"] is None and s["parity_psnr"]["identical_slices"] == 3
    assert s["delta_psnr"]["mean_diff"] == 0 and s["delta_psnr"]["wilcoxon_p"] == 1.0
    assert s["max_abs_error"]["max"] == 0
    assert r["nonfinite"] == {"engine": 0, "pytorch": 0, "slices": []}


def test_parity_psnr_uses_the_volume_ground_truth_maximum():
    gt, pt, rng = _volumes(1)
    eng = [p + rng.normal(0, 1e-3, p.shape).astype(np.float32) for p in pt]
    r = compare_outputs(gt, pt, eng, ["a", "b"])
    rows = r["per_slice"]
    assert [(x["volume"], x["slice"]) for x in rows] == [("a", 0), ("a", 1), ("b", 0)]
    for row, (v, s) in zip(rows, [(0, 0), (0, 1), (1, 0)]):
        rng_v = float(gt[v].max())  # the volume's maximum, not the slice's
        assert row["data_range"] == pytest.approx(rng_v)
        assert row["psnr_engine_vs_pytorch"] == pytest.approx(psnr(pt[v][s], eng[v][s], data_range=rng_v), abs=1e-9)
        assert row["psnr_pytorch"] == pytest.approx(psnr(gt[v][s], pt[v][s], data_range=rng_v), abs=1e-9)
        assert row["delta_psnr"] == pytest.approx(row["psnr_engine"] - row["psnr_pytorch"])
        assert row["max_abs_error"] == pytest.approx(float(np.max(np.abs(eng[v][s].astype(np.float64) - pt[v][s]))))
    s = r["summary"]
    assert s["parity_psnr"]["min"] == pytest.approx(min(x["psnr_engine_vs_pytorch"] for x in rows))
    assert s["delta_psnr"]["mean_diff"] == pytest.approx(np.mean([x["delta_psnr"] for x in rows]))
    assert s["delta_psnr"]["ci95_low"] <= s["delta_psnr"]["mean_diff"] <= s["delta_psnr"]["ci95_high"]
    worst = int(np.argmin([x["delta_psnr"] for x in rows]))
    assert r["worst_index"] == worst == s["delta_psnr"]["worst_slice"]


def test_nonfinite_engine_output_is_counted_and_chosen_for_the_panel():
    gt, pt, _ = _volumes(2)
    eng = [p.copy() for p in pt]
    eng[0][1, 3, 4] = np.nan
    eng[0][1, 5, 5] = np.inf
    r = compare_outputs(gt, pt, eng)
    assert r["nonfinite"]["engine"] == 2 and r["nonfinite"]["slices"] == [1]
    assert r["worst_index"] == 1
    assert r["summary"]["n_scored"] == 2
    assert not math.isnan(r["summary"]["engine"]["psnr"])
