"""Retrospective degradations of a fully sampled image (per-instance normalisation, re-exported
here, lives in :mod:`sgf_deploy.contract`).

* Reconstruction tasks (``recon4x``, ``recon8x``): Cartesian column undersampling of the centred
  orthonormal k-space (:func:`sgf_deploy.data.kspace.fft2c`) with fastMRI masks, zero-filled
  magnitude reconstruction.
* Super-resolution tasks (``sr2x``, ``sr4x``): keep the centre ``H/scale x W/scale`` of k-space,
  zero the rest and transform back on the full grid. With the orthonormal FFT this keeps the DC
  coefficient, hence the mean intensity: the low-resolution image is on the same intensity scale
  as the input (a low-resolution *acquisition* transformed on its own small grid would instead be
  scaled by ``sqrt(h w / H W)``; we never do that).

Both give a float32 magnitude image on the full (H, W) grid, which is what the network takes.
"""

from __future__ import annotations

import numpy as np

from .kspace import fft2c, ifft2c, rss
from ..contract import denormalize, normalize_instance  # noqa: F401  (re-exported: the data API)
from .masks import column_mask

TASKS: dict[str, dict] = {
    "recon4x": {"kind": "recon", "acceleration": 4},
    "recon8x": {"kind": "recon", "acceleration": 8},
    "sr2x": {"kind": "sr", "scale": 2},
    "sr4x": {"kind": "sr", "scale": 4},
}


def _task(task: str) -> dict:
    try:
        return TASKS[task]
    except KeyError:
        from ..errors import InputError

        raise InputError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}") from None


def _image2d(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) image, got shape {image.shape}")
    return image


def undersample(
    image: np.ndarray,
    acceleration: int,
    kind: str = "random",
    rng: np.random.Generator | None = None,
    center_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) real or complex image -> (zero-filled magnitude float32 (H, W), column mask (W,)).

    ``rng=None`` uses a fixed seed (see :func:`~sgf_deploy.data.masks.column_mask`)."""
    image = _image2d(image)
    mask = column_mask(image.shape[-1], acceleration, center_fraction, kind, rng)
    return undersample_kspace(fft2c(image), mask), mask


def undersample_kspace(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero-filled magnitude from k-space and a column mask.

    ``kspace``: (H, W) single-coil, or (..., coils, H, W) multi-coil (coil axis first for 3-D),
    combined by root-sum-of-squares over the coil axis. Returns float32 (H, W) (or (..., H, W))."""
    kspace = np.asarray(kspace)
    mask = np.asarray(mask).astype(bool).reshape(-1)
    if kspace.ndim < 2 or mask.size != kspace.shape[-1]:
        raise ValueError(f"mask of {mask.size} columns does not fit k-space of shape {kspace.shape}")
    images = ifft2c(np.where(mask, kspace, 0))
    if kspace.ndim == 2:
        return np.abs(images).astype(np.float32, copy=False)
    return rss(images, axis=-3).astype(np.float32, copy=False)


def low_resolution(image: np.ndarray, scale: int) -> np.ndarray:
    """Keep the centre ``round(H/scale) x round(W/scale)`` of k-space (DC-centred), zero-pad back
    to (H, W) and return the float32 magnitude, on the input's intensity scale."""
    image = _image2d(image)
    if int(scale) < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = image.shape
    k = fft2c(image)
    kh, kw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
    y0, x0 = h // 2 - kh // 2, w // 2 - kw // 2
    kept = np.zeros_like(k)
    kept[y0 : y0 + kh, x0 : x0 + kw] = k[y0 : y0 + kh, x0 : x0 + kw]
    return np.abs(ifft2c(kept)).astype(np.float32, copy=False)


def degrade_with_mask(
    image: np.ndarray,
    task: str,
    rng: np.random.Generator | None = None,
    mask_kind: str = "random",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`degrade`, also returning the column mask (``None`` for super-resolution)."""
    spec = _task(task)
    if spec["kind"] == "recon":
        return undersample(image, spec["acceleration"], kind=mask_kind, rng=rng)
    return low_resolution(image, spec["scale"]), None


def degrade(
    image: np.ndarray,
    task: str,
    rng: np.random.Generator | None = None,
    mask_kind: str = "random",
) -> np.ndarray:
    """Degrade a fully sampled (H, W) image for ``task`` (a key of :data:`TASKS`); float32 (H, W).

    ``rng`` draws the undersampling mask (recon tasks); ``None`` uses a fixed seed."""
    return degrade_with_mask(image, task, rng, mask_kind)[0]
