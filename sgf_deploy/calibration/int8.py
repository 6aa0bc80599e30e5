"""INT8 post-training quantization into explicit Q/DQ nodes (TensorRT 11 / TensorRT-RTX have no
INT8 builder flag or calibrator classes: the scales live in the ONNX file).

Default quantizer: ONNX Runtime ``quantize_static`` in QDQ format, per-channel symmetric int8
weights, activations as below, biases left in float (``QuantizeBias: False``; TensorRT rejects an
int32 bias: "DequantizeLinear input has type Int32"), calibration method entropy / max
(``CalibrationMethod.MinMax``) / percentile. Left in float by default: MCNS, the attention
(MatMul/Softmax) and the node producing the output (the residual Add); more nodes by pattern
(:mod:`.patterns`).

Activation type (evidence: ``benchmarks/int8_vs_fp32.py`` and the numbers below, trained default
``lite`` model, 8 held-out simulated slices, PSNR vs PyTorch / change of PSNR vs ground truth):

* engines for **TensorRT / TensorRT-RTX** get int8 activations with zero point 0 (symmetric): the
  only Q/DQ form TensorRT accepts for INT8 (entropy: 45.6 dB / -0.28 dB);
* engines for **ONNX Runtime** get uint8 activations with a calibrated zero point (asymmetric):
  49.0 dB / -0.06 dB, against 45.5 dB / -0.27 dB for symmetric uint8 (zero point 128), at the same
  speed. The activations after LeakyReLU are mostly positive, so a symmetric range wastes almost
  one bit. int8 (s8s8) activations run 2-3x *slower* than uint8 in ONNX Runtime on x86 (its fast
  QLinearConv kernels are u8s8), with the same accuracy as symmetric uint8.

``activation_type`` overrides the choice: ``int8`` (symmetric, zero point 0), ``uint8``
(symmetric, zero point 128) or ``uint8-asym``. Weights are always int8, symmetric, per channel.

ModelOpt (``--quantizer modelopt``) is optional and imported only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError, SgfError, require
from .dataset import CalibrationSet
from .patterns import DEFAULT_INT8_EXCLUDE, parse_patterns, select_nodes, unmatched

CALIB_METHODS: tuple[str, ...] = ("entropy", "max", "percentile")
QUANTIZERS: tuple[str, ...] = ("ort", "modelopt")
ACTIVATION_TYPES: tuple[str, ...] = ("auto", "int8", "uint8", "uint8-asym")


def activation_type_for(backend: str, requested: str = "auto") -> str:
    if requested not in ACTIVATION_TYPES:
        raise InputError(f"activation type {requested!r}; choose from {', '.join(ACTIVATION_TYPES)}")
    if requested != "auto":
        if requested == "uint8-asym" and backend != "onnxruntime":
            raise InputError("uint8-asym activations are for ONNX Runtime engines; TensorRT needs symmetric int8 (zero point 0)")
        return requested
    return "uint8-asym" if backend == "onnxruntime" else "int8"


@contextlib.contextmanager
def _quiet_logging():
    """ONNX Runtime's quantizer logs warnings on the root logger and prints progress to stdout."""
    import io

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _stride(n: int, limit: int = 8) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


