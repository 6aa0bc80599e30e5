"""``sgf-deploy run`` through click's CliRunner: formats in and out, metrics, and every bad input
(one line on stderr, no traceback, non-zero exit, no output file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sgf_deploy.cli import cli

from runtime_helpers import copy_engine, phantom_pair


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """An empty workspace as the working directory (no engines/), with its own engine cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / ".cache"))
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["run", *map(str, args)])


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if ".cache" not in p.parts}


def assert_clean_failure(result, root: Path, before: set[str]) -> str:
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert len(err.splitlines()) == 1, f"stderr is not one line:\n{err}"
    assert err.startswith("sgf-deploy: error:"), err
    assert listing(root) == before, f"files appeared: {listing(root) - before}"
    return err


def save_pair(root: Path, ref: np.ndarray, tar: np.ndarray, suffix: str = ".npy") -> tuple[Path, Path]:
    np.save(root / f"ref{suffix}", ref, allow_pickle=False)
    np.save(root / f"tar{suffix}", tar, allow_pickle=False)
    return root / "ref.npy", root / "tar.npy"


# -- formats in and out ----------------------------------------------------------------------
def test_npy_2d_round_trip_with_gt(ws, validated_engine, lite):
    from sgf_deploy.metrics import psnr, ssim
    from sgf_deploy.model.infer import reconstruct

    ref, tar, gt = (a[0] for a in phantom_pair(1, 40, 56))
    ref_p, tar_p = save_pair(ws, ref, tar)
    np.save(ws / "gt.npy", gt)
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", validated_engine, "--gt", ws / "gt.npy")
    assert result.exit_code == 0, result.output
    out = np.load(ws / "tar_sgf.npy")
    expected = reconstruct(lite[1], ref, tar)
    assert out.shape == (40, 56) and np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()
    text = result.stdout
    for word in ("engine:", "validated: pass", "1 slice of 40x56", "preprocess", "inference", "postprocess",
                 "zero-filled", "SGF-MRI", "wrote:"):
        assert word in text, text
    assert f"{psnr(gt, tar):6.2f} dB" in text and f"{ssim(gt, out):.4f}" in text
    assert result.stderr == ""


def test_npy_3d_integer_inputs(ws, validated_engine):
    ref, tar, _ = phantom_pair(3, 37, 45)
    ref_p, tar_p = save_pair(ws, np.round(ref).astype(np.int16), np.round(tar).astype(np.uint16))
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", validated_engine, "--batch", "2",
                    "--threads", "1", "--out", ws / "o.npy")
    assert result.exit_code == 0, result.output
    out = np.load(ws / "o.npy")
    assert out.shape == (3, 37, 45) and out.dtype == np.float32 and np.isfinite(out).all()
    assert "3 slices of 37x45, batch 2" in result.stdout


def test_complex_target_taken_as_magnitude_with_notice(ws, validated_engine):
    ref, tar, _ = phantom_pair(1, 32, 40)
    ref_p, tar_p = save_pair(ws, ref, (tar * np.exp(1j * 0.7)).astype(np.complex64))
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", validated_engine)
    assert result.exit_code == 0, result.output
    assert "magnitude" in result.stderr and "note:" in result.stderr
    assert (ws / "tar_sgf.npy").is_file()


def test_nifti_round_trip(ws, validated_engine, lite):
    import nibabel as nib

    from sgf_deploy.model.infer import reconstruct

    ref, tar, _ = phantom_pair(3, 40, 56)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    affine[:3, 3] = (-20, 15, 7)
    for name, arr in (("ref", ref), ("tar", tar)):
        nib.save(nib.Nifti1Image(np.moveaxis(arr, 0, -1), affine), ws / f"{name}.nii.gz")
    result = invoke("--ref", ws / "ref.nii.gz", "--target", ws / "tar.nii.gz", "--engine", validated_engine)
    assert result.exit_code == 0, result.output
    img = nib.load(ws / "tar_sgf.nii.gz")
    assert np.allclose(img.affine, affine) and img.shape == (40, 56, 3)
    out = np.moveaxis(np.asarray(img.dataobj, dtype=np.float32), -1, 0)
    expected = reconstruct(lite[1], ref, tar)
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()


