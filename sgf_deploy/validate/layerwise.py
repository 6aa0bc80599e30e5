"""Layer-wise comparison of an engine's graph against the FP32 model: where does the error jump?

Method (ONNX Runtime on the CPU, one slice, the same normalised padded inputs as the parity run):

1. The FP32 side is a **fresh export of the checkpoint's PyTorch model** (``export_model_proto``:
   in memory, no self-check, same opset and fixed dimensions as the engine), so an ONNX file that
   no longer carries the checkpoint's weights is caught as well (``onnx_vs_checkpoint`` then lists
   the initializers that differ); without torch, the ONNX file the engine was built from. The
   engine side is *the engine's graph*: the engine file itself for ONNX Runtime engines (the saved,
   optimised FP16-converted or Q/DQ-quantised model); for other backends the precision-converted
   ONNX the manifest records, when it does.
2. Candidate tensors: the float outputs of every compute node of the FP32 main graph, in its
   (topological) node order; shape bookkeeping (Shape, Constant, Gather on shapes, ...) and
   integer tensors are skipped. Tensors inside the ``sgf.MCNS`` function are not graph values;
   the MCNS node's output is.
3. Each FP32 tensor ``T`` is matched by name in the engine graph, preferring the value the
   engine's consumers see. The ONNX Runtime quantizer keeps ``T`` and adds
   ``T_QuantizeLinear_Output`` / ``T_DequantizeLinear_Output`` (a graph output ``T`` becomes
   ``T_QuantizeLinear_Input`` -> Q/DQ -> ``T``); ONNX Runtime's optimiser then fuses Q/DQ pairs into
   integer kernels (``QLinearConv``, ``QLinearAdd`` ...) whose outputs are the quantized
   ``T_QuantizeLinear_Output``: those are dequantized here with the graph's own scale and zero
   point. onnxconverter-common's float16 converter keeps names (Casts named ``<node>_cast_to_<T>``);
   ONNX Runtime renames tensors it re-types ``InsertedPrecisionFreeCast_T`` (on a CPU without
   float16 kernels it runs an FP16 model's convolutions in float32 with float16-rounded weights).
   Order tried: ``T_DequantizeLinear_Output``, ``T_QuantizeLinear_Output`` (dequantized), ``T``,
   ``InsertedPrecisionFreeCast_T``, ``T_QuantizeLinear_Input``. FP16 values are compared in
   float64 after casting.
4. All matched tensors are marked as graph outputs (untyped ``ValueInfoProto``: ORT infers the type)
   of copies of both models, both run in ORT, and per tensor: relative L2 error
   ``||e - f|| / ||f||``, max abs error, PSNR with peak ``max|f|``.
5. **First jump**: walking in topological order, the first tensor (after the first) whose relative
   error exceeds ``max(floor, factor x median of the errors of all tensors before it)`` (defaults
   factor 10, floor 1e-3, i.e. about 60 dB). **Added error** of a node: its output's relative
   error minus the largest relative error of its inputs (for inputs fused away in the engine, the
   largest error upstream of them): the error the node itself adds. The report lists the top-5
   tensors by error and the top-5 nodes by added error, and the FP32 node names to keep in higher
   precision (``sgf-deploy build ... --exclude NODE,...`` for INT8, ``--keep-fp32 @default,NODE``
   for FP16): the node itself (and a producer fused into it), or, when the node already runs in
   float and its error comes from quantizing its output for INT8 consumers (measured: the engine
   still computes the float tensor), those consumers. These are candidates to try, not a proof:
   a layer where error appears is not necessarily what moves the final PSNR most; the rebuilt
   engine's validation decides.

The engine graph runs as built (e.g. ``QLinearConv`` integer kernels of an INT8 engine: their
quantized outputs ``T_QuantizeLinear_Output`` are dequantized here with the graph's own scale and
zero point), loaded at ONNX Runtime's basic optimisation level so that the marked names survive;
tensors fused away in the engine (a Conv followed by its activation) are simply not compared. The
last tensor's error is reported as ``final_output``, a cross-check against the parity run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..engines.manifest import EngineManifest
from ..errors import SgfError

__all__ = ["layerwise_compare", "compare_graphs", "find_jump", "SKIP_OPS"]

SKIP_OPS = frozenset({
    "Constant", "ConstantOfShape", "Shape", "Size", "Gather", "GatherElements", "Squeeze", "Unsqueeze",
    "Range", "Equal", "Where", "Expand", "QuantizeLinear", "DequantizeLinear", "Cast", "Identity",
    "CastLike", "NonZero", "Floor", "Ceil",
})
_ALIAS_SUFFIXES = ("_QuantizeLinear_Input", "_DequantizeLinear_Output")
# ONNX Runtime's InsertCastTransformer renames a tensor it re-types (e.g. float16 ops the CPU EP
# runs in float32): T -> InsertedPrecisionFreeCast_T.
_ORT_CAST_PREFIX = "InsertedPrecisionFreeCast_"
DEFAULT_FACTOR = 10.0
DEFAULT_FLOOR = 1e-3
_GAIN_FLOOR = 1e-6


def _onnx():
    from ..errors import require

    return require("onnx", "torch", "layer-wise comparison")


def _ort():
    from ..errors import require

    return require("onnxruntime", "torch", "layer-wise comparison")


def _float_types(model: Any) -> dict[str, int]:
    """tensor name -> ONNX elem type where shape inference knows it (unknown names are absent)."""
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - shape inference is best effort here
        inferred = model
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            out[vi.name] = vi.type.tensor_type.elem_type
    return out


def _is_float(elem: int | None) -> bool:
    from onnx import TensorProto

    return elem is None or elem in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)


def _candidates(model: Any) -> list[tuple[str, Any]]:
    """(tensor, producing node) of the FP32 graph worth comparing, in node order."""
    from onnx import helper

    types = _float_types(model)
    inits = {i.name for i in model.graph.initializer}
    out = []
    # Graph inputs first: an INT8 graph quantizes them, which can be the first loss of precision.
    # Their "node" is the list of consumers (what --keep-fp32/--exclude would name).
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        consumers = [n.name for n in model.graph.node if inp.name in n.input and n.name and n.op_type not in SKIP_OPS]
        out.append((inp.name, helper.make_node("GraphInput", [], [inp.name], name=",".join(consumers) or inp.name)))
    for node in model.graph.node:
        if node.op_type in SKIP_OPS:
            continue
        for name in node.output:
            if name and name not in inits and _is_float(types.get(name)):
                out.append((name, node))
    return out


# Output scale / zero point of quantized ops, by input position (ONNX and com.microsoft schemas).
_Q_OUTPUT_PARAMS = {
    "QuantizeLinear": (1, 2), "QLinearConv": (6, 7), "QLinearMatMul": (6, 7), "QLinearAdd": (6, 7),
    "QLinearMul": (6, 7), "QLinearLeakyRelu": (3, 4), "QLinearSigmoid": (3, 4), "QLinearSoftmax": (3, 4),
    "QLinearAveragePool": (3, 4), "QLinearGlobalAveragePool": (3, 4), "QLinearConcat": (0, 1),
    "QLinearReduceMean": (3, 4), "QLinearWhere": (6, 7),
}


def _quant_params(model: Any, tensor: str) -> tuple[str, str] | None:
    """(scale, zero point) initializer names of a quantized tensor of ``model``.

    The producer's output parameters by schema, else any consumer's: every quantized input of a
    DequantizeLinear / QLinear* op is followed by its scale and zero point."""
    inits = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if tensor in node.output and node.op_type in _Q_OUTPUT_PARAMS:
            i, j = _Q_OUTPUT_PARAMS[node.op_type]
            if len(node.input) > j and node.input[i] in inits and node.input[j] in inits:
                return node.input[i], node.input[j]
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" or node.op_type.startswith("QLinear"):
            for k, name in enumerate(node.input):
                if name == tensor and len(node.input) > k + 2 and node.input[k + 1] in inits and node.input[k + 2] in inits:
                    return node.input[k + 1], node.input[k + 2]
    return None


def _match(engine_model: Any, names: list[str]) -> dict[str, tuple[str, tuple[str, str] | None]]:
    """FP32 tensor name -> (engine tensor, (scale, zero point) if it must be dequantized).

    The value the engine's consumers see is preferred: ``T_DequantizeLinear_Output``, then the
    quantized ``T_QuantizeLinear_Output`` (dequantized here with its scale/zero point), then ``T``
    itself (float or float16), then ``T_QuantizeLinear_Input`` (a renamed graph output)."""
    produced = {o for n in engine_model.graph.node for o in n.output if o}
    produced |= {i.name for i in engine_model.graph.input}
    matched: dict[str, tuple[str, tuple[str, str] | None]] = {}
    for name in names:
        if name + "_DequantizeLinear_Output" in produced:
            matched[name] = (name + "_DequantizeLinear_Output", None)
            continue
        if name + "_QuantizeLinear_Output" in produced:
            params = _quant_params(engine_model, name + "_QuantizeLinear_Output")
            if params is not None:
                matched[name] = (name + "_QuantizeLinear_Output", params)
                continue
        for candidate in (name, _ORT_CAST_PREFIX + name, name + "_QuantizeLinear_Input"):
            if candidate in produced:
                matched[name] = (candidate, None)
                break
    return matched


def _float_twins(engine_model: Any, mapping: dict[str, tuple[str, Any]]) -> dict[str, str]:
    """For tensors matched through a quantized view: the float tensor the engine computed before
    quantizing it (exists when the producing node ran in float and only its consumers are INT8)."""
    produced = {o for n in engine_model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                for o in n.output if o}
    twins = {}
    for name, (engine_name, _) in mapping.items():
        if engine_name != name and engine_name.startswith(name + "_") and "Quantize" in engine_name:
            for candidate in (name, name + "_QuantizeLinear_Input"):
                if candidate in produced:
                    twins[name] = candidate
                    break
    return twins


def _dequantize(model: Any, values: np.ndarray, params: tuple[str, str]) -> np.ndarray:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    scale = numpy_helper.to_array(inits[params[0]]).astype(np.float64)
    zero = numpy_helper.to_array(inits[params[1]]).astype(np.float64)
    if scale.ndim == 1 and scale.size > 1 and values.ndim >= 2:  # per channel (axis 1)
        shape = [1] * values.ndim
        shape[1] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return (values.astype(np.float64) - zero) * scale


def _with_outputs(model: Any, names: list[str]) -> bytes:
    onnx = _onnx()
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            vi = onnx.ValueInfoProto()
            vi.name = name
            m.graph.output.append(vi)
            have.add(name)
    return m.SerializeToString()


def _run(model_bytes: bytes, feeds: dict[str, np.ndarray], names: list[str], threads: int | None) -> dict[str, np.ndarray]:
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # Names must survive: no fusions on top of what the engine build already did.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    missing = sorted(inputs - set(feeds))
    if missing:
        raise SgfError(f"layer-wise comparison: the graph needs inputs {missing}; only {sorted(feeds)} are known")
    values = sess.run(names, {k: v for k, v in feeds.items() if k in inputs})
    return dict(zip(names, values))


def _errors(f: np.ndarray, e: np.ndarray) -> dict[str, Any]:
    f = np.asarray(f, np.float64)
    e = np.asarray(e, np.float64)
    if f.shape != e.shape:
        return {"comparable": False, "why": f"shape {tuple(f.shape)} vs {tuple(e.shape)}"}
    nonfinite = int(e.size - np.count_nonzero(np.isfinite(e)))
    if nonfinite:
        return {"comparable": True, "rel_error": math.inf, "max_abs_error": math.inf, "psnr": -math.inf,
                "nonfinite": nonfinite}
    diff = e - f
    norm = float(np.linalg.norm(f))
    err = float(np.linalg.norm(diff))
    rel = err / norm if norm > 0 else (0.0 if err == 0 else math.inf)
    peak = float(np.max(np.abs(f))) if f.size else 0.0
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    psnr = math.inf if mse == 0 else (10 * math.log10(peak * peak / mse) if peak > 0 else -math.inf)
    return {"comparable": True, "rel_error": rel, "max_abs_error": float(np.max(np.abs(diff))) if diff.size else 0.0,
            "psnr": psnr, "nonfinite": 0}


def find_jump(errors: list[float], factor: float = DEFAULT_FACTOR, floor: float = DEFAULT_FLOOR) -> tuple[int | None, float]:
    """Index >= 1 of the first error > max(floor, factor x median of the errors before it), and that median."""
    for i, err in enumerate(errors):
        if i == 0:
            continue  # no history to jump from
        med = float(np.median(errors[:i]))
        if err > max(floor, factor * med):
            return i, med
    return None, 0.0


def _module_of(node: Any, inits: set[str]) -> str | None:
    """A readable module path from the node's weight name (``net.down.0.weight`` -> ``net.down.0``)."""
    for name in node.input:
        if name in inits and name.endswith(".weight"):
            return name[: -len(".weight")]
    return None


