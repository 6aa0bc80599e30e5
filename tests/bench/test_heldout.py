"""Held-out real anatomy (Colin27, Debian mricron-data) and its evaluation table."""

import numpy as np
import pytest

from sgf_deploy.data import colin27


@pytest.fixture(scope="module")
def volumes():
    try:
        colin27.find_colin27()
    except Exception as exc:  # noqa: BLE001 - InputError with the install hint
        pytest.skip(f"Colin27 not installed here: {exc}")
    return colin27.tissue_volumes()


def test_segmentation_and_synthesis(volumes):
    brain = volumes["csf"] + volumes["gm"] + volumes["wm"]
    assert np.all(brain <= 1.0 + 1e-5) and np.all(volumes["gm"] >= -1e-6)
    z = colin27.slices(5)[2]
    assert volumes["wm"][z].sum() > 0.2 * brain[z].sum() and volumes["gm"][z].sum() > 0.2 * brain[z].sum()
    assert len(set(colin27.slices(32))) == 32
    a = colin27.make_set("T1w", "PD", "recon4x", n=2, seed=1)
    b = colin27.make_set("T1w", "PD", "recon4x", n=2, seed=1)
    assert np.array_equal(a.reference, b.reference) and np.array_equal(a.target, b.target)
    assert a.reference.shape == (2, 217, 181) and a.mask.shape == (2, 181)
    # T1w: white matter brighter than grey matter; the ground truth is the fully sampled target
    wm, gm = volumes["wm"][a.slice_index[0]] > 0.9, volumes["gm"][a.slice_index[0]] > 0.9
    assert a.reference[0][wm].mean() > a.reference[0][gm].mean()
    assert not np.array_equal(a.target, a.ground_truth)


def test_heldout_table_scores_every_shipped_model(volumes, tmp_path, monkeypatch):
    from sgf_deploy.bench.heldout import BAR_DB, evaluate_heldout, format_markdown
    from sgf_deploy.model.registry import shipped_models

    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / "cache"))
    result = evaluate_heldout(["recon4x"], n=3, pairs=["t1-pd"], threads=1)
    (row,) = result["rows"]
    assert row["pair"] == "t1-pd" and row["n"] == 3
    names = {n for n, m in shipped_models().items() if "recon4x" in m.tasks}
    assert set(row["models"]) == names
    for m in row["models"].values():
        assert m["gain_ci95"][0] <= m["gain_db"] <= m["gain_ci95"][1]
        assert m["meets_bar"] == (m["gain_db"] >= BAR_DB["recon4x"] and m["worst_gain_db"] >= 0)
    table = format_markdown(result)
    assert "| recon4x | t1-pd |" in table and "Colin27" in table
