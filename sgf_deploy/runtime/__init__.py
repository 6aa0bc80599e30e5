"""The scanner-side runtime: numpy + one inference backend; never imports torch.

* :class:`Reconstructor` -- ``Reconstructor.load(engine_path)`` then ``rec(reference, target)``.
* :func:`select_engine` -- the engine ``sgf-deploy run`` picks (rule in :mod:`.select`).
* :func:`default_engine` -- the embedded default, built once and cached (:mod:`.embedded`).
* :func:`reconstruct_volumes` -- read volumes in, the reconstruction on the target's grid out (what
  every front end calls); :func:`run_files` -- read files, reconstruct, score, write (``sgf-deploy run``).
"""

from __future__ import annotations

from .embedded import cache_dir, default_engine
from .pipeline import Reconstruction, RunResult, RunSettings, reconstruct_volumes, run_files
from .reconstructor import NonFiniteOutputError, Reconstructor, ShapeNotSupportedError
from .select import Selection, select_engine, validated_candidates
from .timing import Timings

__all__ = [
    "NonFiniteOutputError", "Reconstruction", "Reconstructor", "RunResult", "RunSettings", "Selection",
    "ShapeNotSupportedError", "Timings", "cache_dir", "default_engine", "reconstruct_volumes", "run_files",
    "select_engine", "validated_candidates",
]
