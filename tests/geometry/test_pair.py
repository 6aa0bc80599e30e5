"""pair_inputs: resample, register per mode, refuse with the stated one-line errors."""

import numpy as np
import pytest
from helpers import affine, phantom, volume
from pydicom.dataset import Dataset

from sgf_deploy.errors import InputError
from sgf_deploy.geometry import PairSettings, pair_inputs, resample, rigid_index_matrix

H = W = 64


def stack(contrast: str, n: int = 3) -> np.ndarray:
    return np.stack([phantom(H, W, contrast)] * n)


def moved(data: np.ndarray, shifts) -> np.ndarray:
    out = []
    for sl, shift in zip(data, shifts):
        m = rigid_index_matrix(shift, 0.0, ((W - 1) / 2, (H - 1) / 2), (1.0, 1.0))
        out.append(resample(sl[None], [np.linalg.inv(m)], (1, H, W), interpolator="bspline")[0])
    return np.stack(out)


def dicom_volume(data, uid: str):
    ds = Dataset()
    ds.FrameOfReferenceUID = uid
    return volume(data, affine(), fmt="dicom", name=f"{uid}.dcm", header=[ds] * len(data))


def test_same_grid_below_threshold_is_left_alone(monkeypatch):
    from sgf_deploy import defaults as D

    monkeypatch.setattr(D, "REGISTER_AUTO_MIN_SIDE", 64)  # these 64x64 phantoms count as large enough
    monkeypatch.setattr(D, "REGISTER_AUTO_SHIFT_PX", 0.5)  # the phantom pair's estimate is near 0
    monkeypatch.setattr(D, "REGISTER_AUTO_ANGLE_DEG", 0.5)
    ref, tar = volume(stack("a")), volume(stack("b"))
    paired = pair_inputs(ref, tar, PairSettings(register="auto"))
    assert paired.reference_pixels is ref.data or np.array_equal(paired.reference_pixels, ref.data)
    assert not paired.registration.applied and not paired.warnings
    assert "not applied" in paired.provenance["registration"]
    monkeypatch.setattr(D, "REGISTER_AUTO_SHIFT_PX", -1.0)  # every estimate is above this threshold
    assert pair_inputs(ref, tar, PairSettings(register="auto")).registration.applied


def test_auto_leaves_small_slices_alone_and_says_so():
    tar = volume(stack("b"))
    ref = volume(moved(stack("a"), [(6.0, -4.0)] * 3))
    paired = pair_inputs(ref, tar, PairSettings(register="auto"))  # 64x64 < REGISTER_AUTO_MIN_SIDE
    assert not paired.registration.applied and np.array_equal(paired.reference_pixels, ref.data)
    assert "too small for a reliable automatic estimate" in paired.provenance["registration"]
    assert not any("registration" in n for n in paired.notes)  # reported in the summary, not as a change
    assert pair_inputs(ref, tar, PairSettings(register="rigid")).registration.applied


def test_auto_corrects_a_shift_and_reports_it(monkeypatch):
    from sgf_deploy import defaults as D

    monkeypatch.setattr(D, "REGISTER_AUTO_MIN_SIDE", 64)
    tar = volume(stack("b"))
    ref = volume(moved(stack("a"), [(6.0, -4.0)] * 3))
    paired = pair_inputs(ref, tar, PairSettings(register="auto"))
    reg = paired.registration
    assert reg.applied and reg.registered == 3
    assert abs(reg.shift_px[0] - 6.0) < 0.5 and abs(reg.shift_px[1] + 4.0) < 0.5
    assert "applied" in paired.provenance["registration"]
    aligned = stack("a")
    inner = (slice(None), slice(12, -12), slice(12, -12))
    error_after = np.abs(paired.reference_pixels[inner] - aligned[inner]).mean()
    assert error_after < 0.25 * np.abs(ref.data[inner] - aligned[inner]).mean()
    off = pair_inputs(ref, tar, PairSettings(register="off"))
    assert np.array_equal(off.reference_pixels, ref.data) and off.registration is None


