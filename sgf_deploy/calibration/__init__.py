"""Precision conversion for engines: FP16 conversion, INT8 calibration sets and Q/DQ quantization.

Reusable without the CLI and without torch::

    from sgf_deploy.calibration import write_calibration_set, convert_fp16, quantize_int8
    calib = write_calibration_set("sim", n=64, pair="t1-t2", task="recon4x")
    convert_fp16("export/model.onnx", "model.fp16.onnx")
    quantize_int8("export/model.onnx", "model.int8.onnx", calib, method="entropy")

Names are imported lazily (``onnx``/``onnxruntime`` only when used).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "write_calibration_set": "dataset",
    "CalibrationSet": "dataset",
    "find_calibration_set": "dataset",
    "list_calibration_sets": "dataset",
    "calibrate_command_hint": "dataset",
    "default_set_name": "dataset",
    "preprocess_pair": "dataset",
    "CalibrationSetReader": "reader",
    "convert_fp16": "fp16",
    "quantize_int8": "int8",
    "check_qdq": "int8",
    "CALIB_METHODS": "int8",
    "QUANTIZERS": "int8",
    "DEFAULT_KEEP_FP32": "patterns",
    "DEFAULT_INT8_EXCLUDE": "patterns",
    "parse_patterns": "patterns",
    "select_nodes": "patterns",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
