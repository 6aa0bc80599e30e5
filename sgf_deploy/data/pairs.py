"""A folder of the user's paired scans: the one convention that ``train``, ``evaluate``,
``calibrate``, ``validate`` and ``build`` (its parity check) read.

A folder is described in one of two ways:

1. **``pairs.csv``** at its top: a header with the columns ``reference,target`` and optionally
   ``ground_truth`` and ``subject``, then one row per pair of paths relative to the folder (any
   format :func:`sgf_deploy.data.readers.read_volume` reads: ``.npy``, NIfTI, DICOM series
   folders, fastMRI/M4Raw ``.h5``). Rows without a ``subject`` are their own subject.
2. **Files paired by contrast tag** (the fastMRI / M4Raw layout), searched recursively: two files
   whose names differ only by the contrast tag are a pair (``2022061003_T101.h5`` /
   ``2022061003_T201.h5``, ``sub01_T1.nii.gz`` / ``sub01_T2.nii.gz``). The subject is the name
   without the tag (``2022061003``, ``sub01``). The tags are ``--ref-tag`` / ``--tar-tag``; by
   default the role names are tried first (``<case>_ref`` / ``<case>_target`` / ``<case>_gt``,
   or ``<case>/reference`` / ``<case>/target`` / ``<case>/ground_truth``), then ``T1`` / ``T2``.

**What the target is.** A role-named target (``<case>_target``, ``target.<ext>``) is the degraded
input as ``sgf-deploy run --target`` takes it, with an optional ground truth beside it; so is the
``target`` of a ``pairs.csv`` row that has a ``ground_truth``. A contrast-tagged target
(``sub01_T2``), or a ``pairs.csv`` target without a ground truth, is the fully sampled acquisition:
it is the ground truth, and the degraded input is made from it retrospectively for the task
(recon: the file's own k-space undersampled when an ``.h5`` has ``kspace``, else the image's; SR:
the centre of k-space kept), with a mask drawn from the seed and the subject, so it is the same
every time.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults as D
from ..errors import InputError

PAIRS_CSV = "pairs.csv"
ROLE_TAGS = {"reference": ("ref", "reference"), "target": ("target", "tar"), "ground_truth": ("gt", "ground_truth")}
CONTRAST_TAGS = (D.REF_TAG, D.TAR_TAG)
_SUFFIXES = (".nii.gz", ".npy", ".nii", ".h5", ".hdf5", ".dcm", ".ima")


@dataclass(frozen=True)
class PairFiles:
    """One pair on disk: reference, target, optional ground truth, and the subject they belong to."""

    reference: Path
    target: Path
    ground_truth: Path | None
    subject: str
    name: str
    target_is_degraded: bool  # the target is the input as given; else it is fully sampled
    tags: tuple[str, str] | None = None  # the contrast tags that paired the files (None: role names / csv)


@dataclass
class PairImages:
    """One pair in memory, float32 ``(n, H, W)`` each: reference, degraded target, ground truth