def quantize_int8(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    calib: str | os.PathLike | CalibrationSet,
    *,
    method: str = "entropy",
    exclude: str | Iterable[str] | None = None,
    keep_fp32: str | Iterable[str] | None = None,
    backend: str = "onnxruntime",
    activation_type: str = "auto",
    quantizer: str = "ort",
    input_shape: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Quantize ``model_path`` with the calibration set ``calib`` into ``out`` (a Q/DQ ONNX file).

    ``backend`` picks the activation type (``activation_type="auto"``, see the module docstring).

    Nodes left in float: ``keep_fp32`` (default ``@mcns,@attention,@input,@output``) plus ``exclude``. Returns
    what was done (for the engine manifest). The result is checked: no DequantizeLinear reads an
    int32 tensor, the MCNS function survived, and for TensorRT every activation zero point is 0."""
    import onnx

    from .reader import CalibrationSetReader

    if method not in CALIB_METHODS:
        raise InputError(f"calibration method {method!r}; choose from {', '.join(CALIB_METHODS)}")
    if quantizer not in QUANTIZERS:
        raise InputError(f"quantizer {quantizer!r}; choose from {', '.join(QUANTIZERS)}")
    model_path, out = Path(model_path), Path(out)
    model = onnx.load(str(model_path))
    had_function = any(f.domain == "sgf" and f.name == "MCNS" for f in model.functions)
    patterns = parse_patterns(keep_fp32, DEFAULT_INT8_EXCLUDE) + parse_patterns(exclude, [])
    patterns = list(dict.fromkeys(patterns))
    excluded = select_nodes(model, patterns)
    reader = CalibrationSetReader(calib, input_shape=input_shape)
    act = activation_type_for(backend, activation_type)

    if quantizer == "modelopt":
        info = _quantize_modelopt(model_path, out, reader, method, excluded)
    else:
        info = _quantize_ort(model_path, out, reader, method, excluded, act)

    quantized = onnx.load(str(out))
    check = check_qdq(quantized, require_int8_zero_point=backend != "onnxruntime")
    if had_function and not any(f.domain == "sgf" and f.name == "MCNS" for f in quantized.functions):
        raise RuntimeError("INT8 quantization dropped the sgf::MCNS FunctionProto")
    info.update({
        "calibration_method": method,
        "calibration_set": reader.set.describe(),
        "float_patterns": patterns,
        "unmatched_patterns": unmatched(model, patterns),
        "float_nodes": excluded,
        "qdq": check,
    })
    return info


def _quantize_ort(model_path: Path, out: Path, reader: Any, method: str, excluded: list[str], act: str) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    extra = {
        "ActivationSymmetric": act != "uint8-asym",
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT: "DequantizeLinear input has type Int32"
        "CalibStridedMinMax": _stride(len(reader)),  # strided collection: bounded memory, any method
    }
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    with _quiet_logging():
        quantize_static(
            str(model_path),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8 if act == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            calibrate_method=methods[method],
            extra_options=extra,
        )
    import onnxruntime

    return {
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ)",
        "quantizer_version": onnxruntime.__version__,
        "activations": {"int8": "int8, symmetric (zero point 0)", "uint8": "uint8, symmetric (zero point 128)",
                        "uint8-asym": "uint8, asymmetric (calibrated zero point)"}[act],
        "weights": "int8, symmetric, per channel",
        "bias": "float (not quantized)",
        "extra_options": extra,
    }


def _quantize_modelopt(model_path: Path, out: Path, reader: Any, method: str, excluded: list[str]) -> dict[str, Any]:
    if method == "percentile":
        raise InputError("--quantizer modelopt supports --calib-method entropy or max, not percentile")
    mq = require("modelopt.onnx.quantization", "modelopt", "INT8 quantization with --quantizer modelopt")
    data = reader.stacked()
    with _quiet_logging():
        mq.quantize(
            onnx_path=str(model_path),
            quantize_mode="int8",
            calibration_data=data,
            calibration_method=method,
            calibration_eps=["cpu"],
            nodes_to_exclude=[f"^{re.escape(n)}$" for n in excluded],
            high_precision_dtype="fp32",
            output_path=str(out),
        )
    if not out.is_file():
        raise SgfError(f"{model_path}: ModelOpt quantization wrote no output")
    return {
        "quantizer": "modelopt.onnx.quantization.quantize(quantize_mode='int8')",
        "quantizer_version": getattr(__import__("modelopt"), "__version__", None),
        "activations": "int8, symmetric (ModelOpt)",
        "weights": "int8, symmetric, per channel (ModelOpt)",
        "bias": "as ModelOpt leaves it",
    }


def check_qdq(model: Any, require_int8_zero_point: bool = False) -> dict[str, Any]:
    """Inspect the Q/DQ nodes of a quantized model. Raises if a DequantizeLinear reads an int32
    tensor (a quantized bias: TensorRT refuses it) or, for TensorRT, if an activation zero point
    is not int8 0."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    constants = {}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute:
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = attr.t
    tensors = {**constants, **inits}
    counts = Counter(n.op_type for n in model.graph.node)
    int32_dq = []
    bad_zero_points = []
    zero_point_types = Counter()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            src = tensors.get(node.input[0])
            if src is not None and src.data_type == TensorProto.INT32:
                int32_dq.append(node.name or node.output[0])
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = tensors.get(node.input[2])
            if zp is None:
                continue
            zero_point_types[TensorProto.DataType.Name(zp.data_type)] += 1
            if require_int8_zero_point and (zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0)):
                bad_zero_points.append(node.name or node.output[0])
    if int32_dq:
        raise SgfError(
            f"quantized model has {len(int32_dq)} DequantizeLinear node(s) reading int32 tensors (quantized biases, "
            f"e.g. {int32_dq[0]}); TensorRT rejects them"
        )
    if bad_zero_points:
        raise SgfError(
            f"quantized model has {len(bad_zero_points)} Q/DQ node(s) with a non-zero or non-int8 zero point "
            f"(e.g. {bad_zero_points[0]}); TensorRT needs symmetric int8"
        )
    return {
        "quantize_linear": int(counts.get("QuantizeLinear", 0)),
        "dequantize_linear": int(counts.get("DequantizeLinear", 0)),
        "int32_dequantize_inputs": 0,
        "zero_point_types": dict(zero_point_types),
    }