def write_dicom_series(folder: Path, stack: np.ndarray, series_uid: str | None = None,
                       spacing: float = 0.8, z0: float = 0.0) -> Path:
    """A minimal classic MR series (uint16, one file per slice) like a scanner export."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    for i, sl in enumerate(np.asarray(stack)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Test^Phantom", "SGF0001"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, i + 1, "T2 TSE"
        ds.Rows, ds.Columns = sl.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = 3.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-20.0, -30.0, z0 + 3.0 * i]
        ds.PixelData = np.clip(np.round(sl), 0, 65535).astype("<u2").tobytes()
        ds.save_as(folder / f"IM{i:04d}.dcm", enforce_file_format=True)
    return folder


def test_dicom_series_round_trip(ws, validated_engine, lite):
    from sgf_deploy.data.readers import read_volume
    from sgf_deploy.model.infer import reconstruct

    ref, tar, _ = phantom_pair(2, 37, 45)
    ref, tar = np.round(ref), np.round(tar)
    write_dicom_series(ws / "T1", ref)
    write_dicom_series(ws / "T2", tar)
    result = invoke("--ref", ws / "T1", "--target", ws / "T2", "--engine", validated_engine)
    assert result.exit_code == 0, result.output
    assert (ws / "T2_sgf").is_dir() and len(list((ws / "T2_sgf").glob("*.dcm"))) == 2
    out = read_volume(ws / "T2_sgf")
    src = read_volume(ws / "T2")
    assert np.allclose(out.orientation, src.orientation)
    expected = reconstruct(lite[1], ref.astype(np.float32), tar.astype(np.float32))
    # the derived series keeps the target's stored integers (no Modality LUT): a step of 1
    assert np.abs(out.data - expected).max() <= 0.5 + 1e-4 * np.abs(expected).max()


def test_hdf5_round_trip(ws, validated_engine):
    import h5py

    ref, tar, _ = phantom_pair(2, 32, 40)
    for name, arr in (("ref", ref), ("tar", tar)):
        with h5py.File(ws / f"{name}.h5", "w") as f:
            f.create_dataset("reconstruction_rss", data=arr)
            f.attrs["max"] = float(arr.max())
            f.attrs["acquisition"] = "AXT2"
    result = invoke("--ref", ws / "ref.h5", "--target", ws / "tar.h5", "--engine", validated_engine)
    assert result.exit_code == 0, result.output
    with h5py.File(ws / "tar_sgf.h5", "r") as f:
        assert f["reconstruction"].shape == (2, 32, 40)
        assert f.attrs["acquisition"] == "AXT2"


@pytest.mark.parametrize("value", [0.0, 5.0])
def test_constant_target(ws, validated_engine, value):
    ref, _, _ = phantom_pair(1, 32, 40)
    ref_p, tar_p = save_pair(ws, ref, np.full_like(ref, value))
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", validated_engine)
    assert result.exit_code == 0, result.output
    out = np.load(ws / "tar_sgf.npy")
    assert np.isfinite(out).all() and np.allclose(out, value, atol=1e-6)


def test_overwrite(ws, validated_engine):
    ref, tar, _ = phantom_pair(1, 32, 40)
    ref_p, tar_p = save_pair(ws, ref[0], tar[0])
    (ws / "tar_sgf.npy").write_bytes(b"old")
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", validated_engine, "--overwrite")
    assert result.exit_code == 0, result.output
    assert np.load(ws / "tar_sgf.npy").shape == (32, 40)


def test_allow_unvalidated_warns(ws, ort_engine):
    ref, tar, _ = phantom_pair(1, 32, 40)
    ref_p, tar_p = save_pair(ws, ref, tar)
    result = invoke("--ref", ref_p, "--target", tar_p, "--engine", ort_engine, "--allow-unvalidated")
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "never validated" in result.stderr
    assert (ws / "tar_sgf.npy").is_file()


def test_run_does_not_import_torch(ws, validated_engine):
    ref, tar, _ = phantom_pair(2, 24, 32)
    ref_p, tar_p = save_pair(ws, ref, tar)
    code = textwrap.dedent(f"""
        import sys
        from sgf_deploy.cli import main
        rc = main(["run", "--ref", {str(ref_p)!r}, "--target", {str(tar_p)!r}, "--engine", {str(validated_engine)!r}])
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH_MODULES", bad)
        sys.exit(rc or (3 if bad else 0))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ws)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ws / "tar_sgf.npy").is_file()


