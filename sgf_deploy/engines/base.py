"""The small interface every backend implements (Polygraphy-style: a loader makes a runner).

A runner is created by :func:`sgf_deploy.engines.load_engine` after the manifest and the engine's
sha256 were checked; the backend's loader then checks that this machine can run it (backend
version, device) and raises :class:`~sgf_deploy.errors.EngineMismatchError` naming both sides
when not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .manifest import EngineManifest

INPUT_NAMES: tuple[str, str] = ("reference", "target")
OUTPUT_NAME = "reconstruction"


@dataclass
class BuildResult:
    """What :func:`~sgf_deploy.engines.build_engine` produced."""

    engine_path: Path
    manifest_path: Path
    manifest: EngineManifest


class Runner:
    """Runs one engine on normalised, padded ``(N, 1, Hp, Wp)`` float32 arrays."""

    backend: str = "?"

    def __init__(self, engine_path: str | Path, manifest: EngineManifest) -> None:
        self.engine_path = Path(engine_path)
        self.manifest = manifest
        self.profile = manifest.profile

    def check_inputs(self, reference: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ref = np.ascontiguousarray(reference, dtype=np.float32)
        tar = np.ascontiguousarray(target, dtype=np.float32)
        if ref.shape != tar.shape or tar.ndim != 4 or tar.shape[1] != 1:
            raise InputError(
                f"{self.engine_path}: reference and target must both be (N, 1, H, W); got {ref.shape} and {tar.shape}"
            )
        if not self.profile.contains(tar.shape):
            raise InputError(
                f"{self.engine_path}: input {'x'.join(map(str, tar.shape))} is outside the engine's profile "
                f"({self.profile.describe()}); rebuild with sgf-deploy build --shapes"
            )
        return ref, tar

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (GPU memory, sessions)."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.engine_path)!r})"
