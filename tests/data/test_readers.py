"""Readers: every bad input is one InputError line naming the file; good inputs read exactly."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from sgf_deploy.data import readers
from sgf_deploy.data.readers import check_array, check_same_grid, read_volume
from sgf_deploy.errors import InputError

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


# ---------------------------------------------------------------------------------------------
# helpers (synthetic files written into tmp_path)
# ---------------------------------------------------------------------------------------------
def stack(n=3, h=8, w=10, seed=0):
    """Distinct slices: slice i has values around 100*(i+1), on a 0.5 grid (exact in DICOM)."""
    rng = np.random.default_rng(seed)
    base = np.round(rng.uniform(0, 50, size=(n, h, w)) * 2) / 2
    return (base + 100 * np.arange(1, n + 1)[:, None, None]).astype(np.float32)


def _base_ds(series_uid, study_uid, sop_class=MR):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "MR"
    ds.PatientName = "Phantom^Test"
    ds.PatientID = "SGF0001"
    ds.SeriesNumber = 7
    ds.SeriesDescription = "T2 AX"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def make_dicom_series(folder, data, *, spacing=(0.5, 0.6), thickness=3.0, iop=(1, 0, 0, 0, 1, 0),
                      origin=(-10.0, -20.0, 30.0), series_uid=None, slope=0.5, intercept=-10.0,
                      positions=True, order=None):
    """Classic single-frame MR series; file names and InstanceNumbers follow ``order`` (a
    permutation), NOT the slice position, so a reader that sorts by name/number fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    n = data.shape[0]
    order = list(order) if order is not None else [(3 * i + 1) % n if n > 1 else 0 for i in range(n)]
    if sorted(order) != list(range(n)):
        order = list(range(n))[::-1]
    iop_a = np.asarray(iop, float)
    normal = np.cross(iop_a[:3], iop_a[3:])
    files = []
    for i in range(n):
        ds = _base_ds(series_uid, study)
        ds.InstanceNumber = order[i] + 1
        if positions:
            ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
            ds.ImagePositionPatient = [f"{v:.6g}" for v in np.asarray(origin) + i * thickness * normal]
        ds.PixelSpacing = [f"{v:g}" for v in spacing]
        ds.SliceThickness = f"{thickness:g}"
        ds.Rows, ds.Columns = data.shape[1], data.shape[2]
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        stored = np.round((data[i].astype(np.float64) - intercept) / slope).astype("<u2")
        ds.PixelData = stored.tobytes()
        path = folder / f"img{order[i]:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def make_enhanced(path, data, *, spacing=(0.7, 0.8), thickness=2.0, origin=(5.0, 6.0, -7.0), slope=0.5,
                  intercept=-10.0):
    """One Enhanced MR multi-frame file whose frames are stored in REVERSED position order."""
    n = data.shape[0]
    ds = _base_ds(generate_uid(), generate_uid(), ENHANCED_MR)
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = data.shape[1], data.shape[2]
    shared = Dataset()
    po = Dataset()
    po.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal
    shared.PlaneOrientationSequence = [po]
    pm = Dataset()
    pm.PixelSpacing = [f"{v:g}" for v in spacing]
    pm.SliceThickness = f"{thickness:g}"
    shared.PixelMeasuresSequence = [pm]
    pv = Dataset()
    pv.RescaleSlope = f"{slope:g}"
    pv.RescaleIntercept = f"{intercept:g}"
    pv.RescaleType = "US"
    shared.PixelValueTransformationSequence = [pv]
    ds.SharedFunctionalGroupsSequence = [shared]
    normal = np.cross([1, 0, 0], [0, 0, -1])
    per_frame, pixels = [], []
    for j in range(n):
        i = n - 1 - j  # frame j holds slice i
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [f"{v:.6g}" for v in np.asarray(origin) + i * thickness * normal]
        item.PlanePositionSequence = [pp]
        per_frame.append(item)
        pixels.append(np.round((data[i].astype(np.float64) - intercept) / slope).astype("<u2"))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(pixels).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def fft2c(x):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def ifft2c(k):
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)


def save_npy(tmp_path, arr, name="x.npy", **kw):
    p = tmp_path / name
    np.save(p, arr, **kw)
    return p


