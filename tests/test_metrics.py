"""sgf_deploy.metrics against scikit-image / fastMRI conventions on fixed arrays."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from sgf_deploy import metrics as m
from sgf_deploy.errors import InputError

skm = pytest.importorskip("skimage.metrics", reason="scikit-image is the reference for PSNR/SSIM")

RTOL = 1e-6


def _phantom(h: int, w: int, n: int = 1, seed: int = 0) -> np.ndarray:
    """Smooth, non-negative test image(s): ellipses + a slow ramp, deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    out = np.empty((n, h, w))
    for i in range(n):
        img = 0.2 + 0.1 * xx + 0.05 * np.sin(3 * yy + i)
        for _ in range(4):
            cy, cx = rng.uniform(-0.5, 0.5, 2)
            ry, rx = rng.uniform(0.2, 0.6, 2)
            img += rng.uniform(0.2, 1.0) * np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) * 4)
        out[i] = img
    return out


def _pair(kind: str):
    rng = np.random.default_rng(1234)
    if kind == "random_37x53":
        gt = rng.random((37, 53)) * 2.0
        pred = gt + 0.1 * rng.standard_normal(gt.shape)
    elif kind == "phantom_37x53":
        gt = _phantom(37, 53)[0]
        pred = gt + 0.03 * rng.standard_normal(gt.shape)
    elif kind == "phantom_3x64x80":
        gt = _phantom(64, 80, n=3)
        pred = 0.95 * gt + 0.02 * rng.standard_normal(gt.shape)
    else:  # random stack, odd sizes
        gt = rng.random((3, 41, 29)) * 100.0
        pred = gt + 5.0 * rng.standard_normal(gt.shape)
    return gt, pred


CASES = ["random_37x53", "phantom_37x53", "phantom_3x64x80", "random_3x41x29"]


def _sk_ssim_slices(gt, pred, data_range):
    g = gt.reshape((-1,) + gt.shape[-2:])
    p = pred.reshape(g.shape)
    return np.array([skm.structural_similarity(a, b, data_range=data_range) for a, b in zip(g, p)])


@pytest.mark.parametrize("kind", CASES)
def test_psnr_matches_skimage(kind):
    gt, pred = _pair(kind)
    ref = skm.peak_signal_noise_ratio(gt, pred, data_range=gt.max())
    assert m.psnr(gt, pred) == pytest.approx(ref, rel=RTOL)


@pytest.mark.parametrize("kind", CASES)
def test_ssim_matches_skimage(kind):
    gt, pred = _pair(kind)
    ref = _sk_ssim_slices(gt, pred, gt.max())
    np.testing.assert_allclose(m.ssim_per_slice(gt, pred), ref, rtol=RTOL, atol=0)
    assert m.ssim(gt, pred) == pytest.approx(ref.mean(), rel=RTOL)


@pytest.mark.parametrize("kind", CASES)
def test_nmse_formula(kind):
    gt, pred = _pair(kind)
    ref = np.linalg.norm(gt - pred) ** 2 / np.linalg.norm(gt) ** 2
    assert m.nmse(gt, pred) == pytest.approx(ref, rel=1e-12)


def test_float32_and_integer_inputs_scored_in_float64():
    gt, pred = _pair("phantom_3x64x80")
    g32, p32 = gt.astype(np.float32), pred.astype(np.float32)
    r = float(g32.max())
    ref = _sk_ssim_slices(g32.astype(np.float64), p32.astype(np.float64), r).mean()
    assert m.ssim(g32, p32) == pytest.approx(ref, rel=1e-12)
    # skimage itself computes float32 SSIM in float32: close, not identical.
    assert m.ssim(g32, p32) == pytest.approx(_sk_ssim_slices(g32, p32, r).mean(), rel=1e-5)
    gi = np.round(gt * 1000).astype(np.uint16)
    pi = np.round(np.clip(pred, 0, None) * 1000).astype(np.uint16)
    ref = skm.peak_signal_noise_ratio(gi, pi, data_range=float(gi.max()))
    assert m.psnr(gi, pi) == pytest.approx(ref, rel=RTOL)


def test_volume_data_range_not_per_slice():
    gt, pred = _pair("phantom_3x64x80")
    scale = np.array([1.0, 0.3, 0.05])[:, None, None]  # very different slice maxima
    gt, pred = gt * scale, pred * scale
    vmax = gt.max()
    ps = m.psnr_per_slice(gt, pred)
    ss = m.ssim_per_slice(gt, pred)
    ref_ps = [skm.peak_signal_noise_ratio(g, p, data_range=vmax) for g, p in zip(gt, pred)]
    np.testing.assert_allclose(ps, ref_ps, rtol=RTOL)
    np.testing.assert_allclose(ss, _sk_ssim_slices(gt, pred, vmax), rtol=RTOL)
    # ...and not the per-slice maximum, which would inflate the dark slice's score.
    own = skm.peak_signal_noise_ratio(gt[2], pred[2], data_range=gt[2].max())
    assert abs(ps[2] - own) > 10
    assert m.ssim(gt, pred) == pytest.approx(ss.mean(), rel=1e-12)
    # Volume PSNR uses one MSE over all voxels (fastMRI), not the mean of slice PSNRs.
    assert m.psnr(gt, pred) == pytest.approx(skm.peak_signal_noise_ratio(gt, pred, data_range=vmax), rel=RTOL)
    assert abs(m.psnr(gt, pred) - ps.mean()) > 1e-3


