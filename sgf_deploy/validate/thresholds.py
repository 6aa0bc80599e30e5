"""The parity gate: per-precision thresholds and the pass/fail verdict.

Why these numbers (DESIGN.md section 5): the model's whole margin over the prior best is
0.03-0.12 dB, so an engine may lose at most a small fraction of that against ground truth.

=========  ==========================  ===================================
precision  min PSNR(engine, PyTorch)   max abs(mean delta PSNR vs GT)
=========  ==========================  ===================================
fp32       80 dB                       0.001 dB
fp16       50 dB                       0.01 dB
int8       40 dB                       0.1 dB
=========  ==========================  ===================================

Definitions (the report states them too):

* ``PSNR(engine, PyTorch)`` is computed per slice with the PyTorch output as the reference image
  and ``data_range`` = the ground-truth maximum of the slice's volume (each simulated slice is its
  own volume). The gate uses the **worst** (lowest) slice, not the mean, so one bad slice fails.
* ``delta PSNR`` is, per slice, PSNR(engine, GT) - PSNR(PyTorch, GT); the gate uses the absolute
  value of its mean over slices (the paired mean difference of :func:`paired_comparison`). An
  engine that is *better* than PyTorch by more than the threshold fails too: it is not the model
  that was validated.
* Any non-finite value in either output fails, whatever the numbers.

``bf16`` engines use the ``fp16`` thresholds; an unknown precision uses the strictest (``fp32``)
unless both thresholds are given explicitly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Thresholds", "DEFAULT_THRESHOLDS", "thresholds_for", "judge"]


@dataclass(frozen=True)
class Thresholds:
    """Gate for one precision: both conditions must hold (and every output must be finite)."""

    min_parity_psnr: float  # dB, worst slice of PSNR(engine, PyTorch)
    max_delta_psnr: float  # dB, |mean over slices of PSNR(engine, GT) - PSNR(PyTorch, GT)|
    precision: str = "fp32"
    source: str = "default"  # "default" | "user" | "default (fp16 thresholds for bf16)" ...

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(80.0, 0.001, "fp32"),
    "fp16": Thresholds(50.0, 0.01, "fp16"),
    "int8": Thresholds(40.0, 0.1, "int8"),
}
_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bf16": "fp16", "bfloat16": "fp16",
            "qdq": "int8", "int8-qdq": "int8"}


def thresholds_for(precision: str | None, min_parity_psnr: float | None = None,
                   max_delta_psnr: float | None = None) -> Thresholds:
    """The gate for ``precision`` with optional user overrides (``None`` = the default)."""
    prec = str(precision or "fp32").lower()
    key = prec if prec in DEFAULT_THRESHOLDS else _ALIASES.get(prec)
    source = "default"
    if key is None:
        key = "fp32"
        source = f"default (unknown precision {prec!r}: fp32 thresholds, the strictest)"
    elif key != prec:
        source = f"default ({key} thresholds for {prec})"
    base = DEFAULT_THRESHOLDS[key]
    for name, value in (("--min-parity-psnr", min_parity_psnr), ("--max-delta-psnr", max_delta_psnr)):
        if value is not None and not (math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    overridden = [n for n, v in (("min_parity_psnr", min_parity_psnr), ("max_delta_psnr", max_delta_psnr)) if v is not None]
    if overridden:
        source = f"user ({', '.join(overridden)}); other values {source}"
    return Thresholds(
        min_parity_psnr=float(base.min_parity_psnr if min_parity_psnr is None else min_parity_psnr),
        max_delta_psnr=float(base.max_delta_psnr if max_delta_psnr is None else max_delta_psnr),
        precision=prec,
        source=source,
    )


def judge(*, nonfinite: int, parity_psnr_min: float | None, delta_psnr_mean: float | None,
          thresholds: Thresholds) -> tuple[str, list[str]]:
    """``("pass" | "fail", reasons)``; ``reasons`` lists every failed condition (empty on pass)."""
    reasons: list[str] = []
    if nonfinite:
        reasons.append(f"{nonfinite} non-finite output value(s) (NaN/Inf)")
    if parity_psnr_min is None or (isinstance(parity_psnr_min, float) and math.isnan(parity_psnr_min)):
        if not nonfinite:
            reasons.append("PSNR(engine, PyTorch) could not be computed")
    elif parity_psnr_min < thresholds.min_parity_psnr:
        reasons.append(
            f"worst-slice PSNR(engine, PyTorch) {parity_psnr_min:.2f} dB < {thresholds.min_parity_psnr:g} dB"
        )
    if delta_psnr_mean is None or (isinstance(delta_psnr_mean, float) and math.isnan(delta_psnr_mean)):
        if not nonfinite:
            reasons.append("delta PSNR vs ground truth could not be computed")
    elif abs(delta_psnr_mean) > thresholds.max_delta_psnr:
        reasons.append(
            f"|mean delta PSNR vs ground truth| {abs(delta_psnr_mean):.4g} dB > {thresholds.max_delta_psnr:g} dB"
        )
    return ("fail" if reasons else "pass"), reasons