def refused(path, match, **kw):
    """read_volume must raise ONE-line InputError naming the file and matching ``match``."""
    with pytest.raises(InputError, match=match) as info:
        read_volume(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert Path(path).name in msg
    return msg


# ---------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------
def test_npy_2d_becomes_one_slice_with_squeeze(tmp_path):
    a = np.arange(80, dtype=np.float64).reshape(8, 10)
    vol = read_volume(save_npy(tmp_path, a))
    assert vol.data.shape == (1, 8, 10) and vol.data.dtype == np.float32
    assert vol.squeeze and vol.fmt == "npy"
    np.testing.assert_array_equal(vol.data[0], a)


def test_npy_3d_is_n_h_w_and_an_owned_copy(tmp_path):
    a = stack()
    p = save_npy(tmp_path, a)
    vol = read_volume(p)
    assert vol.data.shape == (3, 8, 10) and not vol.squeeze
    np.testing.assert_array_equal(vol.data, a)
    base = vol.data
    while base is not None:  # no view of the file's memory map survives the read
        assert not isinstance(base, (np.memmap, memoryview)) and not hasattr(base, "close")
        base = getattr(base, "base", None)
    assert vol.data.flags.writeable


@pytest.mark.parametrize("dtype", ["int16", "uint16", "uint8", "int32", "float16", ">f4", "<f8"])
def test_npy_numeric_dtypes_accepted_as_float32(tmp_path, dtype):
    a = (np.arange(2 * 6 * 7) % 200).reshape(2, 6, 7).astype(dtype)
    vol = read_volume(save_npy(tmp_path, a))
    assert vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, a.astype(np.float32))


def test_npy_fortran_order(tmp_path):
    a = np.asfortranarray(stack())
    np.testing.assert_array_equal(read_volume(save_npy(tmp_path, a)).data, stack())


def test_npy_complex_is_magnitude_with_notice(tmp_path):
    a = (np.full((1, 4, 5), 3.0) + 4.0j).astype(np.complex64)
    vol = read_volume(save_npy(tmp_path, a), role="target")
    np.testing.assert_allclose(vol.data, 5.0)
    assert any("magnitude" in n for n in vol.notices)


class _Boom:
    def __reduce__(self):  # would run on unpickling
        return (Path.touch, (Path(_Boom.marker),))


def test_npy_pickle_refused_without_unpickling(tmp_path):
    _Boom.marker = str(tmp_path / "pwned")
    a = np.empty((2, 2), dtype=object)
    a[:] = _Boom()
    p = save_npy(tmp_path, a, allow_pickle=True)
    refused(p, r"contains Python objects \(pickle\); refusing to load")
    assert not (tmp_path / "pwned").exists()


def test_npy_truncated(tmp_path):
    p = save_npy(tmp_path, stack(4, 16, 16))
    p.write_bytes(p.read_bytes()[:-100])
    msg = refused(p, "is truncated")
    assert "4x16x16" in msg


def test_npy_cut_inside_header(tmp_path):
    p = save_npy(tmp_path, stack())
    p.write_bytes(p.read_bytes()[:30])
    refused(p, "corrupt .npy header")


def test_npy_not_npy(tmp_path):
    p = tmp_path / "x.npy"
    p.write_bytes(b"this is text, not an array")
    refused(p, "not a .npy file")


@pytest.mark.parametrize(
    "arr, match",
    [
        (np.float32(3.0), "0-d scalar"),
        (np.arange(5, dtype=np.float32), "is 1-D"),
        (np.zeros((0, 4, 4), np.float32), "is empty"),
        (np.zeros((4, 0), np.float32), "is empty"),
        (np.zeros((1, 2, 3, 4), np.float32), "is 4-D"),
        (np.array([["a", "b"], ["c", "d"]]), "non-numeric dtype <U1"),
        (np.array([[b"a", b"b"]]), "non-numeric dtype"),
        (np.zeros((2, 2), dtype="datetime64[s]"), "non-numeric dtype datetime64"),
        (np.zeros((2, 2), dtype=bool), "dtype bool"),
        (np.zeros((2, 2), dtype=[("a", "f4"), ("b", "i2")]), "structured dtype"),
    ],
    ids=["0d", "1d", "empty3d", "empty2d", "4d", "str", "bytes", "datetime", "bool", "structured"],
)
def test_npy_bad_shapes_and_dtypes_refused(tmp_path, arr, match):
    refused(save_npy(tmp_path, np.asarray(arr)), match)


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "-Inf")])
def test_npy_non_finite_refused(tmp_path, bad, word):
    a = stack()
    a[1, 2, 3] = bad
    a[2, 0, 0] = bad
    refused(save_npy(tmp_path, a), r"contains 2 non-finite values")


