"""The scanner-side reconstructor: numpy + one inference backend, never torch.

>>> rec = Reconstructor.load("engines/model.onnx")          # any backend sgf_deploy.engines loads
>>> out = rec(reference, target)                            # (H, W) or (N, H, W), target's scale
>>> rec.timings                                             # {"load": s, "preprocess": s, ...}
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import contract
from .. import defaults as D
from ..engines.manifest import EngineManifest, TrustStatus
from ..errors import SgfError, ValidationFailed
from .timing import Timings


class NonFiniteOutputError(SgfError):
    """The engine produced NaN/Inf; nothing is written."""

    exit_code = 3


class ShapeNotSupportedError(SgfError):
    """The input's (padded) shape lies outside the engine's optimisation profile."""


class Reconstructor:
    """Reconstruct a target contrast guided by a reference contrast with a built engine.

    Use :meth:`load`. Calling the object applies the input contract (:mod:`sgf_deploy.contract`:
    per-slice instance normalisation, edge padding to the model's size multiple), runs the engine
    in batches of :attr:`batch` slices, restores (crop, de-normalise), and returns float32 in the
    target's intensity scale with the target's shape. :attr:`timings` holds the seconds spent in
    ``load`` and, for the last call, ``preprocess``, ``inference`` and ``postprocess``.
    """

    def __init__(self, runner: Any, engine_path: str | os.PathLike, manifest: EngineManifest, *,
                 batch: int | None, trust: TrustStatus, load_seconds: float) -> None:
        self.runner = runner
        self.engine_path = Path(engine_path)
        self.manifest = manifest
        self.trust = trust
        self.profile = manifest.profile
        self.size_multiple = contract.size_multiple(manifest)
        self.batch = self.profile.choose_batch(batch, D.RUN_BATCH)
        self.load_seconds = load_seconds
        self.timings = Timings(load=load_seconds)
        self.notices: list[str] = []

    @classmethod
    def load(cls, engine_path: str | os.PathLike, *, batch: int | None = None, threads: int | None = None,
             allow_unvalidated: bool = False) -> "Reconstructor":
        """Load an engine with :func:`sgf_deploy.engines.load_engine`.

        An engine the trust rule (:meth:`EngineManifest.trust`) does not accept is refused
        (``ValidationFailed``) unless ``allow_unvalidated``; then :attr:`trust` says so (``.ok`` is
        False) and the caller is expected to warn. An engine built for another device/backend
        raises ``EngineMismatchError`` (from ``load_engine``)."""
        from ..engines import load_engine

        start = time.perf_counter()
        path = Path(engine_path)
        manifest = EngineManifest.load(path)
        trust = manifest.trust(path)
        if not trust.ok and not allow_unvalidated:
            raise ValidationFailed(
                f"{path}: refused: {trust.label}; validate it with 'sgf-deploy validate' "
                "or pass --allow-unvalidated to run it anyway"
            )
        runner = load_engine(path, threads=threads)
        return cls(runner, path, runner.manifest, batch=batch, trust=trust, load_seconds=time.perf_counter() - start)

    # -- description --------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self.manifest.backend

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def device(self) -> str:
        return self.manifest.device_name

    def describe(self) -> str:
        """One line: file, backend, precision, device, trust."""
        return f"{self.engine_path} ({self.backend} {self.precision.upper()} on {self.device}; {self.trust.label})"

    # -- inference ----------------------------------------------------------------------------
    def __call__(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(N, H, W)`` reference and target -> reconstruction, target's shape and scale."""
        timings = self.timings = Timings(load=self.load_seconds)
        with timings.stage("preprocess"):
            ref, tar, self.notices = contract.check_pair(reference, target)
            n, h, w = tar.shape
            shape = (contract.padded_size(h, self.size_multiple), contract.padded_size(w, self.size_multiple))
            problem = self.profile.spatial_problem(shape, (h, w))
            if problem:
                raise ShapeNotSupportedError(f"{self.engine_path}: {problem}")
        out = np.empty((n, h, w), dtype=np.float32)
        static = self.profile.static_batch
        for start in range(0, n, self.batch):
            stop = min(start + self.batch, n)
            with timings.stage("preprocess"):
                prepared = contract.prepare(ref[start:stop], tar[start:stop], self.size_multiple, static)
            with timings.stage("inference"):
                pred = np.asarray(self.runner.infer(prepared.reference, prepared.target))
            with timings.stage("postprocess"):
                if pred.shape[0] < stop - start or pred.shape[-2:] != shape:
                    raise SgfError(f"{self.engine_path}: engine returned shape {pred.shape} for input {prepared.reference.shape}")
                out[start:stop] = contract.restore(pred, prepared)
        with timings.stage("postprocess"):
            bad = out.size - int(np.count_nonzero(np.isfinite(out)))
            if bad:
                raise NonFiniteOutputError(
                    f"{self.engine_path}: the engine produced {bad} non-finite value(s) (NaN/Inf); "
                    "the output was discarded (an FP16/INT8 overflow? try the FP32 engine)"
                )
        return out[0] if np.ndim(target) == 2 else out