(``None`` for a degraded target given without one)."""

    files: PairFiles
    reference: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    ground_truth: np.ndarray | None = field(repr=False)
    degradation: str = "as given"
    fmt: str = "?"


# ------------------------------------------------------------------------------------- finding
def find_pairs(folder: str | os.PathLike, ref_tag: str | None = None, tar_tag: str | None = None) -> list[PairFiles]:
    """The pairs of ``folder`` (see the module docstring), sorted by subject and name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of paired files (see README, 'Your own data')")
    if (folder / PAIRS_CSV).is_file():
        return read_pairs_csv(folder / PAIRS_CSV)
    if ref_tag or tar_tag:
        if not (ref_tag and tar_tag) or ref_tag.lower() == tar_tag.lower():
            raise InputError(f"{folder}: give both contrast tags, and different ones (got {ref_tag!r}, {tar_tag!r})")
        tried = [((ref_tag,), (tar_tag,), ())]
    else:
        tried = [(ROLE_TAGS["reference"], ROLE_TAGS["target"], ROLE_TAGS["ground_truth"]),
                 ((CONTRAST_TAGS[0],), (CONTRAST_TAGS[1],), ())]
    for refs, tars, gts in tried:
        roles = refs == ROLE_TAGS["reference"]
        pairs = _pair_by_tag(folder, refs, tars, gts, degraded=roles, tags=None if roles else (refs[0], tars[0]))
        if pairs:
            return pairs
    shown = " or ".join(f"{'|'.join(r)} -> {'|'.join(t)}" for r, t, _ in tried)
    raise InputError(
        f"{folder}: no pairs found: expected {PAIRS_CSV} (columns reference,target[,ground_truth][,subject]) or "
        f"files whose names differ only by the contrast tag ({shown}; e.g. sub01_T1.nii.gz / sub01_T2.nii.gz, "
        f"2022061003_T101.h5 / 2022061003_T201.h5, case1_ref.npy / case1_target.npy / case1_gt.npy)"
    )


def read_pairs_csv(path: Path) -> list[PairFiles]:
    """Rows of ``pairs.csv``; paths relative to its folder; errors name the row."""
    folder = path.parent
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header[:2] != ["reference", "target"] or not set(header) <= {"reference", "target", "ground_truth", "subject"}:
        raise InputError(f"{path}: the first row must be the header reference,target[,ground_truth][,subject]")
    pairs = []
    for i, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        values = dict(zip(header, (c.strip() for c in row)))
        if not values.get("reference") or not values.get("target"):
            raise InputError(f"{path}: row {i} needs a reference and a target path")
        files = {k: folder / values[k] for k in ("reference", "target", "ground_truth") if values.get(k)}
        for p in files.values():
            if not p.exists():
                raise InputError(f"{path}: row {i}: {p} does not exist")
        name = values.get("subject") or _stem(files["target"])
        pairs.append(PairFiles(files["reference"], files["target"], files.get("ground_truth"),
                               values.get("subject") or f"row{i}", f"{name}-row{i}" if values.get("subject") else name,
                               "ground_truth" in files))
    if not pairs:
        raise InputError(f"{path}: lists no pairs")
    return sorted(pairs, key=lambda p: (p.subject, p.name))


def pair_label(pairs: list[PairFiles]) -> str:
    """The contrast pair the files hold, as the artefacts name it: the contrast tags, lower case
    (``--ref-tag PD --tar-tag PDFS`` -> ``pd-pdfs``); ``user`` when the files were paired by role
    name or ``pairs.csv`` (their contrasts are not named)."""
    tags = {p.tags for p in pairs}
    if len(tags) != 1 or None in tags:
        return "user"
    ref, tar = next(iter(tags))  # type: ignore[misc]
    clean = lambda t: re.sub(r"[^a-z0-9]+", "", t.lower()) or "x"  # noqa: E731
    return f"{clean(ref)}-{clean(tar)}"


def _stem(path: Path) -> str:
    low = path.name.lower()
    for suffix in _SUFFIXES:
        if low.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _tag_pattern(tags: tuple[str, ...]) -> re.Pattern:
    # A tag as a whole token: preceded by start/separator, followed by digits (M4Raw repetition
    # number) and then a separator or the end: "2022061003_T101" -> "T1", "sub01_T1" -> "T1".
    alternatives = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    return re.compile(rf"(?:^|(?<=[_\-.]))({alternatives})(?=\d*(?:[_\-.]|$))", re.IGNORECASE)


