"""``sgf-deploy run --register/--strict`` at the command line: refusals come before any engine."""

import numpy as np
from click.testing import CliRunner
from helpers import phantom

from sgf_deploy.cli import cli


def _nifti(path, data, aff):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.moveaxis(np.asarray(data, np.float32), 0, -1), aff), str(path))
    return path


def test_non_overlapping_volumes_are_refused_in_one_line(tmp_path):
    img = np.stack([phantom(32, 32, "a")] * 2)
    far = np.diag([1.0, 1.0, 3.0, 1.0])
    far[0, 3] = 400.0
    ref = _nifti(tmp_path / "ref.nii.gz", img, np.diag([1.0, 1.0, 3.0, 1.0]))
    tar = _nifti(tmp_path / "tar.nii.gz", img, far)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["run", "--ref", str(ref), "--target", str(tar), "--register", "off",
                                      "--engine", str(tmp_path / "never-loaded.onnx")])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "do not overlap" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_unknown_register_mode_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--ref", "a.npy", "--target", "b.npy", "--register", "sideways"])
    assert result.exit_code == 2 and "sideways" in result.output
