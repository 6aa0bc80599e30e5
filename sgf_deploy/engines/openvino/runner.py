"""Run an OpenVINO engine (IR ``.xml`` + ``.bin``) on the CPU.

Shape specialisation: OpenVINO's CPU plugin runs a dynamic-shape model through shape inference
and a memory allocation on every call. The runner compiles a copy of the model reshaped to each
input shape it meets (at most :data:`MAX_SHAPES`, least recently used dropped): the graph is then
static, and the infer request's tensors are allocated once per shape, not per call. A stack of
one series has one shape, so this costs one compilation per series (about 1 s for ``lite``).
``SGF_OV_DYNAMIC=1`` keeps the single dynamic compilation (for comparison).
"""

from __future__ import annotations

import os
import platform
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EngineMismatchError
from ..base import INPUT_NAMES, Runner
from ..manifest import EngineManifest
from .builder import compile_config, import_openvino

MAX_SHAPES = 4
DYNAMIC_ENV = "SGF_OV_DYNAMIC"


def check_compatible(engine_path: Path, manifest: EngineManifest) -> Path:
    """Same OpenVINO version and CPU architecture; the weights file present and unchanged.
    Returns the weights path."""
    from ...artifacts import sha256_file

    ov = import_openvino("OpenVINO engines")
    here = str(ov.__version__).split("-")[0]
    if manifest.backend_version != here:
        raise EngineMismatchError(
            f"{engine_path}: engine built with OpenVINO {manifest.backend_version}, this machine has OpenVINO {here}; "
            "rebuild it with sgf-deploy build --backend openvino")
    arch = (manifest.device or {}).get("arch")
    if arch and arch != platform.machine():
        raise EngineMismatchError(f"{engine_path}: engine built on a {arch} CPU, this machine is {platform.machine()}; "
                                  "rebuild it with sgf-deploy build --backend openvino")
    options = manifest.build_options or {}
    weights = engine_path.with_name(str(options.get("weights_file") or engine_path.with_suffix(".bin").name))
    if not weights.is_file():
        raise EngineMismatchError(f"{engine_path}: its weights file {weights.name} is missing (an OpenVINO engine is the "
                                  ".xml and the .bin beside it)")
    expected = options.get("weights_sha256")
    if not expected or sha256_file(weights) != expected:
        raise EngineMismatchError(f"{weights}: weights file changed since the engine was built (sha256 does not match "
                                  "the manifest); rebuild the engine")
    return weights


class OvRunner(Runner):
    backend = "openvino"

    def __init__(self, engine_path: str | Path, manifest: EngineManifest, threads: int | None = None,
                 static_shapes: bool | None = None) -> None:
        super().__init__(engine_path, manifest)
        ov = import_openvino("OpenVINO engines")
        weights = check_compatible(self.engine_path, manifest)
        if threads is None:
            threads = (manifest.build_options or {}).get("threads")
        self.threads = threads
        self.static_shapes = (os.environ.get(DYNAMIC_ENV, "0") != "1") if static_shapes is None else bool(static_shapes)
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.engine_path), str(weights))
            self._dynamic = None if self.static_shapes else self.core.compile_model(self.model, "CPU", compile_config(threads))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
            raise EngineMismatchError(f"{self.engine_path}: OpenVINO {ov.__version__} cannot load this engine "
                                      f"({str(exc).splitlines()[0][:200]}); rebuild it with sgf-deploy build") from None
        self._requests: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def _request(self, shape: tuple[int, ...]) -> Any:
        if not self.static_shapes:
            if not self._requests:
                self._requests[()] = self._dynamic.create_infer_request()
            return self._requests[()]
        request = self._requests.get(shape)
        if request is None:
            model = self.model.clone()
            model.reshape({name: list(shape) for name in INPUT_NAMES})
            request = self.core.compile_model(model, "CPU", compile_config(self.threads)).create_infer_request()
            self._requests[shape] = request
            while len(self._requests) > MAX_SHAPES:
                self._requests.popitem(last=False)
        self._requests.move_to_end(shape)
        return request

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        ref, tar = self.check_inputs(reference, target)
        request = self._request(tuple(tar.shape))
        request.infer({INPUT_NAMES[0]: ref, INPUT_NAMES[1]: tar}, share_inputs=True)
        return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._requests.clear()
        self._dynamic = None
        self.model = None
