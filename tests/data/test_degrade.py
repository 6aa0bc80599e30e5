import numpy as np
import pytest

from sgf_deploy.data.degrade import (
    TASKS, degrade, degrade_with_mask, denormalize, low_resolution, normalize_instance, undersample,
    undersample_kspace,
)
from sgf_deploy.data.kspace import fft2c, ifft2c
from sgf_deploy.errors import InputError


def _blob(h=64, w=57, sigma=9.0):
    y, x = np.mgrid[:h, :w]
    return (np.exp(-((y - h / 2) ** 2 + (x - w / 2.3) ** 2) / (2 * sigma**2)) + 0.2).astype(np.float32)


def test_tasks():
    assert TASKS == {
        "recon4x": {"kind": "recon", "acceleration": 4},
        "recon8x": {"kind": "recon", "acceleration": 8},
        "sr2x": {"kind": "sr", "scale": 2},
        "sr4x": {"kind": "sr", "scale": 4},
    }


def test_undersample_is_zero_filled_magnitude():
    rng = np.random.default_rng(0)
    img = rng.random((40, 33)).astype(np.float32)
    out, mask = undersample(img, 4, rng=np.random.default_rng(1))
    assert out.dtype == np.float32 and out.shape == img.shape and mask.shape == (33,)
    expected = np.abs(ifft2c(fft2c(img) * mask))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert np.abs(out - img).max() > 0.05
    full = undersample_kspace(fft2c(img), np.ones(33, bool))
    np.testing.assert_allclose(full, img, atol=1e-5)


def test_undersample_kspace_multicoil_rss():
    img = _blob()
    sens = np.stack([np.full(img.shape, 0.6), np.full(img.shape, 0.8j)])
    k = fft2c((sens * img).astype(np.complex64))
    out = undersample_kspace(k, np.ones(img.shape[1], bool))
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=1e-5)
    with pytest.raises(ValueError):
        undersample_kspace(k, np.ones(5, bool))


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("shape", [(64, 57), (65, 64)])
def test_low_resolution_keeps_mean_and_removes_high_frequencies(scale, shape):
    base = _blob(*shape)
    checker = 0.05 * ((np.indices(shape).sum(0) % 2) * 2 - 1)  # Nyquist pattern
    out = low_resolution(base + checker.astype(np.float32), scale)
    assert out.dtype == np.float32 and out.shape == shape
    assert abs(out.mean() - base.mean()) / base.mean() < 0.005
    np.testing.assert_allclose(out, low_resolution(base, scale), atol=1e-5)  # checkerboard gone
    k = np.abs(fft2c(out)) ** 2
    h, w = shape
    kh, kw = round(h / scale), round(w / scale)
    inner = np.zeros(shape, bool)
    inner[h // 2 - kh // 2 : h // 2 - kh // 2 + kh, w // 2 - kw // 2 : w // 2 - kw // 2 + kw] = True
    assert k[~inner].sum() / k.sum() < 1e-4
    assert np.abs(out - (base + checker)).max() > 0.04
    np.testing.assert_allclose(low_resolution(base, 1), base, atol=1e-5)


def test_degrade_dispatch():
    img = _blob()
    np.testing.assert_array_equal(degrade(img, "sr2x"), low_resolution(img, 2))
    a = degrade(img, "recon8x", rng=np.random.default_rng(4), mask_kind="equispaced")
    b, mask = undersample(img, 8, kind="equispaced", rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    c, mask2 = degrade_with_mask(img, "recon8x", np.random.default_rng(4), "equispaced")
    np.testing.assert_array_equal(c, b)
    np.testing.assert_array_equal(mask2, mask)
    assert degrade_with_mask(img, "sr4x")[1] is None
    with pytest.raises(InputError):
        degrade(img, "recon3x")


def test_normalize_round_trip():
    rng = np.random.default_rng(7)
    x = (rng.random((30, 21)) * 5e-4 + 1e-4).astype(np.float32)  # fastMRI-like tiny intensities
    n, mean, std = normalize_instance(x)
    assert n.dtype == np.float32
    assert abs(float(n.mean())) < 1e-5 and abs(float(n.std(ddof=1)) - 1.0) < 1e-4
    assert np.isclose(mean, x.astype(np.float64).mean()) and np.isclose(std, x.astype(np.float64).std(ddof=1))
    back = denormalize(n, mean, std)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-5)
    const, m0, s0 = normalize_instance(np.ones((4, 4), np.float32))
    assert s0 == 0.0 and np.all(np.isfinite(const))


@pytest.mark.parametrize("shape,scale", [((66, 60), 2), ((66, 60), 4), ((64, 57), 2), ((65, 64), 4)])
def test_low_resolution_band_edges(shape, scale):
    # kept k-space rows are the frequencies -(kh // 2) .. kh - kh // 2 - 1 around DC (symmetric for
    # odd kh): a cosine at the last fully kept frequency survives, one just beyond it vanishes
    h, w = shape
    kh, kw = round(h / scale), round(w / scale)
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    keep_r, keep_c = (kh - 1) // 2, (kw - 1) // 2
    kept = 3.0 + np.cos(2 * np.pi * keep_r * rows / h) + np.cos(2 * np.pi * keep_c * cols / w)
    gone = 0.5 * np.cos(2 * np.pi * (kh // 2 + 1) * rows / h) + 0.5 * np.cos(2 * np.pi * (kw // 2 + 1) * cols / w)
    out = low_resolution((kept + gone).astype(np.float32), scale)
    np.testing.assert_allclose(out, kept, atol=1e-4)
