"""World geometry of a :class:`~sgf_deploy.data.volume.Volume`: its voxel grid as a 4x4 affine.

A :class:`Grid` is the (N, H, W) shape plus the affine from voxel index (H, W, N) -- (row,
column, slice) -- to RAS+ millimetres, exactly ``Volume.orientation``. Volumes without geometry
(.npy, HDF5) get a unit grid (1 mm pixels at the origin): for them only "same shape" means
"same grid".

The resampler works in *index space*: :func:`index_map` gives the affine that takes a target
voxel index (column, row, slice) -- SimpleITK's (x, y, z) order -- to the reference's voxel index
through world space, so no direction-cosine conventions (LPS/RAS, oblique or sheared affines)
ever reach SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Same-grid tolerances (as :func:`sgf_deploy.data.readers.check_same_grid`).
SAME_TOL_INDEX = 1e-2  # every target voxel within 1/100 voxel of a reference voxel centre

# (row, col, slice) <-> (col, row, slice): swaps the first two index axes.
_SWAP = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (N, H, W) and ``affine`` from index (H, W, N) to RAS+ mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    known: bool = True  # False: a unit grid assumed for a file without geometry

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(row, column, slice) step in mm: the lengths of the affine's first three columns."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def describe(self) -> str:
        """``"1x233x197 at 1x1x3 mm"``: shape and spacing as users read them."""
        sp = "x".join(f"{v:.3g}" for v in self.spacing)
        return "x".join(str(s) for s in self.shape) + (f" at {sp} mm" if self.known else " (no geometry)")

    def index_to_world(self, crs: np.ndarray) -> np.ndarray:
        """World (RAS mm) of voxel indices given as (..., 3) in (column, row, slice) order."""
        crs = np.asarray(crs, dtype=np.float64)
        rcs = crs[..., [1, 0, 2]]
        return rcs @ self.affine[:3, :3].T + self.affine[:3, 3]


def grid_of(volume: object) -> Grid:
    """The grid of a read volume: its ``orientation`` affine, else a unit grid (``known=False``)."""
    shape = tuple(int(s) for s in volume.data.shape)  # type: ignore[attr-defined]
    orientation = getattr(volume, "orientation", None)
    if orientation is not None and np.shape(orientation) == (4, 4):
        affine = np.array(orientation, dtype=np.float64)
        if abs(np.linalg.det(affine[:3, :3])) > 1e-9 and np.isfinite(affine).all():
            return Grid(shape, affine, True)  # type: ignore[arg-type]
    return Grid(shape, np.eye(4), False)  # type: ignore[arg-type]


def index_map(target: Grid, reference: Grid) -> np.ndarray:
    """4x4 affine: target voxel index (c, r, s) -> reference voxel index (c, r, s), via world space."""
    return _SWAP @ np.linalg.inv(reference.affine) @ target.affine @ _SWAP


def same_grid(a: Grid, b: Grid) -> bool:
    """True when ``a`` and ``b`` have one shape and every voxel of one sits on a voxel of the other."""
    if a.shape != b.shape:
        return False
    d = index_map(a, b) - np.eye(4)
    err = float(np.max(np.abs(d[:3, 3])) + np.max(np.abs(d[:3, :3])) * max(a.shape))  # worst voxel, in voxels
    return err < SAME_TOL_INDEX


def overlap_fraction(target: Grid, reference: Grid, mapping: np.ndarray | None = None, samples: int = 17) -> float:
    """Fraction of the target's field of view (a ``samples``^3 lattice of points spanning its voxel
    centres) that falls inside the reference's voxels. ``mapping``: target index -> reference index
    (default :func:`index_map`)."""
    m = index_map(target, reference) if mapping is None else mapping
    n, h, w = target.shape
    axes = [np.linspace(0, size - 1, min(size, samples)) for size in (w, h, n)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    ref_idx = pts @ m[:3, :3].T + m[:3, 3]
    n_r, h_r, w_r = reference.shape
    upper = np.array([w_r, h_r, n_r], dtype=np.float64) - 0.5
    inside = np.all((ref_idx >= -0.5 - 1e-6) & (ref_idx <= upper + 1e-6), axis=1)
    return float(inside.mean())


def supersampling(target: Grid, reference: Grid, cap: int = 8) -> tuple[int, int, int]:
    """Sub-samples per target voxel along (column, row, slice) so that each reference voxel a
    target voxel covers is sampled: ceil(reference voxels crossed per target step), capped.

    A reference finer than the target (thin slices under a thick slab, a 0.5 mm grid under a
    1 mm one) is then averaged over the target's voxel rather than point-sampled."""
    m = index_map(target, reference)
    out = []
    for j in range(3):
        step = float(np.max(np.abs(m[:3, j])))  # reference voxels per target voxel along axis j
        out.append(int(min(cap, max(1, np.ceil(step - 1e-3)))))
    return out[0], out[1], out[2]