def compare_graphs(fp32_model: Any, engine_model: Any, feeds: dict[str, np.ndarray], *,
                   factor: float = DEFAULT_FACTOR, floor: float = DEFAULT_FLOOR,
                   threads: int | None = None) -> dict[str, Any]:
    """Per-tensor errors of ``engine_model`` against ``fp32_model`` (both ``onnx.ModelProto``)."""
    candidates = _candidates(fp32_model)
    names = [n for n, _ in candidates]
    mapping = _match(engine_model, names)
    if not mapping:
        raise SgfError("layer-wise comparison: no tensor of the FP32 graph was found by name in the engine graph")
    fp_names = [n for n in names if n in mapping]
    fp_vals = _run(_with_outputs(fp32_model, fp_names), feeds, fp_names, threads)
    twins = _float_twins(engine_model, {n: mapping[n] for n in fp_names})
    eng_names = list(dict.fromkeys([mapping[n][0] for n in fp_names] + list(twins.values())))
    raw = _run(_with_outputs(engine_model, eng_names), feeds, eng_names, threads)
    eng_vals: dict[str, np.ndarray] = {}
    for n in fp_names:
        ename, params = mapping[n]
        value = np.asarray(raw[ename])
        if params is not None:
            value = _dequantize(engine_model, value, params)
        elif value.dtype.kind not in "f":
            continue  # an integer tensor that is not a quantized activation: not comparable
        eng_vals[n] = value
    fp_names = [n for n in fp_names if n in eng_vals]
    inits = {i.name for i in fp32_model.graph.initializer}
    producer = {n: node for n, node in candidates}
    stats_of: dict[str, dict[str, Any]] = {}
    for name in fp_names:
        stats = _errors(fp_vals[name], eng_vals[name])
        if stats.get("comparable"):
            stats_of[name] = stats
    # Effective error of every tensor of the FP32 graph, in node order: measured where matched,
    # else the largest effective error of the producer's inputs (initializers count 0). A node's
    # input error is then known even when its inputs were fused away in the engine.
    effective: dict[str, float] = {}
    for inp in fp32_model.graph.input:
        effective[inp.name] = stats_of.get(inp.name, {}).get("rel_error", 0.0)
    for node in fp32_model.graph.node:
        ins = [effective.get(i, 0.0) for i in node.input if i and i not in inits]
        inherited = max(ins) if ins else 0.0
        for out in node.output:
            effective[out] = stats_of[out]["rel_error"] if out in stats_of else inherited
    producers = {o: n for n in fp32_model.graph.node for o in n.output if o}
    consumers: dict[str, list[str]] = {}
    for n in fp32_model.graph.node:
        if n.op_type not in SKIP_OPS and n.name:
            for i in n.input:
                consumers.setdefault(i, []).append(n.name)
    rows: list[dict[str, Any]] = []
    for name in fp_names:
        if name not in stats_of:
            continue
        node = producer[name]
        stats = stats_of[name]
        rel = stats["rel_error"]
        if node.op_type == "GraphInput":
            base = 0.0
        else:
            ins = [effective.get(i, 0.0) for i in node.input if i and i not in inits]
            base = max(ins) if ins else 0.0
        finite = math.isfinite(rel)
        fused = [producers[i] for i in node.input
                 if i and i not in inits and i not in stats_of and i in producers and node.op_type != "GraphInput"]
        rows.append({
            "order": len(rows), "tensor": name, "engine_tensor": mapping[name][0],
            "dequantized": mapping[name][1] is not None, "node": node.name or name,
            "op": node.op_type, "module": _module_of(node, inits),
            "shape": list(np.shape(fp_vals[name])), "rel_error": rel,
            "max_abs_error": stats["max_abs_error"], "psnr": stats["psnr"], "nonfinite": stats["nonfinite"],
            "input_rel_error": base,
            "added": (rel - base) if finite else math.inf,
            "gain": (rel / max(base, _GAIN_FLOOR)) if finite else math.inf,
            # inputs computed by nodes whose own output the engine fused away (e.g. Conv -> LeakyRelu):
            # the error measured here includes theirs
            "fused_inputs_from": [{"node": p.name, "op": p.op_type, "module": _module_of(p, inits)} for p in fused],
        })
        if name in twins:
            before = _errors(fp_vals[name], np.asarray(raw[twins[name]]))
            if before.get("comparable"):
                # the node ran in float; its output is quantized for INT8 consumers
                rows[-1]["float_node"] = True
                rows[-1]["rel_error_before_output_quantization"] = before["rel_error"]
                rows[-1]["consumers"] = consumers.get(name, [])
    if not rows:
        raise SgfError("layer-wise comparison: no comparable tensors (all shapes differed)")
    idx, med = find_jump([r["rel_error"] for r in rows], factor, floor)
    first = None
    if idx is not None:
        first = dict(rows[idx]) | {"median_before": med}
    worst = sorted(rows, key=lambda r: -r["rel_error"])[:5]
    top_added = sorted((r for r in rows if r["added"] > 0), key=lambda r: -r["added"])[:5]
    return {
        "run": True,
        "tensors_compared": len(rows),
        "tensors_unmatched": len(names) - len(rows),
        "rule": {"first_jump": f"first tensor after the first (topological order) with relative L2 error > "
                               f"max({floor:g}, {factor:g} x median of the errors of all tensors before it)",
                 "added": "relative error of a node's output minus the largest (effective) relative error of its "
                          "inputs: the error the node itself adds",
                 "gain": "relative error of a node's output / largest input error (>= 1e-6)",
                 "factor": factor, "floor": floor},
        "first_jump": first,
        "top_worst": worst,
        "top_added": top_added,
        "final_output": rows[-1],
        "tensors": rows,
    }


