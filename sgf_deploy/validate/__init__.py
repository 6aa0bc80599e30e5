"""Validation: parity of an engine against the PyTorch reference (metrics, statistics, gates).

* :func:`validate_engine` / :func:`validate_all` — what ``sgf-deploy validate`` does
  (:mod:`.parity`); the report folder is written by :mod:`.report`.
* :func:`thresholds_for`, :func:`judge`, :data:`DEFAULT_THRESHOLDS` — the gate (:mod:`.thresholds`).
* :func:`paired_comparison` — paired per-slice statistics (:mod:`.stats`).
* :func:`layerwise_compare` — where an engine's error jumps (:mod:`.layerwise`), imported lazily.

Importing this package does not import torch (only running a validation does).
"""

from __future__ import annotations

from typing import Any

from .parity import (
    EngineNotRunnable,
    ValidationOutcome,
    compare_outputs,
    find_engines,
    resolve_checkpoint,
    validate_all,
    validate_engine,
)
from .stats import PairedComparison, paired_comparison
from .thresholds import DEFAULT_THRESHOLDS, Thresholds, judge, thresholds_for

__all__ = [
    "DEFAULT_THRESHOLDS", "EngineNotRunnable", "PairedComparison", "Thresholds", "ValidationOutcome",
    "compare_outputs", "find_engines", "judge", "layerwise_compare", "paired_comparison", "resolve_checkpoint",
    "thresholds_for", "validate_all", "validate_engine",
]


def __getattr__(name: str) -> Any:
    if name in ("layerwise_compare", "compare_graphs"):
        from . import layerwise

        return getattr(layerwise, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
