"""Engines: build FP32/FP16/INT8 engines for ONNX Runtime, TensorRT and TensorRT-RTX, and load them.

* :func:`build_engine` (exported ONNX -> engine + ``<engine>.json`` manifest, with build-time parity)
* :func:`load_engine` -> a runner with ``infer(reference, target)`` on normalised, padded
  ``(N, 1, Hp, Wp)`` float32 arrays and ``manifest``
* :func:`read_manifest`, :func:`update_manifest` (atomic)

Never imports torch (the build-time parity imports it lazily to run the PyTorch reference).
Backend modules (onnxruntime, tensorrt, tensorrt_rtx) are imported when used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import EngineMismatchError, InputError
from .base import BuildResult, Runner
from .identity import BACKEND_CHOICES, BACKENDS, PRECISIONS, Profile, resolve_backend
from .manifest import EngineManifest, ModelInfo, TrustStatus, manifest_path, read_manifest, update_manifest
from .settings import BuildSettings


def build_engine(onnx_path: str | os.PathLike | None = None, settings: BuildSettings | None = None, **options: Any
                 ) -> BuildResult:
    """See :func:`sgf_deploy.engines.build.build_engine` (imported on first use: it needs onnx)."""
    from .build import build_engine as _build

    return _build(onnx_path, settings, **options)


def load_engine(path: str | os.PathLike, *, threads: int | None = None) -> Runner:
    """Load an engine for inference after checking its manifest, its sha256 and that this machine
    can run it (backend and version, device); :class:`EngineMismatchError` names both sides."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: engine file not found")
    manifest = EngineManifest.load(path)
    manifest.verify_file(path)
    backend = manifest.backend
    if backend == "onnxruntime":
        from .onnxruntime.runner import OrtRunner

        return OrtRunner(path, manifest, threads=threads)
    if backend == "openvino":
        from .openvino.runner import OvRunner

        return OvRunner(path, manifest, threads=threads)
    if backend in ("tensorrt", "tensorrt-rtx"):
        from .tensorrt.runner import TrtRunner

        return TrtRunner(path, manifest, threads=threads)
    raise EngineMismatchError(f"{path}: engine built for backend {backend!r}, which this toolkit does not know ({', '.join(BACKENDS)})")


__all__ = [
    "BACKENDS", "BACKEND_CHOICES", "BuildResult", "BuildSettings", "EngineManifest", "ModelInfo", "PRECISIONS",
    "Profile", "Runner", "TrustStatus", "build_engine", "load_engine", "manifest_path", "read_manifest",
    "resolve_backend", "update_manifest",
]