# -- bad inputs --------------------------------------------------------------------------------
def _npy_header_only(path: Path, shape: tuple, dtype="<f4") -> None:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})


def _ok(root: Path, h=32, w=40, n=None):
    ref, tar, gt = phantom_pair(n or 1, h, w)
    if n is None:
        ref, tar, gt = ref[0], tar[0], gt[0]
    return ref, tar, gt


def _case_missing_ref(root):
    _, tar, _ = _ok(root)
    np.save(root / "tar.npy", tar)
    return ["--ref", root / "nope.npy", "--target", root / "tar.npy"], "no such file"


def _case_missing_target(root):
    ref, _, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    return ["--ref", root / "ref.npy", "--target", root / "missing.nii.gz"], "no such file"


def _case_not_npy(root):
    ref, tar, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    (root / "tar.npy").write_bytes(b"this is not an array\n" * 10)
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "not a .npy"


def _case_unsupported(root):
    ref, _, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    (root / "tar.txt").write_text("1 2 3\n")
    return ["--ref", root / "ref.npy", "--target", root / "tar.txt"], "unsupported"


def _case_unreadable_folder(root):
    ref, _, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    (root / "empty_series").mkdir()
    (root / "empty_series" / "notes.txt").write_text("x")
    return ["--ref", root / "ref.npy", "--target", root / "empty_series"], "no DICOM"