def test_npy_float64_beyond_float32_refused(tmp_path):
    a = stack().astype(np.float64)
    a[0, 0, 0] = 1e300
    refused(save_npy(tmp_path, a), "beyond the float32 range")


def _crafted_npy(path, shape, descr="<f4"):
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 16)
    return path


def test_npy_oversized_header_claim_fails_on_limit_without_loading(tmp_path, monkeypatch):
    p = _crafted_npy(tmp_path / "huge.npy", (100_000, 100_000, 1000))

    def no_load(*a, **k):
        raise AssertionError("np.load must not be reached")

    monkeypatch.setattr(np, "load", no_load)
    msg = refused(p, "limit")
    assert "100000 slices" in msg and str(readers.MAX_SLICES) in msg


def test_npy_limits_side_voxels_slices(tmp_path, monkeypatch):
    refused(_crafted_npy(tmp_path / "side.npy", (5000, 8)), r"8 pixels per slice; the limit is 4096 per side")
    refused(_crafted_npy(tmp_path / "slices.npy", (3000, 4, 4)), r"3000 slices; the limit is 2048")
    refused(_crafted_npy(tmp_path / "vox.npy", (2048, 4096, 4096)), r"voxels .*the limit is 134217728 voxels")
    monkeypatch.setattr(readers, "MAX_VOXELS", 100)
    refused(save_npy(tmp_path, np.zeros((2, 8, 8), np.float32)), r"2x8x8 = 128 voxels .*limit is 100 voxels")


def test_missing_and_unsupported_files(tmp_path):
    refused(tmp_path / "nope.npy", "no such file")
    odd = tmp_path / "x.txt"
    odd.write_text("hello")
    refused(odd, "unsupported file type")
    npz = tmp_path / "x.npz"
    np.savez(npz, a=np.zeros(3))
    refused(npz, "npz")


def test_role_prefixes_messages(tmp_path):
    a = stack()
    a[0, 0, 0] = np.nan
    with pytest.raises(InputError, match=r"^reference .*x\.npy: contains 1 non-finite"):
        read_volume(save_npy(tmp_path, a), role="reference")


def test_check_array_direct():
    out = check_array(np.ones((4, 5), np.int16), "mem", "target")
    assert out.shape == (1, 4, 5) and out.dtype == np.float32
    with pytest.raises(InputError, match="^target mem: contains 1 non-finite"):
        check_array(np.array([[1.0, np.nan]]), "mem", "target")
    notices: list[str] = []
    check_array(np.ones((2, 2), np.complex128), "mem", "target", notices)
    assert notices and "magnitude" in notices[0]


def test_suffixless_npy_is_sniffed(tmp_path):
    p = save_npy(tmp_path, stack())
    q = tmp_path / "array_without_suffix"
    p.rename(q)
    assert read_volume(q).fmt == "npy"


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------
def _affine(zooms=(0.5, 0.6, 2.0), origin=(-40.0, 12.0, 3.0), angle=0.3):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(zooms)
    aff[:3, 3] = origin
    return aff


def save_nifti(path, arr, affine=None, **kw):
    img = nib.Nifti1Image(arr, _affine() if affine is None else affine)
    for k, v in kw.items():
        img.header[k] = v
    nib.save(img, str(path))
    return Path(path)


def test_nifti_3d_slice_axis_last(tmp_path):
    ijk = np.arange(8 * 10 * 3, dtype=np.float32).reshape(8, 10, 3)
    p = save_nifti(tmp_path / "t1.nii.gz", ijk)
    vol = read_volume(p)
    assert vol.fmt == "nifti" and vol.data.shape == (3, 8, 10) and not vol.squeeze
    np.testing.assert_array_equal(vol.data, np.moveaxis(ijk, -1, 0))
    np.testing.assert_allclose(vol.spacing, (0.5, 0.6, 2.0), atol=1e-6)
    np.testing.assert_allclose(vol.orientation, _affine(), atol=1e-5)


