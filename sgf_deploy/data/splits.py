"""Subject-level train / validation / test splits of a folder of the user's pairs.

``train --data DIR`` splits the *subjects* of the folder (:func:`sgf_deploy.data.pairs.find_pairs`;
a subject is a patient/session, e.g. ``2022061003`` of ``2022061003_T101.h5``), never the slices:
slices of one subject are strongly correlated, so a slice-level split would let the model be
judged on its own training anatomy. The split is a pure function of the sorted subject IDs and the
seed, recorded in the checkpoint's provenance (``split``) and in ``<checkpoint>.split.json``
beside it (readable without torch, with the checkpoint's SHA-256), and every later stage reads it:

* ``train``     learns on ``train`` subjects and reports validation metrics on ``val`` subjects;
* ``evaluate``, ``validate`` and ``build``'s parity check score on ``test``;
* ``calibrate`` draws INT8 calibration slices from ``train``.

Membership is decided by subject ID: "held out" means *not* in the train or validation lists, so a
different folder of new subjects is used whole, and a subject the model learned from is never used
to judge it, whichever folder it comes from. No torch here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..artifacts import sha256_file, write_json_atomic
from ..errors import InputError
from .pairs import PairFiles

SPLITS = ("train", "val", "test")
FRACTIONS = (0.70, 0.15, 0.15)  # of the subjects; val and test get at least one subject each
MIN_SUBJECTS = 3
SIDECAR_SUFFIX = ".split.json"
FORMAT = "sgf-deploy-split"
_SALT = 0x53504C54  # "SPLT": a split never shares a random stream with masks or batches


@dataclass(frozen=True)
class DataSplit:
    """Which subjects of ``folder`` are in which split (sorted IDs), and how it was drawn."""

    folder: str
    seed: int
    subjects: dict[str, tuple[str, ...]]
    ref_tag: str | None = None
    tar_tag: str | None = None
    label: str = "user"  # the pair label of the folder, e.g. "pd-pdfs"
    fractions: tuple[float, float, float] = FRACTIONS

    def split_of(self, subject: str) -> str | None:
        """``train`` / ``val`` / ``test``, or None for a subject the split has never seen."""
        return next((name for name in SPLITS if subject in self.subjects.get(name, ())), None)

    def held_out(self, subject: str, which: str) -> bool:
        """Whether ``subject`` may be used for ``which``: in that split, or unseen and ``which`` is
        not ``val`` (``test``: not trained or validated on; ``train``: not validated or tested on)."""
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}")
        found = self.split_of(subject)
        return found == which or (found is None and which != "val")

    def select(self, pairs: Iterable[PairFiles], which: str) -> list[PairFiles]:
        return [p for p in pairs if self.held_out(p.subject, which)]

    def counts(self) -> dict[str, int]:
        return {name: len(self.subjects.get(name, ())) for name in SPLITS}

    def describe(self) -> str:
        """``3 train / 1 val / 1 test subjects (seed 0)``."""
        c = self.counts()
        return f"{c['train']} train / {c['val']} val / {c['test']} test subjects (seed {self.seed})"

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "seed": int(self.seed), "ref_tag": self.ref_tag, "tar_tag": self.tar_tag,
                "label": self.label, "fractions": list(self.fractions), "unit": "subject",
                "subjects": {name: list(self.subjects.get(name, ())) for name in SPLITS}}

    @classmethod
    def from_dict(cls, data: Any, source: str = "split") -> "DataSplit":
        try:
            subjects = data["subjects"]
            split = cls(folder=str(data["folder"]), seed=int(data["seed"]),
                        subjects={name: tuple(str(s) for s in subjects.get(name, [])) for name in SPLITS},
                        ref_tag=data.get("ref_tag"), tar_tag=data.get("tar_tag"), label=str(data.get("label") or "user"),
                        fractions=tuple(float(f) for f in data.get("fractions", FRACTIONS)))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{source}: not a readable subject split") from None
        seen = [s for name in SPLITS for s in split.subjects[name]]
        if len(seen) != len(set(seen)):
            raise InputError(f"{source}: a subject appears in more than one split")
        return split


def split_sizes(n: int, fractions: tuple[float, float, float] = FRACTIONS) -> tuple[int, int, int]:
    """(train, val, test) subject counts for ``n`` subjects: val and test at least one each,
    train the rest (at least one)."""
    if n < MIN_SUBJECTS:
        raise InputError(f"{n} subject(s): a subject-level train/val/test split needs at least {MIN_SUBJECTS}")
    n_val = max(1, int(math.floor(n * fractions[1] + 0.5)))
    n_test = max(1, int(math.floor(n * fractions[2] + 0.5)))
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def make_split(pairs: list[PairFiles], seed: int, *, folder: str | os.PathLike, ref_tag: str | None = None,
               tar_tag: str | None = None, label: str = "user",
               fractions: tuple[float, float, float] = FRACTIONS) -> DataSplit:
    """Split the subjects of ``pairs`` (deterministic for the sorted subject IDs and ``seed``)."""
    subjects = sorted({p.subject for p in pairs})
    try:
        n_train, n_val, _ = split_sizes(len(subjects), fractions)
    except InputError as exc:
        raise InputError(f"{folder}: {exc} (found: {', '.join(subjects) or 'none'}); "
                         "add subjects, or name files so that each subject has its own ID") from None
    order = np.random.default_rng([int(seed), _SALT]).permutation(len(subjects))
    shuffled = [subjects[i] for i in order]
    parts = {"train": shuffled[:n_train], "val": shuffled[n_train:n_train + n_val], "test": shuffled[n_train + n_val:]}
    return DataSplit(folder=str(Path(folder).resolve()), seed=int(seed),
                     subjects={k: tuple(sorted(v)) for k, v in parts.items()}, ref_tag=ref_tag, tar_tag=tar_tag,
                     label=label, fractions=tuple(fractions))  # type: ignore[arg-type]


# ----------------------------------------------------------------------- the checkpoint's record
def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.split.json``."""
    return Path(str(checkpoint) + SIDECAR_SUFFIX)


