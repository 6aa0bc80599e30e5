"""The ``sgf::MCNS`` ONNX function: the custom op's semantics in standard ONNX ops.

The exported graph carries one opaque ``sgf.MCNS`` node per MCSD block; this module builds the
model-local ``FunctionProto`` that defines it, so that ONNX Runtime and the TensorRT parser run it
by inlining the body (no custom kernel), while a registered kernel/plugin of the same name can
still take precedence later without changing the file.

The body implements exactly :func:`sgf_deploy.model.mcns.mcns_reference` (DESIGN.md section 2)::

    var_a   = Relu(AvgPool3x3(a*a) - AvgPool3x3(a)^2)      # zero padding counted (count_include_pad=1)
    var_a   = ReduceMean(var_a, channels)                  # (B,1,H,W); from the FIRST map of a pair
    nb_b    = Pad(b, 2, edge) sliced at the 8 offsets     # (8,B,C,H,W): b(clamp(y-dy), clamp(x-dx))
    d       = ReduceSum over the C/G channels of a group of (a - nb_b)^2       # (8,B,G,H,W)
    S_ab    = Exp(-d / (var_a + eps)) * sal                # sal (B,G,H,W) broadcasts over k: tiled
    out     = Concat(S_tt*s_t, S_tr*s_r, S_rt*s_t, S_rr*s_r)  # (32,B,G,H,W), index p*8 + k
    out     = Reshape(Transpose(out, [1,0,2,3,4]), (B, 32G, H, W))

so pair p, neighbour k, group g land at channel ``p*8G + k*G + g`` — the channel order of the
PyTorch op. This module imports only ``onnx``.
"""

from __future__ import annotations

from onnx import FunctionProto, TensorProto, helper

DOMAIN = "sgf"
OP_TYPE = "MCNS"
FUNCTION_VERSION = 1
INPUTS = ("feat_tar", "feat_ref", "sal_tar", "sal_ref")
ATTRIBUTES = ("groups", "eps")
# Kept in sync with sgf_deploy.model.mcns.NEIGHBOUR_OFFSETS (a test asserts equality); duplicated so
# that building the function never imports torch.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, 0), (-2, 0), (1, 0), (2, 0), (0, -1), (0, -2), (0, 1), (0, 2)
)
MAX_OFFSET = 2
MIN_OPSET = 18  # ReduceMean with axes as an input
_INT64_MAX = 2**63 - 1


