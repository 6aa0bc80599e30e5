"""Subject-level splits (sgf_deploy.data.splits): disjoint by subject, deterministic for a seed,
recorded beside the checkpoint, and honoured by every stage that picks slices from a folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sgf_deploy.data.pairs import PairFiles, find_pairs, pair_label
from sgf_deploy.data.splits import (SPLITS, DataSplit, make_split, pairs_for, read_sidecar, sidecar_path, split_folder,
                                    split_sizes, write_sidecar)
from sgf_deploy.errors import InputError


def _pairs(subjects: list[str], per_subject: int = 1) -> list[PairFiles]:
    return [PairFiles(Path(f"{s}_{k}_T1.npy"), Path(f"{s}_{k}_T2.npy"), None, s, f"{s}-{k}", False, ("T1", "T2"))
            for s in subjects for k in range(per_subject)]


def _npy_folder(root: Path, subjects: int, ref_tag: str = "PD", tar_tag: str = "PDFS") -> Path:
    """Subject i's images are filled with i + 1, so a slice tells which subject it came from."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(subjects):
        base = np.full((2, 16, 16), i + 1.0, np.float32) + 0.01 * rng.random((2, 16, 16), np.float32)
        np.save(root / f"sub{i:02d}_{ref_tag}.npy", base)
        np.save(root / f"sub{i:02d}_{tar_tag}.npy", base * 2)
    return root


@pytest.mark.parametrize("n", range(3, 41))
def test_every_subject_in_exactly_one_split(n):
    subjects = [f"s{i:03d}" for i in range(n)]
    split = make_split(_pairs(subjects, 2), seed=n, folder=".")
    groups = [set(split.subjects[name]) for name in SPLITS]
    assert all(groups) and sum(map(len, groups)) == n and set.union(*groups) == set(subjects)
    for a in range(3):
        for b in range(a + 1, 3):
            assert not groups[a] & groups[b]
    assert split_sizes(n) == tuple(len(g) for g in groups)


def test_split_is_deterministic_for_a_seed_and_order_free():
    subjects = [f"p{i}" for i in range(12)]
    a = make_split(_pairs(subjects), 0, folder=".")
    assert a == make_split(_pairs(list(reversed(subjects))), 0, folder=".")
    assert any(make_split(_pairs(subjects), s, folder=".").subjects != a.subjects for s in range(1, 6))
    assert split_sizes(12) == (8, 2, 2) and split_sizes(3) == (1, 1, 1)
    with pytest.raises(InputError, match="at least 3"):
        make_split(_pairs(["a", "b"], 5), 0, folder="x")


def test_held_out_membership():
    split = DataSplit(folder=".", seed=0, subjects={"train": ("a", "b"), "val": ("c",), "test": ("d",)})
    assert [s for s in "abcdz" if split.held_out(s, "test")] == ["d", "z"]  # unseen subjects are held out
    assert [s for s in "abcdz" if split.held_out(s, "train")] == ["a", "b", "z"]
    assert [s for s in "abcdz" if split.held_out(s, "val")] == ["c"]
    assert DataSplit.from_dict(json.loads(json.dumps(split.to_dict()))) == split
    bad = split.to_dict()
    bad["subjects"]["test"] = ["a"]
    with pytest.raises(InputError, match="more than one split"):
        DataSplit.from_dict(bad)


def test_sidecar_is_tied_to_its_checkpoint(tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(b"weights")
    split = make_split(_pairs(["a", "b", "c", "d"]), 1, folder=tmp_path)
    from sgf_deploy.artifacts import sha256_file

    write_sidecar(ckpt, split, sha256_file(ckpt), task="recon8x")
    assert sidecar_path(ckpt).name == "m.pt.split.json"
    assert read_sidecar(ckpt) == split and read_sidecar(tmp_path / "other.pt") is None
    ckpt.write_bytes(b"other weights")
    with pytest.raises(InputError, match="another checkpoint"):
        read_sidecar(ckpt)


def test_labels_come_from_the_contrast_tags(tmp_path):
    folder = _npy_folder(tmp_path / "knee", 4)
    pairs, split = split_folder(folder, 0, "PD", "PDFS")
    assert pair_label(pairs) == split.label == "pd-pdfs" and (split.ref_tag, split.tar_tag) == ("PD", "PDFS")
    assert [p.subject for p in pairs] == ["sub00", "sub01", "sub02", "sub03"]  # PD never pairs with PDFS's tag
    roles = tmp_path / "roles"
    roles.mkdir()
    for name in ("c1_ref", "c1_target", "c1_gt"):
        np.save(roles / f"{name}.npy", np.ones((1, 8, 8), np.float32))
    assert pair_label(find_pairs(roles)) == "user"


def test_stages_stay_on_their_side_of_the_split(tmp_path):
    folder = _npy_folder(tmp_path / "d", 7)
    pairs, split = split_folder(folder, 3, "PD", "PDFS")
    test, how = pairs_for(folder, "test", split)
    train, _ = pairs_for(folder, "train", split)
    assert {p.subject for p in test} == set(split.subjects["test"]) and "recorded with the model" in how
    assert {p.subject for p in train} == set(split.subjects["train"])
    # no recorded split: the model never saw the folder, every pair is held out from it
    everything, how = pairs_for(folder, "test", None, ref_tag="PD", tar_tag="PDFS")
    assert len(everything) == 7 and "no subject split recorded" in how
    # calibration without a model: the split 'train --seed' draws
    assert {p.subject for p in pairs_for(folder, "train", None, seed=3, ref_tag="PD", tar_tag="PDFS")[0]} \
        == set(split.subjects["train"])


def test_training_validates_on_validation_subjects_only(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    from sgf_deploy.model.train import TrainSettings, user_validation_set

    folder = _npy_folder(tmp_path / "d", 6)
    _, split = split_folder(folder, 0, "PD", "PDFS")
    data = user_validation_set(TrainSettings(data=str(folder), ref_tag="PD", tar_tag="PDFS", val_n=8, task="recon4x"))
    seen = {f"sub{int(round(float(np.median(r)))) - 1:02d}" for r in data["reference"]}
    assert seen == set(split.subjects["val"]) and len(data["reference"]) == 2 * len(split.subjects["val"])
