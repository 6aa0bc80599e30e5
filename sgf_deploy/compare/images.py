"""Parity of two images, A (the reference output) vs B (the output under test), with a stated
data range: the one definition of "PSNR(engine, reference)" and "max error" in this toolkit.

PSNR needs a data range, and which one is a convention; every result names its rule:

* ``reference_max``: the reference image's maximum (fastMRI's ``gt.max()``), for de-normalised
  magnitude images (build-time parity);
* ``ground_truth_max``: the ground truth's maximum over the slice's volume, for figures that sit
  beside PSNR-vs-ground-truth in one report (``validate``, ``bench``);
* ``reference_span``: ``max - min`` of the reference, for outputs on the model's normalised scale,
  whose background is negative (the export self-check).

Identical images give ``psnr_db = inf``; a test image with NaN/Inf gives ``psnr_db = -inf``,
``max_abs_error = inf`` and the count in ``non_finite`` (never a number that looks like a result).
numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

RULES: dict[str, str] = {
    "reference_max": "maximum of the reference output (fastMRI gt.max() convention)",
    "ground_truth_max": "ground-truth maximum of the slice's volume (fastMRI)",
    "reference_span": "max - min of the reference output (normalised scale)",
}


@dataclass(frozen=True)
class ImageParity:
    """PSNR(B vs A) in dB, max |A - B|, the data range used and its rule."""

    psnr_db: float
    max_abs_error: float
    data_range: float
    rule: str
    non_finite: int = 0

    @property
    def finite(self) -> bool:
        return self.non_finite == 0

    def to_dict(self, digits: int | None = None) -> dict[str, Any]:
        value = self.psnr_db if digits is None or not math.isfinite(self.psnr_db) else round(self.psnr_db, digits)
        out: dict[str, Any] = {"psnr_db": value, "max_abs_error": self.max_abs_error,
                               "data_range": self.data_range, "data_range_rule": self.rule}
        if self.non_finite:
            out["non_finite_outputs"] = self.non_finite
        return out


def data_range(reference: np.ndarray, rule: str, ground_truth: np.ndarray | None = None) -> float:
    """The data range ``rule`` gives for these images (see the module docstring)."""
    if rule == "reference_max":
        return float(np.max(reference))
    if rule == "reference_span":
        return float(np.max(reference) - np.min(reference))
    if rule == "ground_truth_max":
        if ground_truth is None:
            raise ValueError("data range rule 'ground_truth_max' needs the ground truth")
        return float(np.max(ground_truth))
    raise ValueError(f"unknown data range rule {rule!r}; choose from {', '.join(RULES)}")


def image_parity(reference: np.ndarray, test: np.ndarray, *, rule: str = "reference_max",
                 ground_truth: np.ndarray | None = None, range_override: float | None = None) -> ImageParity:
    """Compare ``test`` with ``reference`` (same shape) over all their pixels.

    ``range_override`` replaces the rule's data range (the rule is then reported as given)."""
    ref = np.asarray(reference, np.float64)
    tst = np.asarray(test, np.float64)
    if ref.shape != tst.shape:
        return ImageParity(-math.inf, math.inf, math.nan, rule, non_finite=int(tst.size) or 1)
    bad = int(tst.size - np.count_nonzero(np.isfinite(tst)))
    r = float(range_override) if range_override is not None else data_range(ref, rule, ground_truth)
    if bad:
        return ImageParity(-math.inf, math.inf, r, rule, non_finite=bad)
    diff = ref - tst
    max_abs = float(np.max(np.abs(diff))) if diff.size else 0.0
    mse = float(np.mean(np.square(diff))) if diff.size else 0.0
    if mse == 0:
        return ImageParity(math.inf, max_abs, r, rule)
    if not (math.isfinite(mse) and math.isfinite(r) and r > 0):
        return ImageParity(-math.inf, max_abs, r, rule)
    return ImageParity(10.0 * math.log10(r * r / mse), max_abs, r, rule)