def test_nifti_2d_and_singleton_4d(tmp_path):
    v2 = read_volume(save_nifti(tmp_path / "a.nii", np.ones((8, 10), np.float32)))
    assert v2.data.shape == (1, 8, 10) and v2.squeeze and len(v2.spacing) == 2
    v4 = read_volume(save_nifti(tmp_path / "b.nii", np.ones((8, 10, 3, 1), np.float32)))
    assert v4.data.shape == (3, 8, 10) and v4.header["shape"] == (8, 10, 3, 1)
    refused(save_nifti(tmp_path / "c.nii", np.ones((8, 10, 3, 2), np.float32)), "is 4-D")


def test_nifti_scaled_int16_applies_slope(tmp_path):
    raw = np.arange(8 * 10 * 2, dtype=np.int16).reshape(8, 10, 2)
    img = nib.Nifti1Image(raw, _affine())
    img.header.set_slope_inter(0.25, 3.0)
    p = tmp_path / "s.nii"
    nib.save(img, str(p))
    vol = read_volume(p)
    np.testing.assert_allclose(vol.data, np.moveaxis(raw * 0.25 + 3.0, -1, 0))


def test_nifti_complex_is_magnitude(tmp_path):
    vol = read_volume(save_nifti(tmp_path / "c.nii", np.full((4, 4, 2), 3 + 4j, np.complex64)))
    np.testing.assert_allclose(vol.data, 5.0)
    assert any("magnitude" in n for n in vol.notices)


def test_nifti_truncated_gz_and_nii_and_garbage(tmp_path):
    gz = save_nifti(tmp_path / "t.nii.gz", stack(6, 32, 32).transpose(1, 2, 0).copy())
    gz.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) // 2])
    refused(gz, "truncated or corrupt")
    nii = save_nifti(tmp_path / "t.nii", stack(6, 32, 32).transpose(1, 2, 0).copy())
    nii.write_bytes(nii.read_bytes()[:-200])
    refused(nii, "is truncated")
    bad = tmp_path / "g.nii"
    bad.write_bytes(b"\x01" * 400)
    refused(bad, "not a readable NIfTI")
    badgz = tmp_path / "g.nii.gz"
    badgz.write_bytes(gzip.compress(b"\x01" * 100)[:40])
    refused(badgz, "NIfTI|truncated or corrupt")