def _candidates(folder: Path) -> list[Path]:
    """Image files and DICOM series folders below ``folder`` (hidden ones skipped)."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.name == PAIRS_CSV:
            continue
        if path.is_file() and path.name.lower().endswith(_SUFFIXES):
            out.append(path)
        elif path.is_dir() and any(c.is_file() for c in path.iterdir()):
            out.append(path)  # a DICOM series folder (only used when its name carries a tag)
    return out


def _pair_by_tag(folder: Path, refs: tuple[str, ...], tars: tuple[str, ...], gts: tuple[str, ...],
                 degraded: bool, tags: tuple[str, str] | None = None) -> list[PairFiles]:
    files = _candidates(folder)
    by_name = {(p.parent, p.name.lower()): p for p in files}
    ref_re = _tag_pattern(refs)
    pairs = []
    for path in files:
        stem = _stem(path)
        suffix = path.name[len(stem):]
        match = ref_re.search(stem)
        if not match:
            continue

        def partner(tags: tuple[str, ...]) -> Path | None:
            for tag in tags:
                name = (stem[: match.start(1)] + tag + stem[match.end(1):] + suffix).lower()
                other = by_name.get((path.parent, name))
                if other is not None and other != path:
                    return other
            return None

        target = partner(tars)
        if target is None:
            continue
        subject = _subject(folder, path, stem, match)
        pairs.append(PairFiles(path, target, partner(gts) if gts else None, subject, subject, degraded, tags))
    return sorted(pairs, key=lambda p: (p.subject, p.name))


def _subject(folder: Path, path: Path, stem: str, match: re.Match) -> str:
    """The file's name without the tag (and its repetition digits), below ``folder``."""
    rest = stem[: match.start(1)] + re.sub(r"^\d*", "", stem[match.end(1):])
    rest = rest.strip("_-.")
    parts = [*path.parent.relative_to(folder).parts, rest] if rest else list(path.parent.relative_to(folder).parts)
    return "/".join(p for p in parts if p) or folder.resolve().name


# ------------------------------------------------------------------------------------- loading
def pair_seed(seed: int, files: PairFiles) -> list[int]:
    """Entropy for one pair's degradation masks: the seed and a stable hash of its subject/name."""
    digest = hashlib.sha256(f"{files.subject}\0{files.name}".encode()).digest()
    return [int(seed), int.from_bytes(digest[:4], "little")]


def load_pair(files: PairFiles, task: str | None, seed: int = 0, max_slices: int | None = None) -> PairImages:
    """Read one pair; degrade a fully sampled target for ``task`` (see the module docstring)."""
    from .readers import check_same_grid, read_volume

    if not files.target_is_degraded and files.target.name.lower().endswith((".h5", ".hdf5")) \
            and files.reference.name.lower().endswith((".h5", ".hdf5")):
        return _load_h5_pair(files, _need_task(files, task), seed, max_slices)
    ref = read_volume(files.reference, role="reference")
    tar = read_volume(files.target, role="target")
    check_same_grid(ref, tar)
    take = slice(0, max_slices)
    if files.target_is_degraded:
        truth = None
        if files.ground_truth is not None:
            gt = read_volume(files.ground_truth, role="ground truth")
            if gt.data.shape != tar.data.shape:
                raise InputError(f"ground truth {files.ground_truth} is {gt.shape_str()} but target {files.target} is "
                                 f"{tar.shape_str()}; they must have the same shape")
            truth = gt.data[take]
        return PairImages(files, ref.data[take], tar.data[take], truth, "as given", tar.fmt)
    task = _need_task(files, task)
    from .degrade import degrade_with_mask

    truth = tar.data[take]
    rng = np.random.default_rng(pair_seed(seed, files))
    degraded = np.stack([degrade_with_mask(s, task, rng)[0] for s in truth]).astype(np.float32)
    return PairImages(files, ref.data[take], degraded, truth, f"{task} applied to the target image (seed {seed})", tar.fmt)


def _need_task(files: PairFiles, task: str | None) -> str:
    if not task:
        raise InputError(f"{files.target}: pair '{files.name}' has a fully sampled target (no ground_truth image), "
                         "which needs a task (recon4x, ...) to be degraded")
    return task


