"""Validation data: the simulator's held-out test split, or a folder of the user's own cases.

``--data DIR`` layouts (every file in a format ``sgf_deploy.data.readers.read_volume`` reads:
``.npy``, ``.nii``/``.nii.gz``, ``.h5``/``.hdf5``, ``.dcm`` or a DICOM series folder; the three
images of a case must have the same (N, H, W) shape, the reference and target the same grid):

1. one case per sub-folder::

       DIR/<case>/reference.<ext>    (or ref.<ext>)
       DIR/<case>/target.<ext>       (or tar.<ext>; the degraded target)
       DIR/<case>/ground_truth.<ext> (or gt.<ext>)

   ``<ext>`` may be a DICOM folder: ``DIR/<case>/reference/`` etc.
2. flat files, the case name as prefix::

       DIR/<case>_ref.<ext>  DIR/<case>_target.<ext>  DIR/<case>_gt.<ext>

   (``_reference``/``_tar``/``_ground_truth`` are accepted as well);
3. ``DIR`` itself holding ``reference.<ext>``, ``target.<ext>``, ``ground_truth.<ext>`` (one case).

Each case is one volume: PSNR's data range is the ground-truth maximum of that volume (fastMRI).
Each simulated slice is its own volume (its own subject and slice draw), as in
``sgf_deploy.model.evaluate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["Case", "ValidationData", "load_sim", "load_dir", "load_data", "DEFAULT_SIM_N"]

DEFAULT_SIM_N = 32
ROLES = ("reference", "target", "ground_truth")
_ROLE_NAMES = {
    "reference": ("reference", "ref"),
    "target": ("target", "tar"),
    "ground_truth": ("ground_truth", "gt"),
}
_EXTS = (".nii.gz", ".npy", ".nii", ".h5", ".hdf5", ".dcm", ".ima", "")


@dataclass
class Case:
    """One volume: float32 (n, H, W) reference, degraded target and ground truth."""

    name: str
    reference: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    ground_truth: np.ndarray = field(repr=False)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.target.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.target.shape[-2:])  # type: ignore[return-value]


@dataclass
class ValidationData:
    cases: list[Case]
    description: dict[str, Any]

    @property
    def n_slices(self) -> int:
        return sum(c.n for c in self.cases)


def load_sim(pair: str, task: str, n: int = DEFAULT_SIM_N, seed: int = 0) -> ValidationData:
    """``n`` slices of the simulator's held-out ``test`` split for ``pair``/``task``."""
    from ..data.simulator import simulate

    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    sim = simulate(pair, task, "test", int(n), seed=int(seed))
    cases = []
    for i in range(int(n)):
        subject = int(sim["subject"][i]) if "subject" in sim else None
        z = int(sim["slice_index"][i]) if "slice_index" in sim else None
        cases.append(Case(
            name=f"sim-{i:03d}" + (f"-s{subject}-z{z}" if subject is not None else ""),
            reference=sim["reference"][i : i + 1],
            target=sim["target"][i : i + 1],
            ground_truth=sim["ground_truth"][i : i + 1],
            sources={"subject": str(subject), "slice_index": str(z)},
        ))
    desc = {
        "source": "sim",
        "what": "sgf_deploy.data.simulator, held-out 'test' split (MNI152 2009 anatomy)",
        "pair": pair,
        "task": task,
        "split": "test",
        "seed": int(seed),
        "n_slices": int(n),
        "n_volumes": int(n),
        "slice_shape": list(cases[0].shape),
        "volume_convention": "each simulated slice is its own volume (own subject/slice draw)",
    }
    return ValidationData(cases, desc)


def _match_role(name: str, role: str, prefix: str = "") -> bool:
    low = name.lower()
    for ext in _EXTS:
        if ext and not low.endswith(ext):
            continue
        stem = low[: len(low) - len(ext)] if ext else low
        if stem in {prefix + r for r in _ROLE_NAMES[role]}:
            return True
    return False


def _find_role(folder: Path, role: str) -> Path | None:
    hits = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".") and _match_role(p.name, role)]
    if len(hits) > 1:
        raise InputError(f"{folder}: several {role} images ({', '.join(h.name for h in hits)}); keep one")
    return hits[0] if hits else None


def _case_from_folder(folder: Path) -> dict[str, Path] | None:
    found = {role: _find_role(folder, role) for role in ROLES}
    if all(v is None for v in found.values()):
        return None
    missing = [r for r, v in found.items() if v is None]
    if missing:
        raise InputError(
            f"{folder}: case has no {' / '.join(missing)} image (expected e.g. reference.npy, target.npy, ground_truth.npy)"
        )
    return found  # type: ignore[return-value]