class _Builder:
    def __init__(self) -> None:
        self.nodes: list = []
        self._n = 0

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self._n += 1
        outs = [f"_{op.lower()}{self._n}_{i}" if n_out > 1 else f"_{op.lower()}{self._n}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def ints(self, values: list[int]) -> str:
        return self.node("Constant", [], value=helper.make_tensor("v", TensorProto.INT64, [len(values)], values))

    def attr_const(self, attr_name: str, attr_type: int, kind: str) -> str:
        """A Constant whose value is the function attribute ``attr_name`` (``value_int``/``value_float``)."""
        self._n += 1
        out = f"_{attr_name}{self._n}"
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(helper.make_attribute_ref(kind, attr_type, ref_attr_name=attr_name))
        self.nodes.append(node)
        return out


def make_mcns_function(opset: int) -> FunctionProto:
    """The ``sgf::MCNS`` FunctionProto whose body uses the default domain at ``opset``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the sgf::MCNS function body needs ONNX opset >= {MIN_OPSET}; got {opset}")
    b = _Builder()
    ft, fr, st, sr = INPUTS
    m = MAX_OFFSET

    eps = b.attr_const("eps", helper.AttributeProto.FLOAT, "value_float")
    groups = b.node("Unsqueeze", [b.attr_const("groups", helper.AttributeProto.INT, "value_int"), b.ints([0])])
    hw = b.node("Shape", [ft], start=2)  # [H, W]
    # (8, B, C, H, W) -> (8, B, G, C/G, H, W); 0 copies 8 and B.
    group_shape = b.node("Concat", [b.ints([0, 0]), groups, b.ints([-1]), hw], axis=0)
    out_shape = b.node("Concat", [b.ints([0, -1]), hw], axis=0)  # (B, 32, G, H, W) -> (B, 32G, H, W)
    ax0, ax1, ax3 = b.ints([0]), b.ints([1]), b.ints([3])

    def variance_denominator(feat: str) -> str:
        """sigma^2 + eps, (B, 1, H, W): 3x3 variance, zeros counted, clamped at 0, channel mean."""
        pool = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=1)
        mean = b.node("AveragePool", [feat], **pool)
        mean_sq = b.node("AveragePool", [b.node("Mul", [feat, feat])], **pool)
        var = b.node("Relu", [b.node("Sub", [mean_sq, b.node("Mul", [mean, mean])])])
        return b.node("Add", [b.node("ReduceMean", [var, ax1], keepdims=1), eps])

    def neighbours(feat: str) -> str:
        """(8, B, C, H, W): neighbour k of (y, x) is feat(clamp(y - dy), clamp(x - dx))."""
        padded = b.node("Pad", [feat, b.ints([0, 0, m, m, 0, 0, m, m])], mode="edge")
        axes = b.ints([2, 3])
        shifted = []
        for dy, dx in NEIGHBOUR_OFFSETS:
            # rows m-dy .. m-dy+H of the (H + 2m)-row padded map: the end is counted from the back.
            starts = [m - dy, m - dx]
            ends = [-(m + dy) if m + dy else _INT64_MAX, -(m + dx) if m + dx else _INT64_MAX]
            sl = b.node("Slice", [padded, b.ints(starts), b.ints(ends), axes])
            shifted.append(b.node("Unsqueeze", [sl, ax0]))
        return b.node("Concat", shifted, axis=0)

    def pair(feat_a: str, nb_b: str, denom_a: str, sal: str) -> str:
        """(8, B, G, H, W) similarities of feat_a to the neighbours of feat_b, weighted by sal.

        The neighbour axis leads so that the (B, ...) inputs broadcast against it as they are:
        no Unsqueeze of a function input (ORT's QDQ propagation mishandles one at opset >= 21).
        """
        diff = b.node("Sub", [feat_a, nb_b])  # (B,C,H,W) - (8,B,C,H,W)
        dist = b.node("Reshape", [b.node("Mul", [diff, diff]), group_shape])
        dist = b.node("ReduceSum", [dist, ax3], keepdims=0)  # (8, B, G, H, W)
        sim = b.node("Exp", [b.node("Neg", [b.node("Div", [dist, denom_a])])])  # / (B,1,H,W)
        return b.node("Mul", [sim, sal])  # * (B,G,H,W): saliency of group g for every neighbour k

    den_t, den_r = variance_denominator(ft), variance_denominator(fr)
    nb_t, nb_r = neighbours(ft), neighbours(fr)
    pairs = [
        pair(ft, nb_t, den_t, st),
        pair(ft, nb_r, den_t, sr),
        pair(fr, nb_t, den_r, st),
        pair(fr, nb_r, den_r, sr),
    ]
    stacked = b.node("Concat", pairs, axis=0)  # (32, B, G, H, W): index p*8 + k
    stacked = b.node("Transpose", [stacked], perm=[1, 0, 2, 3, 4])  # (B, 32, G, H, W)
    b.nodes.append(helper.make_node("Reshape", [stacked, out_shape], ["distilled"]))

    return helper.make_function(
        DOMAIN,
        OP_TYPE,
        list(INPUTS),
        ["distilled"],
        b.nodes,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, FUNCTION_VERSION)],
        attributes=list(ATTRIBUTES),
        doc_string=(
            "SGF-MRI multi-contrast neighbourhood similarity (DESIGN.md section 2): "
            "(feat_tar, feat_ref (B,C,H,W), sal_tar, sal_ref (B,G,H,W)) <groups, eps> -> (B, 32G, H, W)"
        ),
    )


def make_mcns_model(
    opset: int, groups: int, eps: float = 1e-6, channels: int | None = None, function: FunctionProto | None = None
):
    """A tiny model with one ``sgf.MCNS`` node and the function (``function``, e.g. the one taken
    from an exported file, or a fresh one): runs the body on its own."""
    c = channels if channels is not None else "C"
    feat = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", c, "H", "W"])  # noqa: E731
    sal = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["B", groups, "H", "W"])  # noqa: E731
    node = helper.make_node(OP_TYPE, list(INPUTS), ["distilled"], domain=DOMAIN, groups=int(groups), eps=float(eps))
    graph = helper.make_graph(
        [node],
        "sgf_mcns",
        [feat(INPUTS[0]), feat(INPUTS[1]), sal(INPUTS[2]), sal(INPUTS[3])],
        [helper.make_tensor_value_info("distilled", TensorProto.FLOAT, ["B", 32 * groups, "H", "W"])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, FUNCTION_VERSION)],
        functions=[function if function is not None else make_mcns_function(opset)],
        producer_name="sgf-deploy",
    )
