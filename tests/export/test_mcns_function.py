"""The sgf::MCNS FunctionProto ALONE (one sgf.MCNS node + the function) in ONNX Runtime against
torch.ops.sgf.mcns: the bar is max abs error <= 1e-5 in float32."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sgf_deploy.export.mcns_function import (
    DOMAIN, MIN_OPSET, NEIGHBOUR_OFFSETS, OP_TYPE, make_mcns_function, make_mcns_model,
)
from sgf_deploy.model import mcns as torch_mcns

TOL = 1e-5
STANDARD_OPS = {
    "Constant", "Unsqueeze", "Shape", "Concat", "AveragePool", "Mul", "Sub", "Relu", "ReduceMean",
    "Add", "Pad", "Slice", "Reshape", "ReduceSum", "Div", "Neg", "Exp", "Transpose",
}


def _session(opset: int, groups: int, eps: float) -> ort.InferenceSession:
    model = make_mcns_model(opset, groups, eps)
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _inputs(shape, groups, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    ft = torch.randn(shape, generator=g) * scale
    fr = torch.randn(shape, generator=g) * scale
    st = torch.rand((b, groups, h, w), generator=g)
    sr = torch.rand((b, groups, h, w), generator=g)
    return ft, fr, st, sr


def _run(sess, ft, fr, st, sr):
    feeds = dict(feat_tar=ft.numpy(), feat_ref=fr.numpy(), sal_tar=st.numpy(), sal_ref=sr.numpy())
    return sess.run(None, feeds)[0]


def test_offsets_match_the_model():
    assert NEIGHBOUR_OFFSETS == torch_mcns.NEIGHBOUR_OFFSETS


def test_body_is_standard_ops_only():
    fn = make_mcns_function(21)
    assert (fn.domain, fn.name) == (DOMAIN, OP_TYPE)
    assert list(fn.input) == ["feat_tar", "feat_ref", "sal_tar", "sal_ref"]
    assert list(fn.attribute) == ["groups", "eps"]
    assert all(n.domain == "" for n in fn.node)
    assert {n.op_type for n in fn.node} <= STANDARD_OPS
    pad = [n for n in fn.node if n.op_type == "Pad"]
    assert pad and all(onnx.helper.get_attribute_value(a) == b"edge" for n in pad for a in n.attribute if a.name == "mode")
    pools = [n for n in fn.node if n.op_type == "AveragePool"]
    assert pools and all(
        onnx.helper.get_attribute_value(a) == 1 for n in pools for a in n.attribute if a.name == "count_include_pad"
    )


@pytest.mark.parametrize(
    "shape,groups",
    [
        ((1, 4, 5, 7), 2),
        ((2, 6, 1, 9), 3),
        ((1, 8, 13, 6), 8),
        ((3, 2, 1, 1), 1),   # a single pixel: every neighbour is the pixel itself
        ((1, 16, 2, 3), 4),  # smaller than the 2-pixel neighbourhood reach
        ((2, 8, 9, 1), 2),
    ],
)
def test_function_matches_torch_op(shape, groups):
    sess = _session(21, groups, 1e-6)
    for seed, scale in ((0, 1.0), (1, 0.05), (2, 3.0)):
        ft, fr, st, sr = _inputs(shape, groups, seed + sum(shape), scale)
        want = torch.ops.sgf.mcns(ft, fr, st, sr, groups, 1e-6).numpy()
        got = _run(sess, ft, fr, st, sr)
        assert got.shape == want.shape == (shape[0], 32 * groups, shape[2], shape[3])
        assert np.abs(got - want).max() <= TOL


@pytest.mark.parametrize("opset", list(range(MIN_OPSET, 24)))
def test_every_supported_opset(opset):
    sess = _session(opset, 2, 1e-6)
    ft, fr, st, sr = _inputs((2, 4, 7, 5), 2, opset)
    want = torch.ops.sgf.mcns(ft, fr, st, sr, 2, 1e-6).numpy()
    assert np.abs(_run(sess, ft, fr, st, sr) - want).max() <= TOL


def test_attributes_are_honoured():
    """eps and groups come from the node's attributes (not constants baked into the body)."""
    shape, groups, eps = (1, 6, 6, 5), 3, 0.37
    sess = _session(21, groups, eps)
    ft, fr, st, sr = _inputs(shape, groups, 7)
    want = torch.ops.sgf.mcns(ft, fr, st, sr, groups, eps).numpy()
    got = _run(sess, ft, fr, st, sr)
    assert np.abs(got - want).max() <= TOL
    assert np.abs(got - torch.ops.sgf.mcns(ft, fr, st, sr, groups, 1e-6).numpy()).max() > 1e-3


def test_borders_and_flat_regions():
    """Edge replication at every border, and zero local variance (denominator = eps)."""
    shape, groups = (1, 4, 6, 7), 2
    sess = _session(21, groups, 1e-6)
    ft, fr, st, sr = _inputs(shape, groups, 11)
    ft[..., :3, :] = 0.5  # a flat band: sigma^2 = 0 inside it
    fr[..., :, -2:] = ft[..., :, -2:]  # identical maps near the right border: exp(0) = 1
    want = torch.ops.sgf.mcns(ft, fr, st, sr, groups, 1e-6).numpy()
    got = _run(sess, ft, fr, st, sr)
    assert np.abs(got - want).max() <= TOL
    for rows, cols in ((slice(0, 2), slice(None)), (slice(-2, None), slice(None)), (slice(None), slice(0, 2)), (slice(None), slice(-2, None))):
        assert np.abs(got[..., rows, cols] - want[..., rows, cols]).max() <= TOL


def test_rejects_too_old_opset():
    with pytest.raises(ValueError):
        make_mcns_function(MIN_OPSET - 1)
