"""Query-chunked attention in the exported graph: the N x N score matrix is never materialised.

The exporter (opset 18-22) writes ``F.scaled_dot_product_attention`` as MatMul(Q', K'^T) ->
Softmax -> MatMul(., V). At the ``paper`` preset's 1/2 scale a 320x320 slice has N = 25,600
positions, so that score matrix is 2.6 GB per slice (and ONNX Runtime holds the Softmax output
beside it). :func:`chunk_attention` replaces the three nodes by an ONNX ``Loop`` over blocks of
:data:`CHUNK` query rows: each step computes its rows' scores, softmax and output (each row's
softmax only needs its own row, so the result is the same computation, row by row); the padded
query block outputs are stacked, reshaped and cropped back to N rows. Peak memory per step is
CHUNK x N scores.

Only the attention blocks at scales finer than the bottleneck are chunked (selected by the
channel count of V, which differs per scale): at the bottleneck N is small (1,600 at 320x320)
and a Loop there would only cost speed; ``lite`` (MCSD at the bottleneck only) is unchanged.
TensorRT-RTX 1.7 fails to build the Loop ("makeScopeNodesContiguous" assertion), so a TensorRT
build puts the plain attention back first (:func:`unchunk_attention`; TensorRT fuses attention
itself on the GPU).
"""

from __future__ import annotations

from typing import Any, Iterable

CHUNK = 1024  # query rows per Loop step: CHUNK x N x 4 bytes of scores (105 MB at N = 25,600)


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _v_channels(graph: Any, name: str, producers: dict[str, Any]) -> int | None:
    """The output channels of the Conv that V comes from (walking back through reshapes)."""
    inits = {t.name: t for t in graph.initializer}
    for _ in range(8):
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Conv":
            w = inits.get(node.input[1])
            return int(w.dims[0]) if w is not None else None
        name = node.input[0]
    return None


def find_attention(graph: Any) -> list[tuple[Any, Any, Any]]:
    """(MatMul scores, Softmax, MatMul output) triples of the decomposed attention."""
    producers, consumers = _producers(graph), _consumers(graph)
    found = []
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        first = producers.get(node.input[0])
        after = consumers.get(node.output[0], [])
        if first is None or first.op_type != "MatMul" or len(after) != 1 or after[0].op_type != "MatMul":
            continue
        if len(consumers.get(first.output[0], [])) != 1:
            continue
        found.append((first, node, after[0]))
    return found


