"""--data DIR: the one folder convention (sgf_deploy.data.pairs) as validate reads it."""

from __future__ import annotations

import numpy as np
import pytest

from sgf_deploy.errors import InputError
from sgf_deploy.data.pairs import find_pairs
from sgf_deploy.validate.data import load_data, load_dir


def _arr(n=2, seed=0):
    return np.random.default_rng(seed).uniform(1, 2, (n, 16, 12)).astype(np.float32)


def test_nested_layout(tmp_path):
    for case in ("b", "a"):
        (tmp_path / case).mkdir()
        np.save(tmp_path / case / "reference.npy", _arr())
        np.save(tmp_path / case / "target.npy", _arr(seed=1))
        np.save(tmp_path / case / "gt.npy", _arr(seed=2))
    data = load_dir(tmp_path)
    assert [c.name for c in data.cases] == ["a", "b"]
    assert data.n_slices == 4 and data.description["source"] == "dir"
    np.testing.assert_array_equal(data.cases[0].ground_truth, _arr(seed=2))


def test_flat_layout_and_n_cap(tmp_path):
    for case in ("c1", "c2"):
        np.save(tmp_path / f"{case}_ref.npy", _arr(3))
        np.save(tmp_path / f"{case}_target.npy", _arr(3, 1))
        np.save(tmp_path / f"{case}_gt.npy", _arr(3, 2))
    assert [p.name for p in find_pairs(tmp_path)] == ["c1", "c2"]
    data = load_dir(tmp_path, n=4)
    assert [c.n for c in data.cases] == [3, 1]


def test_single_case_folder(tmp_path):
    for name, seed in (("ref.npy", 0), ("tar.npy", 1), ("ground_truth.npy", 2)):
        np.save(tmp_path / name, _arr(seed=seed))
    data = load_data(str(tmp_path), pair=None, task=None, n=None)
    assert len(data.cases) == 1 and data.cases[0].name == tmp_path.name


def test_errors(tmp_path):
    with pytest.raises(InputError, match="no pairs found"):
        load_dir(tmp_path)
    (tmp_path / "x").mkdir()
    np.save(tmp_path / "x" / "reference.npy", _arr())
    np.save(tmp_path / "x" / "target.npy", _arr())
    with pytest.raises(InputError, match="ground_truth"):
        load_dir(tmp_path)
    np.save(tmp_path / "x" / "gt.npy", _arr(n=3))
    with pytest.raises(InputError, match="same shape"):
        load_dir(tmp_path)
    with pytest.raises(InputError, match="sim"):
        load_data("sim", pair=None, task="recon4x", n=4)
    with pytest.raises(InputError):
        load_dir(tmp_path / "missing")


def test_fully_sampled_targets_are_degraded_for_the_task(tmp_path):
    """Contrast-tag layout without ground truth: the target file is the truth, the input is made
    from it for the engine's task, the same way every time."""
    for sub in ("sub01", "sub02"):
        np.save(tmp_path / f"{sub}_T1.npy", _arr(2, 3) * 100)
        np.save(tmp_path / f"{sub}_T2.npy", _arr(2, 4) * 100)
    with pytest.raises(InputError, match="needs a task"):
        load_dir(tmp_path)
    data = load_dir(tmp_path, task="recon4x", seed=3)
    assert [c.name for c in data.cases] == ["sub01", "sub02"]
    case = data.cases[0]
    np.testing.assert_array_equal(case.ground_truth, _arr(2, 4) * 100)
    assert not np.allclose(case.target, case.ground_truth)
    assert "recon4x" in case.sources["degradation"]
    again = load_dir(tmp_path, task="recon4x", seed=3).cases[0]
    np.testing.assert_array_equal(again.target, case.target)
