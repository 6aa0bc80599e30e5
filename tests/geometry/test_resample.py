"""Resampling lands every target voxel at its analytic world position."""

import numpy as np
import pytest
from helpers import affine, world_of

from sgf_deploy.geometry import Grid, index_map, resample, supersampling


def ramp(world: np.ndarray) -> np.ndarray:
    """A linear function of world position: linear interpolation reproduces it exactly."""
    return (100.0 + 2.0 * world[..., 0] + 3.0 * world[..., 1] + 0.5 * world[..., 2]).astype(np.float32)


REF_AFF = affine((1.0, 1.0, 1.0), origin=(-20.0, -25.0, -6.0))
REF_SHAPE = (12, 40, 50)


@pytest.mark.parametrize("tar_aff, shape", [
    (affine((0.7, 0.7, 1.0), origin=(-10.0, -12.0, -2.0)), (3, 20, 24)),        # finer pixels, other matrix/FOV
    (affine((1.3, 1.1, 1.0), origin=(-8.0, -9.0, 1.5)), (2, 12, 14)),           # coarser, between slices
    (affine((1.0, 1.0, 1.0), origin=(0.0, -3.0, 0.0), rotation_deg=30), (2, 12, 10)),  # oblique in-plane
    (affine((1.0, -1.0, -1.0), origin=(-5.0, 10.0, 3.0)), (2, 12, 12)),        # flipped axes
])
def test_resampled_values_match_analytic_positions(tar_aff, shape):
    reference = ramp(world_of(REF_AFF, REF_SHAPE))
    out = resample(reference, [index_map(Grid(shape, tar_aff), Grid(REF_SHAPE, REF_AFF))], shape, interpolator="linear")
    expected = ramp(world_of(tar_aff, shape))
    assert out.shape == shape
    assert np.abs(out - expected).max() < 1e-3


def test_outside_the_reference_is_zero():
    reference = np.ones(REF_SHAPE, np.float32)
    tar_aff = affine(origin=(-20.0 + 30.0, -25.0, 0.0))  # rows 10.. of a 20-row target leave the reference
    out = resample(reference, [index_map(Grid((1, 20, 5), tar_aff), Grid(REF_SHAPE, REF_AFF))], (1, 20, 5))
    assert np.all(out[0, :9] == 1.0) and np.all(out[0, 11:] == 0.0)


def test_thin_slices_are_averaged_over_the_target_slab():
    ref_aff = affine((1.0, 1.0, 1.0))
    z = np.arange(9, dtype=np.float32)
    reference = np.broadcast_to((z ** 2)[:, None, None], (9, 6, 6)).copy()
    tar_aff = affine((1.0, 1.0, 3.0), origin=(0.0, 0.0, 1.0))  # slabs centred on z = 1, 4, 7
    tar, ref = Grid((3, 6, 6), tar_aff), Grid((9, 6, 6), ref_aff)
    sub = supersampling(tar, ref)
    assert sub == (1, 1, 3)
    out = resample(reference, [index_map(tar, ref)], (3, 6, 6), sub, "linear")
    for s, centre in enumerate((1, 4, 7)):
        assert out[s, 3, 3] == pytest.approx(np.mean(z[centre - 1:centre + 2] ** 2), rel=1e-5)


def test_finer_pixels_are_area_averaged():
    rng = np.random.default_rng(0)
    fine = rng.random((1, 16, 20)).astype(np.float32)
    fine_aff = affine((0.5, 0.5, 1.0), origin=(-0.25, -0.25, 0.0))  # same field of view as the 1 mm grid
    tar, ref = Grid((1, 8, 10), affine()), Grid((1, 16, 20), fine_aff)
    out = resample(fine, [index_map(tar, ref)], (1, 8, 10), supersampling(tar, ref), "linear")
    assert np.allclose(out, fine.reshape(1, 8, 2, 10, 2).mean(axis=(2, 4)), atol=1e-6)


def test_bspline_needs_four_samples_along_every_axis():
    """ITK's cubic B-spline reads outside its coefficients on an axis with < 4 samples (NaN seen on a
    2-slice reference after other libraries had run in the process): such references go linear."""
    from sgf_deploy.geometry.resample import effective_interpolator

    assert effective_interpolator((2, 128, 128), "bspline") == "linear"
    assert effective_interpolator((1, 64, 64), "bspline") == "linear"
    assert effective_interpolator((4, 64, 64), "bspline") == "bspline"
    assert effective_interpolator((2, 64, 64), "linear") == "linear"
    ref = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    out = resample(ref, [np.eye(4)], (2, 32, 32), interpolator="bspline")
    assert np.isfinite(out).all() and np.allclose(out, ref, atol=1e-5)
