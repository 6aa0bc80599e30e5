"""The parity gate: default thresholds per precision, overrides, and the verdict rule."""

from __future__ import annotations

import math

import pytest

from sgf_deploy.validate.thresholds import DEFAULT_THRESHOLDS, judge, thresholds_for


def test_defaults_match_the_issue():
    assert (DEFAULT_THRESHOLDS["fp32"].min_parity_psnr, DEFAULT_THRESHOLDS["fp32"].max_delta_psnr) == (80.0, 0.001)
    assert (DEFAULT_THRESHOLDS["fp16"].min_parity_psnr, DEFAULT_THRESHOLDS["fp16"].max_delta_psnr) == (50.0, 0.01)
    assert (DEFAULT_THRESHOLDS["int8"].min_parity_psnr, DEFAULT_THRESHOLDS["int8"].max_delta_psnr) == (40.0, 0.1)


@pytest.mark.parametrize("precision,expected", [("fp32", 80.0), ("FP16", 50.0), ("int8", 40.0), ("bf16", 50.0),
                                                ("weird", 80.0), (None, 80.0)])
def test_thresholds_for_precision(precision, expected):
    th = thresholds_for(precision)
    assert th.min_parity_psnr == expected
    assert th.source.startswith("default")


def test_user_overrides_one_value_keep_the_other_default():
    th = thresholds_for("fp16", min_parity_psnr=45)
    assert (th.min_parity_psnr, th.max_delta_psnr) == (45.0, 0.01)
    assert th.source.startswith("user")
    with pytest.raises(ValueError):
        thresholds_for("fp32", max_delta_psnr=-1)
    with pytest.raises(ValueError):
        thresholds_for("fp32", min_parity_psnr=math.nan)


def test_judge():
    th = thresholds_for("fp16")
    assert judge(nonfinite=0, parity_psnr_min=60.0, delta_psnr_mean=-0.005, thresholds=th) == ("pass", [])
    assert judge(nonfinite=0, parity_psnr_min=math.inf, delta_psnr_mean=0.0, thresholds=th)[0] == "pass"
    verdict, reasons = judge(nonfinite=0, parity_psnr_min=49.9, delta_psnr_mean=0.0, thresholds=th)
    assert verdict == "fail" and "49.90 dB < 50 dB" in reasons[0]
    # an engine *better* than PyTorch by more than the gate is not the validated model either
    assert judge(nonfinite=0, parity_psnr_min=60.0, delta_psnr_mean=+0.02, thresholds=th)[0] == "fail"
    assert judge(nonfinite=0, parity_psnr_min=60.0, delta_psnr_mean=-0.02, thresholds=th)[0] == "fail"
    verdict, reasons = judge(nonfinite=3, parity_psnr_min=None, delta_psnr_mean=None, thresholds=th)
    assert verdict == "fail" and reasons == ["3 non-finite output value(s) (NaN/Inf)"]
    assert judge(nonfinite=0, parity_psnr_min=None, delta_psnr_mean=None, thresholds=th)[0] == "fail"