def _loop_body(scores: Any, softmax: Any, output: Any, padded_q: str, chunk: int, prefix: str) -> Any:
    from onnx import TensorProto, helper

    k_t, v = scores.input[1], output.input[1]
    p = f"{prefix}/body"
    nodes = [
        helper.make_node("Constant", [], [f"{p}/chunk"], value=helper.make_tensor(f"{p}/chunk_v", TensorProto.INT64, [1], [chunk]), name=f"{p}/chunk"),
        helper.make_node("Constant", [], [f"{p}/axis"], value=helper.make_tensor(f"{p}/axis_v", TensorProto.INT64, [1], [2]), name=f"{p}/axis"),
        helper.make_node("Constant", [], [f"{p}/zero"], value=helper.make_tensor(f"{p}/zero_v", TensorProto.INT64, [1], [0]), name=f"{p}/zero"),
        helper.make_node("Unsqueeze", [f"{p}/i", f"{p}/zero"], [f"{p}/i1"], name=f"{p}/i1"),
        helper.make_node("Mul", [f"{p}/i1", f"{p}/chunk"], [f"{p}/start"], name=f"{p}/start"),
        helper.make_node("Add", [f"{p}/start", f"{p}/chunk"], [f"{p}/end"], name=f"{p}/end"),
        helper.make_node("Slice", [padded_q, f"{p}/start", f"{p}/end", f"{p}/axis"], [f"{p}/q"], name=f"{p}/q"),
        helper.make_node("MatMul", [f"{p}/q", k_t], [f"{p}/scores"], name=f"{p}/scores"),
        helper.make_node("Softmax", [f"{p}/scores"], [f"{p}/weights"], name=f"{p}/softmax",
                         **{a.name: helper.get_attribute_value(a) for a in softmax.attribute}),
        helper.make_node("MatMul", [f"{p}/weights", v], [f"{p}/out"], name=f"{p}/out"),
        helper.make_node("Identity", [f"{p}/cond_in"], [f"{p}/cond_out"], name=f"{p}/cond"),
    ]
    return helper.make_graph(
        nodes, f"{prefix}_body",
        [helper.make_tensor_value_info(f"{p}/i", TensorProto.INT64, []),
         helper.make_tensor_value_info(f"{p}/cond_in", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(f"{p}/cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(f"{p}/out", TensorProto.FLOAT, None)])


def _chunked_nodes(scores: Any, softmax: Any, output: Any, chunk: int) -> list[Any]:
    """The nodes replacing (scores, softmax, output): pad Q to whole chunks, Loop, restore."""
    from onnx import TensorProto, helper

    q, v, result = scores.input[0], output.input[1], output.output[0]
    p = f"{output.name}/chunked"

    def const(name: str, values: list[int], shape: list[int] | None = None) -> Any:
        return helper.make_node("Constant", [], [f"{p}/{name}"], name=f"{p}/{name}",
                                value=helper.make_tensor(f"{p}/{name}_v", TensorProto.INT64,
                                                         [len(values)] if shape is None else shape, values))

    nodes = [
        const("chunk", [chunk]), const("chunk_m1", [chunk - 1]), const("zeros6", [0] * 6), const("zero1", [0]),
        const("minus1", [-1]), const("axis2", [2]),
        helper.make_node("Shape", [q], [f"{p}/n"], start=2, end=3, name=f"{p}/n"),
        helper.make_node("Shape", [q], [f"{p}/b1"], start=0, end=2, name=f"{p}/b1"),
        helper.make_node("Shape", [v], [f"{p}/c"], start=3, end=4, name=f"{p}/c"),
        helper.make_node("Add", [f"{p}/n", f"{p}/chunk_m1"], [f"{p}/n_up"], name=f"{p}/n_up"),
        helper.make_node("Div", [f"{p}/n_up", f"{p}/chunk"], [f"{p}/steps1"], name=f"{p}/steps1"),
        helper.make_node("Mul", [f"{p}/steps1", f"{p}/chunk"], [f"{p}/n_pad"], name=f"{p}/n_pad"),
        helper.make_node("Sub", [f"{p}/n_pad", f"{p}/n"], [f"{p}/extra"], name=f"{p}/extra"),
        helper.make_node("Concat", [f"{p}/zeros6", f"{p}/extra", f"{p}/zero1"], [f"{p}/pads"], axis=0, name=f"{p}/pads"),
        helper.make_node("Pad", [q, f"{p}/pads"], [f"{p}/q_pad"], mode="constant", name=f"{p}/q_pad"),
        helper.make_node("Squeeze", [f"{p}/steps1", f"{p}/zero1"], [f"{p}/steps"], name=f"{p}/steps"),
        helper.make_node("Constant", [], [f"{p}/true"], name=f"{p}/true",
                         value=helper.make_tensor(f"{p}/true_v", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", [f"{p}/steps", f"{p}/true"], [f"{p}/stacked"], name=f"{p}/loop",
                         body=_loop_body(scores, softmax, output, f"{p}/q_pad", chunk, p)),
        helper.make_node("Transpose", [f"{p}/stacked"], [f"{p}/blocks"], perm=[1, 2, 0, 3, 4], name=f"{p}/blocks"),
        helper.make_node("Concat", [f"{p}/b1", f"{p}/minus1", f"{p}/c"], [f"{p}/shape"], axis=0, name=f"{p}/shape"),
        helper.make_node("Reshape", [f"{p}/blocks", f"{p}/shape"], [f"{p}/rows"], name=f"{p}/rows"),
        helper.make_node("Slice", [f"{p}/rows", f"{p}/zero1", f"{p}/n", f"{p}/axis2"], [result], name=f"{p}/crop"),
    ]
    return nodes


def scales_to_chunk(channels: tuple[int, ...], mcsd_scales: Iterable[int], static: tuple[int, int] | None) -> list[int]:
    """The MCSD scales whose attention is chunked: those finer than the bottleneck, and, for a
    static export, only where a slice has more than :data:`CHUNK` positions at that scale (a
    small static model keeps the plain attention; TensorRT-RTX 1.7 cannot build the Loop)."""
    finer = [s for s in mcsd_scales if s < len(channels) - 1]
    if static is None:
        return finer
    return [s for s in finer if (static[0] >> s) * (static[1] >> s) > CHUNK]


def chunk_attention(proto: Any, v_channels: Iterable[int] | None = None, chunk: int = CHUNK) -> int:
    """Replace the attention blocks whose V has ``v_channels`` channels (None: every block) by
    query-chunked Loops, in place. Returns how many were replaced."""
    from onnx import NodeProto

    graph = proto.graph
    wanted = None if v_channels is None else {int(c) for c in v_channels}
    replaced = 0
    while True:
        producers = _producers(graph)
        todo = [t for t in find_attention(graph)
                if wanted is None or _v_channels(graph, t[2].input[1], producers) in wanted]
        if not todo:
            return replaced
        scores, softmax, output = todo[0]
        names = {scores.name, softmax.name, output.name}
        new = _chunked_nodes(scores, softmax, output, int(chunk))
        nodes = []
        for n in graph.node:
            copy = NodeProto()
            copy.CopyFrom(n)
            nodes.append(copy)
        at = next(i for i, n in enumerate(nodes) if n.name == output.name)
        rebuilt = [n for n in nodes[:at] if n.name not in names] + new + nodes[at + 1:]
        del graph.node[:]
        graph.node.extend(rebuilt)
        replaced += 1


def unchunk_attention(proto: Any) -> int:
    """Undo :func:`chunk_attention` in place (the plain MatMul -> Softmax -> MatMul again, same
    inputs and output); returns how many Loops were replaced."""
    from onnx import NodeProto, helper

    graph = proto.graph
    replaced = 0
    for loop in [n for n in graph.node if n.op_type == "Loop" and n.name.endswith("/chunked/loop")]:
        prefix = loop.name[: -len("/loop")]
        body = next(helper.get_attribute_value(a) for a in loop.attribute if a.name == "body")
        inner = {n.name: n for n in body.node}
        by_name = {n.name: n for n in graph.node}
        scores, softmax, out = (inner[f"{prefix}/body/{k}"] for k in ("scores", "softmax", "out"))
        q, result = by_name[f"{prefix}/q_pad"].input[0], by_name[f"{prefix}/crop"].output[0]
        base = prefix[: -len("/chunked")]
        plain = [
            helper.make_node("MatMul", [q, scores.input[1]], [f"{base}/scores"], name=f"{base}/scores"),
            helper.make_node("Softmax", [f"{base}/scores"], [f"{base}/weights"], name=f"{base}/softmax",
                             **{a.name: helper.get_attribute_value(a) for a in softmax.attribute}),
            helper.make_node("MatMul", [f"{base}/weights", out.input[1]], [result], name=base),
        ]
        nodes = []
        for n in graph.node:
            copy = NodeProto()
            copy.CopyFrom(n)
            nodes.append(copy)
        at = next(i for i, n in enumerate(nodes) if n.name == f"{prefix}/crop")
        rebuilt = [n for n in nodes[:at] if not n.name.startswith(prefix + "/")] + plain + \
                  [n for n in nodes[at + 1:] if not n.name.startswith(prefix + "/")]
        del graph.node[:]
        graph.node.extend(rebuilt)
        replaced += 1
    return replaced


def without_chunking(onnx_path: Any, out: Any) -> bool:
    """Write ``onnx_path`` with its chunked attention undone to ``out``; False (nothing written)
    when it has none."""
    import onnx

    model = onnx.load(str(onnx_path))
    if not unchunk_attention(model):
        return False
    onnx.save(model, str(out))
    return True
