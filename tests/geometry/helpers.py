"""Synthetic volumes with known geometry for the geometry tests (small, fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sgf_deploy.data.volume import Volume


def volume(data: np.ndarray, affine: np.ndarray | None = None, fmt: str = "nifti", name: str = "v.nii.gz",
           header: object | None = None) -> Volume:
    data = np.ascontiguousarray(data, dtype=np.float32)
    if affine is None:
        return Volume(data=data, source=Path(name), fmt="npy")
    return Volume(data=data, source=Path(name), fmt=fmt, orientation=np.asarray(affine, np.float64), header=header)


def affine(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), rotation_deg: float = 0.0) -> np.ndarray:
    """Index (row, col, slice) -> RAS: rows along +x rotated by ``rotation_deg`` about z, columns
    along +y (rotated likewise), slices along +z."""
    a = np.radians(rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rot @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def world_of(aff: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, H, W, 3) world coordinates of every voxel of a grid."""
    n, h, w = shape
    s, r, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    idx = np.stack([r, c, s, np.ones_like(r)], axis=-1).astype(np.float64)
    return (idx @ aff.T)[..., :3]


def phantom(h: int = 96, w: int = 96, contrast: str = "a") -> np.ndarray:
    """Ellipses whose intensities differ between contrast "a" and "b" (a T1/T2-like inversion)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    img = np.zeros((h, w))
    values = {"a": (1.0, 0.3, 0.8, 0.5), "b": (0.4, 1.0, 0.2, 0.9)}[contrast]
    shapes = [(0, 0, 0.42, 0.36), (-0.12, 0.05, 0.18, 0.10), (0.14, -0.10, 0.08, 0.14), (0.05, 0.16, 0.06, 0.05)]
    for (dy, dx, ry, rx), v in zip(shapes, values):
        inside = ((yy - cy - dy * h) / (ry * h)) ** 2 + ((xx - cx - dx * w) / (rx * w)) ** 2 <= 1
        img[inside] = v
    rng = np.random.default_rng(0 if contrast == "a" else 1)
    return (img + 0.02 * rng.standard_normal(img.shape)).clip(0).astype(np.float32)
