"""Resample the reference onto the target's voxel grid with SimpleITK (no hand-written interpolation).

Each target slice is produced by one ``SimpleITK.Resample`` call in index space: the output grid is
the target slice, supersampled ``(kc, kr, ks)`` times along (column, row, slice) when the
reference is finer than the target (see :func:`~sgf_deploy.geometry.grid.supersampling`), and the
transform is the slice's 4x4 map from target index to reference index (world geometry, composed
with that slice's registration when there is one). The sub-samples are then averaged, so a target
voxel sees the mean of the reference over its own footprint: through-plane averaging when the
reference's slices are thinner than the target's slab, area averaging when its pixels are smaller.
Samples outside the reference are 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import MissingDependencyError

INTERPOLATORS = ("linear", "bspline")


def sitk_module():  # noqa: ANN201 - the SimpleITK module
    """SimpleITK, imported lazily with a one-line error naming the package."""
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - SimpleITK is a runtime dependency
        raise MissingDependencyError("SimpleITK is needed to resample or register the reference: "
                                     "pip install SimpleITK") from None
    return sitk


def effective_interpolator(reference_shape: Sequence[int], interpolator: str) -> str:
    """``interpolator``, except cubic B-spline on a reference with fewer than 4 samples along an
    axis (a single slice, two slices): ITK's B-spline needs 4 there and otherwise reads outside its
    coefficients (seen: NaN or garbage depending on what the process allocated before), so such a
    reference is sampled linearly."""
    if interpolator == "bspline" and min(int(v) for v in reference_shape) < 4:
        return "linear"
    return interpolator


def _subsample_map(k: tuple[int, int, int], slice_index: int) -> np.ndarray:
    """Fine output index (fc, fr, fs) of slice ``slice_index`` -> target index (c, r, s)."""
    s = np.eye(4)
    for j, kj in enumerate(k):
        s[j, j] = 1.0 / kj
        s[j, 3] = 0.5 / kj - 0.5
    s[2, 3] += slice_index
    return s


def resample(reference: np.ndarray, mappings: Sequence[np.ndarray], out_shape: tuple[int, int, int],
             sub: tuple[int, int, int] = (1, 1, 1), interpolator: str = "linear") -> np.ndarray:
    """The reference (N, H, W) sampled on a target grid of ``out_shape`` (N, H, W), float32.

    ``mappings``: one 4x4 (target index (c, r, s) -> reference index) for every target slice, or
    a single one for all; ``sub``: sub-samples per target voxel along (c, r, s), averaged."""
    sitk = sitk_module()
    if interpolator not in INTERPOLATORS:
        raise ValueError(f"interpolator {interpolator!r}: expected one of {', '.join(INTERPOLATORS)}")
    interpolator = effective_interpolator(np.shape(reference), interpolator)
    interp = sitk.sitkLinear if interpolator == "linear" else sitk.sitkBSpline
    n, h, w = (int(v) for v in out_shape)
    if len(mappings) not in (1, n):
        raise ValueError(f"{len(mappings)} index maps for {n} target slices")
    kc, kr, ks = (int(v) for v in sub)
    image = sitk.GetImageFromArray(np.ascontiguousarray(reference, dtype=np.float32))  # unit spacing, origin 0
    out = np.empty((n, h, w), dtype=np.float32)
    for s in range(n):
        m = np.asarray(mappings[s if len(mappings) == n else 0], dtype=np.float64) @ _subsample_map((kc, kr, ks), s)
        transform = sitk.AffineTransform(3)
        transform.SetMatrix(m[:3, :3].ravel().tolist())
        transform.SetTranslation(m[:3, 3].tolist())
        fine = sitk.Resample(image, [w * kc, h * kr, ks], transform, interp, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0],
                             [1, 0, 0, 0, 1, 0, 0, 0, 1], 0.0, sitk.sitkFloat32)
        arr = sitk.GetArrayViewFromImage(fine)  # (ks, H*kr, W*kc)
        out[s] = arr.reshape(ks, h, kr, w, kc).mean(axis=(0, 2, 4))
    return out