def _engine_graph(engine: Path, manifest: EngineManifest) -> Path:
    if engine.suffix.lower() == ".onnx":
        return engine
    if manifest.precision_onnx:
        value = Path(manifest.precision_onnx)
        for base in (Path.cwd(), engine.parent, engine.parent.parent):
            p = value if value.is_absolute() else base / value
            if p.is_file():
                return p
    raise SgfError(
        f"{engine}: layer-wise comparison needs the engine's graph as ONNX (ONNX Runtime engines are ONNX files; "
        f"this {manifest.backend} engine's manifest records no converted ONNX). Build an ONNX Runtime engine "
        "of the same precision and run --layerwise on it, or use 'polygraphy debug precision' on a GPU machine"
    )


def build_suggestion(fp32_onnx: Path | str, manifest: EngineManifest, nodes: list[str]) -> str:
    """The ``sgf-deploy build`` line that rebuilds the engine with ``nodes`` in higher precision.

    INT8: ``--exclude`` adds nodes to the float list (default @mcns, @attention). FP16:
    ``--keep-fp32`` replaces the default list, so the previous list (``@default``) comes first.
    The engine's other build options (backend, profile, calibration) are repeated."""
    prec = manifest.precision.lower()
    opts = manifest.build_options
    parts = ["sgf-deploy build", f"--onnx {fp32_onnx}", f"--backend {manifest.backend}", f"--{prec}"]
    if opts.get("shapes"):
        parts.append(f"--shapes {opts['shapes']}")

    def listed(value: Any) -> list[str]:
        if not value:
            return []
        return [v for v in (value.split(",") if isinstance(value, str) else list(value)) if v]

    if prec == "int8":
        calib = manifest.calibration or {}
        if calib.get("path"):
            parts.append(f"--calib {calib['path']}")
        if opts.get("calib_method") and opts.get("calib_method") != "entropy":
            parts.append(f"--calib-method {opts['calib_method']}")
        if opts.get("quantizer") and opts.get("quantizer") != "ort":
            parts.append(f"--quantizer {opts['quantizer']}")
        if opts.get("keep_fp32"):
            parts.append(f"--keep-fp32 {','.join(listed(opts['keep_fp32']))}")
        parts.append(f"--exclude {','.join(dict.fromkeys(listed(opts.get('exclude')) + nodes))}")
    else:
        prev = listed(opts.get("keep_fp32")) or ["@default"]
        parts.append(f"--keep-fp32 {','.join(dict.fromkeys(prev + nodes))}")
    return " ".join(parts)


