"""Cartesian undersampling masks over phase-encode columns (the last axis), as fastMRI 0.3.0.

* ``random``: fastMRI's ``RandomMaskFunc``. The centre ``round(num_cols * center_fraction)``
  columns are always sampled; every other column is kept with probability
  ``(num_cols / acceleration - num_low) / (num_cols - num_low)``, so the *expected* acceleration
  equals ``acceleration``.
* ``equispaced``: fastMRI's ``EquispacedMaskFractionFunc`` (not ``EquiSpacedMaskFunc``, whose
  spacing ignores the centre block and over-samples): columns spaced by the *adjusted*
  acceleration ``a (num_low - num_cols) / (num_low a - num_cols)`` from a random offset in
  ``[0, round(adjusted))``, plus the centre block, so the realised acceleration is close to
  ``acceleration``.

The centre block starts at ``(num_cols - num_low + 1) // 2``, which contains the DC column
``num_cols // 2`` of :func:`sgf_deploy.data.kspace.fft2c` for even and odd widths.
"""

from __future__ import annotations

import numpy as np

#: acceleration -> fraction of fully sampled centre columns (fastMRI's challenge settings)
ACCELERATIONS: dict[int, float] = {4: 0.08, 8: 0.04}

MASK_KINDS = ("random", "equispaced")


def column_mask(
    num_cols: int,
    acceleration: int,
    center_fraction: float | None = None,
    kind: str = "random",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """A (num_cols,) boolean column mask; ``rng=None`` uses a fixed seed (0) so the call is
    reproducible. ``center_fraction`` defaults to :data:`ACCELERATIONS` (else 0.32/acceleration,
    fastMRI's rule of thumb)."""
    num_cols = int(num_cols)
    if num_cols < 2:
        raise ValueError(f"num_cols must be >= 2, got {num_cols}")
    if acceleration is None or float(acceleration) < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if center_fraction is None:
        center_fraction = ACCELERATIONS.get(int(acceleration), 0.32 / float(acceleration))
    if not 0.0 <= float(center_fraction) <= 1.0:
        raise ValueError(f"center_fraction must be in [0, 1], got {center_fraction}")
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; expected one of {MASK_KINDS}")
    rng = np.random.default_rng(0) if rng is None else rng

    num_low = int(round(num_cols * float(center_fraction)))
    mask = np.zeros(num_cols, dtype=bool)
    if kind == "random":
        denom = num_cols - num_low
        prob = (num_cols / float(acceleration) - num_low) / denom if denom > 0 else 0.0
        mask[:] = rng.uniform(size=num_cols) < prob
    else:
        if num_low * float(acceleration) != num_cols:
            adjusted = (float(acceleration) * (num_low - num_cols)) / (num_low * float(acceleration) - num_cols)
        else:  # pragma: no cover - the centre block alone already gives the acceleration
            adjusted = float("inf")
        if np.isfinite(adjusted) and adjusted > 0:
            offset = int(rng.integers(0, max(1, int(round(adjusted)))))
            cols = np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.int64)
            mask[cols[cols < num_cols]] = True
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = True
    return mask


def acceleration_of(mask: np.ndarray) -> float:
    """Realised acceleration of a column mask: ``num_cols / sampled`` (inf for an empty mask)."""
    mask = np.asarray(mask).astype(bool).reshape(-1)
    sampled = int(mask.sum())
    return float("inf") if sampled == 0 else mask.size / sampled
