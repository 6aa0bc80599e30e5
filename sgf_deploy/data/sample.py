"""The embedded sample: one aligned (reference, degraded target, ground truth) slice shipped in
``sgf_deploy/assets/sample/`` so that the demo, the docs and the tests run without any data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "assets" / "sample"
ARRAYS = ("reference", "target", "ground_truth")


def _load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: the embedded sample is missing (reinstall sgf-deploy)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.dtype != np.float32 or arr.ndim != 2 or not np.all(np.isfinite(arr)):
        raise InputError(f"{path}: expected a finite float32 (H, W) array, got {arr.dtype} {arr.shape}")
    return arr


def sample(directory: str | os.PathLike | None = None) -> dict[str, Any]:
    """float32 (H, W) arrays ``reference``, ``target``, ``ground_truth`` (+ ``meta``, a dict from
    ``meta.json``, when present) of the embedded sample (or of a folder written by
    :func:`write_sample`)."""
    directory = SAMPLE_DIR if directory is None else Path(directory)
    out: dict[str, Any] = {name: _load_array(directory / f"{name}.npy") for name in ARRAYS}
    shapes = {out[name].shape for name in ARRAYS}
    if len(shapes) != 1:
        raise InputError(f"{directory}: sample arrays have different shapes {sorted(shapes)}")
    meta = directory / "meta.json"
    if meta.is_file():
        try:
            out["meta"] = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{meta}: not valid JSON ({exc})") from None
    return out


def write_sample(directory: str | os.PathLike, example, meta: dict, overwrite: bool = False) -> None:
    """Write ``example``'s three arrays as float32 ``.npy`` and ``meta`` (plus the shape, subject,
    slice and, for reconstruction, the column mask) as ``meta.json``, each file atomically."""
    from ..artifacts import atomic_path, check_writable, write_json_atomic

    directory = Path(directory)
    arrays = {name: np.ascontiguousarray(getattr(example, name), dtype=np.float32) for name in ARRAYS}
    for name, arr in arrays.items():
        if arr.ndim != 2 or not np.all(np.isfinite(arr)):
            raise InputError(f"{directory}: sample array {name!r} must be a finite (H, W) image, got {arr.shape}")
    if len({a.shape for a in arrays.values()}) != 1:
        raise InputError(f"{directory}: sample arrays have different shapes")
    for name in ARRAYS:  # refuse before writing anything
        check_writable(directory / f"{name}.npy", overwrite)
    check_writable(directory / "meta.json", overwrite)
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        with atomic_path(directory / f"{name}.npy", overwrite) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, arr, allow_pickle=False)
    full = dict(meta)
    full.setdefault("shape", list(arrays["reference"].shape))
    full.setdefault("subject", int(example.subject))
    full.setdefault("slice_index", int(example.slice_index))
    mask = getattr(example, "mask", None)
    if mask is not None:
        full.setdefault("mask", np.asarray(mask, bool).astype(int).tolist())
    write_json_atomic(directory / "meta.json", full, overwrite)
