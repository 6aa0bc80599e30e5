"""image_parity: one definition of PSNR(test vs reference) and max error, with a stated data range."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sgf_deploy.compare import image_parity
from sgf_deploy.metrics import psnr


def test_rules_and_values():
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 3, (2, 16, 16))
    b = a + rng.normal(0, 1e-3, a.shape)
    by_max = image_parity(a, b, rule="reference_max")
    assert by_max.data_range == pytest.approx(a.max())
    assert by_max.psnr_db == pytest.approx(psnr(a, b, data_range=a.max()))
    span = image_parity(a, b, rule="reference_span")
    assert span.data_range == pytest.approx(a.max() - a.min()) and span.psnr_db > by_max.psnr_db
    gt = a * 2
    assert image_parity(a, b, rule="ground_truth_max", ground_truth=gt).data_range == pytest.approx(gt.max())
    assert image_parity(a, b, range_override=7.0).data_range == 7.0
    assert by_max.max_abs_error == pytest.approx(float(np.abs(a - b).max()))
    assert by_max.to_dict(digits=3)["data_range_rule"] == "reference_max"


def test_identical_non_finite_and_mismatched():
    a = np.ones((4, 4))
    assert image_parity(a, a.copy()).psnr_db == math.inf
    bad = a.copy()
    bad[0, 0] = np.nan
    result = image_parity(a, bad)
    assert result.psnr_db == -math.inf and result.max_abs_error == math.inf and result.non_finite == 1
    assert not result.finite and "non_finite_outputs" in result.to_dict()
    assert image_parity(a, np.ones((3, 4))).psnr_db == -math.inf
    with pytest.raises(ValueError, match="unknown data range rule"):
        image_parity(a, a, rule="nope")
