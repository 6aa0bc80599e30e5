"""Build an OpenVINO engine: inline the MCNS function, convert, quantise (INT8), save the IR.

Why inlining, not an OpenVINO extension: OpenVINO's ONNX frontend does not expand model-local
FunctionProtos (DESIGN.md section 7), and an extension would be C++ to compile and ship per
platform. ``onnx.inliner.inline_local_functions`` replaces every ``sgf.MCNS`` call by the
function's standard ops (the same ops ONNX Runtime runs); the result equals ONNX Runtime to
~130-150 dB. The inlined nodes are named ``<call node>/mcns/<i>`` so that the node patterns of
:mod:`sgf_deploy.calibration.patterns` (``@mcns`` = the call node) still select them.

The engine file is the IR's ``.xml``; its weights ``.bin`` lie beside it and their SHA-256 is in
the manifest (``build_options.weights_sha256``), checked at load like the engine's own.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from ...cpu import cpu_flags
from ...errors import SgfError, require
from ..identity import cpu_device

#: CPU flags that decide what OpenVINO's CPU plugin can use (recorded with the device).
ISA_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                              "amx_int8", "avx512_fp16", "amx_fp16")


def import_openvino(purpose: str) -> Any:
    """``openvino`` or a one-line install hint (extra ``[openvino]``)."""
    return require("openvino", "openvino", purpose)


def ov_device() -> dict[str, Any]:
    """The CPU with the instruction-set flags OpenVINO's CPU plugin cares about."""
    flags = cpu_flags()
    return dict(cpu_device(), execution_provider="CPU", isa=[f for f in ISA_FLAGS if f in flags])


def fp16_problem(device: dict[str, Any]) -> str | None:
    """Why an FP16 OpenVINO engine makes no sense on this CPU (None when it does)."""
    isa = set(device.get("isa") or [])
    if isa & {"avx512_fp16", "amx_fp16"}:
        return None
    return (f"this CPU ({device.get('name')}) has no FP16 arithmetic (avx512_fp16 / amx_fp16); OpenVINO would "
            "compute in FP32 anyway: build --fp32 or --int8 with --backend openvino")


def name_mcns_calls(original: Any, inlined: Any) -> int:
    """Give the nodes the inliner produced (it leaves them unnamed) the name of the call they came
    from: ``<call>/mcns/<i>``. The inliner replaces each call in place, in graph order."""
    calls = [n.name for n in original.graph.node if n.domain == "sgf" and n.op_type == "MCNS"]
    kept = {n.name for n in original.graph.node if not (n.domain == "sgf" and n.op_type == "MCNS")}
    call_index, count, current, inside = -1, 0, None, False
    for node in inlined.graph.node:
        if node.name and node.name in kept:
            inside = False
            continue
        if not inside:
            call_index += 1
            inside = True
            current = calls[min(call_index, len(calls) - 1)] if calls else "sgf_function"
        node.name = f"{current}/mcns/{count}"
        count += 1
    return count


def inline_for_openvino(onnx_path: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``onnx_path`` with its model-local functions inlined to ``out``."""
    import onnx
    import onnx.inliner

    model = onnx.load(str(onnx_path))
    calls = sum(1 for n in model.graph.node if n.domain == "sgf")
    inlined = onnx.inliner.inline_local_functions(model)
    named = name_mcns_calls(model, inlined)
    del inlined.functions[:]
    kept = [o for o in inlined.opset_import if o.domain != "sgf"]
    del inlined.opset_import[:]
    inlined.opset_import.extend(kept)
    onnx.save(inlined, str(out))
    return {"mcns": f"sgf::MCNS function inlined ({calls} call(s) -> {named} standard ONNX nodes) before conversion",
            "inlined_nodes": named}


def read_model(path: str | Path) -> Any:
    ov = import_openvino("OpenVINO engines")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own exception types
        raise SgfError(f"{path}: OpenVINO could not read the model ({str(exc).splitlines()[0][:200]})") from None


def compile_config(threads: int | None) -> dict[str, Any]:
    """CPU plugin options: latency hint (one stream, all threads on one request), thread count."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def save_ir(model: Any, out_path: Path) -> Path:
    """Save ``model`` as ``out_path`` (.xml) + its .bin (weights uncompressed: FP32 stays FP32)."""
    ov = import_openvino("OpenVINO engines")
    ov.save_model(model, str(out_path), compress_to_fp16=False)
    weights = out_path.with_suffix(".bin")
    if not out_path.is_file() or not weights.is_file():
        raise SgfError(f"{out_path}: OpenVINO wrote no IR")
    return weights


def build(model: Any, out_path: str | Path, *, threads: int | None = None) -> dict[str, Any]:
    """Save the (converted, possibly quantised) OpenVINO ``model`` as the engine IR at
    ``out_path`` and check that it compiles for the CPU with the expected inputs and output."""
    from ...artifacts import sha256_file

    ov = import_openvino("OpenVINO engines")
    out_path = Path(out_path)
    weights = save_ir(model, out_path)
    try:
        compiled = ov.Core().compile_model(str(out_path), "CPU", compile_config(threads))
    except Exception as exc:  # noqa: BLE001
        raise SgfError(f"{out_path}: OpenVINO could not compile the engine ({str(exc).splitlines()[0][:200]})") from None
    names = sorted(i.get_any_name() for i in compiled.inputs)
    outs = [o.get_any_name() for o in compiled.outputs]
    if names != ["reference", "target"] or outs != ["reconstruction"]:
        raise SgfError(f"{out_path}: expected inputs reference, target and output reconstruction; got {names} -> {outs}")
    return {
        "execution_provider": "CPU",
        "weights_file": weights.name,
        "weights_sha256": sha256_file(weights),
        "performance_hint": "LATENCY",
        "inference_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "arch": platform.machine(),
    }
