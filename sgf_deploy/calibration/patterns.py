"""Which nodes stay in FP32: node-selection patterns for ``--keep-fp32`` and ``--exclude``.

A pattern list is comma separated. Each item is either a *group* (starting with ``@``) or a glob
(``fnmatch``, case sensitive) matched against a node's name, its op type and — when the exporter
kept them — its PyTorch module scopes (``pkg.torch.onnx.name_scopes`` / ``namespace`` metadata):

* ``@mcns``       every ``sgf.MCNS`` node (always kept in FP32: the FP16 converter cannot handle
                  a custom-domain node, and the similarity ``exp(-d / sigma^2)`` is where a
                  reduced precision hurts first)
* ``@norm``       normalisation: BatchNormalization, InstanceNormalization, LayerNormalization,
                  GroupNormalization, RMSNormalization, MeanVarianceNormalization, LpNormalization
                  and the ops of decomposed ones (ReduceMean, ReduceSumSquare, Pow, Sqrt, Reciprocal)
* ``@attention``  Softmax and MatMul nodes, plus a Mul/Div whose output feeds only those (the
                  1/sqrt(d_k) scale of the SFA attention)
* ``@head``       the output head: from each graph output back through the nodes up to and
                  including the first Conv/ConvTranspose/Gemm/MatMul (for SGF-MRI: the tail conv
                  and the residual Add)
* ``@output``     the nodes that produce the graph outputs (for SGF-MRI: the residual Add, which
                  also reads the unquantized target)
* ``@input``      the input layer: Conv/ConvTranspose/Gemm/MatMul nodes that read a graph input
                  directly (for SGF-MRI: the shared head conv, once on the target and once on
                  the reference), so the images are never quantized to 8 bits
* ``@default``    the default list of the precision: FP16 ``@mcns,@norm,@attention,@head``
                  (:data:`DEFAULT_KEEP_FP32`), INT8 ``@mcns,@attention,@input,@output``
                  (:data:`DEFAULT_INT8_EXCLUDE`)
* ``none``        nothing (``@mcns`` is still kept for FP16)

Examples: ``--keep-fp32 @default,node_conv2d_3*`` adds nodes; ``--keep-fp32 @mcns,@attention``
drops ``@norm`` and ``@head`` from the defaults. Node names are those of the exported file
(``python -c "import onnx; print([n.name for n in onnx.load('export/x.onnx').graph.node])"``).
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Iterable

GROUPS: tuple[str, ...] = ("@mcns", "@norm", "@attention", "@head", "@output", "@input", "@default")
DEFAULT_KEEP_FP32: tuple[str, ...] = ("@mcns", "@norm", "@attention", "@head")
# INT8 keeps the input layer and the residual Add in float. Measured on the embedded default with
# `sgf-deploy validate --n 16` (mean delta PSNR vs ground truth; gate 0.1 dB), 64-pair / 32-pair
# calibration sets, and the INT8/FP32 speed at 320x320 (2 threads, one interleaved run):
#   @output only (residual Add)          -0.1031 / -0.0819 dB   2.23x   (fails with 64 pairs)
#   @head (tail conv + Add)              -0.0963 / -0.0754 dB
#   @input + @head                       -0.0824 / -0.0523 dB   1.92x
#   @input + @output        (default)    -0.0881 / -0.0587 dB   2.02x
#   target's input conv + @output        -0.0911 / -0.0742 dB
# The tail conv has one output channel: in float it costs more time than it buys accuracy.
DEFAULT_INT8_EXCLUDE: tuple[str, ...] = ("@mcns", "@attention", "@input", "@output")

NORM_OPS = frozenset({
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "RMSNormalization", "MeanVarianceNormalization", "LpNormalization", "SimplifiedLayerNormalization",
    "ReduceMean", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal",
})
ATTENTION_OPS = frozenset({"Softmax", "MatMul", "Attention", "MultiHeadAttention"})
HEAD_STOP_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
MCNS_OP = ("sgf", "MCNS")


def parse_patterns(spec: str | Iterable[str] | None, default: Iterable[str]) -> list[str]:
    """``None`` -> ``default``; ``"a,b"`` / ``["a", "b"]`` -> list; ``@default`` expands; ``none`` empties."""
    if spec is None:
        return list(default)
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    out: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if item.lower() == "none":
            continue
        if item == "@default":
            out.extend(default)
            continue
        if item.startswith("@") and item not in GROUPS:
            from ..errors import InputError

            raise InputError(f"unknown node group {item!r}; groups are {', '.join(GROUPS)} (or give a glob on node names)")
        out.append(item)
    return list(dict.fromkeys(out))


def _scopes(node: Any) -> list[str]:
    scopes: list[str] = []
    for prop in getattr(node, "metadata_props", []):
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes.extend(str(s) for s in json.loads(prop.value.replace("'", '"')) if s)
            except ValueError:
                pass
        elif prop.key == "namespace":
            scopes.extend(part.split(":")[0].strip() for part in prop.value.split("/") if part.strip())
    return scopes


def group_indices(nodes: list[Any], outputs: list[str], initializers: set[str], group: str,
                  inputs: Iterable[str] = ()) -> set[int]:
    """Indices into ``nodes`` of the nodes in one ``@group`` (indices, not objects: protobuf may
    hand out a new wrapper object on every access)."""
    if group == "@input":
        graph_inputs = set(inputs) - initializers
        return {i for i, n in enumerate(nodes) if n.op_type in HEAD_STOP_OPS and graph_inputs & set(n.input)}
    if group == "@mcns":
        return {i for i, n in enumerate(nodes) if (n.domain, n.op_type) == MCNS_OP or n.op_type == "MCNS"}
    if group == "@norm":
        return {i for i, n in enumerate(nodes) if n.op_type in NORM_OPS}
    if group == "@attention":
        core = {i for i, n in enumerate(nodes) if n.op_type in ATTENTION_OPS}
        consumers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in n.input:
                consumers.setdefault(name, []).append(i)
        scales = {
            i for i, n in enumerate(nodes)
            if n.op_type in ("Mul", "Div")
            and all(consumers.get(o) for o in n.output)
            and all(c in core for o in n.output for c in consumers.get(o, []))
        }
        return core | scales
    if group == "@output":
        wanted = set(outputs)
        return {i for i, n in enumerate(nodes) if wanted & set(n.output)}
    if group == "@head":
        producers = {name: i for i, n in enumerate(nodes) for name in n.output}
        head: set[int] = set()
        stack = list(outputs)
        while stack:
            i = producers.get(stack.pop())
            if i is None or i in head:
                continue
            head.add(i)
            if nodes[i].op_type in HEAD_STOP_OPS:
                continue
            stack.extend(x for x in nodes[i].input if x and x not in initializers)
        return head
    raise ValueError(f"unknown group {group}")


def select_nodes(model: Any, patterns: Iterable[str]) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) matched by any of ``patterns``,
    in graph order. Nodes without a name are given none (ONNX exporters name every node)."""
    graph = model.graph
    nodes = list(graph.node)
    outputs = [o.name for o in graph.output]
    inputs = [i.name for i in graph.input]
    initializers = {t.name for t in graph.initializer}
    chosen: set[int] = set()
    globs = []
    for pattern in patterns:
        if pattern.startswith("@"):
            chosen |= group_indices(nodes, outputs, initializers, pattern, inputs)
        else:
            globs.append(pattern)
    if globs:
        for i, node in enumerate(nodes):
            keys = [node.name, node.op_type] + _scopes(node)
            if any(fnmatch.fnmatchcase(k, g) for g in globs for k in keys if k):
                chosen.add(i)
    return [nodes[i].name for i in sorted(chosen) if nodes[i].name]


def unmatched(model: Any, patterns: Iterable[str]) -> list[str]:
    """Glob patterns that match no node (reported, so typos do not pass silently)."""
    out = []
    for pattern in patterns:
        if pattern.startswith("@"):
            continue
        if not select_nodes(model, [pattern]):
            out.append(pattern)
    return out