def test_explicit_data_range():
    gt, pred = _pair("random_3x41x29")
    assert m.psnr(gt, pred, data_range=250.0) == pytest.approx(
        skm.peak_signal_noise_ratio(gt, pred, data_range=250.0), rel=RTOL
    )
    assert m.ssim(gt, pred, data_range=250.0) == pytest.approx(_sk_ssim_slices(gt, pred, 250.0).mean(), rel=RTOL)
    np.testing.assert_allclose(m.psnr_per_slice(gt, pred, data_range=250.0),
                               [skm.peak_signal_noise_ratio(g, p, data_range=250.0) for g, p in zip(gt, pred)],
                               rtol=RTOL)


def test_identical_gives_inf_psnr_without_warning():
    gt, pred = _pair("phantom_3x64x80")
    pred = pred.copy()
    pred[1] = gt[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.psnr(gt, gt) == float("inf")
        ps = m.psnr_per_slice(gt, pred)
        assert m.ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)
        assert m.nmse(gt, gt) == 0.0
    assert np.isinf(ps[1]) and np.isfinite(ps[[0, 2]]).all()
    assert m.summarize(gt, gt)["psnr"] == float("inf")


def test_constant_ground_truth():
    # All-zero (max 0): data range undefined -> refused, not NaN/-inf.
    z = np.zeros((2, 16, 16))
    p = np.full_like(z, 0.1)
    for fn in (m.psnr, m.ssim, m.psnr_per_slice, m.ssim_per_slice, m.summarize):
        with pytest.raises(ValueError, match="ground truth maximum"):
            fn(z, p)
    with pytest.raises(ValueError, match="all zero; NMSE undefined"):
        m.nmse(z, p)
    # ...but it is scorable with an explicit range.
    assert np.isfinite(m.psnr(z, p, data_range=1.0))
    # Constant positive ground truth: range = gt.max() > 0, well-defined, matches skimage.
    c = np.full((20, 24), 3.0)
    q = c + 0.1 * np.random.default_rng(0).standard_normal(c.shape)
    assert m.psnr(c, q) == pytest.approx(skm.peak_signal_noise_ratio(c, q, data_range=3.0), rel=RTOL)
    assert m.ssim(c, q) == pytest.approx(skm.structural_similarity(c, q, data_range=3.0), rel=RTOL)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_data_range(bad):
    gt, pred = _pair("random_37x53")
    with pytest.raises(ValueError, match="data_range"):
        m.psnr(gt, pred, data_range=bad)
    with pytest.raises(ValueError, match="data_range"):
        m.ssim(gt, pred, data_range=bad)


def test_input_errors():
    gt, pred = _pair("phantom_3x64x80")
    with pytest.raises(ValueError, match="shape mismatch"):
        m.psnr(gt, pred[:, :-1])
    with pytest.raises(ValueError, match="shape mismatch"):
        m.ssim(gt, pred[:2])
    for v in (np.nan, np.inf, -np.inf):
        bad = pred.copy()
        bad[0, 3, 4] = v
        with pytest.raises(ValueError, match="pred contains 1 non-finite"):
            m.summarize(gt, bad)
        with pytest.raises(ValueError, match="gt contains 1 non-finite"):
            m.nmse(bad, gt)
    with pytest.raises(ValueError, match="dtype complex"):
        m.psnr(gt.astype(complex), pred.astype(complex))
    with pytest.raises(ValueError, match="dtype bool"):
        m.nmse(gt > 0.5, pred > 0.5)
    with pytest.raises(ValueError, match="empty"):
        m.nmse(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(N, H, W\)"):
        m.ssim(gt[None], pred[None])
    with pytest.raises(ValueError, match="at least 7x7"):
        m.ssim(gt[:, :6, :], pred[:, :6, :])
    # One error type serves both plain-Python callers and the CLI's one-line reporting.
    with pytest.raises(InputError):
        m.psnr(gt, pred[:1])


@pytest.mark.parametrize(
    "shape, target, h0, w0",
    [((6, 8), (4, 4), 1, 2), ((7, 9), (4, 4), 1, 2), ((7, 9), (3, 5), 2, 2), ((6, 9), (3, 4), 1, 2),
     ((5, 5), (5, 5), 0, 0), ((5, 4), (1, 1), 2, 1)],
)
def test_center_crop(shape, target, h0, w0):
    x = np.arange(2 * shape[0] * shape[1]).reshape((2,) + shape)
    y = m.center_crop(x, target)
    assert y.shape == (2,) + tuple(target)
    np.testing.assert_array_equal(y, x[:, h0 : h0 + target[0], w0 : w0 + target[1]])
    # fastMRI's formula
    fh, fw = (shape[0] - target[0]) // 2, (shape[1] - target[1]) // 2
    assert (fh, fw) == (h0, w0)


def test_center_crop_invalid():
    x = np.zeros((6, 8))
    for target in [(7, 4), (4, 9), (0, 4), (4, -1)]:
        with pytest.raises(ValueError, match="centre-crop"):
            m.center_crop(x, target)
    with pytest.raises(ValueError, match="2-D"):
        m.center_crop(np.zeros(5), (2, 2))


def test_summarize():
    gt, pred = _pair("phantom_3x64x80")
    s = m.summarize(gt, pred)
    assert set(s) == {"psnr", "ssim", "nmse"}
    assert all(type(v) is float for v in s.values())
    assert s == {"psnr": m.psnr(gt, pred), "ssim": m.ssim(gt, pred), "nmse": m.nmse(gt, pred)}


def test_import_is_numpy_only():
    code = (
        "import sys, sgf_deploy.metrics\n"
        "bad = [k for k in ('torch', 'scipy', 'skimage') if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
