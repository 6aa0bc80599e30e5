"""Multi-contrast brain MRI simulator on real anatomy (the MNI152 2009 template shipped by nilearn).

Anatomy
    Grey- and white-matter fractions are nilearn's MNI152 2009 probability maps
    (``load_mni152_gm_template`` / ``load_mni152_wm_template``, 1 mm, 197 x 233 x 189), the brain
    is ``load_mni152_brain_mask``, and CSF = mask - GM - WM clipped to [0, 1] (GM/WM outside the
    mask, ~1 % of the GM mass in a thin rim, are set to zero so the fractions agree with the mask).

    Scalp: nilearn's T1 template (``load_mni152_template``) is *skull-stripped*: outside the brain
    mask 99.95 % of its voxels are below 0.05 (max 0.27, all at the mask edge), so there is no
    real scalp, fat or muscle to take from it and it is not used. Real head images have a bright
    ring of scalp fat around a dark skull, which matters for k-space energy and aliasing, so the
    simulator adds a *synthetic, schematic* head shell built from the distance to the brain mask:
    skull (no signal, with a thin fat-marrow diploe band), subcutaneous fat, then skin/galea with
    muscle's relaxation times. Thicknesses vary per subject; the shell is geometric, not anatomy.

Contrast
    Spin echo ``S = PD (1 - exp(-TR/T1)) exp(-TE/T2)`` and, for FLAIR, inversion recovery
    ``S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``, with BrainWeb's 1.5 T tissue values
    (:data:`TISSUES`) and the sequences of :data:`SEQUENCES`, summed over tissue fractions.

Variability (so images are not cartoon-flat)
    Per subject: tissue PD/T1/T2 jitter (3 % log-normal), an in-plane similarity transform
    (rotation +-6 deg, anisotropic scale +-5 %, shift +-4 mm) and a smooth 3-D elastic warp (a sum
    of random sinusoidal modes, wavelengths 40-120 mm, <= 3 mm in plane, <= ``MAX_DZ`` mm through
    plane), the same for both contrasts of a subject (same anatomy, aligned), and a head-shell
    geometry. Per subject and contrast: a smooth multiplicative bias field (about +-15 %) and a
    noise level (1-2 % of the image maximum). Per slice: fine texture (smoothed Gaussian noise
    modulating the GM and WM fractions by ~5 %) and complex Gaussian noise. The noise is white in
    k-space; the centred orthonormal FFT is unitary, so white k-space noise of std sigma per real
    and imaginary part is exactly white image-domain noise of the same std: it is drawn in the
    image domain (4 FFTs fewer per example), then the magnitude is taken (Rician background).

Slices and splits
    Axial template slices, shown with anterior up and in radiological orientation (the subject's
    right on the image's left): arrays are (H, W) = (233, 197); the odd width is deliberate.
    Slices whose brain area is below 30 % of the largest are dropped (template z 25..140 are
    kept). The kept range is cut into blocks of consecutive slices assigned in the repeating
    pattern train(16), val(6), train(16), test(6), and ``GUARD`` slices between consecutive
    blocks are discarded. The elastic warp moves sampling points at most ``MAX_DZ`` mm through
    plane and trilinear interpolation reaches one plane further, so a slice z reads template
    planes z-MAX_DZ..z+MAX_DZ; with ``GUARD = 2 * MAX_DZ + 1`` no template plane *nor its
    immediate neighbour* read by one split is read by another. Subject ids are disjoint ranges
    (:data:`SUBJECTS`). All "subjects" are random variations of one average anatomy, so disjoint
    slice levels are what keeps val/test anatomy unseen in training.

Determinism
    Every random draw comes from ``np.random.default_rng`` seeded with integer tuples built from
    (seed, split, subject[, contrast | slice_index]); the same inputs give bitwise the same arrays.
    The ground truth does not depend on the task, only the degraded target does.

Only numpy is imported at module import; scipy and nilearn are imported on first use, and the
template volumes are loaded once per process (about 3-4 s) and cached at module level.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import InputError
from .degrade import TASKS, degrade_with_mask
from .masks import MASK_KINDS
from .random_contrast import DEFORM, Contrast, RandomSpec, draw_contrast_pair, lower_resolution, tissue_signal

PAIRS: dict[str, tuple[str, str]] = {
    "t1-t2": ("T1w", "T2w"),
    "t1-flair": ("T1w", "FLAIR"),
    "pd-t2": ("PD", "T2w"),
    "t1-pd": ("T1w", "PD"),
    "t2-flair": ("T2w", "FLAIR"),
}  # (reference contrast, target contrast)

#: the domain-randomised pair: every subject draws both contrasts (:mod:`.random_contrast`)
RANDOM_PAIR = "random"
PAIR_CHOICES: tuple[str, ...] = tuple(PAIRS) + (RANDOM_PAIR,)

SEQUENCES: dict[str, dict] = {
    "T1w": {"kind": "SE", "TR": 500.0, "TE": 15.0},
    "T2w": {"kind": "SE", "TR": 4000.0, "TE": 100.0},
    "PD": {"kind": "SE", "TR": 4000.0, "TE": 15.0},
    "FLAIR": {"kind": "IR", "TI": 1780.0, "TR": 8000.0, "TE": 100.0},
}

#: BrainWeb 1.5 T tissue parameters: (PD, T1 ms, T2 ms)
TISSUES: dict[str, tuple[float, float, float]] = {
    "csf": (1.0, 2569.0, 329.0),
    "gm": (0.86, 833.0, 83.0),
    "wm": (0.77, 500.0, 70.0),
    "fat": (1.0, 350.0, 70.0),
    "muscle": (1.0, 900.0, 47.0),
}

SPLITS = ("train", "val", "test")
SUBJECTS: dict[str, range] = {
    "train": range(0, 10_000),
    "val": range(10_000, 10_100),
    "test": range(20_000, 20_100),
}

#: template z range kept (brain area >= MIN_BRAIN_FRACTION of the largest axial brain area)
MIN_BRAIN_FRACTION = 0.30
USABLE_Z = (25, 140)
#: largest through-plane displacement of the elastic warp (mm = template voxels)
MAX_DZ = 1
GUARD = 2 * MAX_DZ + 1
BLOCK_PATTERN: tuple[tuple[str, int], ...] = (("train", 16), ("val", 6), ("train", 16), ("test", 6))

SHAPE = (233, 197)  # (H, W) of a simulated slice

_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
_CONTRAST_CODE = {"T1w": 0, "T2w": 1, "PD": 2, "FLAIR": 3}
# stream tags keep the random streams of one (seed, split, subject, slice) independent
_TAG_SUBJECT, _TAG_CONTRAST, _TAG_SLICE, _TAG_DEGRADE, _TAG_STREAM, _TAG_SIMULATE = 11, 12, 13, 14, 15, 16
_TAG_RANDOM = 17
_RANDOM_CODES = {"reference": 10, "target": 11}  # contrast codes of the random pair's two images

_TEXTURE_SIGMA = 1.2  # pixels
_TEXTURE_AMPLITUDE = 0.05
_NOISE_RANGE = (0.01, 0.02)  # per-component noise std as a fraction of the image maximum
_SD_CLIP = 30.0  # mm; signed distance beyond this is "far outside the head"


@dataclass(frozen=True, eq=False)
class Example:
    """One simulated (or loaded) training/validation example; float32 (H, W) images.

    ``mask`` is the (W,) column mask for reconstruction tasks, ``None`` for super-resolution."""

    reference: np.ndarray
    target: np.ndarray
    ground_truth: np.ndarray
    subject: int
    slice_index: int
    mask: np.ndarray | None = None


# --------------------------------------------------------------------------- template volumes

_CACHE: dict[str, np.ndarray] = {}
_LOCK = threading.Lock()
_CVAL = (0.0, 0.0, _SD_CLIP)  # gm, wm, sd beyond the template: no tissue, far outside the head


def _volumes() -> dict[str, np.ndarray]:
    """The template maps the simulator samples, loaded once per process (thread-safe)."""
    if not _CACHE:
        with _LOCK:
            if not _CACHE:
                _CACHE.update(_load_volumes())
    return _CACHE


def _load_volumes() -> dict[str, np.ndarray]:
    from ..errors import require

    datasets = require("nilearn.datasets", "torch", "The multi-contrast simulator")
    ndimage = require("scipy.ndimage", "torch", "The multi-contrast simulator")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32))
        wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32))
        brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32)) > 0.5
    if gm.shape != (SHAPE[1], SHAPE[0], gm.shape[2]) or wm.shape != gm.shape or brain.shape != gm.shape:
        raise InputError(
            f"nilearn's MNI152 templates have shapes {gm.shape}, {wm.shape}, {brain.shape}; "
            f"the simulator expects ({SHAPE[1]}, {SHAPE[0]}, z) 1 mm volumes"
        )
    gm[~brain] = 0.0
    wm[~brain] = 0.0
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    # Signed distance in mm: +distance to the brain outside, -1 on brain voxels (deeper values are
    # never needed: the brain fraction clip(0.5 - sd / 2, 0, 1) is already 1 at sd = -1).
    outside = ndimage.distance_transform_edt(~brain)
    sd = np.where(brain, -1.0, np.minimum(outside, _SD_CLIP)).astype(np.float32)
    # Keep only the planes usable slices can reach, as one (z, y, x, [gm, wm, sd]) array padded by
    # one voxel of "beyond the template" values in y and x, so that one gather per trilinear
    # corner fetches all three maps (much faster than three scipy map_coordinates calls).
    z0, z1 = USABLE_Z[0] - MAX_DZ - 1, USABLE_Z[1] + MAX_DZ + 2
    stack = np.stack([gm[:, :, z0:z1], wm[:, :, z0:z1], sd[:, :, z0:z1]], axis=-1).transpose(2, 1, 0, 3)
    padded = np.empty((stack.shape[0], stack.shape[1] + 2, stack.shape[2] + 2, 3), np.float32)
    padded[...] = np.asarray(_CVAL, np.float32)
    padded[:, 1:-1, 1:-1] = stack
    return {
        "stack": padded,
        "z0": np.asarray(z0),
        "brain_area": brain.sum(axis=(0, 1)).astype(np.int64),
    }


def brain_area(slice_index: int | None = None):
    """Brain-mask area (voxels) of each axial template slice, or of one slice."""
    area = _volumes()["brain_area"]
    return area if slice_index is None else int(area[int(slice_index)])


def _trilinear(qx: np.ndarray, qy: np.ndarray, qz: np.ndarray) -> np.ndarray:
    """Sample [gm, wm, sd] at template voxel coordinates (x, y, z) -> (N, 3) float32; outside
    the template the maps read as "no tissue, far outside the head"."""
    vol = _volumes()
    stack = vol["stack"]
    nz, ny, nx, nc = stack.shape
    flat = stack.reshape(-1, nc)
    coords = []
    for q, n, offset in ((qx, nx, 1.0), (qy, ny, 1.0), (qz, nz, -float(vol["z0"]))):
        q = np.clip(q.reshape(-1) + offset, 0.0, n - 1.0)
        i = np.minimum(np.floor(q).astype(np.intp), n - 2)
        coords.append((i, (q - i).astype(np.float32)))
    (ix, wx), (iy, wy), (iz, wz) = coords
    base = (iz * ny + iy) * nx + ix
    out = np.zeros((base.size, nc), np.float32)
    for dz, wz_ in ((0, 1.0 - wz), (ny * nx, wz)):
        for dy, wy_ in ((0, 1.0 - wy), (nx, wy)):
            wzy = wz_ * wy_
            for dx, wx_ in ((0, 1.0 - wx), (1, wx)):
                out += np.take(flat, base + (dz + dy + dx), axis=0) * (wzy * wx_)[:, None]
    return out


# --------------------------------------------------------------------------- splits


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


def _split_layout() -> dict[str, list[int]]:
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    z, stop, i = USABLE_Z[0], USABLE_Z[1], 0
    while z <= stop:
        split, size = BLOCK_PATTERN[i % len(BLOCK_PATTERN)]
        block = list(range(z, min(z + size, stop + 1)))
        out[split].extend(block)
        z += size + GUARD
        i += 1
    return out


_LAYOUT = _split_layout()


def split_slices(split: str) -> list[int]:
    """Axial template slice indices (z) of ``split``; disjoint across splits, with ``GUARD``
    discarded slices between blocks of different splits (see the module docstring)."""
    return list(_LAYOUT[_check_split(split)])


def split_subjects(split: str) -> range:
    """Subject ids of ``split`` (disjoint ranges)."""
    return SUBJECTS[_check_split(split)]


# --------------------------------------------------------------------------- random parameters


@dataclass(frozen=True)
class _Subject:
    tissues: dict[str, tuple[float, float, float]]
    affine: np.ndarray  # (2, 2) output -> template in-plane linear map
    shift: np.ndarray  # (2,) mm
    modes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # freq (3,K,3), phase (3,K), amp (3,K)
    shell: tuple[float, float, float]  # skull, fat, skin thickness (mm)


def _subject_params(seed: int, split: str, subject: int, wide: bool = False) -> _Subject:
    """Per-subject draws; ``wide`` (the random pair) widens the in-plane deformation to
    :data:`.random_contrast.DEFORM` and the tissue jitter to 10 %."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], subject, _TAG_SUBJECT])
    jitter = 0.10 if wide else 0.03
    tissues = {}
    for name, (pd, t1, t2) in TISSUES.items():
        j = np.exp(jitter * np.clip(rng.standard_normal(3), -2.5, 2.5))
        tissues[name] = (pd * float(j[0]), t1 * float(j[1]), t2 * float(j[2]))
    deform = DEFORM if wide else {"rotation": 6.0, "scale": 0.05, "shift": 4.0}
    theta = math.radians(rng.uniform(-deform["rotation"], deform["rotation"]))
    scale = rng.uniform(1.0 - deform["scale"], 1.0 + deform["scale"], size=2)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    affine = rot @ np.diag(scale)
    shift = rng.uniform(-deform["shift"], deform["shift"], size=2)
    k = 4
    direction = rng.standard_normal((3, k, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    wavelength = rng.uniform(40.0, 120.0, size=(3, k, 1))
    freq = 2.0 * np.pi * direction / wavelength  # rad / mm
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(3, k))
    limits = np.array([3.0, 3.0, float(MAX_DZ)])[:, None]
    weights = rng.uniform(0.5, 1.0, size=(3, k))
    amp = limits * weights / weights.sum(axis=1, keepdims=True)  # sum |amp| <= limit, per axis
    shell = (float(rng.uniform(4.0, 7.0)), float(rng.uniform(3.0, 6.0)), float(rng.uniform(1.5, 3.0)))
    return _Subject(tissues, affine, shift, (freq, phase, amp, limits), shell)


def _contrast_params(seed: int, split: str, subject: int, code: int,
                     drawn: "Contrast | None" = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Bias-field modes and noise level of one image; a random-pair ``drawn`` contrast sets the
    bias amplitude and the noise level from its own draws."""
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], subject, _TAG_CONTRAST, code])
    k = 3
    direction = rng.standard_normal((k, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    freq = 2.0 * np.pi * direction / rng.uniform(150.0, 400.0, size=(k, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=k)
    amp = rng.uniform(0.0, 0.06 if drawn is None else drawn.bias, size=k)
    noise = float(rng.uniform(*_NOISE_RANGE)) if drawn is None else drawn.noise
    return freq, phase, amp, noise


# --------------------------------------------------------------------------- signal model


def signal(contrast: str, pd: float, t1: float, t2: float) -> float:
    """Signal of one tissue (PD, T1 ms, T2 ms) for a sequence of :data:`SEQUENCES`."""
    seq = SEQUENCES[contrast]
    decay = math.exp(-seq["TE"] / t2)
    if seq["kind"] == "IR":
        return pd * abs(1.0 - 2.0 * math.exp(-seq["TI"] / t1) + math.exp(-seq["TR"] / t1)) * decay
    return pd * (1.0 - math.exp(-seq["TR"] / t1)) * decay


def _band(sd: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Partial-volume fraction of a 1 mm voxel inside the shell lo <= sd <= hi."""
    return np.clip(np.minimum(sd - lo, hi - sd) + 0.5, 0.0, 1.0)


_GRID: dict[str, np.ndarray] = {}


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Template x of each output column and template y of each output row (1-D, float64)."""
    if not _GRID:
        h, w = SHAPE
        _GRID["x"] = (w - 1) - np.arange(w, dtype=np.float64)  # radiological: column 0 is the subject's right (+x)
        _GRID["y"] = (h - 1) - np.arange(h, dtype=np.float64)  # anterior up
    return _GRID["x"], _GRID["y"]


def _wave(fx: float, fy: float, const: float, fn=np.sin) -> np.ndarray:
    """fn(fx * x + fy * y + const) on the (H, W) output grid, from 1-D sines and cosines
    (sin/cos of a sum), i.e. without evaluating a transcendental at every pixel."""
    x, y = _grid()
    a, b = fx * x + const, fy * y
    if fn is np.sin:
        return np.sin(b)[:, None] * np.cos(a)[None, :] + np.cos(b)[:, None] * np.sin(a)[None, :]
    return np.cos(b)[:, None] * np.cos(a)[None, :] - np.sin(b)[:, None] * np.sin(a)[None, :]


def _coordinates(sub: _Subject, slice_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template voxel coordinates (x, y, z), each (H, W), sampled by the pixels of an axial slice:
    the subject's in-plane similarity transform plus its smooth 3-D elastic displacement."""
    x, y = _grid()
    cx, cy = (SHAPE[1] - 1) / 2.0, (SHAPE[0] - 1) / 2.0
    px, py = (x - cx)[None, :], (y - cy)[:, None]
    a = sub.affine
    q = [
        a[0, 0] * px + a[0, 1] * py + (cx + sub.shift[0]),
        a[1, 0] * px + a[1, 1] * py + (cy + sub.shift[1]),
        np.full(SHAPE, float(slice_index)),
    ]
    freq, phase, amp, limits = sub.modes
    for axis in range(3):
        disp = np.zeros(SHAPE)
        for m in range(freq.shape[1]):
            f = freq[axis, m]
            disp += amp[axis, m] * _wave(f[0], f[1], f[2] * slice_index + phase[axis, m])
        q[axis] = q[axis] + np.clip(disp, -limits[axis, 0], limits[axis, 0])
    return q[0], q[1], q[2]


def _bias(freq: np.ndarray, phase: np.ndarray, amp: np.ndarray, slice_index: int) -> np.ndarray:
    log_b = np.zeros(SHAPE)
    for m in range(len(amp)):
        log_b += amp[m] * _wave(freq[m, 0], freq[m, 1], freq[m, 2] * slice_index + phase[m], np.cos)
    return np.exp(log_b)


def _fractions(seed: int, split: str, subject: int, slice_index: int, sub: _Subject):
    """Tissue fractions of one warped, textured slice, and the slice's random generator."""
    from scipy import ndimage

    maps = _trilinear(*_coordinates(sub, slice_index))
    gm = np.ascontiguousarray(maps[:, 0]).reshape(SHAPE)
    wm = np.ascontiguousarray(maps[:, 1]).reshape(SHAPE)
    sd = np.ascontiguousarray(maps[:, 2]).reshape(SHAPE)

    rng = np.random.default_rng([seed, _SPLIT_CODE[split], subject, slice_index, _TAG_SLICE])
    for arr in (gm, wm):
        field = ndimage.gaussian_filter(rng.standard_normal(SHAPE, dtype=np.float32), _TEXTURE_SIGMA)
        field /= float(field.std()) + 1e-12
        arr *= 1.0 + _TEXTURE_AMPLITUDE * np.clip(field, -3.0, 3.0)
    np.clip(gm, 0.0, 1.0, out=gm)
    np.clip(wm, 0.0, 1.0, out=wm)
    scale = np.maximum(gm + wm, 1.0)
    gm /= scale
    wm /= scale
    brain = np.clip(0.5 - 0.5 * sd, 0.0, 1.0)
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    skull, fat_t, skin = sub.shell
    fat = _band(sd, skull, skull + fat_t) + 0.35 * _band(sd, 0.4 * skull, 0.7 * skull)  # + diploe marrow
    muscle = _band(sd, skull + fat_t, skull + fat_t + skin)
    return {"csf": csf, "gm": gm, "wm": wm, "fat": fat, "muscle": muscle}, rng


def _image(contrast: "str | Contrast", fr: dict, sub: _Subject, seed: int, split: str, subject: int,
           slice_index: int, rng: np.random.Generator, code: int | None = None) -> np.ndarray:
    """One noisy magnitude image: a named sequence (``contrast`` a key of :data:`SEQUENCES`) or a
    random-pair draw (a :class:`.random_contrast.Contrast`, with its stream ``code``)."""
    drawn = None if isinstance(contrast, str) else contrast
    img = np.zeros(SHAPE, np.float32)
    for tissue in TISSUES:
        if drawn is None:
            level = signal(contrast, *sub.tissues[tissue])
        else:
            level = tissue_signal(drawn, *sub.tissues[tissue], tissue, signal)
        img += np.float32(level) * fr[tissue]
    code = _CONTRAST_CODE[contrast] if drawn is None else int(code)
    freq, phase, amp, noise = _contrast_params(seed, split, subject, code, drawn)
    img *= _bias(freq, phase, amp, slice_index).astype(np.float32)
    if drawn is not None:
        img = lower_resolution(img, drawn.resolution)
    sigma = np.float32(noise * max(float(img.max()), 1e-6))
    re = img + sigma * rng.standard_normal(SHAPE, dtype=np.float32)
    im = sigma * rng.standard_normal(SHAPE, dtype=np.float32)
    out = np.sqrt(re * re + im * im).astype(np.float32)
    if drawn is not None:
        out *= np.float32(drawn.scale)
    return out


# --------------------------------------------------------------------------- public API


def _check(pair: str, task: str, split: str, mask_kind: str) -> None:
    if pair not in PAIR_CHOICES:
        raise InputError(f"unknown contrast pair {pair!r}; expected one of {', '.join(PAIR_CHOICES)}")
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    _check_split(split)
    if mask_kind not in MASK_KINDS:
        raise InputError(f"unknown mask kind {mask_kind!r}; expected one of {', '.join(MASK_KINDS)}")


def _check_ids(split: str, subject: int, slice_index: int, seed: int) -> None:
    if subject not in SUBJECTS[split]:
        r = SUBJECTS[split]
        raise InputError(f"subject {subject} is not in the {split} split (ids {r.start}..{r.stop - 1})")
    if slice_index not in _LAYOUT[split]:
        raise InputError(f"slice {slice_index} is not in the {split} split (see simulator.split_slices)")
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")


def make_example(
    pair: str,
    task: str,
    split: str,
    subject: int,
    slice_index: int,
    seed: int = 0,
    mask_kind: str = "random",
    spec: RandomSpec | None = None,
) -> Example:
    """Simulate one aligned (reference, degraded target, ground-truth target) example.

    The reference is fully sampled (noisy magnitude); the ground truth is the noisy, fully sampled
    target; the target is ``degrade(ground_truth, task, rng)``. Deterministic in all arguments.
    ``pair="random"`` draws both contrasts per subject (:func:`random_contrasts`; ``spec`` tilts
    the draws)."""
    _check(pair, task, split, mask_kind)
    subject, slice_index, seed = int(subject), int(slice_index), int(seed)
    _check_ids(split, subject, slice_index, seed)
    wide = pair == RANDOM_PAIR
    sub = _subject_params(seed, split, subject, wide=wide)
    fr, rng = _fractions(seed, split, subject, slice_index, sub)
    if wide:
        ref_c, tar_c = random_contrasts(seed, split, subject, spec)
        reference = _image(ref_c, fr, sub, seed, split, subject, slice_index, rng, _RANDOM_CODES["reference"])
        ground_truth = _image(tar_c, fr, sub, seed, split, subject, slice_index, rng, _RANDOM_CODES["target"])
    else:
        ref_name, tar_name = PAIRS[pair]
        reference = _image(ref_name, fr, sub, seed, split, subject, slice_index, rng)
        ground_truth = _image(tar_name, fr, sub, seed, split, subject, slice_index, rng)
    deg_rng = np.random.default_rng([seed, _SPLIT_CODE[split], subject, slice_index, _TAG_DEGRADE])
    target, mask = degrade_with_mask(ground_truth, task, deg_rng, mask_kind)
    return Example(reference, target.astype(np.float32, copy=False), ground_truth, subject, slice_index, mask)


def random_contrasts(seed: int, split: str, subject: int,
                     spec: RandomSpec | None = None) -> tuple[Contrast, Contrast]:
    """The (reference, target) contrasts the ``random`` pair draws for one subject."""
    rng = np.random.default_rng([int(seed), _SPLIT_CODE[_check_split(split)], int(subject), _TAG_RANDOM])
    spec = (spec or RandomSpec()).validate()
    return draw_contrast_pair(rng, tuple(TISSUES), spec, fluid_t1=TISSUES["csf"][1])


def tissue_maps(split: str, subject: int, slice_index: int, seed: int = 0,
                pair: str = "t1-t2") -> dict[str, np.ndarray]:
    """The warped, textured tissue fractions (``csf``, ``gm``, ``wm``, ``fat``, ``muscle``; float32
    (H, W)) behind :func:`make_example` of the same (split, subject, slice_index, seed), e.g. to
    measure contrast per tissue or score per tissue."""
    _check_split(split)
    subject, slice_index, seed = int(subject), int(slice_index), int(seed)
    _check_ids(split, subject, slice_index, seed)
    sub = _subject_params(seed, split, subject, wide=pair == RANDOM_PAIR)
    fractions, _ = _fractions(seed, split, subject, slice_index, sub)
    return {k: v.astype(np.float32, copy=False) for k, v in fractions.items()}


def _draws(split: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], _TAG_SIMULATE])
    subjects = rng.permutation(np.asarray(SUBJECTS[split]))
    slices = rng.permutation(np.asarray(_LAYOUT[split]))
    return subjects, slices


