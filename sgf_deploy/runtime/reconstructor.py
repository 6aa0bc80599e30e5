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

from ..errors import SgfError, ValidationFailed
from . import preprocess
from .select import ValidationStatus, validation_status
from .timing import Timings

DEFAULT_BATCH = 4


class NonFiniteOutputError(SgfError):
    """The engine produced NaN/Inf; nothing is written."""

    exit_code = 3


class ShapeNotSupportedError(SgfError):
    """The input's (padded) shape lies outside the engine's optimisation profile."""


class Reconstructor:
    """Reconstruct a target contrast guided by a reference contrast with a built engine.

    Use :meth:`load`. Calling the object runs the trained pre-processing (per-slice instance
    normalisation, edge padding to the model's size multiple), the engine in batches of
    :attr:`batch` slices, and the post-processing (crop, de-normalise), and returns float32 in the
    target's intensity scale with the target's shape. :attr:`timings` holds the seconds spent in
    ``load`` and, for the last call, ``preprocess``, ``inference`` and ``postprocess``.
    """

    def __init__(self, runner: Any, engine_path: Path, manifest: dict, *, batch: int | None,
                 validation: ValidationStatus, load_seconds: float) -> None:
        self.runner = runner
        self.engine_path = Path(engine_path)
        self.manifest = manifest
        self.validation = validation
        self.profile = EngineProfile.from_manifest(manifest)
        self.size_multiple = _size_multiple(manifest)
        self.batch = self.profile.choose_batch(batch)
        self.load_seconds = load_seconds
        self.timings = Timings(load=load_seconds)
        self.notices: list[str] = []

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, engine_path: str | os.PathLike, *, batch: int | None = None, threads: int | None = None,
             allow_unvalidated: bool = False) -> "Reconstructor":
        """Load an engine with :func:`sgf_deploy.engines.load_engine`.

        An engine whose manifest records no passing validation is refused (``ValidationFailed``)
        unless ``allow_unvalidated``; then :attr:`validation` says so (``.ok`` is False) and the
        caller is expected to warn. The cached embedded default engine counts as validated (its
        export self-check passed; see :mod:`sgf_deploy.runtime.select`). An engine built for
        another device/backend raises ``EngineMismatchError`` (from ``load_engine``).
        """
        from ..engines import load_engine, read_manifest

        start = time.perf_counter()
        path = Path(engine_path)
        manifest = read_manifest(path)
        status = validation_status(path, manifest)
        if not status.ok and not allow_unvalidated:
            raise ValidationFailed(
                f"{path}: refused: {status.label}; validate it with 'sgf-deploy validate' "
                "or pass --allow-unvalidated to run it anyway"
            )
        runner = load_engine(path, threads=threads)
        manifest = getattr(runner, "manifest", None) or manifest
        return cls(runner, path, manifest, batch=batch, validation=status,
                   load_seconds=time.perf_counter() - start)

    # -- description --------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        return str(self.manifest.get("backend", "?"))

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "?"))

    @property
    def device(self) -> str:
        device = self.manifest.get("device") or {}
        if isinstance(device, dict):
            return str(device.get("name") or device.get("kind") or "?")
        return str(device)

    def describe(self) -> str:
        """One line: file, backend, precision, device, validation."""
        return (f"{self.engine_path} ({self.backend} {self.precision.upper()} on {self.device}; "
                f"{self.validation.label})")

    # -- inference ----------------------------------------------------------------------------
    def __call__(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        """``(H, W)`` or ``(N, H, W)`` reference and target -> reconstruction, target's shape and scale."""
        timings = Timings(load=self.load_seconds)
        self.timings = timings
        with timings.stage("preprocess"):
            ref, tar, notices = preprocess.check_pair(reference, target)
            self.notices = notices
            squeeze = np.ndim(target) == 2
            n, h, w = tar.shape
            hp = h + preprocess.pad_amount(h, self.size_multiple)
            wp = w + preprocess.pad_amount(w, self.size_multiple)
            self.profile.check_spatial(hp, wp, h, w, self.engine_path)
        out = np.empty((n, h, w), dtype=np.float32)
        static = self.profile.static_batch
        for start in range(0, n, self.batch):
            stop = min(start + self.batch, n)
            with timings.stage("preprocess"):
                ref_p, tar_p, means, stds = preprocess.normalize_slices(
                    ref[start:stop], tar[start:stop], self.size_multiple, static)
            with timings.stage("inference"):
                pred = self.runner.infer(ref_p, tar_p)
            with timings.stage("postprocess"):
                pred = np.asarray(pred)
                if pred.shape[0] < stop - start or pred.shape[-2:] != (hp, wp):
                    raise SgfError(
                        f"{self.engine_path}: engine returned shape {pred.shape} for input {ref_p.shape}"
                    )
                out[start:stop] = preprocess.restore(pred, stop - start, h, w, means, stds)
        with timings.stage("postprocess"):
            bad = out.size - int(np.count_nonzero(np.isfinite(out)))
            if bad:
                raise NonFiniteOutputError(
                    f"{self.engine_path}: the engine produced {bad} non-finite value(s) (NaN/Inf); "
                    "the output was discarded (an FP16/INT8 overflow? try the FP32 engine)"
                )
        return out[0] if squeeze else out


class EngineProfile:
    """Batch and spatial limits from the manifest's ``profile`` (min/opt/max ``(N,1,H,W)``)."""

    def __init__(self, lo: tuple[int, ...] | None, opt: tuple[int, ...] | None, hi: tuple[int, ...] | None) -> None:
        self.min, self.opt, self.max = lo, opt, hi

    @classmethod
    def from_manifest(cls, manifest: dict) -> "EngineProfile":
        profile = manifest.get("profile") or {}
        if isinstance(profile, dict) and "target" in profile and isinstance(profile["target"], dict):
            profile = profile["target"]  # per-input profiles: both inputs share one shape
        elif isinstance(profile, dict) and "reference" in profile and isinstance(profile["reference"], dict):
            profile = profile["reference"]

        def shape(key: str) -> tuple[int, ...] | None:
            value = profile.get(key) if isinstance(profile, dict) else None
            if isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, int) for v in value):
                return tuple(int(v) for v in value)
            return None

        return cls(shape("min"), shape("opt"), shape("max"))

    @property
    def static_batch(self) -> int | None:
        """The batch every call must have, when the engine's batch dimension is fixed."""
        if self.min and self.max and self.min[0] == self.max[0]:
            return self.min[0]
        return None

    def choose_batch(self, requested: int | None) -> int:
        if requested is not None and int(requested) < 1:
            raise SgfError(f"batch must be >= 1, got {requested}")
        if self.static_batch:
            return self.static_batch
        batch = int(requested) if requested else (self.opt[0] if self.opt else DEFAULT_BATCH)
        if self.max:
            batch = min(batch, self.max[0])
        if self.min:
            batch = max(batch, self.min[0])
        return max(1, batch)

    def check_spatial(self, hp: int, wp: int, h: int, w: int, engine: Path) -> None:
        if not (self.min and self.max):
            return
        if not (self.min[2] <= hp <= self.max[2] and self.min[3] <= wp <= self.max[3]):
            if (self.min[2], self.min[3]) == (self.max[2], self.max[3]):
                allowed = f"exactly {self.max[2]}x{self.max[3]}"
            else:
                allowed = f"{self.min[2]}x{self.min[3]} to {self.max[2]}x{self.max[3]}"
            raise ShapeNotSupportedError(
                f"{engine}: this engine accepts padded slices of {allowed}; the input's {h}x{w} slices "
                f"pad to {hp}x{wp}; rebuild the engine for this size (sgf-deploy build --shapes) or use another"
            )


def _size_multiple(manifest: dict) -> int:
    for source in (manifest.get("model") or {}, manifest):
        for key in ("size_multiple", "sgf.size_multiple"):
            if key in source:
                try:
                    return max(1, int(source[key]))
                except (TypeError, ValueError):
                    pass
    config = (manifest.get("model") or {}).get("config") or {}
    channels = config.get("channels") if isinstance(config, dict) else None
    if isinstance(channels, (list, tuple)) and len(channels) >= 2:
        return 2 ** (len(channels) - 1)
    return 8
