"""The derived series a PACS accepts (sgf_deploy.data.dicom_series, used by `run` and the node)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sgf_deploy.data.dicom_series import plan_pixels
from sgf_deploy.data.readers import read_volume
from sgf_deploy.data.writers import write_volume

DCIODVFY = shutil.which("dciodvfy")


def findings(path: Path) -> set[str]:
    """dciodvfy's errors and warnings, without the lines that name the file's own values."""
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.startswith(("Error", "Warning"))}


@pytest.fixture
def mr_small(tmp_path) -> Path:
    folder = tmp_path / "mr"
    folder.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "MR_small.dcm")
    return folder


def test_mr_small_derived_series(tmp_path, mr_small):
    like = read_volume(mr_small)
    recon = like.data * 1.1 - 5.0  # some values go negative (signed target: kept)
    out = write_volume(tmp_path / "out", recon, like, reference=like, description="test engine sha256 abc",
                       result_key="engine sha256 abc")
    src = pydicom.dcmread(mr_small / "MR_small.dcm")
    ds = pydicom.dcmread(out / "IM00001.dcm")
    assert ds.ImageType[:2] == ["DERIVED", "SECONDARY"]
    assert ds.Manufacturer == "sgf-deploy" and "sgf-deploy" in ds.SoftwareVersions and "DeviceSerialNumber" not in ds
    assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds
    assert ds.PixelRepresentation == src.PixelRepresentation == 1
    assert np.abs(ds.pixel_array.astype(np.float32) - recon[0]).max() <= 0.5 + 1e-3  # the target's integer scale
    for key in ("PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "ImagePositionPatient", "PixelSpacing"):
        assert ds[key].value == src[key].value, key
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    assert ds.DerivationDescription.startswith("test engine sha256 abc")
    lo, hi = float(ds.pixel_array.min()), float(ds.pixel_array.max())
    assert float(ds.WindowCenter) == pytest.approx((lo + hi) / 2, abs=0.5)
    # deterministic UIDs: the same inputs and key give the same series; another key a new one
    again = write_volume(tmp_path / "again", recon, like, reference=like, description="other text",
                         result_key="engine sha256 abc")
    other = write_volume(tmp_path / "other", recon, like, reference=like, result_key="engine sha256 def")
    uid = lambda p: pydicom.dcmread(p / "IM00001.dcm").SOPInstanceUID  # noqa: E731
    assert uid(again) == uid(out) != uid(other)
    if DCIODVFY:
        new = findings(out / "IM00001.dcm") - findings(mr_small / "MR_small.dcm")
        assert not [f for f in new if f.startswith("Error")], new
        assert new == set(), f"warnings the input did not have: {new}"


def test_unsigned_magnitude_negatives_set_to_zero_and_said():
    class T(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    templates = [T(PixelRepresentation=0, BitsStored=12)]
    arr = np.array([[[-3.2, 0.4], [100.6, 5000.0]]], dtype=np.float32)
    plan = plan_pixels(arr, templates)
    assert plan.rescale is None and plan.clipped == 1 and "1 negative value" in plan.note
    assert plan.stored.tolist() == [[[0, 0], [101, 5000]]]
    assert plan.bits_stored == 16  # 5000 does not fit the target's 12 bits: widened to 16, not clipped
    big = plan_pixels(np.array([[[0.0, 1e6]]], dtype=np.float32), templates)  # beyond 16 bits: a rescale, said
    assert big.rescale is not None and "exceed" in big.note


def test_target_with_its_own_rescale_keeps_it():
    class T(dict):
        def get(self, key, default=None):
            return super().get(key, default)

    templates = [T(PixelRepresentation=0, BitsStored=16, RescaleSlope="0.5", RescaleIntercept="-10")]
    arr = np.array([[[-10.0, 0.0], [20.5, 100.0]]], dtype=np.float32)
    plan = plan_pixels(arr, templates)
    assert plan.rescale == [("0.5", "-10.0")] or plan.rescale == [("0.5", "-10")]
    assert plan.stored.tolist() == [[[0, 20], [61, 220]]] and plan.note == ""


def test_simulator_series_derived_has_no_new_dciodvfy_findings(tmp_path, study):
    if not DCIODVFY:
        pytest.skip("dciodvfy (Debian dicom3tools) not installed")
    ref, tar = study
    ref_v, tar_v = read_volume(ref), read_volume(tar)
    out = write_volume(tmp_path / "out", tar_v.data * 0.9, tar_v, reference=ref_v)
    for f in sorted(out.glob("*.dcm")):
        new = findings(f) - findings(tar / "IM0001.dcm")
        assert new == set(), new
    ds = pydicom.dcmread(out / "IM00002.dcm")
    refs = {s.ReferencedSOPInstanceUID for s in ds.SourceImageSequence}
    assert refs == {pydicom.dcmread(tar / "IM0002.dcm").SOPInstanceUID, pydicom.dcmread(ref / "IM0002.dcm").SOPInstanceUID}
    assert {s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence} == {ref_v.header[0].SeriesInstanceUID,
                                                                          tar_v.header[0].SeriesInstanceUID}
