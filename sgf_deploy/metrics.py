"""Image-quality metrics with fastMRI ``evaluate.py`` conventions, in numpy only.

The scanner-side runtime imports this module, so it must not import torch, scipy or scikit-image
(checked by ``tests/test_metrics.py``). The numbers match fastMRI (which calls scikit-image):

* ``data_range`` defaults to ``gt.max()`` over the **whole volume** (not max - min, not per slice),
  exactly as fastMRI's ``psnr(gt, pred, maxval=None)`` / ``ssim(...)`` do. The per-slice variants
  use the volume maximum too unless ``data_range`` is given, so per-slice numbers average to the
  same scale as the volume ones.
* PSNR is over the whole volume: ``10 log10(data_range**2 / mse)`` with one MSE over all voxels
  (not the mean of per-slice PSNRs).
* SSIM is computed per 2-D slice with scikit-image's defaults (7x7 uniform window, K1=0.01,
  K2=0.03, sample covariance with N/(N-1) = 49/48, mean over the valid region, i.e. the image
  cropped by 3 pixels on each side) and averaged over slices.
* NMSE is ``||gt - pred||^2 / ||gt||^2``.

Decisions (documented, tested):

* Everything is computed in float64, whatever the input dtype. scikit-image computes SSIM of
  float32 inputs in float32 (variance by ``E[x^2] - E[x]^2`` cancels badly there), so for float32
  data ours is the more accurate of the two; they differ at ~1e-9..1e-6 relative (worse when the
  image has a large offset). For float64 inputs they agree to ~1e-14.
* ``mse == 0`` gives ``PSNR = inf`` (a float, no warning), the value scikit-image/fastMRI produce.
  Note that ``json.dumps`` writes ``Infinity`` for it, which strict JSON parsers reject.
* A non-positive data range is refused: with the default that means ``gt.max() <= 0`` (e.g. an
  all-zero volume), where PSNR/SSIM are undefined (fastMRI would give -inf/NaN). A constant
  *positive* ground truth is fine under the fastMRI convention (its range is ``gt.max()``).
  NMSE of an all-zero ground truth is refused too (division by zero).
* Inputs must have the same shape, be real numeric (not bool/complex) and finite; SSIM needs 2-D
  ``(H, W)`` or 3-D ``(N, H, W)`` with ``H, W >= 7``.

Bad inputs raise :class:`MetricInputError`, which is both a ``ValueError`` and an
``sgf_deploy.errors.InputError`` (so the CLI reports it as one line).
"""

from __future__ import annotations

import numpy as np

from sgf_deploy.errors import InputError

__all__ = [
    "MetricInputError",
    "psnr",
    "ssim",
    "nmse",
    "psnr_per_slice",
    "ssim_per_slice",
    "center_crop",
    "summarize",
]

# scikit-image structural_similarity defaults (gaussian_weights=False).
_WIN = 7
_K1 = 0.01
_K2 = 0.03
# Pixels per block of slices processed at once by SSIM (bounds memory to ~ a few hundred MB).
_SSIM_CHUNK_PIXELS = 1 << 22


class MetricInputError(InputError, ValueError):
    """Arrays that cannot be scored (shape mismatch, non-finite, undefined data range, ...)."""


