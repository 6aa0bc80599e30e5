"""The scanner-side runtime: numpy + one inference backend; never imports torch.

* :class:`Reconstructor` — ``Reconstructor.load(engine_path)`` then ``rec(reference, target)``.
* :func:`select_engine` — the engine ``sgf-deploy run`` picks (rule in :mod:`.select`).
* :func:`run_files` — read files, reconstruct, score, write (what ``sgf-deploy run`` does).
"""

from __future__ import annotations

from .reconstructor import NonFiniteOutputError, Reconstructor, ShapeNotSupportedError
from .select import (
    DEFAULT_LABEL,
    ValidationStatus,
    cache_dir,
    default_engine,
    select_engine,
    validated_candidates,
    validation_status,
)
from .timing import Timings

__all__ = [
    "DEFAULT_LABEL", "NonFiniteOutputError", "Reconstructor", "ShapeNotSupportedError", "Timings",
    "ValidationStatus", "cache_dir", "default_engine", "select_engine", "validated_candidates",
    "validation_status",
]
