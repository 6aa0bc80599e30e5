"""FP16 conversion of an exported ONNX file (precision lives in the file: TensorRT 11 and
TensorRT-RTX build strongly typed networks, so there is no FP16 builder flag to set).

onnxconverter-common's ``convert_float_to_float16`` with ``keep_io_types=True`` (inputs and output
stay float32) and a block list: the ``sgf.MCNS`` op type (a custom-domain node the converter
cannot type; without it conversion fails), onnxconverter-common's ``DEFAULT_OP_BLOCK_LIST``, and
the nodes selected by ``keep_fp32`` (default: MCNS, normalisation, softmax/attention, output head;
see :mod:`.patterns`). Casts are inserted at the boundaries. The MCNS ``FunctionProto`` is left
untouched (its body stays float32) and is checked to survive.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from ..errors import InputError
from .patterns import DEFAULT_KEEP_FP32, parse_patterns, select_nodes, unmatched

MCNS_DOMAIN, MCNS_OP = "sgf", "MCNS"


def has_mcns_function(model: Any) -> bool:
    return any(f.domain == MCNS_DOMAIN and f.name == MCNS_OP for f in model.functions)


def convert_fp16(
    model: str | os.PathLike | Any,
    out: str | os.PathLike | None = None,
    *,
    keep_fp32: str | Iterable[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Convert ``model`` (path or ``onnx.ModelProto``) to FP16; returns (ModelProto, info) and
    writes ``out`` if given. ``info`` records what stayed FP32 (for the engine manifest)."""
    import onnx
    from onnxconverter_common import float16

    source = model if not isinstance(model, (str, os.PathLike)) else None
    if source is None:
        path = Path(model)
        try:
            source = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise assorted types
            raise InputError(f"{path}: not a readable ONNX file ({str(exc)[:120]})") from None
    patterns = parse_patterns(keep_fp32, DEFAULT_KEEP_FP32)
    if "@mcns" not in patterns:
        patterns = ["@mcns"] + patterns  # the converter cannot type a custom-domain node
    blocked = select_nodes(source, patterns)
    op_block_list = sorted(set([MCNS_OP] + list(float16.DEFAULT_OP_BLOCK_LIST)))
    had_function = has_mcns_function(source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            copy.deepcopy(source),
            keep_io_types=True,
            op_block_list=op_block_list,
            node_block_list=blocked,
        )
    truncated = sum(1 for w in caught if "truncated" in str(w.message))
    if had_function and not has_mcns_function(converted):
        raise RuntimeError("FP16 conversion dropped the sgf::MCNS FunctionProto")
    fixed_outputs = _fix_output_casts(converted, source)
    restored = _restore_fp32_weights(converted, source)
    for inp in list(converted.graph.input) + list(converted.graph.output):
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise RuntimeError(f"FP16 conversion changed the type of I/O tensor {inp.name}")
    ops = Counter(n.op_type for n in converted.graph.node)
    info = {
        "converter": "onnxconverter-common float16.convert_float_to_float16(keep_io_types=True)",
        "converter_version": _version("onnxconverter_common"),
        "keep_fp32": patterns,
        "unmatched_patterns": unmatched(source, patterns),
        "fp32_nodes": blocked,
        "op_block_list": op_block_list,
        "casts_inserted": int(ops.get("Cast", 0)),
        "fp16_initializers": sum(1 for t in converted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16),
        "weights_truncated_to_fp16_range": truncated,
        "mcns_function_kept": has_mcns_function(converted),
        "fp32_weights_restored": restored,
        "output_casts_fixed": fixed_outputs,
    }
    if out is not None:
        onnx.save(converted, str(out))
    return converted, info


def _fix_output_casts(model: Any, source: Any) -> int:
    """onnxconverter-common bug: when the node producing a graph output is blocked (kept FP32,
    e.g. the output head), ``keep_io_types`` still appends a Cast *to float16* before the float32
    output. A Cast that produces a float32 graph output must cast to float32."""
    from onnx import TensorProto

    outputs = {o.name for o in source.graph.output if o.type.tensor_type.elem_type == TensorProto.FLOAT}
    fixed = 0
    for out in model.graph.output:
        if out.name in outputs and out.type.tensor_type.elem_type != TensorProto.FLOAT:
            out.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in outputs:
            for attr in node.attribute:
                if attr.name == "to" and attr.i != TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT
                    fixed += 1
    return fixed


def _restore_fp32_weights(model: Any, source: Any) -> int:
    """The converter turns every float initializer into float16 and, for a node kept in FP32,
    inserts ``Cast(to=float)`` after it: the node computes in FP32 on FP16-rounded weights. Give
    such nodes their original FP32 weights instead (a separate ``<name>__fp32`` initializer when
    FP16 nodes share the weight, as the shared encoder/decoder blocks of SGF-MRI do)."""
    from onnx import TensorProto

    original = {t.name: t for t in source.graph.initializer if t.data_type == TensorProto.FLOAT}
    inits = {t.name: t for t in model.graph.initializer}
    graph = model.graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    restored = 0
    drop = []
    for node in list(graph.node):
        if node.op_type != "Cast" or not node.input or node.input[0] not in original:
            continue
        init = inits.get(node.input[0])
        if init is None or init.data_type != TensorProto.FLOAT16:
            continue
        if not any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute):
            continue
        fp32_name = node.input[0] + "__fp32"
        if fp32_name not in inits:
            copy_ = copy.deepcopy(original[node.input[0]])
            copy_.name = fp32_name
            graph.initializer.append(copy_)
            inits[fp32_name] = copy_
        for user in consumers.get(node.output[0], []):
            for i, name in enumerate(user.input):
                if name == node.output[0]:
                    user.input[i] = fp32_name
        drop.append(node)
        restored += 1
    for node in drop:
        graph.node.remove(node)
    still_used = {name for node in graph.node for name in node.input}
    for t in [t for t in graph.initializer if t.data_type == TensorProto.FLOAT16 and t.name not in still_used]:
        graph.initializer.remove(t)
    return restored


def _version(module: str) -> str | None:
    try:
        import importlib.metadata as md

        return md.version(module.replace("_", "-"))
    except Exception:  # noqa: BLE001
        return None