def _as_float(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise MetricInputError(f"metrics: {name} has dtype {x.dtype}; expected a real integer or float array")
    if x.size == 0:
        raise MetricInputError(f"metrics: {name} is empty (shape {x.shape})")
    x = x.astype(np.float64, copy=False)
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise MetricInputError(f"metrics: {name} contains {bad} non-finite value(s) (NaN/Inf)")
    return x


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt_shape, pred_shape = np.shape(gt), np.shape(pred)
    if gt_shape != pred_shape:
        raise MetricInputError(f"metrics: shape mismatch, gt {gt_shape} vs pred {pred_shape}")
    return _as_float("gt", gt), _as_float("pred", pred)


def _data_range(gt: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        r = float(gt.max())
        if not r > 0:
            raise MetricInputError(
                f"metrics: ground truth maximum is {r:g} (e.g. an all-zero or constant non-positive "
                "volume); PSNR/SSIM undefined with data_range = gt.max(); pass data_range explicitly"
            )
        return r
    r = float(data_range)
    if not (np.isfinite(r) and r > 0):
        raise MetricInputError(f"metrics: data_range must be finite and > 0, got {data_range!r}")
    return r


def _as_stack(name: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return x[None]
    if x.ndim == 3:
        return x
    raise MetricInputError(f"metrics: {name} must be (H, W) or (N, H, W), got shape {x.shape}")


def _psnr_from_mse(mse: np.ndarray | float, r: float) -> np.ndarray:
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(mse == 0, np.inf, 10.0 * np.log10(r * r / np.where(mse == 0, 1.0, mse)))


def psnr(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> float:
    """PSNR in dB over the whole array: ``10 log10(data_range^2 / mse)``; ``inf`` when mse == 0.

    ``data_range`` defaults to ``gt.max()`` of the whole volume (fastMRI).
    """
    gt, pred = _check_pair(gt, pred)
    r = _data_range(gt, data_range)
    mse = float(np.mean(np.square(gt - pred)))
    return float(_psnr_from_mse(mse, r))


def psnr_per_slice(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """PSNR of each slice of ``(N, H, W)`` (or ``(H, W)`` -> shape ``(1,)``), float64 ``(N,)``.

    ``data_range`` defaults to ``gt.max()`` of the **volume**, not of each slice, so that a dark
    edge slice is not scored on its own tiny range. ``inf`` where a slice is reproduced exactly.
    """
    gt, pred = _check_pair(gt, pred)
    r = _data_range(gt, data_range)
    gt, pred = _as_stack("gt", gt), _as_stack("pred", pred)
    mse = np.mean(np.square(gt - pred), axis=(-2, -1))
    return _psnr_from_mse(mse, r).astype(np.float64)


def _box_valid(x: np.ndarray) -> np.ndarray:
    """Mean over every full 7x7 window of the last two axes ("valid" region, no padding).

    Equals scipy.ndimage.uniform_filter(size=7) cropped by 3 on each side, which is all of the
    filtered image that scikit-image's SSIM averages; the boundary mode never matters there.
    Separable sum of shifted slices: exact float64 additions, no cumulative-sum cancellation.
    """
    h, w = x.shape[-2], x.shape[-1]
    rows = x[..., :, 0 : w - _WIN + 1].copy()
    for k in range(1, _WIN):
        rows += x[..., :, k : w - _WIN + 1 + k]
    out = rows[..., 0 : h - _WIN + 1, :].copy()
    for k in range(1, _WIN):
        out += rows[..., k : h - _WIN + 1 + k, :]
    out *= 1.0 / (_WIN * _WIN)
    return out


def _ssim_block(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Per-slice mean SSIM of float64 stacks ``(n, H, W)``, scikit-image's formula term by term."""
    cov_norm = _WIN * _WIN / (_WIN * _WIN - 1.0)
    ux = _box_valid(x)
    uy = _box_valid(y)
    uxx = _box_valid(x * x)
    uyy = _box_valid(y * y)
    uxy = _box_valid(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (_K1 * r) ** 2
    c2 = (_K2 * r) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    s = (a1 * a2) / (b1 * b2)
    return s.mean(axis=(-2, -1), dtype=np.float64)


def ssim_per_slice(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """SSIM of each slice of ``(N, H, W)`` (or ``(H, W)`` -> shape ``(1,)``), float64 ``(N,)``.

    scikit-image defaults (7x7 uniform window, K1=0.01, K2=0.03, sample covariance, mean over the
    valid region); ``data_range`` defaults to ``gt.max()`` of the volume (fastMRI).
    """
    gt, pred = _check_pair(gt, pred)
    r = _data_range(gt, data_range)
    gt, pred = _as_stack("gt", gt), _as_stack("pred", pred)
    n, h, w = gt.shape
    if h < _WIN or w < _WIN:
        raise MetricInputError(f"metrics: SSIM needs slices of at least {_WIN}x{_WIN}, got {h}x{w}")
    step = max(1, _SSIM_CHUNK_PIXELS // (h * w))
    out = np.empty(n, dtype=np.float64)
    for i in range(0, n, step):
        out[i : i + step] = _ssim_block(gt[i : i + step], pred[i : i + step], r)
    return out


def ssim(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> float:
    """Mean over slices of :func:`ssim_per_slice` (fastMRI ``evaluate.ssim``)."""
    return float(np.mean(ssim_per_slice(gt, pred, data_range)))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Normalised MSE ``||gt - pred||^2 / ||gt||^2`` over the whole array."""
    gt, pred = _check_pair(gt, pred)
    den = float(np.sum(np.square(gt)))
    if den == 0:
        raise MetricInputError("metrics: ground truth is all zero; NMSE undefined")
    return float(np.sum(np.square(gt - pred)) / den)


def center_crop(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre crop of the last two axes to ``shape`` (fastMRI ``center_crop``; returns a view).

    For an odd surplus the extra row/column is dropped at the end: start = (size - target) // 2.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise MetricInputError(f"metrics: center_crop needs at least 2-D input, got shape {x.shape}")
    th, tw = (int(s) for s in shape)
    h, w = x.shape[-2], x.shape[-1]
    if not (0 < th <= h and 0 < tw <= w):
        raise MetricInputError(f"metrics: cannot centre-crop {h}x{w} to {th}x{tw}")
    h0 = (h - th) // 2
    w0 = (w - tw) // 2
    return x[..., h0 : h0 + th, w0 : w0 + tw]


def summarize(gt: np.ndarray, pred: np.ndarray, data_range: float | None = None) -> dict:
    """``{"psnr", "ssim", "nmse"}`` as Python floats, fastMRI conventions (see module docstring)."""
    gt, pred = _check_pair(gt, pred)
    return {
        "psnr": psnr(gt, pred, data_range),
        "ssim": ssim(gt, pred, data_range),
        "nmse": nmse(gt, pred),
    }
