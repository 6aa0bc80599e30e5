"""Paired comparison of a per-slice metric: reference (``a``) vs engine (``b``).

The model's whole margin over the prior best is 0.03-0.12 dB (DESIGN.md section 5), so parity is
judged on the paired per-slice differences ``diff = b - a`` (negative = the engine is worse),
with a 95 % confidence interval of the mean difference and a Wilcoxon signed-rank test.

Decisions (documented, tested):

* The CI is Student's t: ``mean(diff) +- t_{0.975, n-1} * sd(diff, ddof=1) / sqrt(n)``. For
  ``n == 1`` there is no spread estimate, so the CI is ``(-inf, inf)`` (unbounded, not NaN).
  When every difference is zero the CI is ``(0, 0)``.
* Wilcoxon is two-sided with ``zero_method="wilcox"`` (zero differences dropped). When every
  difference is exactly zero there is nothing to test and ``p = 1.0`` (scipy warns / may return
  NaN there). ``p`` is ``None`` when ``n < 2``.
* Slices where ``a == b`` exactly (including both ``+inf``, e.g. PSNR of a slice reproduced
  exactly by both) have difference 0. Any other non-finite difference (NaN input, or inf in only
  one of the pair) is refused with ``ValueError``.
* ``worst_index`` is the slice with the most negative ``b - a`` (first one on ties).
* :meth:`PairedComparison.to_dict` is strict-JSON safe: non-finite floats become ``None``
  (an unbounded CI end or an infinite mean reads as ``null``).

scipy is imported lazily (it is not a runtime dependency).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["PairedComparison", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    """Summary of ``b - a`` over ``n`` paired slices; see the module docstring for edge cases."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci95_low: float
    ci95_high: float
    wilcoxon_p: float | None
    worst_index: int

    def to_dict(self) -> dict:
        """Plain dict for ``json.dumps``; non-finite floats are written as ``None``."""
        out = {}
        for k, v in asdict(self).items():
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            out[k] = v
        return out


def _scipy_stats():
    from sgf_deploy.errors import require

    return require("scipy.stats", "torch", "paired comparison statistics")


def paired_comparison(a: np.ndarray, b: np.ndarray) -> PairedComparison:
    """Compare per-slice metric ``b`` (engine) with ``a`` (reference); ``diff = b - a``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"paired_comparison: a and b must be 1-D of equal length, got {a.shape} and {b.shape}")
    n = int(a.size)
    if n == 0:
        raise ValueError("paired_comparison: no slices to compare (empty input)")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired_comparison: a or b contains NaN")
    with np.errstate(invalid="ignore"):
        diff = np.where(a == b, 0.0, b - a)
    bad = np.flatnonzero(~np.isfinite(diff))
    if bad.size:
        raise ValueError(
            f"paired_comparison: non-finite difference at slice(s) {bad[:10].tolist()} "
            "(infinite in only one of a, b)"
        )

    mean_diff = float(diff.mean())
    worst_index = int(np.argmin(diff))
    if n == 1:
        lo, hi, p = -math.inf, math.inf, None
    else:
        st = _scipy_stats()
        sd = float(diff.std(ddof=1))
        half = float(st.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean_diff - half, mean_diff + half
        if not np.any(diff != 0):
            p = 1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p = float(st.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
            if not math.isfinite(p):  # pragma: no cover - defensive, scipy-version dependent
                p = 1.0
    return PairedComparison(
        n=n,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=mean_diff,
        ci95_low=float(lo),
        ci95_high=float(hi),
        wilcoxon_p=p,
        worst_index=worst_index,
    )