def _load_h5_pair(files: PairFiles, task: str, seed: int, max_slices: int | None) -> PairImages:
    """fastMRI / M4Raw HDF5: the target's own k-space is undersampled when it has one."""
    from .fastmri_pairs import H5PairSource

    source = H5PairSource([(files.reference, files.target)], task, seed=seed)
    n = source.pairs[0].slices if max_slices is None else min(max_slices, source.pairs[0].slices)
    rng = np.random.default_rng(pair_seed(seed, files))
    examples = [source.example(0, s, rng) for s in range(n)]
    how = f"{task} applied to the target's {'k-space' if source.pairs[0].tar_use_kspace else 'image'} (seed {seed})"
    return PairImages(files, np.stack([e.reference for e in examples]), np.stack([e.target for e in examples]),
                      np.stack([e.ground_truth for e in examples]), how, "hdf5")


class PairSource:
    """Infinite, seeded stream of training examples (:class:`sgf_deploy.data.simulator.Example`)
    from a user's pairs, any format.

    Draw ``i`` picks a pair and a slice with a generator seeded by (seed, i); a fully sampled
    target gets a fresh degradation mask at every draw (HDF5 pairs: read one slice at a time, the
    target's own k-space undersampled when it has one); a pair with a ground truth is used as given.
    ``subject`` of an example is the pair's index in ``pairs``."""

    def __init__(self, pairs: list[PairFiles], task: str, seed: int = 0, position: int = 0) -> None:
        from .fastmri_pairs import H5PairSource

        if not pairs:
            raise InputError("no reference/target pairs given")
        self.pairs, self.task, self.seed, self.position = list(pairs), task, int(seed), int(position)
        self._h5: dict[int, H5PairSource] = {}
        self._loaded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        for i, files in enumerate(self.pairs):
            if not files.target_is_degraded and files.reference.name.lower().endswith((".h5", ".hdf5")) \
                    and files.target.name.lower().endswith((".h5", ".hdf5")):
                self._h5[i] = H5PairSource([(files.reference, files.target)], task, seed=seed)
            else:
                self._loaded[i] = self._load(files)

    @staticmethod
    def _load(files: PairFiles) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        from .readers import check_same_grid, read_volume

        ref = read_volume(files.reference, role="reference")
        tar = read_volume(files.target, role="target")
        check_same_grid(ref, tar)
        if files.target_is_degraded and files.ground_truth is None:
            raise InputError(f"{files.target}: pair '{files.name}' has a degraded target and no ground truth; "
                             "training needs the fully sampled target")
        gt = read_volume(files.ground_truth, role="ground truth").data if files.ground_truth else None
        if gt is not None and gt.shape != tar.data.shape:
            raise InputError(f"ground truth {files.ground_truth} and target {files.target} differ in shape")
        return ref.data, tar.data, gt

    def slices(self, index: int) -> int:
        return self._h5[index].pairs[0].slices if index in self._h5 else int(self._loaded[index][1].shape[0])

    def __len__(self) -> int:
        return sum(self.slices(i) for i in range(len(self.pairs)))

    def __iter__(self) -> "PairSource":
        return self

    def example(self, index: int, slice_index: int, rng: np.random.Generator):
        """The example of one pair and slice; ``rng`` draws the degradation mask."""
        from .degrade import degrade_with_mask
        from .simulator import Example

        if index in self._h5:
            ex = self._h5[index].example(0, slice_index, rng)
            return Example(ex.reference, ex.target, ex.ground_truth, index, slice_index, ex.mask)
        ref, tar, gt = self._loaded[index]
        if gt is not None:
            return Example(ref[slice_index], tar[slice_index], gt[slice_index], index, slice_index, None)
        degraded, mask = degrade_with_mask(tar[slice_index], self.task, rng)
        return Example(ref[slice_index], np.asarray(degraded, np.float32), tar[slice_index], index, slice_index, mask)

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.position, 0x5041])
        self.position += 1
        index = int(rng.integers(len(self.pairs)))
        return self.example(index, int(rng.integers(self.slices(index))), rng)
