"""The in-memory form of an image stack read from a user's file (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Volume:
    """A magnitude image stack plus what the writer needs to give it back in the same form.

    ``data`` is always float32 (N, H, W), finite. ``orientation`` is, for NIfTI and DICOM, a 4x4
    affine mapping voxel indices (H, W, N) (i.e. (row, column, slice)) to RAS+ millimetres, so
    that a NIfTI and a DICOM volume can be compared directly (DICOM's LPS is converted).
    ``header`` is format specific and only meant for :func:`sgf_deploy.data.writers.write_volume`:

    * nifti: dict(image_class, header, affine, shape) (``shape`` = the file's original shape)
    * dicom: list of per-slice template ``pydicom.Dataset`` (no pixel data), in slice order
    * hdf5: dict(attrs, dataset, ismrmrd_header)
    * npy: None
    """

    data: np.ndarray = field(repr=False)
    source: Path
    fmt: str  # "npy" | "nifti" | "dicom" | "hdf5"
    squeeze: bool = False  # the input was a single 2-D slice: write 2-D back
    spacing: tuple[float, ...] | None = None  # (row, col[, slice]) mm, where known
    orientation: np.ndarray | None = field(default=None, repr=False)
    header: object | None = field(default=None, repr=False)
    notices: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def shape_str(self) -> str:
        """``"1x320x320"``: the (N, H, W) shape as users read it in messages."""
        return "x".join(str(s) for s in self.data.shape)