_FLAT = re.compile(r"^(?P<case>.+)_(?P<role>ref|reference|target|tar|gt|ground_truth)(?P<ext>\.nii\.gz|\.[A-Za-z0-9]+)?$")


def _flat_cases(folder: Path) -> dict[str, dict[str, Path]]:
    cases: dict[str, dict[str, Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        m = _FLAT.match(p.name)
        if not m:
            continue
        role = next(r for r, names in _ROLE_NAMES.items() if m.group("role").lower() in names)
        entry = cases.setdefault(m.group("case"), {})
        if role in entry:
            raise InputError(f"{folder}: case '{m.group('case')}' has two {role} images ({entry[role].name}, {p.name})")
        entry[role] = p
    for name, entry in cases.items():
        missing = [r for r in ROLES if r not in entry]
        if missing:
            raise InputError(f"{folder}: case '{name}' has no {' / '.join(missing)} image (<case>_ref, <case>_target, <case>_gt)")
    return cases


def discover(directory: str | Path) -> dict[str, dict[str, Path]]:
    """Case name -> {role: path} for the layouts in the module docstring."""
    folder = Path(directory)
    if not folder.is_dir():
        raise InputError(f"{folder}: --data must be 'sim' or a folder of cases (not found or not a folder)")
    single = _case_from_folder(folder)
    if single is not None:
        return {folder.name: single}
    cases: dict[str, dict[str, Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = _case_from_folder(sub)
        if found is not None:
            cases[sub.name] = found
    if not cases:
        cases = _flat_cases(folder)
    if not cases:
        raise InputError(
            f"{folder}: no validation cases found; expected <case>/reference.<ext>, <case>/target.<ext>, "
            "<case>/ground_truth.<ext> or files <case>_ref.<ext>, <case>_target.<ext>, <case>_gt.<ext>"
        )
    return cases


def load_dir(directory: str | Path, n: int | None = None) -> ValidationData:
    """Every case of ``directory`` (sorted by name); at most ``n`` slices in all when given."""
    from ..data.readers import check_same_grid, read_volume

    if n is not None and n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    found = discover(directory)
    cases: list[Case] = []
    total = 0
    for name, paths in found.items():
        ref = read_volume(paths["reference"], role="reference")
        tar = read_volume(paths["target"], role="target")
        gt = read_volume(paths["ground_truth"], role="ground truth")
        check_same_grid(ref, tar)
        if gt.data.shape != tar.data.shape:
            raise InputError(
                f"ground truth {gt.source} is {gt.shape_str()} but target {tar.source} is {tar.shape_str()}; "
                "they must have the same shape"
            )
        if not float(np.max(gt.data)) > 0:
            raise InputError(f"ground truth {gt.source}: maximum is {float(np.max(gt.data)):g}; PSNR is undefined")
        take = tar.data.shape[0] if n is None else min(tar.data.shape[0], n - total)
        cases.append(Case(
            name=name,
            reference=np.ascontiguousarray(ref.data[:take], dtype=np.float32),
            target=np.ascontiguousarray(tar.data[:take], dtype=np.float32),
            ground_truth=np.ascontiguousarray(gt.data[:take], dtype=np.float32),
            sources={r: str(paths[r]) for r in ROLES} | {"format": tar.fmt, "slices_in_file": str(tar.data.shape[0])},
        ))
        total += take
        if n is not None and total >= n:
            break
    desc = {
        "source": "dir",
        "what": f"user cases in {Path(directory)}",
        "directory": str(Path(directory)),
        "n_slices": total,
        "n_volumes": len(cases),
        "cases": [{"name": c.name, "slices": c.n, "shape": list(c.shape), **c.sources} for c in cases],
        "volume_convention": "each case file is one volume (PSNR data range = its ground-truth maximum)",
        "limit_n": n,
    }
    return ValidationData(cases, desc)


def load_data(data: str, *, pair: str | None, task: str | None, n: int | None, seed: int = 0) -> ValidationData:
    """``data`` = ``"sim"`` (needs the engine's pair/task) or a folder."""
    if str(data).lower() == "sim":
        if not pair or not task:
            raise InputError("--data sim needs the engine's contrast pair and task, but its manifest records no 'model' "
                             "pair/task; pass --data DIR")
        return load_sim(pair, task, DEFAULT_SIM_N if n is None else n, seed)
    return load_dir(data, n)