def write_sidecar(checkpoint: str | os.PathLike, split: DataSplit, checkpoint_sha256: str, *,
                  task: str | None = None, overwrite: bool = True) -> Path:
    """Write the split beside the checkpoint, tied to it by its SHA-256 (with the model's task,
    so that torch-free stages such as ``calibrate`` degrade the folder's targets the same way)."""
    path = sidecar_path(checkpoint)
    write_json_atomic(path, {"format": FORMAT, "checkpoint": Path(checkpoint).name,
                             "checkpoint_sha256": checkpoint_sha256, "task": task, "pair": split.label,
                             "split": split.to_dict()}, overwrite=overwrite)
    return path


def sidecar_task(checkpoint: str | os.PathLike) -> str | None:
    """The task recorded in ``<checkpoint>.split.json`` (None when absent)."""
    try:
        data = json.loads(sidecar_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    task = data.get("task") if isinstance(data, dict) else None
    return str(task) if task else None


def read_sidecar(checkpoint: str | os.PathLike, checkpoint_sha256: str | None = None) -> DataSplit | None:
    """The split recorded beside ``checkpoint``, or None when there is none. A sidecar that names
    another checkpoint (SHA-256 differs) is refused: the split would not be this model's."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable split record ({str(exc)[:100]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not an sgf-deploy split record")
    want = checkpoint_sha256 or (sha256_file(checkpoint) if Path(checkpoint).is_file() else None)
    if want and data.get("checkpoint_sha256") != want:
        raise InputError(f"{path}: records the split of another checkpoint (sha256 {str(data.get('checkpoint_sha256'))[:12]}... "
                         f"vs {want[:12]}...); delete it or restore the checkpoint it belongs to")
    return DataSplit.from_dict(data.get("split"), str(path))


def from_provenance(provenance: dict[str, Any] | None, source: str = "checkpoint") -> DataSplit | None:
    """The split a checkpoint's provenance records (``provenance["split"]``), or None."""
    record = (provenance or {}).get("split")
    return DataSplit.from_dict(record, source) if record else None


def recorded_split(checkpoint: str | os.PathLike | None, checkpoint_sha256: str | None = None) -> DataSplit | None:
    """The split of a checkpoint without loading it (the sidecar), or None."""
    if not checkpoint:
        return None
    return read_sidecar(checkpoint, checkpoint_sha256)


# ------------------------------------------------------------------------------- using a split
def pairs_for(folder: str | os.PathLike, which: str, split: DataSplit | None, *, seed: int = 0,
              ref_tag: str | None = None, tar_tag: str | None = None) -> tuple[list[PairFiles], str]:
    """The pairs of ``folder`` for ``which`` split, and one line saying how they were chosen.

    With a recorded ``split``, its contrast tags pair the folder's files and its subject lists
    decide (see :meth:`DataSplit.held_out`). Without one the model was not trained on the folder
    (``train --data`` always records its split), so for ``test`` every pair is held out and used;
    for ``train`` (calibration) a folder of fully sampled pairs with enough subjects is split here
    with ``seed`` (the split ``train --seed`` draws), any other folder is used whole."""
    from .pairs import find_pairs

    if split is not None:
        pairs = find_pairs(folder, ref_tag or split.ref_tag, tar_tag or split.tar_tag)
        chosen = split.select(pairs, which)
        subjects = sorted({p.subject for p in chosen})
        dropped = len({p.subject for p in pairs}) - len(subjects)
        how = (f"{which} split recorded with the model ({split.describe()}): {len(subjects)} subject(s) of "
               f"{folder}" + (f", {dropped} other subject(s) left out" if dropped else ""))
    else:
        pairs = find_pairs(folder, ref_tag, tar_tag)
        subjects = {p.subject for p in pairs}
        if which == "test" or len(subjects) < MIN_SUBJECTS or all(p.target_is_degraded for p in pairs):
            return pairs, (f"all {len(pairs)} pair(s) of {folder} ({len(subjects)} subject(s); "
                           f"no subject split recorded with a model trained on it)")
        split = make_split(pairs, seed, folder=folder, ref_tag=ref_tag, tar_tag=tar_tag)
        chosen = split.select(pairs, which)
        how = (f"{which} split drawn with seed {seed} ({split.describe()}; no split recorded with a model, "
               "so this is the split 'train --seed' draws)")
    if not chosen:
        raise InputError(f"{folder}: no pairs in the {which} split ({how})")
    return chosen, how


def split_folder(folder: str | os.PathLike, seed: int, ref_tag: str | None = None,
                 tar_tag: str | None = None) -> tuple[list[PairFiles], DataSplit]:
    """Every pair of ``folder`` and the subject split ``train --seed`` records for it (the
    contrast tags that paired the files and the pair label, e.g. ``pd-pdfs``, included)."""
    from .pairs import find_pairs, pair_label

    pairs = find_pairs(folder, ref_tag, tar_tag)
    tags = pairs[0].tags if all(p.tags == pairs[0].tags for p in pairs) else None
    split = make_split(pairs, seed, folder=folder, ref_tag=tags[0] if tags else None,
                       tar_tag=tags[1] if tags else None, label=pair_label(pairs))
    return pairs, split
