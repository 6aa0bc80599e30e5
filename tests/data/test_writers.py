"""Writers: same form as the input, geometry kept, atomic, no silent overwrite, never the input."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from sgf_deploy.data.readers import check_same_grid, read_volume
from sgf_deploy.data.writers import default_output_path, write_volume
from sgf_deploy.errors import InputError, OutputExistsError

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


# ---------------------------------------------------------------------------------------------
# helpers (kept local so this module does not depend on test_readers being importable)
# ---------------------------------------------------------------------------------------------
def stack(n=3, h=8, w=10, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 50, size=(n, h, w)) + 100 * np.arange(1, n + 1)[:, None, None]).astype(np.float32)


def _ds(series_uid, study_uid, sop_class=MR, ts=ExplicitVRLittleEndian):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
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
    ds.add_new(0x00191010, "LO", "vendor private scale")  # must not survive into the output
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    return ds


def make_series(folder, data, *, ts=ExplicitVRLittleEndian, iop=(1, 0, 0, 0, 1, 0), origin=(-10.0, -20.0, 30.0),
                spacing=(0.5, 0.6), thickness=3.0):
    folder = Path(folder)
    folder.mkdir(parents=True)
    uid, study = generate_uid(), generate_uid()
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    for i in range(data.shape[0]):
        ds = _ds(uid, study, ts=ts)
        ds.InstanceNumber = data.shape[0] - i
        ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6g}" for v in np.asarray(origin) + i * thickness * normal]
        ds.PixelSpacing = [f"{v:g}" for v in spacing]
        ds.SliceThickness = f"{thickness:g}"
        ds.Rows, ds.Columns = data.shape[1:]
        ds.RescaleSlope, ds.RescaleIntercept = "0.01", "0"
        ds.PixelData = np.round(data[i] / 0.01).astype("<u2").tobytes()
        ds.save_as(folder / f"z{data.shape[0] - i:03d}.dcm", enforce_file_format=True, implicit_vr=None)
    return folder


def make_enhanced(path, data):
    n = data.shape[0]
    ds = _ds(generate_uid(), generate_uid(), ENHANCED_MR)
    ds.NumberOfFrames = n
    ds.Rows, ds.Columns = data.shape[1:]
    shared = Dataset()
    po, pm, pv = Dataset(), Dataset(), Dataset()
    po.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
    pm.PixelSpacing = ["0.9", "0.8"]
    pm.SliceThickness = "4"
    pv.RescaleSlope, pv.RescaleIntercept = "0.01", "0"
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [po], [pm]
    shared.PixelValueTransformationSequence = [pv]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for i in range(n):
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [f"{4.0 * i:g}", "0", "0"]  # normal of this IOP is -x: frames reverse
        item.PlanePositionSequence = [pp]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    ds.PixelData = np.round(data / 0.01).astype("<u2").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# ---------------------------------------------------------------------------------------------
# default_output_path
# ---------------------------------------------------------------------------------------------
def test_default_output_path(tmp_path):
    assert default_output_path(Path("data/t2_us.npy")) == Path("data/t2_us_sgf.npy")
    assert default_output_path("scan.nii.gz") == Path("scan_sgf.nii.gz")
    assert default_output_path("scan.NII.GZ") == Path("scan_sgf.NII.GZ")
    assert default_output_path("scan.nii") == Path("scan_sgf.nii")
    assert default_output_path("x.h5") == Path("x_sgf.h5")
    assert default_output_path("x.hdf5") == Path("x_sgf.hdf5")
    assert default_output_path("IM1.dcm") == Path("IM1_sgf")  # DICOM output is a series folder
    (tmp_path / "T2").mkdir()
    assert default_output_path(str(tmp_path / "T2") + "/") == tmp_path / "T2_sgf"
    (tmp_path / "T2.series").mkdir()
    assert default_output_path(tmp_path / "T2.series") == tmp_path / "T2.series_sgf"


# ---------------------------------------------------------------------------------------------
# .npy
# ---------------------------------------------------------------------------------------------
def test_npy_round_trip_keeps_2d_and_3d(tmp_path):
    np.save(tmp_path / "t2.npy", stack(1)[0])
    like = read_volume(tmp_path / "t2.npy")
    out = write_volume(default_output_path(like.source), like.data * 2, like)
    assert out == tmp_path / "t2_sgf.npy"
    back = np.load(out)
    assert back.shape == (8, 10) and back.dtype == np.float32
    np.testing.assert_array_equal(back, stack(1)[0] * 2)
    np.save(tmp_path / "s.npy", stack())
    like3 = read_volume(tmp_path / "s.npy")
    assert np.load(write_volume(tmp_path / "s_out.npy", like3.data, like3)).shape == (3, 8, 10)


def test_refuses_existing_output_unless_overwrite(tmp_path):
    np.save(tmp_path / "t2.npy", stack())
    like = read_volume(tmp_path / "t2.npy")
    out = write_volume(tmp_path / "o.npy", like.data, like)
    with pytest.raises(OutputExistsError, match="o.npy: already exists"):
        write_volume(out, like.data + 1, like)
    np.testing.assert_array_equal(np.load(out), like.data)  # untouched
    write_volume(out, like.data + 1, like, overwrite=True)
    np.testing.assert_array_equal(np.load(out), like.data + 1)


def test_never_writes_over_the_input(tmp_path):
    np.save(tmp_path / "t2.npy", stack())
    like = read_volume(tmp_path / "t2.npy")
    before = (tmp_path / "t2.npy").read_bytes()
    with pytest.raises(OutputExistsError, match="refusing to write over an input"):
        write_volume(tmp_path / "t2.npy", like.data * 0, like, overwrite=True)
    assert (tmp_path / "t2.npy").read_bytes() == before


def test_atomic_npy_leaves_nothing_after_a_failure(tmp_path, monkeypatch):
    np.save(tmp_path / "t2.npy", stack())
    like = read_volume(tmp_path / "t2.npy")
    real_save = np.save

    def half_then_fail(fh, arr, **kw):
        real_save(fh, arr, **kw)
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "save", half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(tmp_path / "o.npy", like.data, like)
    assert listing(tmp_path) == ["t2.npy"]


def test_bad_data_refused(tmp_path):
    np.save(tmp_path / "t2.npy", stack())
    like = read_volume(tmp_path / "t2.npy")
    bad = like.data.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="1 non-finite"):
        write_volume(tmp_path / "o.npy", bad, like)
    with pytest.raises(InputError, match="is 3x8x9 but the grid of .*t2.npy is 3x8x10"):
        write_volume(tmp_path / "o.npy", like.data[..., :9], like)
    with pytest.raises(InputError, match="unknown output format"):
        write_volume(tmp_path / "o.png", like.data, like)
    with pytest.raises(InputError, match="DICOM input"):
        write_volume(tmp_path / "o_dicom_folder", like.data, like)
    assert listing(tmp_path) == ["t2.npy"]


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------
def _affine():
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]) @ np.diag([0.9, 0.7, 2.5])
    aff[:3, 3] = (11.0, -7.0, 42.0)
    return aff


@pytest.mark.parametrize("name, shape", [("t2.nii.gz", (8, 10, 3)), ("t2.nii", (8, 10, 3)),
                                         ("t2d.nii.gz", (8, 10)), ("t4d.nii", (8, 10, 3, 1))])
def test_nifti_round_trip_keeps_affine_shape_header(tmp_path, name, shape):
    raw = (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(np.int16)
    img = nib.Nifti1Image(raw, _affine())
    img.header.set_slope_inter(0.5, 1.0)
    img.header["descrip"] = b"scanner T2"
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / name))
    like = read_volume(tmp_path / name)
    recon = like.data * 1.5 + 0.25
    out = write_volume(default_output_path(like.source), recon, like)
    assert out.name.startswith(name.split(".")[0] + "_sgf.")
    back = nib.load(str(out))
    assert back.shape == shape
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    assert back.header.get_data_dtype() == np.float32
    assert back.header.get_slope_inter() in ((None, None), (1.0, 0.0))
    assert back.header.get_xyzt_units() == ("mm", "sec")
    assert b"SGF-MRI" in back.header["descrip"].tobytes()
    again = read_volume(out)
    np.testing.assert_array_equal(again.data, recon.astype(np.float32))
    check_same_grid(like, again)
    assert (out.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_atomic_nifti_leaves_nothing_after_a_failure(tmp_path, monkeypatch):
    nib.save(nib.Nifti1Image(stack().transpose(1, 2, 0).copy(), _affine()), str(tmp_path / "t2.nii.gz"))
    like = read_volume(tmp_path / "t2.nii.gz")

    def fail(self, file_map, **kw):
        file_map["image"].fileobj.write(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", fail)
    with pytest.raises(RuntimeError, match="killed"):
        write_volume(tmp_path / "o.nii.gz", like.data, like)
    assert listing(tmp_path) == ["t2.nii.gz"]


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------
def test_hdf5_writer_reconstruction_and_attrs(tmp_path):
    p = tmp_path / "file1000.h5"
    with h5py.File(p, "w") as f:
        f["reconstruction_rss"] = stack()
        f.attrs["max"] = 123.0
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["norm"] = 4.5
        f["ismrmrd_header"] = np.bytes_(b"<ismrmrdHeader/>")
    like = read_volume(p)
    out = write_volume(default_output_path(p), like.data / 2, like, description="test run")
    assert out == tmp_path / "file1000_sgf.h5"
    with h5py.File(out, "r") as f:
        rec = f["reconstruction"][()]
        assert rec.dtype == np.float32 and rec.shape == (3, 8, 10)
        np.testing.assert_array_equal(rec, like.data / 2)
        assert f.attrs["acquisition"] == "CORPD_FBK" and f.attrs["norm"] == 4.5
        assert f.attrs["max"] == pytest.approx(float(rec.max())) and f.attrs["sgf_input_max"] == 123.0
        assert f.attrs["sgf_source"] == str(p) and f.attrs["sgf_description"] == "test run"
        assert f["ismrmrd_header"][()] == b"<ismrmrdHeader/>"
    assert read_volume(out).header["dataset"] == "reconstruction"  # our output reads back


def test_atomic_hdf5_leaves_nothing_after_a_failure(tmp_path, monkeypatch):
    p = tmp_path / "in.h5"
    with h5py.File(p, "w") as f:
        f["reconstruction_rss"] = stack()
    like = read_volume(p)

    def fail(self, *a, **k):
        raise RuntimeError("killed")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(RuntimeError):
        write_volume(tmp_path / "o.h5", like.data, like)
    assert listing(tmp_path) == ["in.h5"]


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
def test_dicom_writer_new_series_same_geometry(tmp_path, ts):
    src = make_series(tmp_path / "T2", stack(4, 8, 10), ts=ts)
    like = read_volume(src)
    recon = like.data * 1.7 + 3.0
    out = write_volume(default_output_path(src), recon, like)
    assert out == tmp_path / "T2_sgf" and out.is_dir()
    assert listing(out) == [f"IM{i:05d}.dcm" for i in range(1, 5)]
    ins = [pydicom.dcmread(f) for f in sorted(src.iterdir())]
    outs = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    in_series = {d.SeriesInstanceUID for d in ins}
    out_series = {d.SeriesInstanceUID for d in outs}
    assert len(out_series) == 1 and not (out_series & in_series)
    assert not ({d.SOPInstanceUID for d in outs} & {d.SOPInstanceUID for d in ins})
    assert len({d.SOPInstanceUID for d in outs}) == 4
    for d in outs:
        assert d.SeriesDescription == "T2 AX SGF-MRI" and d.SeriesNumber == 1007
        assert d.StudyInstanceUID == ins[0].StudyInstanceUID and d.PatientID == "SGF0001"
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.ImageType[0] == "DERIVED" and d.BitsAllocated == 16 and d.PixelRepresentation == 0
        assert 0x00191010 not in d  # private tags dropped
    # instance i+1 is slice i, geometry copied
    assert [float(d.ImagePositionPatient[2]) for d in outs] == [30.0, 33.0, 36.0, 39.0]
    back = read_volume(out)
    check_same_grid(like, back)
    slope = float(outs[0].RescaleSlope)
    assert np.abs(back.data - recon).max() <= slope / 2 + 1e-4 * np.abs(recon).max()
    assert slope <= recon.max() / 65535 * 1.001  # the full uint16 range is used


def test_dicom_writer_negative_values(tmp_path):
    src = make_series(tmp_path / "T2", stack(2, 6, 6))
    like = read_volume(src)
    recon = like.data - 200.0  # spans negative and positive
    out = write_volume(tmp_path / "neg", recon, like)
    back = read_volume(out)
    slope = float(pydicom.dcmread(next(out.iterdir())).RescaleSlope)
    assert np.abs(back.data - recon).max() <= slope / 2 + 1e-3


def test_dicom_writer_from_enhanced_writes_classic_files(tmp_path):
    p = make_enhanced(tmp_path / "enh" / "mf.dcm", stack(3, 6, 7))
    like = read_volume(p)
    np.testing.assert_allclose(like.data, stack(3, 6, 7)[::-1], atol=0.006)
    out = write_volume(default_output_path(p), like.data, like)
    assert out == tmp_path / "enh" / "mf_sgf"
    outs = [pydicom.dcmread(f) for f in sorted(out.iterdir())]
    assert len(outs) == 3
    for i, d in enumerate(outs):
        assert d.SOPClassUID == MR and "NumberOfFrames" not in d
        assert "PerFrameFunctionalGroupsSequence" not in d
        assert [float(v) for v in d.ImagePositionPatient] == [4.0 * (2 - i), 0, 0]
        assert [float(v) for v in d.PixelSpacing] == [0.9, 0.8]
    back = read_volume(out)
    check_same_grid(like, back)
    assert np.abs(back.data - like.data).max() <= float(outs[0].RescaleSlope) / 2 + 1e-3


def test_dicom_atomic_and_overwrite(tmp_path, monkeypatch):
    src = make_series(tmp_path / "T2", stack(3, 6, 6))
    like = read_volume(src)
    real = Dataset.save_as
    calls = []

    def fail_second(self, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed mid-series")
        return real(self, *a, **k)

    monkeypatch.setattr(Dataset, "save_as", fail_second)
    with pytest.raises(RuntimeError, match="mid-series"):
        write_volume(tmp_path / "out", like.data, like)
    monkeypatch.setattr(Dataset, "save_as", real)
    assert listing(tmp_path) == ["T2"]  # no temp folder, no half series

    out = write_volume(tmp_path / "out", like.data, like)
    first_uid = pydicom.dcmread(out / "IM00001.dcm").SeriesInstanceUID
    with pytest.raises(OutputExistsError, match="already exists"):
        write_volume(out, like.data, like)
    write_volume(out, like.data * 2, like, overwrite=True)
    # UIDs follow from the input UIDs and the derivation: the same result re-written replaces itself
    assert pydicom.dcmread(out / "IM00001.dcm").SeriesInstanceUID == first_uid
    write_volume(out, like.data * 2, like, overwrite=True, description="another engine")
    assert pydicom.dcmread(out / "IM00001.dcm").SeriesInstanceUID != first_uid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["T2", "out"]  # old series cleaned up
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds more than a DICOM series"):
        write_volume(out, like.data, like, overwrite=True)
    with pytest.raises(OutputExistsError, match="refusing to write over an input"):
        write_volume(src, like.data, like, overwrite=True)
    with pytest.raises(InputError, match="series folder"):
        write_volume(tmp_path / "x.dcm", like.data, like)


def test_dicom_like_to_nifti_and_npy(tmp_path):
    src = make_series(tmp_path / "T2", stack(3, 6, 8), iop=(0, 1, 0, 0, 0, -1), origin=(5, -3, 9))
    like = read_volume(src)
    nii = write_volume(tmp_path / "T2_sgf.nii.gz", like.data, like)
    back = read_volume(nii)
    np.testing.assert_allclose(back.orientation, like.orientation, atol=1e-5)
    np.testing.assert_allclose(back.data, like.data)
    check_same_grid(like, back)  # the LPS->RAS conversion makes the two formats comparable
    one = make_series(tmp_path / "one", stack(1, 6, 8))
    v1 = read_volume(one)
    assert np.load(write_volume(tmp_path / "one.npy", v1.data, v1)).shape == (6, 8)
    assert os.listdir(tmp_path / "one")  # input untouched
