"""The pre/post-processing the model was trained with, in numpy (ARCHITECTURE.md convention).

1. per slice: ``ref_n = normalize_instance(reference)``, ``tar_n, mean, std =
   normalize_instance(target)`` (fastMRI's ``(x - mean) / (std + 1e-11)``);
2. edge-replicate padding at the bottom/right to a multiple of ``size_multiple`` (8 for the
   shipped presets), which is what torch's ``replicate`` padding in ``SGFMRI.forward`` does;
3. the engine runs on ``(N, 1, Hp, Wp)`` float32;
4. crop back to ``(H, W)`` and ``denormalize(pred, mean, std)``.

The functions from :mod:`sgf_deploy.data.degrade` are used as they are, so the runtime, the
PyTorch reference (:func:`sgf_deploy.model.infer.reconstruct`) and the export self-check share
one implementation of the arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..data.degrade import denormalize, normalize_instance
from ..errors import InputError


def pad_amount(size: int, multiple: int) -> int:
    """Rows/columns added at the bottom/right (mirrors ``sgf_deploy.model.network.pad_amount``)."""
    return (-int(size)) % int(multiple)


def check_pair(reference: np.ndarray, target: np.ndarray, what: str = "input") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate two arrays and bring them to float32 ``(N, H, W)``; returns (ref, tar, notices).

    Accepted: real integer or float arrays, 2-D ``(H, W)`` or 3-D ``(N, H, W)``, the same shape,
    non-empty, all finite. Complex arrays are taken as magnitude (with a notice). Everything else
    raises :class:`~sgf_deploy.errors.InputError` with one line.
    """
    notices: list[str] = []
    arrays = []
    for name, arr in (("reference", reference), ("target", target)):
        arr = np.asarray(arr)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufc" or arr.dtype.kind == "b":
            raise InputError(f"{what}: {name} has dtype {arr.dtype}; expected a real or complex numeric array")
        if arr.dtype.kind == "c":
            arr = np.abs(arr)
            notices.append(f"{name}: complex values; using the magnitude")
        if arr.ndim not in (2, 3):
            raise InputError(f"{what}: {name} has shape {arr.shape}; expected (H, W) or (N, H, W)")
        if arr.size == 0:
            raise InputError(f"{what}: {name} is empty (shape {arr.shape})")
        arr = np.asarray(arr, dtype=np.float32)
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{what}: {name} contains {bad} non-finite value(s) (NaN/Inf or beyond float32)")
        arrays.append(arr)
    ref, tar = arrays
    if ref.shape != tar.shape:
        raise InputError(f"{what}: reference shape {ref.shape} does not match target shape {tar.shape}")
    shape = tar.shape[-2:]
    return ref.reshape((-1,) + shape), tar.reshape((-1,) + shape), notices


def normalize_slices(reference: np.ndarray, target: np.ndarray, multiple: int, batch_size: int | None = None
                     ) -> tuple[np.ndarray, np.ndarray, list, list]:
    """float32 ``(n, H, W)`` pair -> padded ``(b, 1, Hp, Wp)`` engine inputs + target mean/std per slice.

    ``batch_size`` > n allocates extra rows (filled by repeating the last slice) for engines with a
    static batch dimension; their outputs are discarded.
    """
    n, h, w = target.shape
    b = max(n, batch_size or n)
    ph, pw = pad_amount(h, multiple), pad_amount(w, multiple)
    ref_p = np.empty((b, 1, h + ph, w + pw), dtype=np.float32)
    tar_p = np.empty_like(ref_p)
    # Kept as the objects normalize_instance returned (their dtype steers numpy's promotion in
    # denormalize, so keeping them unchanged keeps the result bit-identical to the reference).
    means: list = []
    stds: list = []
    for i in range(n):
        r, _, _ = normalize_instance(reference[i])
        t, mean, std = normalize_instance(target[i])
        _pad_into(ref_p[i, 0], r, h, w)
        _pad_into(tar_p[i, 0], t, h, w)
        means.append(mean)
        stds.append(std)
    if b > n:
        ref_p[n:] = ref_p[n - 1]
        tar_p[n:] = tar_p[n - 1]
    return ref_p, tar_p, means, stds


def _pad_into(out: np.ndarray, x: np.ndarray, h: int, w: int) -> None:
    """``out[...] = np.pad(x, ((0, ph), (0, pw)), mode="edge")`` without the temporary."""
    out[:h, :w] = x
    if out.shape[1] > w:
        out[:h, w:] = out[:h, w - 1 : w]
    if out.shape[0] > h:
        out[h:, :] = out[h - 1 : h, :]


def restore(pred: np.ndarray, n: int, h: int, w: int, means: list, stds: list) -> np.ndarray:
    """Engine output ``(b, 1, Hp, Wp)`` -> ``(n, H, W)`` float32 in the target's intensity scale."""
    pred = np.asarray(pred)
    out = np.empty((n, h, w), dtype=np.float32)
    for i in range(n):
        out[i] = denormalize(pred[i, 0, :h, :w], means[i], stds[i])
    return out
