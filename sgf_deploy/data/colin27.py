"""Held-out real anatomy: Colin27 (the MNI "ch2" single-subject template, Debian ``mricron-data``).

No model of this project trains on it: training uses the MNI152 2009 *average* (nilearn) through
:mod:`.simulator`; Colin27 is one real brain, scanned 27 times and averaged, with its own folds.

Tissue classes come from a simple segmentation of the brain-extracted T1 (``ch2bet``): the brain
intensities are split into CSF / GM / WM by 3-class k-means (a few Lloyd iterations from fixed
quantiles), and each voxel's partial-volume fractions are the linear interpolation between the two
class means its intensity lies between. Outside the brain, head tissue of the full T1 (``ch2``)
above the background is split into fat (bright) and muscle/skin (the rest). Images of any
contrast are then drawn with the simulator's signal equations and BrainWeb tissue values, plus
1.5 % Rician noise; the target is degraded with the simulator's masks (seeded per slice).

Axial slices are (H, W) = (217, 181), anterior up, radiological (the subject's right on the left),
like the simulator's. :func:`slices` picks ``n`` slices evenly spaced over the planes whose brain
area is at least 40 % of the largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

SEARCH = (Path("/usr/share/mricron/templates"), Path("/usr/share/mricron"), Path("/usr/lib/mricron/templates"))
FILES = ("ch2.nii.gz", "ch2bet.nii.gz")
NOISE = 0.015
MIN_BRAIN_FRACTION = 0.40
_CACHE: dict[str, dict[str, np.ndarray]] = {}


def find_colin27() -> Path:
    """The folder holding ``ch2.nii.gz`` and ``ch2bet.nii.gz`` (``$SGF_COLIN27`` first)."""
    import os

    candidates = ([Path(os.environ["SGF_COLIN27"])] if os.environ.get("SGF_COLIN27") else []) + list(SEARCH)
    for folder in candidates:
        if all((folder / f).is_file() for f in FILES):
            return folder
    raise InputError("Colin27 (ch2.nii.gz, ch2bet.nii.gz) not found in " + ", ".join(map(str, candidates))
                     + "; install Debian's mricron-data (apt-get install mricron-data) or set SGF_COLIN27")


def _kmeans3(values: np.ndarray, iters: int = 20) -> np.ndarray:
    centres = np.quantile(values, [0.1, 0.5, 0.9])
    for _ in range(iters):
        label = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        centres = np.array([values[label == k].mean() if (label == k).any() else centres[k] for k in range(3)])
    return np.sort(centres)


def tissue_volumes(folder: Path | None = None) -> dict[str, np.ndarray]:
    """Fractions ``csf``, ``gm``, ``wm``, ``fat``, ``muscle`` as float32 (z, H, W) volumes."""
    import nibabel as nib

    folder = folder or find_colin27()
    key = str(folder)
    if key in _CACHE:
        return _CACHE[key]
    t1 = np.asarray(nib.load(str(folder / "ch2.nii.gz")).get_fdata(dtype=np.float32))
    bet = np.asarray(nib.load(str(folder / "ch2bet.nii.gz")).get_fdata(dtype=np.float32))
    if t1.shape != bet.shape or t1.ndim != 3:
        raise InputError(f"{folder}: ch2 {t1.shape} and ch2bet {bet.shape} differ; expected one 3-D grid")
    brain = bet > 0
    c_csf, c_gm, c_wm = _kmeans3(bet[brain][::5])  # every 5th brain voxel: the same means, 5x faster
    v = bet
    csf = np.clip((c_gm - v) / (c_gm - c_csf), 0, 1)
    wm = np.clip((v - c_gm) / (c_wm - c_gm), 0, 1)
    gm = 1.0 - csf - wm
    csf, gm, wm = (np.where(brain, x, 0.0).astype(np.float32) for x in (csf, gm, wm))
    head = (~brain) & (t1 > 0.15 * float(t1.max()))
    fat = (head & (t1 > np.quantile(t1[head], 0.6))).astype(np.float32)
    muscle = (head.astype(np.float32) - fat)
    # (x, y, z) RAS voxels -> axial (z, H, W): anterior up (flip y), radiological (flip x)
    out = {name: np.ascontiguousarray(np.flip(np.transpose(vol, (2, 1, 0)), axis=(1, 2)))
           for name, vol in (("csf", csf), ("gm", gm), ("wm", wm), ("fat", fat), ("muscle", muscle))}
    area = brain.sum(axis=(0, 1))
    out["_brain_area"] = area.astype(np.int64)
    _CACHE[key] = out
    return out


def slices(n: int, folder: Path | None = None) -> list[int]:
    """``n`` axial plane indices evenly spaced over the planes with enough brain."""
    area = tissue_volumes(folder)["_brain_area"]
    keep = np.flatnonzero(area >= MIN_BRAIN_FRACTION * area.max())
    if n > keep.size:
        raise InputError(f"Colin27 has {keep.size} usable axial slices; asked for {n}")
    return [int(keep[i]) for i in np.linspace(0, keep.size - 1, n).round().astype(int)]


@dataclass(frozen=True)
class HeldoutSet:
    reference: np.ndarray  # float32 (n, H, W)
    target: np.ndarray
    ground_truth: np.ndarray
    slice_index: np.ndarray
    mask: np.ndarray | None  # (n, W) for reconstruction tasks


def make_set(ref_contrast, tar_contrast, task: str, n: int = 48, seed: int = 0,
             folder: Path | None = None) -> HeldoutSet:
    """``n`` Colin27 slices: reference and target drawn in the given contrasts (a name of
    :data:`sgf_deploy.data.simulator.SEQUENCES`, or a :class:`.random_contrast.Contrast`), the
    target degraded for ``task``. Deterministic for (contrasts, task, n, seed)."""
    from . import simulator as sim
    from .degrade import degrade_with_mask
    from .random_contrast import Contrast, tissue_signal

    vols = tissue_volumes(folder)
    picks = slices(n, folder)

    def level(contrast, tissue: str) -> float:
        pd, t1, t2 = sim.TISSUES[tissue]
        if isinstance(contrast, Contrast):
            return tissue_signal(contrast, pd, t1, t2, tissue, sim.signal)
        return sim.signal(contrast, pd, t1, t2)

    def image(contrast, z: int, rng: np.random.Generator) -> np.ndarray:
        img = sum(np.float32(level(contrast, t)) * vols[t][z] for t in sim.TISSUES)
        sigma = np.float32(NOISE * float(img.max()))
        re = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
        return np.sqrt(re * re + im * im).astype(np.float32)

    refs, tars, gts, masks = [], [], [], []
    for i, z in enumerate(picks):
        rng = np.random.default_rng([int(seed), 2700, int(z)])
        refs.append(image(ref_contrast, z, rng))
        gt = image(tar_contrast, z, rng)
        tar, mask = degrade_with_mask(gt, task, np.random.default_rng([int(seed), 2701, int(z)]))
        gts.append(gt)
        tars.append(tar.astype(np.float32))
        masks.append(mask)
    return HeldoutSet(np.stack(refs), np.stack(tars), np.stack(gts), np.asarray(picks),
                      None if masks[0] is None else np.stack(masks))
