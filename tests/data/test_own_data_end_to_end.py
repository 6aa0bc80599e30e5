"""The user's own data, end to end: a small fastMRI-layout folder of PD / PD-FS knee pairs (image
pairs and one multi-coil k-space-only pair, six subjects) through train -> evaluate -> export ->
calibrate -> build (INT8) -> validate -> run, checking at each step that

* the subject split recorded by ``train`` is disjoint and every later stage stays on its side of it
  (calibration: train subjects; evaluate, build parity, validate: test subjects);
* every artefact says ``pd-pdfs`` (the contrast tags given), never the simulator's ``t1-t2``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")
pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from own_data_helpers import make_fastmri_folder  # noqa: E402

from sgf_deploy.data.splits import SPLITS, read_sidecar  # noqa: E402


def cli(args: list[str], cwd: Path) -> str:
    """``sgf-deploy ARGS`` in-process in ``cwd``; asserts exit 0 and returns the output."""
    from click.testing import CliRunner

    from sgf_deploy.cli import cli as group

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(group, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    assert result.exit_code == 0, f"sgf-deploy {' '.join(args)}:\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("own-data")
    make_fastmri_folder(ws / "knee", subjects=6, slices=3, size=32, kspace_subjects=1)
    return ws


def test_train_evaluate_export_calibrate_build_validate_run(workspace: Path) -> None:
    from sgf_deploy.export.metadata import read_onnx_metadata
    from sgf_deploy.model.checkpoint import read_checkpoint

    ws = workspace
    torch.set_num_threads(2)
    # -- train: split by subject, recorded; labels from the tags ------------------------------
    out = cli(["train", "--data", "knee", "--ref-tag", "PD", "--tar-tag", "PDFS", "--steps", "1", "--batch", "2",
               "--crop", "32", "--val-every", "1", "--n", "2", "--threads", "2", "--quiet", "--out", "m.pt"], ws)
    assert "pair label 'pd-pdfs'" in out and "4 train / 1 val / 1 test subjects" in out
    _, meta, _ = read_checkpoint(ws / "m.pt")
    prov = meta["provenance"]
    assert prov["pair"] == "pd-pdfs" and prov["settings"]["pair"] == "pd-pdfs" and prov["task"] == "recon4x"
    split = read_sidecar(ws / "m.pt", meta["sha256"])
    assert split is not None and split.to_dict() == prov["split"]
    groups = [set(split.subjects[name]) for name in SPLITS]
    assert all(groups) and sum(map(len, groups)) == 6 and len(set.union(*groups)) == 6  # disjoint, complete
    train, val, test = groups
    assert (split.ref_tag, split.tar_tag, split.label) == ("PD", "PDFS", "pd-pdfs")

    # -- evaluate --data: the test subjects only, with 95 % CIs --------------------------------
    out = cli(["evaluate", "--ckpt", "m.pt", "--data", "knee", "--json", "eval.json"], ws)
    assert "pd-pdfs recon4x" in out and "| zero-filled |" in out and "95% CI" in out
    result = json.loads((ws / "eval.json").read_text())
    assert set(result["subjects"]) == test and result["n"] == 3 * len(test)
    assert all(row["psnr_ci95"][0] <= row["psnr"] <= row["psnr_ci95"][1] for row in result["rows"])
    with pytest.raises(AssertionError, match="--data"):  # never silently scored on simulated T1 -> T2
        cli(["evaluate", "--ckpt", "m.pt"], ws)

    # -- export: the name and the metadata say pd-pdfs ------------------------------------------
    cli(["export", "--ckpt", "m.pt", "--static", "32x32"], ws)
    (onnx,) = (ws / "export").glob("*.onnx")
    assert "-pd-pdfs-" in onnx.name
    onnx_meta = read_onnx_metadata(onnx)
    assert onnx_meta["sgf.pair"] == "pd-pdfs" and onnx_meta["sgf.task"] == "recon4x"

    # -- calibrate: train subjects only (split, tags and task of the exported model's checkpoint)
    out = cli(["calibrate", "--data", "knee", "--n", "6"], ws)  # the split of the model in export/, by default
    assert "using the subject split recorded with" in out
    (calib,) = (ws / "calibration").iterdir()
    detail = json.loads((calib / "manifest.json").read_text())["source_detail"]
    assert set(detail["subjects"]) == train and detail["split"] == "train"

    # -- build INT8: engine name, manifest, parity on the held-out test subjects ---------------
    out = cli(["build", "--int8", "--backend", "onnxruntime", "--calib", str(calib), "--threads", "2"], ws)
    (engine,) = (ws / "engines").glob("*.onnx")
    assert "-pd-pdfs-" in engine.name and ".int8" in engine.name
    manifest = json.loads(engine.with_name(engine.name + ".json").read_text())
    assert manifest["model"]["pair"] == "pd-pdfs"
    parity = manifest["build_parity"]
    assert parity["status"] == "run" and "test split recorded with the model" in parity["slices"]
    assert f"{len(test)} subject(s)" in parity["slices"]

    # -- validate: by default the recorded test subjects, not the simulator ---------------------
    out = cli(["validate", "--engine", str(engine), "--threads", "2"], ws)
    report = json.loads(next((ws / "reports").rglob("report.json")).read_text())
    used = {case["subject"] for case in report["data"]["cases"]}
    assert used == test and not used & (train | val)
    verdict = json.loads(engine.with_name(engine.name + ".json").read_text())["validation"]["verdict"]
    assert verdict in ("pass", "fail")

    # -- run on a test subject: the batch is chosen and printed --------------------------------
    from sgf_deploy.data.pairs import find_pairs, load_pair

    (files,) = [p for p in find_pairs(ws / "knee", "PD", "PDFS") if p.subject in test]
    pair = load_pair(files, "recon4x", seed=0)
    np.save(ws / "ref.npy", pair.reference)
    np.save(ws / "tar.npy", pair.target)
    args = ["run", "--ref", "ref.npy", "--target", "tar.npy", "--engine", str(engine), "--out", "out.npy"]
    out = cli(args + ([] if verdict == "pass" else ["--allow-unvalidated"]), ws)
    assert "batch" in out and (ws / "out.npy").is_file()
    assert np.load(ws / "out.npy").shape == pair.target.shape
    recorded = json.loads(engine.with_name(engine.name + ".json").read_text())["memory_per_slice"]
    assert recorded["32x32"]["bytes"] > 0
