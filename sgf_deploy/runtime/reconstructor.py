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
from ..engines.optimum import RunChoice, run_choice
from ..errors import SgfError, ValidationFailed
from .timing import Timings


class NonFiniteOutputError(SgfError):
    """The engine produced NaN/Inf; nothing is written."""

    exit_code = 3


class ShapeNotSupportedError(SgfError):
    """The input's (padded) shape lies outside the engine's optimisation profile."""


class OutOfMemoryError(SgfError):
    """The backend could not allocate the memory a batch needs; nothing is written."""


class Reconstructor:
    """Reconstruct a target contrast guided by a reference contrast with a built engine.

    Use :meth:`load`. Calling the object applies the input contract (:mod:`sgf_deploy.contract`:
    per-slice instance normalisation, edge padding to the model's size multiple), runs the engine
    in batches of :attr:`batch` slices, restores (crop, de-normalise), and returns float32 in the
    target's intensity scale with the target's shape. :attr:`timings` holds the seconds spent in
    ``load`` and, for the last call, ``preprocess``, ``inference`` and ``postprocess``.
    """

    def __init__(self, runner: Any, engine_path: str | os.PathLike, manifest: EngineManifest, *,
                 batch: int | None, trust: TrustStatus, load_seconds: float,
                 choice: RunChoice | None = None) -> None:
        self.runner = runner
        self.engine_path = Path(engine_path)
        self.manifest = manifest
        self.trust = trust
        self.profile = manifest.profile
        self.size_multiple = contract.size_multiple(manifest)
        self.requested_batch = batch  # None: chosen per call from the measured memory (runtime.memory)
        # where the batch and threads come from (engines.optimum.run_choice: asked, the engine's
        # measured optimum on this machine, or the defaults); the optimum's batch is a preference
        # that the memory check below may still lower, an asked batch is not
        self.choice = choice or RunChoice(batch, None, "asked" if batch is not None else "default", "default")
        preferred = batch if batch is not None else self.choice.batch
        self.max_batch = self.profile.choose_batch(preferred, D.RUN_BATCH)
        self.batch = self.max_batch  # the batch of the last call
        self.batch_reason = ""
        self.threads: int | None = getattr(runner, "threads", None)
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
        raises ``EngineMismatchError`` (from ``load_engine``). ``batch``/``threads`` left None
        take the engine's measured optimum when it was measured on this machine
        (:func:`sgf_deploy.engines.optimum.run_choice`), else the defaults; each call's notices
        say which (:attr:`choice`)."""
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
        choice = run_choice(manifest, batch=batch, threads=threads)
        runner = load_engine(path, threads=choice.threads)
        return cls(runner, path, runner.manifest, batch=batch, trust=trust, load_seconds=time.perf_counter() - start,
                   choice=choice)

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
        start = 0
        batch, measure_first = self._plan_batch(n, shape)
        if measure_first:  # the first slice alone, measured: it decides the batch of the rest
            from . import memory

            with memory.PeakProbe() as probe:
                self._run_chunk(ref, tar, 0, 1, shape, out, timings)
            start = 1
            if probe.growth is not None:
                per_slice = max(probe.growth, 4096)  # a page: nothing measurable at this size
                failed = memory.record(self.engine_path, self.manifest, shape, per_slice, self.threads)
                batch, self.batch_reason = memory.choose(per_slice, memory.available_bytes(), self.max_batch)
                if failed:
                    self.batch_reason += f" (not recorded in the manifest: {failed})"
        for first in range(start, n, batch):
            self._run_chunk(ref, tar, first, min(first + batch, n), shape, out, timings)
        self.batch = batch
        if self.choice.optimum is not None:  # the engine has a measured optimum: say whether it was used
            self.notices.append(self.choice.note(batch, self.threads, gpu=self.manifest.is_gpu,
                                                 static_batch=bool(self.profile.static_batch),
                                                 planned=self.max_batch))
        if self.batch_reason and n > 1:
            self.notices.append(f"{self.batch_reason}; slices of {shape[0]}x{shape[1]} after padding")
        with timings.stage("postprocess"):
            bad = out.size - int(np.count_nonzero(np.isfinite(out)))
            if bad:
                raise NonFiniteOutputError(
                    f"{self.engine_path}: the engine produced {bad} non-finite value(s) (NaN/Inf); "
                    "the output was discarded (an FP16/INT8 overflow? try the FP32 engine)"
                )
        return out[0] if np.ndim(target) == 2 else out

    # -- batching -------------------------------------------------------------------------------
    def _plan_batch(self, n: int, shape: tuple[int, int]) -> tuple[int, bool]:
        """(batch, whether to measure the first slice alone first). A static batch, an explicit
        ``batch`` and GPU engines keep their batch; a CPU engine's batch comes from its memory per
        slice (recorded in the manifest, else measured now) and the memory available."""
        from . import memory

        self.batch_reason = ""
        if self.profile.static_batch or self.requested_batch is not None:
            return self.max_batch, False
        if self.manifest.is_gpu:
            self.batch_reason = f"batch {self.max_batch} (GPU engine: device memory is not measured here)"
            return self.max_batch, False
        per_slice = memory.recorded(self.manifest, shape)
        if per_slice is None:
            return self.max_batch, n > 1 and self.max_batch > 1
        batch, self.batch_reason = memory.choose(per_slice, memory.available_bytes(), self.max_batch)
        return batch, False

    def _run_chunk(self, ref: np.ndarray, tar: np.ndarray, start: int, stop: int, shape: tuple[int, int],
                   out: np.ndarray, timings: Timings) -> None:
        """Slices ``start:stop`` through the engine into ``out``; an allocation failure becomes one line."""
        from .memory import is_allocation_failure

        with timings.stage("preprocess"):
            prepared = contract.prepare(ref[start:stop], tar[start:stop], self.size_multiple, self.profile.static_batch)
        try:
            with timings.stage("inference"):
                pred = np.asarray(self.runner.infer(prepared.reference, prepared.target))
        except Exception as exc:
            if not is_allocation_failure(exc):
                raise
            size = prepared.reference.shape[0]
            hint = ("pass --batch 1" if size > 1 else
                    "even one slice does not fit: free memory, or use the lite preset / a smaller image")
            raise OutOfMemoryError(f"{self.engine_path}: out of memory running {size} slice(s) of {shape[0]}x{shape[1]} "
                                   f"at once ({type(exc).__name__}); {hint}") from None
        with timings.stage("postprocess"):
            if pred.shape[0] < stop - start or pred.shape[-2:] != shape:
                raise SgfError(f"{self.engine_path}: engine returned shape {pred.shape} for input {prepared.reference.shape}")
            out[start:stop] = contract.restore(pred, prepared)