def _fixed_dims(model: Any) -> tuple[int | None, tuple[int, int] | None]:
    """(static batch, static (H, W)) of the ``target`` input of a graph; None where dynamic."""
    for inp in model.graph.input:
        if inp.name == "target":
            dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
            if len(dims) == 4:
                hw = (dims[2], dims[3]) if dims[2] and dims[3] else None
                return dims[0], hw
    return None, None


def _weights_diff(reference: Any, other: Any) -> dict[str, Any]:
    """Initializers of ``other`` that differ from ``reference`` (same name): max relative change."""
    from onnx import numpy_helper

    ref = {i.name: i for i in reference.graph.initializer}
    differing = []
    compared = 0
    for init in other.graph.initializer:
        if init.name not in ref:
            continue
        a = numpy_helper.to_array(ref[init.name])
        b = numpy_helper.to_array(init)
        compared += 1
        if a.shape != b.shape or a.dtype != b.dtype:
            differing.append({"initializer": init.name, "why": f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"})
        elif not np.array_equal(a, b):
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            rel = float(np.linalg.norm(b64 - a64) / (np.linalg.norm(a64) or 1.0))
            differing.append({"initializer": init.name, "rel_change": rel})
    return {"compared": compared, "identical": not differing, "differing": differing[:20]}


def reference_graph(model: Any, onnx_meta: dict[str, Any] | None, manifest: EngineManifest, like: Any) -> Any:
    """A fresh FP32 export of the PyTorch model (no file, no self-check), shaped like ``like``."""
    from ..export.onnx_export import DEFAULT_OPSET, export_model_proto

    opset = (onnx_meta or {}).get("sgf.opset") or manifest.model.opset or DEFAULT_OPSET
    batch, static = _fixed_dims(like)
    return export_model_proto(model, int(opset), static, batch)


def layerwise_compare(engine: Path, manifest: EngineManifest, fp32_onnx: Path | None,
                      reference: np.ndarray, target: np.ndarray, *, model: Any = None,
                      onnx_meta: dict[str, Any] | None = None, factor: float = DEFAULT_FACTOR,
                      floor: float = DEFAULT_FLOOR, threads: int | None = None) -> dict[str, Any]:
    """Compare the engine's graph with the FP32 model on one slice ((1,1,Hp,Wp) normalised inputs).

    The FP32 side is a fresh export of the PyTorch ``model`` when one is given (so that an ONNX
    file that no longer matches its checkpoint is caught too: the report then lists the weights
    that differ), else the ONNX file the engine was built from."""
    onnx = _onnx()
    graph = _engine_graph(Path(engine), manifest)
    engine_model = onnx.load(str(graph))
    built_from = onnx.load(str(fp32_onnx)) if fp32_onnx is not None else None
    fp32_model, source, notes = None, None, []
    if model is not None:
        try:
            fp32_model = reference_graph(model, onnx_meta, manifest, built_from or engine_model)
            source = "fresh FP32 export of the checkpoint (torch.onnx dynamo, no file written)"
        except Exception as exc:  # noqa: BLE001 - fall back to the file, and say why
            notes.append(f"fresh export failed ({type(exc).__name__}: {str(exc)[:160]}); using the ONNX file")
    if fp32_model is None:
        if built_from is None:
            raise SgfError(f"{engine}: layer-wise comparison needs the FP32 model: the ONNX it was built from "
                           f"(SHA-256 {str(manifest.onnx_sha256)[:12]}...) is not in export/ or the recorded path")
        fp32_model, source = built_from, f"the ONNX file the engine was built from ({fp32_onnx})"
    batch, _ = _fixed_dims(engine_model)
    reps = int(batch) if batch and batch > 1 else 1
    feeds = {"reference": np.ascontiguousarray(np.repeat(reference, reps, axis=0), np.float32),
             "target": np.ascontiguousarray(np.repeat(target, reps, axis=0), np.float32)}
    result = compare_graphs(fp32_model, engine_model, feeds, factor=factor, floor=floor, threads=threads)
    result["fp32_reference"] = source
    result["fp32_onnx"] = str(fp32_onnx) if fp32_onnx is not None else None
    result["engine_graph"] = str(graph)
    if built_from is not None and fp32_model is not built_from:
        diff = _weights_diff(fp32_model, built_from)
        result["onnx_vs_checkpoint"] = diff
        if not diff["identical"]:
            names = ", ".join(d["initializer"] for d in diff["differing"][:5])
            notes.append(f"the ONNX file {fp32_onnx} does not carry the checkpoint's weights ({names} differ): "
                         "re-export it with sgf-deploy export and rebuild the engine")
    # Nodes the build left in float (manifest), e.g. MCNS: an error jump at their output comes from
    # their inputs' error, amplified, and/or from quantizing their output for INT8 consumers.
    conversion = manifest.precision_conversion or {}
    float_nodes: set[str] = set(conversion.get("float_nodes") or [])
    if float_nodes:
        consumers: dict[str, list[str]] = {}
        for n in fp32_model.graph.node:
            if n.op_type not in SKIP_OPS and n.name:
                for i in n.input:
                    consumers.setdefault(i, []).append(n.name)
        for row in result["tensors"] + ([result["first_jump"]] if result.get("first_jump") else []):
            if row["node"] in float_nodes:
                row["float_node"] = True
                # only INT8 consumers quantize this tensor; float consumers read it as is
                row["consumers"] = [c for c in consumers.get(row["tensor"], []) if c not in float_nodes]
    keep: list[str] = []
    rows = ([result["first_jump"]] if result["first_jump"] else []) + list(result["top_added"][:2])
    for row in rows:
        if row.get("float_node") and (row.get("rel_error_before_output_quantization") is None
                                      or row["rel_error"] > 2 * row["rel_error_before_output_quantization"]):
            # a float node whose output loses most in its quantization: keep its consumers in float
            names = list(row.get("consumers", []))
        else:
            names = [f["node"] for f in row.get("fused_inputs_from", [])] + str(row["node"]).split(",")
        for node in names:
            if node and node not in keep and node not in float_nodes and len(keep) < 6:
                keep.append(node)
    result["keep_fp32_candidates"] = keep
    precision = manifest.precision.lower()
    if precision == "fp32":
        notes.append("an FP32 engine has nothing to keep in higher precision: a layer-wise error here means the "
                     "engine's graph or backend computes something else than the checkpoint (see the first jump)")
    elif keep and fp32_onnx is not None:
        result["suggestion"] = build_suggestion(fp32_onnx, manifest, keep)
    notes.append("engine graph run as built (integer kernels included) with optimisations off so marked tensors "
                 "survive; quantized tensors dequantized with the graph's scale/zero point; tensors fused away "
                 "in the engine are not compared")
    result["notes"] = notes
    return result