def test_other_grid_is_resampled_onto_the_target():
    tar = volume(stack("b", 2), affine((1.0, 1.0, 3.0)))
    fine = np.repeat(np.repeat(stack("a", 2), 2, axis=1), 2, axis=2)  # a 0.5 mm copy, same field of view
    ref = volume(fine, affine((0.5, 0.5, 3.0), origin=(-0.25, -0.25, 0.0)))
    paired = pair_inputs(ref, tar, PairSettings(register="off"))
    assert paired.reference_pixels.shape == tar.shape
    assert np.allclose(paired.reference_pixels, stack("a", 2), atol=1e-4)
    assert "resampled" in paired.notes[0] and "2x2x1" in paired.provenance["resampling"]


def test_npy_of_another_shape_is_refused():
    with pytest.raises(InputError, match="same grid"):
        pair_inputs(volume(stack("a")), volume(stack("b")[:, :, :40]))


def test_volumes_that_do_not_overlap_are_refused():
    far = volume(stack("a"), affine(origin=(500.0, 0.0, 0.0)))
    with pytest.raises(InputError, match="do not overlap"):
        pair_inputs(far, volume(stack("b"), affine()), PairSettings(register="auto"))


def test_different_frames_of_reference():
    ref, tar = dicom_volume(stack("a"), "1.2.3"), dicom_volume(stack("b"), "1.2.4")
    with pytest.raises(InputError, match="different frames of reference"):
        pair_inputs(ref, tar, PairSettings(register="off"))
    paired = pair_inputs(ref, tar, PairSettings(register="auto"))
    assert any("frames of reference" in n for n in paired.notes)
    assert paired.registration.applied  # geometry cannot be trusted: registration decides


def test_disagreeing_slices_warn_and_strict_refuses():
    tar = volume(stack("b"))
    ref = volume(moved(stack("a"), [(0.0, 0.0), (0.0, 0.0), (9.0, 0.0)]))
    paired = pair_inputs(ref, tar, PairSettings(register="auto"))
    assert any("residual misalignment" in w for w in paired.warnings)
    with pytest.raises(InputError, match="--strict"):
        pair_inputs(ref, tar, PairSettings(register="auto", strict=True))


@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_reference_does_not_crash(value):
    ref = volume(np.full((2, H, W), value, np.float32))
    paired = pair_inputs(ref, volume(stack("b", 2)), PairSettings(register="rigid"))
    assert np.array_equal(paired.reference_pixels, ref.data)
    assert paired.registration.registered == 0 and "nothing to register" in paired.provenance["registration"]


def test_unknown_mode_is_refused():
    with pytest.raises(InputError, match="register mode"):
        pair_inputs(volume(stack("a")), volume(stack("b")), PairSettings(register="sideways"))


def test_slices_in_parallel_give_the_serial_estimate(monkeypatch):
    from sgf_deploy import defaults as D

    monkeypatch.setattr(D, "REGISTER_REFINE_SLICES", 2)  # 2 of the 5 slices refined: the stack's median is theirs
    tar = volume(stack("b", 5))
    ref = volume(moved(stack("a", 5), [(3.0, 2.0)] * 5))
    serial = pair_inputs(ref, tar, PairSettings(register="rigid", threads=1)).registration
    parallel = pair_inputs(ref, tar, PairSettings(register="rigid", threads=2)).registration
    assert serial.shift_px == parallel.shift_px and serial.angle_deg == parallel.angle_deg  # seeds per slice
    assert [e.refined for e in serial.estimates] == [True, False, False, False, True]
    assert abs(serial.shift_px[0] - 3.0) < 0.5 and abs(serial.shift_px[1] - 2.0) < 0.5


def test_one_slice_estimate_is_the_same_every_run():
    """ITK's multi-threaded Mattes MI moved a lone slice's estimate from run to run; registration
    runs single-threaded whatever SimpleITK's global thread count (pair._parallel)."""
    from sgf_deploy.geometry.register import set_threads

    tar = volume(stack("b", 1))
    ref = volume(moved(stack("a", 1), [(2.3, -1.7)]))
    set_threads(2)
    try:
        runs = [pair_inputs(ref, tar, PairSettings(register="rigid")).registration for _ in range(4)]
    finally:
        set_threads(None)
    assert len({(r.shift_px, r.angle_deg) for r in runs}) == 1
