"""Run an ONNX Runtime engine (the saved optimised model)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ...errors import EngineMismatchError
from ..base import INPUT_NAMES, OUTPUT_NAME, Runner
from ..manifest import EngineManifest
from ..identity import gpu_devices
from .builder import LOAD_LEVEL, session_options


def check_compatible(engine_path: Path, manifest: EngineManifest) -> None:
    """Same ONNX Runtime version, execution provider available, same CPU architecture / a GPU."""
    import onnxruntime as ort

    built = manifest.backend_version
    if built != ort.__version__:
        raise EngineMismatchError(
            f"{engine_path}: engine built with ONNX Runtime {built}, this machine has ONNX Runtime {ort.__version__} "
            "(optimised models are tied to the ONNX Runtime version); rebuild it with sgf-deploy build"
        )
    device = manifest.device
    provider = manifest.execution_provider
    available = ort.get_available_providers()
    if provider not in available:
        raise EngineMismatchError(
            f"{engine_path}: engine built for ONNX Runtime's {provider}, which this installation lacks "
            f"(available: {', '.join(available)}); install onnxruntime-gpu or rebuild it here with sgf-deploy build"
        )
    if device.get("kind") == "cuda" and not gpu_devices():
        raise EngineMismatchError(f"{engine_path}: engine built for {device.get('name', 'an NVIDIA GPU')} (CUDA); no NVIDIA GPU found")
    arch = device.get("arch")
    if device.get("kind") == "cpu" and arch and arch != platform.machine():
        raise EngineMismatchError(
            f"{engine_path}: engine built on a {arch} CPU ({device.get('name')}), this machine is {platform.machine()}; "
            "rebuild it with sgf-deploy build"
        )


class OrtRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, engine_path: str | Path, manifest: EngineManifest, threads: int | None = None) -> None:
        super().__init__(engine_path, manifest)
        import onnxruntime as ort

        check_compatible(self.engine_path, manifest)
        provider = manifest.execution_provider
        providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
        if threads is None:
            threads = manifest.build_options.get("threads")
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(self.engine_path), session_options(LOAD_LEVEL, threads), providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise EngineMismatchError(
                f"{self.engine_path}: ONNX Runtime {ort.__version__} cannot load this engine "
                f"({str(exc).splitlines()[0][:200]}); rebuild it with sgf-deploy build"
            ) from None

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        ref, tar = self.check_inputs(reference, target)
        out = self.session.run([OUTPUT_NAME], {INPUT_NAMES[0]: ref, INPUT_NAMES[1]: tar})[0]
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None