def simulate(pair: str, task: str, split: str, n: int, seed: int = 0, mask_kind: str = "random",
             spec: RandomSpec | None = None) -> dict[str, np.ndarray]:
    """``n`` examples of ``split`` stacked: ``reference``, ``target``, ``ground_truth`` (n, H, W)
    float32, ``subject``, ``slice_index`` (n,) int64, and for reconstruction tasks ``mask`` (n, W)
    bool, each example's column mask.

    Example i uses the i-th subject and the i-th slice of two seeded permutations (cycled), so the
    set covers the split's slices evenly, is deterministic, and the first m of n examples equal
    ``simulate(..., m, seed)``."""
    _check(pair, task, split, mask_kind)
    n = int(n)
    if n < 0:
        raise InputError(f"n must be >= 0, got {n}")
    subjects, slices = _draws(split, int(seed))
    out = {k: np.empty((n,) + SHAPE, np.float32) for k in ("reference", "target", "ground_truth")}
    out["subject"] = np.empty(n, np.int64)
    out["slice_index"] = np.empty(n, np.int64)
    masks = []
    for i in range(n):
        ex = make_example(pair, task, split, int(subjects[i % len(subjects)]), int(slices[i % len(slices)]),
                          seed=seed, mask_kind=mask_kind, spec=spec)
        out["reference"][i] = ex.reference
        out["target"][i] = ex.target
        out["ground_truth"][i] = ex.ground_truth
        out["subject"][i] = ex.subject
        out["slice_index"][i] = ex.slice_index
        masks.append(ex.mask)
    if n and masks[0] is not None:
        out["mask"] = np.stack(masks).astype(bool)
    return out


class ExampleStream:
    """Infinite, seeded stream of :class:`Example` (train split by default) for training.

    Draw ``i`` picks a subject and a slice uniformly from the split with a generator seeded by
    (seed, split, i), so a stream restarted at ``position=i`` continues exactly where it was."""

    def __init__(self, pair: str, task: str, split: str = "train", seed: int = 0,
                 mask_kind: str = "random", position: int = 0) -> None:
        _check(pair, task, split, mask_kind)
        self.pair, self.task, self.split, self.seed, self.mask_kind = pair, task, split, int(seed), mask_kind
        self.position = int(position)
        self._subjects = SUBJECTS[split]
        self._slices = _LAYOUT[split]

    def __iter__(self) -> Iterator[Example]:
        return self

    def __next__(self) -> Example:
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], self.position, _TAG_STREAM])
        self.position += 1
        subject = self._subjects[int(rng.integers(len(self._subjects)))]
        slice_index = self._slices[int(rng.integers(len(self._slices)))]
        return make_example(self.pair, self.task, self.split, subject, slice_index, self.seed, self.mask_kind)
