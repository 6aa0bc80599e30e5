"""Validation: parity of an engine against the PyTorch reference (run, compare, judge, report).

* :func:`validate_engine` / :func:`validate_all` -- what ``sgf-deploy validate`` does
  (:mod:`.driver`), configured by :class:`ValidateSettings` (:mod:`.settings`); the report folder
  is written by :mod:`.report`.
* :func:`thresholds_for`, :func:`judge`, :data:`DEFAULT_THRESHOLDS` -- the gate (:mod:`.thresholds`).
* :func:`layerwise_compare` -- where an engine's error jumps (:mod:`.layerwise`), imported lazily.
* The comparisons themselves live in :mod:`sgf_deploy.compare` (shared with build and bench).

Importing this package does not import torch (only running a validation does).
"""

from __future__ import annotations

from typing import Any

from .driver import EngineNotRunnable, ValidationOutcome, validate_all, validate_engine
from .settings import ValidateSettings
from .sources import find_engines
from .thresholds import DEFAULT_THRESHOLDS, Thresholds, judge, thresholds_for

__all__ = [
    "DEFAULT_THRESHOLDS", "EngineNotRunnable", "Thresholds", "ValidateSettings", "ValidationOutcome", "find_engines",
    "judge", "layerwise_compare", "thresholds_for", "validate_all", "validate_engine",
]


def __getattr__(name: str) -> Any:
    if name in ("layerwise_compare", "compare_graphs"):
        from . import layerwise

        return getattr(layerwise, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
