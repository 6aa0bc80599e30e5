"""Helpers for the serving tests (imported as a plain module: tests/ has no packages).

The tests need an engine that loads in milliseconds, so they write a small ONNX model by hand (a
3x3 convolution over [reference, target] plus a skip from the target, through ``tanh``) and its
manifest with the real :class:`~sgf_deploy.engines.EngineManifest` keys; everything the serving
code does with an engine (trust rule, sha256, ``load_engine``, the contract) runs on it exactly
as on a built SGF-MRI engine. Exporting a real network costs about a minute on these CPUs.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tiny_onnx(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((1, 2, 3, 3)) * 0.3).astype(np.float32)
    nodes = [
        helper.make_node("Concat", ["reference", "target"], ["both"], axis=1),
        helper.make_node("Conv", ["both", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["conv"], ["act"]),
        helper.make_node("Add", ["act", "target"], ["reconstruction"]),
    ]
    dims = ["N", 1, "H", "W"]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in ("reference", "target")],
        [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, dims)],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_engine(folder: Path, *, name: str = "tiny.ort.fp32.cpu.dyn.onnx", validated: bool = True,
                backend: str = "onnxruntime", profile: dict | None = None, build_options: dict | None = None,
                suffix_files: dict[str, bytes] | None = None) -> Path:
    """An engine file + manifest. ``backend='onnxruntime'`` writes the runnable tiny model; other
    backends write placeholder bytes (for export-only tests: export never loads the engine)."""
    import onnxruntime as ort

    from sgf_deploy.artifacts import sha256_file
    from sgf_deploy.engines.identity import cpu_device

    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / name
    if backend == "onnxruntime":
        tiny_onnx(engine)
        version = ort.__version__
    else:
        engine.write_bytes(b"not a runnable engine: export-only test " + backend.encode())
        version = "test"
    for file_name, data in (suffix_files or {}).items():
        (folder / file_name).write_bytes(data)
    sha = sha256_file(engine)
    manifest = {
        "format": "sgf-deploy-engine", "format_version": 1, "engine_file": engine.name, "engine_sha256": sha,
        "onnx_sha256": sha, "checkpoint_sha256": "c" * 64, "backend": backend, "backend_version": version,
        "precision": "fp32", "device": dict(cpu_device(), execution_provider="CPUExecutionProvider"),
        "profile": profile or {"min": None, "opt": None, "max": None, "source": "test"},
        "build_options": build_options or {"execution_provider": "CPUExecutionProvider", "threads": 1},
        "built_at": "2026-12-07T00:00:00+00:00", "toolkit_version": "test",
        "model": {"preset": "tiny", "task": "recon4x", "pair": "t1-t2", "size_multiple": 8},
        "build_parity": {},
    }
    if validated:
        manifest["validation"] = {"verdict": "pass", "validated_at": "2026-12-07T00:00:01", "report_sha256": "",
                                  "report_path": ""}
    (folder / (engine.name + ".json")).write_text(json.dumps(manifest))
    return engine


def pair(n: int = 3, h: int = 40, w: int = 44, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A reference/target stack with image-like statistics (positive, smooth + noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.1 * h * w))
    ref = np.stack([base * (100 + 10 * i) + rng.random((h, w)) * 5 for i in range(n)]).astype(np.float32)
    tar = np.stack([base[::-1] * (60 + 5 * i) + rng.random((h, w)) * 8 for i in range(n)]).astype(np.float32)
    return ref, tar
