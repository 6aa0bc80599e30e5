"""Comparisons of an output under test with a reference output: what "parity" means everywhere.

* :func:`image_parity` -- PSNR and max error of B vs A with a stated data range (:mod:`.images`);
  the export self-check, build-time parity, validate and bench all call it.
* :func:`compare_outputs` -- the per-slice table and summary against the ground truth that
  ``validate`` gates on and ``bench`` reports (:mod:`.slices`).
* :func:`paired_comparison` -- paired per-slice statistics (:mod:`.stats`).

numpy only (scipy is imported lazily for the paired statistics).
"""

from __future__ import annotations

from .images import RULES, ImageParity, data_range, image_parity
from .slices import compare_outputs
from .stats import PairedComparison, paired_comparison

__all__ = ["ImageParity", "PairedComparison", "RULES", "compare_outputs", "data_range", "image_parity",
           "paired_comparison"]
