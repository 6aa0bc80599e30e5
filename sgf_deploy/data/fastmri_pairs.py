"""User-supplied paired multi-contrast data in the fastMRI / M4Raw HDF5 layout.

A file holds one volume: ``reconstruction_rss`` or ``reconstruction_esc`` (slices, H, W) magnitude
images and/or ``kspace`` (slices, [coils,] H, W) complex. Two files of the same subject and
session, whose names differ only by the contrast tag (M4Raw ``2022061003_T101.h5`` /
``2022061003_T201.h5``, or generic ``sub01_T1.h5`` / ``sub01_T2.h5``), make a reference/target pair
(found by :func:`sgf_deploy.data.pairs.find_pairs`).
Degraded targets are made retrospectively with :mod:`sgf_deploy.data.degrade`; for
reconstruction tasks, when the target file has multi-coil or single-coil k-space, its k-space is
undersampled directly (zero-filled, RSS over coils) and the ground truth is the RSS of the full
k-space, centre-cropped to the reference's image size when the k-space grid is larger (fastMRI
stores ``reconstruction_rss`` as such a centre crop).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError
from .degrade import TASKS, degrade_with_mask, undersample_kspace
from .kspace import ifft2c, rss
from .masks import MASK_KINDS, column_mask

IMAGE_KEYS = ("reconstruction_rss", "reconstruction_esc")
KSPACE_KEY = "kspace"
#: refuse datasets larger than this before reading them (bytes)
MAX_BYTES = 8 << 30


def _h5py():
    from ..errors import require

    return require("h5py", "torch", "Reading fastMRI/M4Raw HDF5 files")


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None


def _choose_key(handle, path: Path, key: str | None) -> str:
    if key is not None:
        if key not in handle:
            raise InputError(f"{path}: has no dataset {key!r} (found: {', '.join(sorted(handle.keys())) or 'none'})")
        return key
    for candidate in IMAGE_KEYS + (KSPACE_KEY,):
        if candidate in handle:
            return candidate
    raise InputError(
        f"{path}: has none of {', '.join(IMAGE_KEYS + (KSPACE_KEY,))} (found: {', '.join(sorted(handle.keys())) or 'none'})"
    )


def _dataset_info(handle, path: Path, key: str) -> tuple[int, tuple[int, int], bool]:
    """(slices, (H, W), is_kspace) from the header only, validating shape, dtype and size."""
    ds = handle[key]
    if not hasattr(ds, "shape") or ds.shape is None:
        raise InputError(f"{path}: {key!r} is not a dataset")
    shape, dtype = tuple(int(s) for s in ds.shape), ds.dtype
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > MAX_BYTES:
        raise InputError(f"{path}: {key!r} of shape {shape} ({dtype}) is larger than {MAX_BYTES >> 30} GiB")
    is_kspace = np.issubdtype(dtype, np.complexfloating)
    if key == KSPACE_KEY and not is_kspace:
        raise InputError(f"{path}: 'kspace' has dtype {dtype}; expected complex (slices, [coils,] H, W)")
    if is_kspace:
        if len(shape) not in (3, 4):
            raise InputError(f"{path}: {key!r} has shape {shape}; expected (slices, [coils,] H, W) complex k-space")
    else:
        if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
            raise InputError(f"{path}: {key!r} has dtype {dtype}; expected real magnitude images")
        if len(shape) not in (2, 3):
            raise InputError(f"{path}: {key!r} has shape {shape}; expected (slices, H, W) magnitude images")
        if len(shape) == 2:
            shape = (1,) + shape
    if min(shape) < 1 or shape[-1] < 2 or shape[-2] < 2:
        raise InputError(f"{path}: {key!r} has shape {shape}; too small to be an image")
    return shape[0], (shape[-2], shape[-1]), is_kspace


def _finite(arr: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: {key!r} contains non-finite values")
    return arr


def _read_slice(handle, path: Path, key: str, index: int, is_kspace: bool) -> np.ndarray:
    """One slice: float32 (H, W) magnitude, or complex64 ([coils,] H, W) k-space."""
    ds = handle[key]
    data = ds[()] if ds.ndim == 2 else ds[index]
    if is_kspace:
        return _finite(np.asarray(data, np.complex64), path, key)
    return _finite(np.asarray(data, np.float32), path, key)


def _kspace_image(kspace: np.ndarray) -> np.ndarray:
    images = ifft2c(kspace)
    return rss(images, axis=0) if kspace.ndim == 3 else np.abs(images).astype(np.float32)


def read_h5_image(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """(slices, H, W) float32 magnitude images of a fastMRI/M4Raw HDF5 file.

    Uses ``key`` if given, else ``reconstruction_rss`` / ``reconstruction_esc`` if present, else
    the RSS (over coils) of ``ifft2c(kspace)``; k-space is transformed one slice at a time."""
    path = Path(path)
    with _open(path) as handle:
        key = _choose_key(handle, path, key)
        n, (h, w), is_kspace = _dataset_info(handle, path, key)
        if not is_kspace:
            data = handle[key][()]
            return _finite(np.asarray(data, np.float32).reshape(n, h, w), path, key)
        out = np.empty((n, h, w), np.float32)
        for i in range(n):
            out[i] = _kspace_image(_read_slice(handle, path, key, i, True))
        return out


class _PairInfo:
    """Header-level description of one pair, checked once at construction."""

    def __init__(self, ref: Path, tar: Path, task: str) -> None:
        self.ref, self.tar = Path(ref), Path(tar)
        with _open(self.ref) as handle:
            self.ref_key = _choose_key(handle, self.ref, None)
            n_ref, self.shape, self.ref_kspace = _dataset_info(handle, self.ref, self.ref_key)
        with _open(self.tar) as handle:
            # Recon tasks undersample the target's own k-space when it has one.
            self.tar_use_kspace = TASKS[task]["kind"] == "recon" and KSPACE_KEY in handle
            self.tar_key = KSPACE_KEY if self.tar_use_kspace else _choose_key(handle, self.tar, None)
            n_tar, tar_shape, self.tar_kspace = _dataset_info(handle, self.tar, self.tar_key)
        self.crop = None
        if self.tar_kspace and tar_shape != self.shape:
            if tar_shape[0] >= self.shape[0] and tar_shape[1] >= self.shape[1]:
                self.crop = self.shape  # fastMRI: reconstruction_rss is the centre crop of the k-space image
            else:
                raise InputError(
                    f"{self.ref} and {self.tar}: image sizes differ ({self.shape} vs {tar_shape} from k-space)"
                )
        elif tar_shape != self.shape:
            raise InputError(f"{self.ref} and {self.tar}: image sizes differ ({self.shape} vs {tar_shape})")
        if n_ref != n_tar:
            raise InputError(f"{self.ref} and {self.tar}: slice counts differ ({n_ref} vs {n_tar})")
        self.slices = n_ref


def _center_crop(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = image.shape[-2:]
    y0, x0 = (h - shape[0]) // 2, (w - shape[1]) // 2
    return np.ascontiguousarray(image[..., y0 : y0 + shape[0], x0 : x0 + shape[1]])


class H5PairSource:
    """Infinite, seeded stream of :class:`~sgf_deploy.data.simulator.Example` from HDF5 pairs.

    Draw ``i`` picks a pair and a slice uniformly with a generator seeded by (seed, i); only that
    slice is read. ``subject`` is the pair's index in ``pairs``. Headers of all files are checked at
    construction (slice counts and image sizes must match; the error names both files)."""

    def __init__(self, pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]], task: str,
                 seed: int = 0, mask_kind: str = "random", position: int = 0) -> None:
        if task not in TASKS:
            raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        if mask_kind not in MASK_KINDS:
            raise InputError(f"unknown mask kind {mask_kind!r}; expected one of {', '.join(MASK_KINDS)}")
        pairs = list(pairs)
        if not pairs:
            raise InputError("no reference/target file pairs given")
        self.task, self.seed, self.mask_kind, self.position = task, int(seed), mask_kind, int(position)
        self.pairs = [_PairInfo(ref, tar, task) for ref, tar in pairs]

    def __iter__(self) -> Iterator:
        return self

    def __len__(self) -> int:
        """Number of slices over all pairs."""
        return sum(p.slices for p in self.pairs)

    def example(self, pair_index: int, slice_index: int, rng: np.random.Generator):
        """The example of one pair and slice; ``rng`` draws the undersampling mask."""
        from .simulator import Example

        info = self.pairs[pair_index]
        with _open(info.ref) as handle:
            ref = _read_slice(handle, info.ref, info.ref_key, slice_index, info.ref_kspace)
        if info.ref_kspace:
            ref = _kspace_image(ref)
        with _open(info.tar) as handle:
            tar = _read_slice(handle, info.tar, info.tar_key, slice_index, info.tar_kspace)
        mask = None
        if info.tar_use_kspace:
            spec = TASKS[self.task]
            mask = column_mask(tar.shape[-1], spec["acceleration"], kind=self.mask_kind, rng=rng)
            ground_truth = _kspace_image(tar)
            target = undersample_kspace(tar, mask)
            if info.crop is not None:
                ground_truth, target = _center_crop(ground_truth, info.crop), _center_crop(target, info.crop)
        else:
            ground_truth = _kspace_image(tar) if info.tar_kspace else tar
            if info.crop is not None:
                ground_truth = _center_crop(ground_truth, info.crop)
            target, mask = degrade_with_mask(ground_truth, self.task, rng, self.mask_kind)
        return Example(
            np.asarray(ref, np.float32), np.asarray(target, np.float32), np.asarray(ground_truth, np.float32),
            int(pair_index), int(slice_index), mask,
        )

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.position, 0x4835])
        self.position += 1
        pair_index = int(rng.integers(len(self.pairs)))
        slice_index = int(rng.integers(self.pairs[pair_index].slices))
        return self.example(pair_index, slice_index, rng)
