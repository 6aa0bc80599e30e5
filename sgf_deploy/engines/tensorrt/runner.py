"""Run a TensorRT / TensorRT-RTX engine on an NVIDIA GPU.

Before anything touches CUDA the loader checks, and refuses with one line naming both sides
(:class:`~sgf_deploy.errors.EngineMismatchError`), never a crash:

1. the backend module is installed and its version is the one the engine was built with;
2. an NVIDIA GPU is present (found through NVML: no CUDA call on a machine without a driver);
3. its compute capability is the engine's (TensorRT) or one of its ahead-of-time targets (RTX);
4. TensorRT-RTX's own header check (``IRuntime.get_engine_validity``) accepts the file.

Device buffers come from Polygraphy's small ctypes CUDA wrapper (``polygraphy.cuda``), so no
CUDA Python package, PyCUDA or torch is needed. TensorRT-RTX compiles kernels for the GPU at first
load; they are kept in a runtime cache ``<engine>.runtime-cache`` for the next start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EngineMismatchError, SgfError, require
from ..base import INPUT_NAMES, OUTPUT_NAME, Runner
from ..manifest import EngineManifest
from ..identity import TRT_MODULES, backend_label, gpu_devices, import_trt, normalize_targets


def no_gpu_message(engine_path: Path, backend: str, device: dict[str, Any]) -> str:
    if backend == "tensorrt-rtx":
        targets = ", ".join(device.get("targets") or [])
        return (f"{engine_path}: engine built for TensorRT-RTX targets [{targets}] needs an NVIDIA RTX-class GPU; "
                "none found (no NVIDIA driver/GPU visible); use an ONNX Runtime engine on this machine")
    return (f"{engine_path}: engine built for {device.get('name', 'an NVIDIA GPU')} (compute capability "
            f"{device.get('compute_capability', '?')}) with TensorRT needs that GPU; none found")


def check_compatible(engine_path: Path, manifest: EngineManifest) -> tuple[Any, dict[str, Any]]:
    """(backend module, the GPU to use) or EngineMismatchError / MissingDependencyError."""
    backend = manifest.backend
    label = backend_label(backend)
    device = manifest.device
    built = manifest.backend_version
    gpus = gpu_devices()
    if not gpus:
        raise EngineMismatchError(no_gpu_message(engine_path, backend, device))
    trt = import_trt(backend, f"running {label} engines")
    if str(trt.__version__) != built:
        raise EngineMismatchError(
            f"{engine_path}: engine built with {label} {built}, this machine has {label} {trt.__version__} "
            "(engines are not portable across versions); rebuild it with sgf-deploy build"
        )
    if backend == "tensorrt-rtx":
        targets = set(normalize_targets(device.get("targets") or []))
        usable = [g for g in gpus if g["sm"] in targets]
        if not usable:
            raise EngineMismatchError(
                f"{engine_path}: engine built for TensorRT-RTX targets [{', '.join(sorted(targets))}]; this machine's "
                f"GPU is {gpus[0]['name']} ({gpus[0]['sm']}); rebuild with sgf-deploy build --targets {gpus[0]['sm'].lower()}"
            )
        return trt, usable[0]
    usable = [g for g in gpus if g["compute_capability"] == str(device.get("compute_capability"))]
    if not usable:
        raise EngineMismatchError(
            f"{engine_path}: engine built for {device.get('name')} (compute capability {device.get('compute_capability')}); "
            f"this machine has {gpus[0]['name']} (compute capability {gpus[0]['compute_capability']}); "
            "TensorRT engines are tied to the GPU architecture: rebuild it here with sgf-deploy build"
        )
    return trt, usable[0]


class TrtRunner(Runner):
    """Polygraphy-style runner: deserialize once, allocate per shape, ``infer`` synchronously."""

    def __init__(self, engine_path: str | Path, manifest: EngineManifest, threads: int | None = None) -> None:
        super().__init__(engine_path, manifest)
        self.backend = manifest.backend
        label = backend_label(self.backend)
        self.trt, self.gpu = check_compatible(self.engine_path, manifest)
        self.cuda = require("polygraphy.cuda", "trt", f"running {label} engines (device buffers)")
        trt = self.trt
        from .builder import make_logger

        self.logger = make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        blob = self.engine_path.read_bytes()
        if hasattr(self.runtime, "get_engine_validity"):
            validity = self.runtime.get_engine_validity(blob)
            status = validity[0] if isinstance(validity, tuple) else validity
            if "VALID" != str(status).rsplit(".", 1)[-1]:
                raise EngineMismatchError(
                    f"{self.engine_path}: {label} {trt.__version__} reports this engine as {str(status).rsplit('.', 1)[-1]} "
                    f"for {self.gpu['name']} ({self.gpu['sm']}); rebuild it with sgf-deploy build"
                )
        self.engine = self.runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            errors = self.logger.errors()
            raise EngineMismatchError(
                f"{self.engine_path}: {label} {trt.__version__} could not load this engine on {self.gpu['name']}"
                + (f" ({errors[0][:200]})" if errors else "") + "; rebuild it with sgf-deploy build"
            )
        self.runtime_cache_path = self.engine_path.with_name(self.engine_path.name + ".runtime-cache")
        self.runtime_cache = None
        if self.backend == "tensorrt-rtx" and hasattr(self.engine, "create_runtime_config"):
            config = self.engine.create_runtime_config()
            self.runtime_cache = config.create_runtime_cache()
            if self.runtime_cache_path.is_file():
                self.runtime_cache.deserialize(self.runtime_cache_path.read_bytes())
            config.set_runtime_cache(self.runtime_cache)
            self.context = self.engine.create_execution_context(config)
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise SgfError(f"{self.engine_path}: could not create an execution context on {self.gpu['name']}")
        self.stream = self.cuda.Stream()
        self.buffers: dict[str, Any] = {}

    def _buffer(self, name: str, shape: tuple[int, ...]):
        buf = self.buffers.get(name)
        if buf is None:
            buf = self.cuda.DeviceArray(shape=shape, dtype=np.float32)
            self.buffers[name] = buf
        elif tuple(buf.shape) != tuple(shape):
            buf.resize(shape)
        return buf

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        ref, tar = self.check_inputs(reference, target)
        for name, host in zip(INPUT_NAMES, (ref, tar)):
            self.context.set_input_shape(name, host.shape)
            buf = self._buffer(name, host.shape)
            buf.copy_from(host, stream=self.stream)
            self.context.set_tensor_address(name, buf.ptr)
        out_shape = tuple(self.context.get_tensor_shape(OUTPUT_NAME))
        out = self._buffer(OUTPUT_NAME, out_shape)
        self.context.set_tensor_address(OUTPUT_NAME, out.ptr)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise SgfError(f"{self.engine_path}: inference failed ({'; '.join(self.logger.errors())[:200]})")
        host = np.empty(out_shape, dtype=np.float32)
        out.copy_to(host, stream=self.stream)
        self.stream.synchronize()
        return host

    def close(self) -> None:
        if self.runtime_cache is not None:
            try:
                from ...artifacts import write_bytes_atomic

                write_bytes_atomic(self.runtime_cache_path, bytes(self.runtime_cache.serialize()), overwrite=True)
            except Exception:  # noqa: BLE001 - a cache that can't be saved only costs start-up time
                pass
            self.runtime_cache = None
        for buf in self.buffers.values():
            buf.free()
        self.buffers = {}
        if getattr(self, "stream", None) is not None:
            self.stream.free()
            self.stream = None
        self.context = None
        self.engine = None


__all__ = ["TrtRunner", "check_compatible", "TRT_MODULES"]