def test_nifti_oversized_header_claim(tmp_path, monkeypatch):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((5000, 5000, 3))
    hdr.set_data_dtype(np.float32)
    p = tmp_path / "huge.nii"
    p.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)
    msg = refused(p, "limit is 4096 per side")
    assert "5000x3" not in msg  # (N,H,W) = (3,5000,5000): the message names the in-plane size
    assert "5000x5000" in msg


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
def test_dicom_series_sorted_by_position_not_name_or_number(tmp_path):
    data = stack(5, 8, 10)
    files = make_dicom_series(tmp_path / "T2", data)
    names = sorted(f.name for f in files)
    assert names != [f.name for f in files]  # name order is not position order
    (tmp_path / "T2" / "README.txt").write_text("not dicom")
    vol = read_volume(tmp_path / "T2", role="target")
    assert vol.fmt == "dicom" and vol.data.shape == (5, 8, 10) and not vol.squeeze
    np.testing.assert_array_equal(vol.data, data)
    assert vol.spacing == pytest.approx((0.5, 0.6, 3.0))
    # H steps along the column cosine (LPS y -> RAS -y), W along the row cosine (LPS x -> RAS -x)
    expected = np.array([[0, -0.6, 0, 10], [-0.5, 0, 0, 20], [0, 0, 3, 30], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(vol.orientation, expected, atol=1e-9)
    assert any("skipped 1 non-DICOM" in n for n in vol.notices)
    assert len(vol.header) == 5
    assert [float(t.ImagePositionPatient[2]) for t in vol.header] == [30, 33, 36, 39, 42]


def test_dicom_oblique_sorted_along_normal(tmp_path):
    c, s = np.cos(0.4), np.sin(0.4)
    iop = (c, s, 0, 0, 0, -1)  # oblique sagittal-ish; normal has x and y parts
    data = stack(4, 6, 6)
    make_dicom_series(tmp_path / "obl", data, iop=iop, order=[2, 0, 3, 1])
    np.testing.assert_array_equal(read_volume(tmp_path / "obl").data, data)


def test_dicom_single_file_and_not_dicom(tmp_path):
    files = make_dicom_series(tmp_path / "one", stack(1, 6, 7))
    vol = read_volume(files[0])
    assert vol.data.shape == (1, 6, 7) and vol.squeeze
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\0" * 300)
    refused(fake, "not a DICOM file")


def test_dicom_mixed_series_refused(tmp_path):
    make_dicom_series(tmp_path / "mix", stack(2, 6, 6), series_uid="1.2.3.4")
    for f in make_dicom_series(tmp_path / "other", stack(2, 6, 6), series_uid="1.2.3.5"):
        f.rename(tmp_path / "mix" / ("b_" + f.name))
    msg = refused(tmp_path / "mix", "2 DICOM series")
    assert "1.2.3.4" in msg and "1.2.3.5" in msg


def test_dicom_inconsistent_size_spacing_duplicates(tmp_path):
    make_dicom_series(tmp_path / "size", stack(2, 6, 6), series_uid="1.2.3.9")
    make_dicom_series(tmp_path / "tmp1", stack(1, 6, 8), origin=(0, 0, 100), series_uid="1.2.3.9")[0].rename(tmp_path / "size" / "z.dcm")
    refused(tmp_path / "size", "differ in size: 6x6 .* but 6x8")

    make_dicom_series(tmp_path / "sp", stack(2, 6, 6), series_uid="1.2.3.9")
    make_dicom_series(tmp_path / "tmp2", stack(1, 6, 6), spacing=(0.5, 0.7), origin=(0, 0, 100), series_uid="1.2.3.9")[0].rename(
        tmp_path / "sp" / "z.dcm")
    refused(tmp_path / "sp", "disagree on PixelSpacing: \\(0.5, 0.6\\) .* but \\(0.5, 0.7\\)")

    make_dicom_series(tmp_path / "dup", stack(2, 6, 6), series_uid="1.2.3.9")
    make_dicom_series(tmp_path / "tmp3", stack(1, 6, 6), series_uid="1.2.3.9")[0].rename(tmp_path / "dup" / "z.dcm")
    refused(tmp_path / "dup", "share slice position")


def test_dicom_without_positions_uses_instance_number(tmp_path):
    data = stack(3, 6, 6)
    make_dicom_series(tmp_path / "np", data, positions=False, order=[2, 0, 1])
    vol = read_volume(tmp_path / "np")
    # InstanceNumber order: slice i has InstanceNumber order[i] + 1
    np.testing.assert_array_equal(vol.data, data[np.argsort([2, 0, 1])])
    assert vol.orientation is None and vol.spacing == pytest.approx((0.5, 0.6))
    assert any("InstanceNumber" in n for n in vol.notices)


def test_dicom_enhanced_multiframe(tmp_path):
    data = stack(4, 6, 9)
    p = make_enhanced(tmp_path / "enh" / "multi.dcm", data)
    for vol in (read_volume(p), read_volume(p.parent)):
        assert vol.data.shape == (4, 6, 9)
        np.testing.assert_array_equal(vol.data, data)  # re-sorted by position, rescale applied
        assert vol.spacing == pytest.approx((0.7, 0.8, 2.0))
        assert len(vol.header) == 4 and "PerFrameFunctionalGroupsSequence" not in vol.header[0]
        assert any("Enhanced" in n for n in vol.notices)


def test_dicom_empty_folder_and_truncated_pixels(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    refused(tmp_path / "empty", "holds no DICOM images")
    f = make_dicom_series(tmp_path / "cut", stack(2, 16, 16))[0]
    f.write_bytes(f.read_bytes()[:-300])
    refused(tmp_path / "cut", "pixel data cannot be decoded")


def test_dicom_oversized_header_claim(tmp_path):
    f = make_dicom_series(tmp_path / "big", stack(1, 4, 4))[0]
    ds = pydicom.dcmread(f)
    ds.Rows = 5000
    ds.save_as(f)
    refused(tmp_path / "big", "limit is 4096 per side")
    p = make_enhanced(tmp_path / "frames" / "mf.dcm", stack(2, 4, 4))
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 3000
    ds.save_as(p)
    refused(p, "the limit is 2048 slices")


# ---------------------------------------------------------------------------------------------
# HDF5 (fastMRI / M4Raw)
# ---------------------------------------------------------------------------------------------
def _coil_maps(c, h, w):
    y, x = np.mgrid[0:h, 0:w]
    maps = np.stack([np.exp(-((x - w * (k + 0.5) / c) ** 2) / (w * w)) * np.exp(1j * k) for k in range(c)])
    maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))  # sum |S|^2 = 1
    return maps


def test_hdf5_rss_preferred_and_attrs_kept(tmp_path):
    img = stack(2, 8, 10)
    p = tmp_path / "file_brain.h5"
    with h5py.File(p, "w") as f:
        f["reconstruction_rss"] = img
        f["kspace"] = fft2c(img.astype(np.complex64) * 2)
        f.attrs["max"] = float(img.max())
        f.attrs["acquisition"] = "AXT2"
        f["ismrmrd_header"] = np.bytes_(b"<ismrmrdHeader/>")
    vol = read_volume(p)
    assert vol.fmt == "hdf5" and vol.header["dataset"] == "reconstruction_rss"
    np.testing.assert_array_equal(vol.data, img)
    assert vol.header["attrs"]["acquisition"] == "AXT2"
    assert vol.header["ismrmrd_header"] == b"<ismrmrdHeader/>"


def test_hdf5_esc_and_explicit_key(tmp_path):
    p = tmp_path / "knee.hdf5"
    with h5py.File(p, "w") as f:
        f["reconstruction_esc"] = stack(2, 8, 10)
        f["other"] = stack(2, 8, 10) * 3
        f["grp/nested"] = stack(2, 8, 10) * 4
    np.testing.assert_array_equal(read_volume(p).data, stack(2, 8, 10))
    np.testing.assert_array_equal(read_volume(p, h5_key="other").data, stack(2, 8, 10) * 3)
    np.testing.assert_array_equal(read_volume(p, h5_key="grp/nested").data, stack(2, 8, 10) * 4)
    msg = refused(p, "has no dataset 'missing'", h5_key="missing")
    assert "other" in msg and "reconstruction_esc" in msg


def test_hdf5_multicoil_kspace_only_gives_rss(tmp_path):
    img = stack(3, 16, 12).astype(np.complex64) * np.exp(0.5j)
    maps = _coil_maps(4, 16, 12)
    kspace = fft2c(maps[None] * img[:, None]).astype(np.complex64)  # (slices, coils, H, W)
    p = tmp_path / "raw.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = kspace
    vol = read_volume(p)
    np.testing.assert_allclose(vol.data, np.abs(img), rtol=1e-4, atol=1e-3)
    assert any("root-sum-of-squares" in n for n in vol.notices)


def test_hdf5_singlecoil_kspace(tmp_path):
    img = stack(2, 8, 8)
    p = tmp_path / "sc.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = fft2c(img.astype(np.complex64)).astype(np.complex64)
    np.testing.assert_allclose(read_volume(p).data, img, rtol=1e-4, atol=1e-3)


def test_hdf5_kspace_with_mask_gives_zero_filled(tmp_path):
    img = stack(2, 16, 16).astype(np.complex64)
    maps = _coil_maps(3, 16, 16)
    kspace = fft2c(maps[None] * img[:, None]).astype(np.complex64)
    mask = np.zeros(16, dtype=bool)
    mask[[0, 4, 6, 7, 8, 9, 12]] = True
    p = tmp_path / "test_set.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = kspace  # fully sampled here; the reader must apply the mask itself
        f["mask"] = mask
    vol = read_volume(p, role="target")
    expected = np.sqrt(np.sum(np.abs(ifft2c(kspace * mask)) ** 2, axis=1))
    np.testing.assert_allclose(vol.data, expected, rtol=1e-4, atol=1e-3)
    assert np.abs(vol.data - np.abs(img)).max() > 1.0  # really degraded
    assert any("2.3x acceleration" in n for n in vol.notices)


def test_hdf5_bad_inputs(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 10)
    refused(junk, "not a readable HDF5")
    p = tmp_path / "nothing.h5"
    with h5py.File(p, "w") as f:
        f["foo"] = np.zeros(3)
    refused(p, "has none of the datasets .*it has: foo")
    p = tmp_path / "realk.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = np.zeros((2, 4, 4), np.float32)
    refused(p, "k-space must be complex")
    p = tmp_path / "badmask.h5"
    with h5py.File(p, "w") as f:
        f["kspace"] = np.ones((2, 4, 6), np.complex64)
        f["mask"] = np.ones(5, bool)
    refused(p, "does not fit k-space of 4x6")
    p = tmp_path / "nan.h5"
    with h5py.File(p, "w") as f:
        a = stack()
        a[0, 0, 0] = np.nan
        f["reconstruction_rss"] = a
    refused(p, "contains 1 non-finite")


def test_hdf5_oversized_dataset_not_read(tmp_path):
    p = tmp_path / "huge.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("reconstruction_rss", shape=(64, 4096, 4096), dtype="f4", chunks=(1, 64, 64))
        f.create_dataset("kspace", shape=(2, 500, 64, 64), dtype="c8", chunks=(1, 1, 64, 64))
    assert p.stat().st_size < 1_000_000
    refused(p, r"64x4096x4096 = .*the limit is 134217728 voxels")
    refused(p, "500 coils; the limit is 256", h5_key="kspace")


# ---------------------------------------------------------------------------------------------
# check_same_grid
# ---------------------------------------------------------------------------------------------
def test_grid_shape_mismatch_names_both(tmp_path):
    a = read_volume(save_npy(tmp_path, np.zeros((320, 320), np.float32), "t1.npy"))
    b = read_volume(save_npy(tmp_path, np.zeros((320, 368), np.float32), "t2.npy"))
    with pytest.raises(InputError) as info:
        check_same_grid(a, b)
    msg = str(info.value)
    assert "reference" in msg and "t1.npy is 1x320x320" in msg
    assert "target" in msg and "t2.npy is 1x320x368" in msg and "same grid" in msg


def test_grid_nifti_spacing_orientation_origin(tmp_path):
    arr = np.ones((8, 10, 3), np.float32)
    ref = read_volume(save_nifti(tmp_path / "ref.nii.gz", arr))
    same = read_volume(save_nifti(tmp_path / "same.nii.gz", arr * 2))
    check_same_grid(ref, same)
    sp = read_volume(save_nifti(tmp_path / "sp.nii.gz", arr, _affine(zooms=(0.5, 0.7, 2.0))))
    with pytest.raises(InputError, match=r"ref\.nii\.gz has voxel spacing 0.5x0.6x2 mm but target .*sp\.nii\.gz has 0.5x0.7x2"):
        check_same_grid(ref, sp)
    rot = read_volume(save_nifti(tmp_path / "rot.nii.gz", arr, _affine(angle=0.0)))
    with pytest.raises(InputError, match=r"axis directions .* but target .*rot\.nii\.gz has"):
        check_same_grid(ref, rot)
    shift = read_volume(save_nifti(tmp_path / "shift.nii.gz", arr, _affine(origin=(-40, 12, 5))))
    with pytest.raises(InputError, match=r"starts at \(-40, 12, 3\) mm .* starts at \(-40, 12, 5\)"):
        check_same_grid(ref, shift)
    # no geometry on one side: only the shape is compared
    check_same_grid(ref, read_volume(save_npy(tmp_path, np.zeros((3, 8, 10), np.float32))))


def test_grid_dicom_orientation_and_spacing(tmp_path):
    data = stack(3, 6, 6)
    make_dicom_series(tmp_path / "a", data)
    make_dicom_series(tmp_path / "b", data * 2)
    make_dicom_series(tmp_path / "c", data, iop=(0, 1, 0, 0, 0, -1))
    make_dicom_series(tmp_path / "d", data, thickness=3.5)
    a, b, c, d = (read_volume(tmp_path / k) for k in "abcd")
    check_same_grid(a, b)
    with pytest.raises(InputError, match="axis directions"):
        check_same_grid(a, c)
    with pytest.raises(InputError, match=r"0.5x0.6x3 mm but target .*has 0.5x0.6x3.5 mm"):
        check_same_grid(a, d)


# ---------------------------------------------------------------------------------------------
# the runtime stays torch-free
# ---------------------------------------------------------------------------------------------
def test_readers_and_writers_do_not_import_torch(tmp_path):
    np.save(tmp_path / "a.npy", stack())
    save_nifti(tmp_path / "a.nii.gz", np.ones((4, 4, 2), np.float32))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["kspace"] = np.ones((1, 2, 4, 4), np.complex64)
    make_dicom_series(tmp_path / "dcm", stack(2, 4, 4))
    code = (
        "import sys\n"
        "import sgf_deploy.data.readers as r, sgf_deploy.data.writers as w\n"
        "assert 'torch' not in sys.modules\n"
        f"d = {str(tmp_path)!r}\n"
        "for name in ('a.npy', 'a.nii.gz', 'a.h5', 'dcm'):\n"
        "    v = r.read_volume(d + '/' + name)\n"
        "    w.write_volume(w.default_output_path(d + '/' + name), v.data, v)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