def _case_truncated_npy(root):
    ref, tar, _ = _ok(root)
    save_pair(root, ref, tar)
    data = (root / "tar.npy").read_bytes()
    (root / "tar.npy").write_bytes(data[: len(data) // 2])
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "truncated"


def _case_truncated_nifti(root):
    import nibabel as nib

    ref, tar, _ = _ok(root, n=2)
    for name, arr in (("ref", ref), ("tar", tar)):
        nib.save(nib.Nifti1Image(np.moveaxis(arr, 0, -1), np.eye(4)), root / f"{name}.nii")
    data = (root / "tar.nii").read_bytes()
    (root / "tar.nii").write_bytes(data[: len(data) - 1000])
    return ["--ref", root / "ref.nii", "--target", root / "tar.nii"], "truncated"


def _case_truncated_nifti_gz(root):
    import nibabel as nib

    ref, tar, _ = _ok(root, n=2)
    for name, arr in (("ref", ref), ("tar", tar)):
        nib.save(nib.Nifti1Image(np.moveaxis(arr, 0, -1), np.eye(4)), root / f"{name}.nii.gz")
    data = (root / "tar.nii.gz").read_bytes()
    (root / "tar.nii.gz").write_bytes(data[: len(data) // 2])
    return ["--ref", root / "ref.nii.gz", "--target", root / "tar.nii.gz"], "target"


def _case_corrupt_h5(root):
    ref, _, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    (root / "tar.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return ["--ref", root / "ref.npy", "--target", root / "tar.h5"], "HDF5"


def _case_damaged_dicom(root):
    ref, tar, _ = _ok(root, n=2)
    write_dicom_series(root / "T1", np.round(ref))
    write_dicom_series(root / "T2", np.round(tar))
    victim = sorted((root / "T2").iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-500])
    return ["--ref", root / "T1", "--target", root / "T2"], "T2"


def _case_pickle(root):
    ref, _, _ = _ok(root)
    np.save(root / "ref.npy", ref)
    obj = np.empty((4, 4), dtype=object)
    obj[:] = [[{"x": 1}] * 4] * 4
    np.save(root / "tar.npy", obj, allow_pickle=True)
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "pickle"


def _array_case(arr_ref, arr_tar, match):
    def case(root):
        np.save(root / "ref.npy", arr_ref, allow_pickle=False)
        np.save(root / "tar.npy", arr_tar, allow_pickle=False)
        return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], match
    return case


_img = np.random.default_rng(0).random((32, 40)).astype(np.float32) * 100
_nan = _img.copy()
_nan[3, 4] = np.nan
_inf = _img.copy()
_inf[5, 6] = -np.inf
_structured = np.zeros((8, 8), dtype=[("a", "<f4"), ("b", "<f4")])


def _case_too_many_slices(root):
    np.save(root / "ref.npy", _img)
    _npy_header_only(root / "tar.npy", (5000, 32, 40))
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "limit"


def _case_too_large_side(root):
    np.save(root / "ref.npy", _img)
    _npy_header_only(root / "tar.npy", (1, 5000, 64))
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "limit"


def _case_too_many_voxels(root):
    np.save(root / "ref.npy", _img)
    _npy_header_only(root / "tar.npy", (2000, 300, 300))
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "limit"


def _case_existing_output(root):
    save_pair(root, _img, _img)
    (root / "tar_sgf.npy").write_bytes(b"keep me")
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy"], "--overwrite"


def _case_out_is_input(root):
    save_pair(root, _img, _img)
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy", "--out", root / "tar.npy", "--overwrite"], "input"


def _case_grid_mismatch_nifti(root):
    import nibabel as nib

    ref, tar, _ = _ok(root, n=2)
    nib.save(nib.Nifti1Image(np.moveaxis(ref, 0, -1), np.diag([1.0, 1.0, 3.0, 1.0])), root / "ref.nii.gz")
    far = np.diag([0.5, 0.5, 3.0, 1.0])
    far[0, 3] = 500.0  # another grid is resampled (tests/geometry); one that does not overlap is refused
    nib.save(nib.Nifti1Image(np.moveaxis(tar, 0, -1), far), root / "tar.nii.gz")
    return ["--ref", root / "ref.nii.gz", "--target", root / "tar.nii.gz"], "do not overlap"


def _case_gt_shape(root):
    save_pair(root, _img, _img)
    np.save(root / "gt.npy", _img[:30])
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy", "--gt", root / "gt.npy"], "ground truth"


def _case_gt_zero(root):
    save_pair(root, _img, _img)
    np.save(root / "gt.npy", np.zeros_like(_img))
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy", "--gt", root / "gt.npy"], "ground truth"


def _case_gt_nan(root):
    save_pair(root, _img, _img)
    np.save(root / "gt.npy", _nan)
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy", "--gt", root / "gt.npy"], "non-finite"


def _case_bad_out_suffix(root):
    save_pair(root, _img, _img)
    return ["--ref", root / "ref.npy", "--target", root / "tar.npy", "--out", root / "out.txt"], "output"


BAD_INPUTS = {
    "missing-ref": _case_missing_ref,
    "missing-target": _case_missing_target,
    "not-npy": _case_not_npy,
    "unsupported-type": _case_unsupported,
    "folder-without-dicom": _case_unreadable_folder,
    "truncated-npy": _case_truncated_npy,
    "truncated-nifti": _case_truncated_nifti,
    "truncated-nifti-gz": _case_truncated_nifti_gz,
    "corrupt-hdf5": _case_corrupt_h5,
    "damaged-dicom": _case_damaged_dicom,
    "pickled-object-array": _case_pickle,
    "0-d": _array_case(np.float32(3.0), np.float32(3.0), "0-d"),
    "1-d": _array_case(np.ones(40, np.float32), np.ones(40, np.float32), "1-D"),
    "empty": _array_case(np.zeros((0, 32, 40), np.float32), np.zeros((0, 32, 40), np.float32), "empty"),
    "4-d": _array_case(np.ones((2, 2, 8, 8), np.float32), np.ones((2, 2, 8, 8), np.float32), "4-D"),
    "string-dtype": _array_case(_img, np.full((8, 8), "abc"), "non-numeric"),
    "bool-dtype": _array_case(_img, _img > 50, "bool"),
    "structured-dtype": _array_case(_img, _structured, "structured"),
    "nan": _array_case(_img, _nan, "non-finite"),
    "inf": _array_case(_inf, _img, "non-finite"),
    "shape-mismatch": _array_case(_img, _img[:, :36], "same grid"),
    "slice-count-mismatch": _array_case(np.stack([_img] * 2), np.stack([_img] * 3), "same grid"),
    "too-many-slices": _case_too_many_slices,
    "side-too-large": _case_too_large_side,
    "too-many-voxels": _case_too_many_voxels,
    "existing-output": _case_existing_output,
    "output-is-input": _case_out_is_input,
    "grid-mismatch-nifti": _case_grid_mismatch_nifti,
    "gt-shape-mismatch": _case_gt_shape,
    "gt-all-zero": _case_gt_zero,
    "gt-nan": _case_gt_nan,
    "bad-output-suffix": _case_bad_out_suffix,
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(ws, validated_engine, case):
    args, match = BAD_INPUTS[case](ws)
    before = listing(ws)
    result = invoke(*args, "--engine", validated_engine)
    err = assert_clean_failure(result, ws, before)
    assert match.lower() in err.lower(), err
    if case == "existing-output":
        assert (ws / "tar_sgf.npy").read_bytes() == b"keep me"


def test_unvalidated_engine_refused(ws, ort_engine):
    save_pair(ws, _img, _img)
    before = listing(ws)
    result = invoke("--ref", ws / "ref.npy", "--target", ws / "tar.npy", "--engine", ort_engine)
    err = assert_clean_failure(result, ws, before)
    assert "never validated" in err and "--allow-unvalidated" in err


def test_failed_validation_refused(ws, ort_engine):
    from runtime_helpers import mark_validated

    engine = copy_engine(ort_engine, ws / "eng")
    mark_validated(engine, verdict="fail")
    save_pair(ws, _img, _img)
    before = listing(ws)
    result = invoke("--ref", ws / "ref.npy", "--target", ws / "tar.npy", "--engine", engine)
    err = assert_clean_failure(result, ws, before)
    assert "'fail'" in err


@pytest.mark.parametrize("edit,match", [
    ({"backend_version": "0.0.1"}, "ONNX Runtime 0.0.1"),
    ({"device": {"kind": "cuda", "name": "NVIDIA RTX 4090", "sm": "SM89"}}, "RTX 4090"),
])
def test_engine_for_another_device_or_backend_refused(ws, validated_engine, edit, match):
    import json

    engine = copy_engine(validated_engine, ws / "eng")
    manifest_file = engine.with_name(engine.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    manifest.update(edit)  # as if built elsewhere (identity fields cannot be changed through the API)
    manifest_file.write_text(json.dumps(manifest))
    save_pair(ws, _img, _img)
    before = listing(ws)
    result = invoke("--ref", ws / "ref.npy", "--target", ws / "tar.npy", "--engine", engine)
    err = assert_clean_failure(result, ws, before)
    assert match in err, err


def test_missing_engine_file(ws):
    save_pair(ws, _img, _img)
    before = listing(ws)
    result = invoke("--ref", ws / "ref.npy", "--target", ws / "tar.npy", "--engine", ws / "nope.onnx")
    err = assert_clean_failure(result, ws, before)
    assert "not found" in err


def test_non_finite_output_is_never_written(ws, validated_engine, monkeypatch):
    import sgf_deploy.engines as engines

    real = engines.load_engine

    def nan_engine(path, threads=None):
        runner = real(path, threads=threads)

        class NaN:
            manifest = runner.manifest

            def infer(self, reference, target):
                return np.full_like(target, np.nan)
        return NaN()

    monkeypatch.setattr(engines, "load_engine", nan_engine)
    save_pair(ws, _img, _img)
    before = listing(ws)
    result = invoke("--ref", ws / "ref.npy", "--target", ws / "tar.npy", "--engine", validated_engine)
    err = assert_clean_failure(result, ws, before)
    assert "non-finite" in err
