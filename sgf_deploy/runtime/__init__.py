"""The scanner-side runtime: numpy + one inference backend; never imports torch.

* :class:`Reconstructor` -- ``Reconstructor.load(engine_path)`` then ``rec(reference, target)``.
* :func:`select_engine` -- the engine ``sgf-deploy run`` picks (rule in :mod:`.select`).
* :func:`default_engine` -- the embedded default, built once and cached (:mod:`.embedded`).
* :func:`run_files` -- read files, reconstruct, score, write (what ``sgf-deploy run`` does).
"""

from __future__ import annotations

from .embedded import cache_dir, default_engine
from .pipeline import RunResult, RunSettings, run_files
from .reconstructor import NonFiniteOutputError, Reconstructor, ShapeNotSupportedError
from .select import Selection, select_engine, validated_candidates
from .timing import Timings

__all__ = [
    "NonFiniteOutputError", "Reconstructor", "RunResult", "RunSettings", "Selection", "ShapeNotSupportedError",
    "Timings", "cache_dir", "default_engine", "run_files", "select_engine", "validated_candidates",
]
