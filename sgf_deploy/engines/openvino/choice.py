"""``build --backend auto`` on a CPU: OpenVINO or ONNX Runtime, whichever is measured faster here.

The measurement: the FP32 model (the exported ONNX) at 1x1x256x256 in both runtimes with the
build's thread count, 1 warm-up and 5 interleaved timed calls each, medians compared. It is
recorded in ``<engines folder>/.cpu-backend-choice.json``, keyed by the CPU, the thread count and
both runtimes' versions, and reused by later builds in that folder. FP32 stands in for INT8 too
(both runtimes' INT8 speed follows the same kernels' quality on a CPU; ``sgf-deploy bench --all``
measures each precision). A precision OpenVINO cannot run natively on this CPU (FP16 without
avx512_fp16 / amx_fp16) stays with ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

RECORD = ".cpu-backend-choice.json"
SIZE = 256
REPEATS = 5


def _key(threads: int | None) -> dict[str, Any]:
    import onnxruntime
    import openvino

    from .builder import ov_device

    dev = ov_device()
    return {"cpu": dev.get("name"), "cores": dev.get("cores"), "isa": dev.get("isa"), "threads": threads,
            "onnxruntime": onnxruntime.__version__, "openvino": str(openvino.__version__).split("-")[0]}


def measure(onnx_path: str | Path, threads: int | None) -> dict[str, Any]:
    """Median ms per call of both runtimes on the FP32 model, interleaved."""
    import tempfile

    import onnxruntime as ort
    import openvino as ov

    from ..onnxruntime.builder import LOAD_LEVEL, session_options
    from .builder import compile_config, inline_for_openvino

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, SIZE, SIZE), dtype=np.float32)
    feed = {"reference": x, "target": np.ascontiguousarray(x[..., ::-1])}
    session = ort.InferenceSession(str(onnx_path), session_options(LOAD_LEVEL, threads), providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        inlined = Path(tmp) / "inlined.onnx"
        inline_for_openvino(onnx_path, inlined)
        core = ov.Core()
        model = core.read_model(str(inlined))
        model.reshape({k: list(v.shape) for k, v in feed.items()})
        request = core.compile_model(model, "CPU", compile_config(threads)).create_infer_request()
    calls = {"onnxruntime": lambda: session.run(None, feed), "openvino": lambda: request.infer(feed)}
    times: dict[str, list[float]] = {k: [] for k in calls}
    for fn in calls.values():
        fn()
    for rep in range(REPEATS):
        for name in (list(calls) if rep % 2 == 0 else list(calls)[::-1]):
            t0 = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(v)) for name, v in times.items()}


def read_record(record_dir: str | Path) -> dict[str, Any] | None:
    """The engines folder's recorded measurement (None: absent or unreadable)."""
    try:
        record = json.loads((Path(record_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def choose_cpu_backend(onnx_path: str | Path, precision: str, record_dir: Path, threads: int | None = None) -> str:
    """``openvino`` when it is installed, runs ``precision`` natively and was measured faster here."""
    if importlib.util.find_spec("openvino") is None:
        return "onnxruntime"
    if precision == "fp16":
        from .builder import fp16_problem, ov_device

        if fp16_problem(ov_device()):
            return "onnxruntime"
    key = _key(threads)
    path = Path(record_dir) / RECORD
    record = read_record(record_dir)
    if record is not None and record.get("key") != key:
        record = None
    if record is None:
        ms = measure(onnx_path, threads)
        record = {"key": key, "ms_per_call": ms, "size": SIZE, "onnx": Path(onnx_path).name,
                  "choice": "openvino" if ms["openvino"] < ms["onnxruntime"] else "onnxruntime",
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            from ...artifacts import write_json_atomic

            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, record, overwrite=True)
        except OSError:
            pass
    return str(record["choice"])
