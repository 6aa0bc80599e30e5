"""Known rigid motions between two contrasts are recovered; nothing to register is no crash."""

import numpy as np
import pytest
from helpers import phantom

from sgf_deploy.geometry import register_slice, resample, rigid_index_matrix

H = W = 96
CENTRE = ((W - 1) / 2, (H - 1) / 2)


def move(img: np.ndarray, shift, angle) -> np.ndarray:
    m = rigid_index_matrix(shift, angle, CENTRE, (1.0, 1.0))
    return resample(img[None], [np.linalg.inv(m)], (1,) + img.shape, interpolator="bspline")[0]


@pytest.mark.parametrize("shift, angle", [((5.3, -3.7), 0.0), ((0.0, 0.0), 7.0), ((-9.0, 6.5), -4.0)])
def test_known_motion_is_recovered(shift, angle):
    fixed = phantom(H, W, "b")  # the target contrast
    moving = move(phantom(H, W, "a"), shift, angle)  # the reference contrast, moved
    est = register_slice(fixed, moving)
    assert est.skipped is None and est.converged and est.improved
    assert abs(est.shift_px[0] - shift[0]) < 0.5 and abs(est.shift_px[1] - shift[1]) < 0.5
    assert abs(est.angle_deg - angle) < 0.5


def test_index_matrix_is_the_motion_in_pixels():
    m = rigid_index_matrix((2.0, -1.0), 90.0, (10.0, 10.0), (1.0, 2.0))  # rows 1 mm, columns 2 mm
    # one column right of the centre is 2 mm along x; 90 degrees takes it to 2 mm along y = 2 rows
    # below the centre; then the shift adds 2 columns and -1 row
    c, r = (m @ np.array([11.0, 10.0, 0.0, 1.0]))[:2]
    assert c == pytest.approx(12.0) and r == pytest.approx(11.0)


@pytest.mark.parametrize("reference", [np.zeros((H, W), np.float32), np.full((H, W), 7.0, np.float32)])
def test_constant_or_empty_reference_is_skipped(reference):
    est = register_slice(phantom(H, W, "b"), reference)
    assert est.skipped is not None and "constant" in est.skipped
    assert est.shift_px == (0.0, 0.0) and est.angle_deg == 0.0


def test_nearly_empty_slice_is_skipped():
    ref = np.zeros((H, W), np.float32)
    ref[40, 40] = 1.0
    assert "nearly empty" in register_slice(phantom(H, W, "b"), ref).skipped


def test_refinement_continues_from_the_pyramid():
    from sgf_deploy.geometry.register import refine_slice

    fixed, moving = phantom(H, W, "b"), move(phantom(H, W, "a"), (4.2, -2.6), 3.0)
    coarse = register_slice(fixed, moving, refine=False)
    fine = refine_slice(fixed, moving, coarse)
    assert not coarse.refined and fine.refined and fine.iterations > coarse.iterations
    assert fine.metric_after <= coarse.metric_after  # never worse than where it started
    whole = register_slice(fixed, moving)  # the two steps are register_slice's own
    assert whole.shift_px == pytest.approx(fine.shift_px, abs=1e-9) and whole.angle_deg == pytest.approx(fine.angle_deg)
