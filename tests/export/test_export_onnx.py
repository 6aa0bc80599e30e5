"""The exported graph, its parity with PyTorch, its metadata and sidecar, and what the engines
stage does with it (INT8 QDQ, FP16 conversion, the TensorRT-RTX parser)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from sgf_deploy.artifacts import sha256_file
from sgf_deploy.export import DEFAULT_OPSET
from sgf_deploy.export.metadata import METADATA_KEYS, read_onnx_metadata
from sgf_deploy.export.selfcheck import _prepare, compare, load_slices

PAPER_STATIC = (32, 40)  # as in conftest.py (the paper_export fixture)


def _ops(path) -> Counter:
    model = onnx.load(str(path))
    return Counter((n.domain, n.op_type) for n in model.graph.node)


def _dims(value) -> list:
    return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("which,expected", [("lite_export", 1), ("paper_export", 3)])
def test_one_mcns_node_per_mcsd_block(request, which, expected):
    result = request.getfixturevalue(which)
    model = onnx.load(str(result.path))
    nodes = [n for n in model.graph.node if n.domain == "sgf"]
    assert [n.op_type for n in nodes] == ["MCNS"] * expected == ["MCNS"] * result.mcns_nodes
    for node in nodes:
        attrs = {a.name: a for a in node.attribute}
        assert set(attrs) == {"groups", "eps"}
        assert attrs["groups"].type == onnx.AttributeProto.INT and attrs["groups"].i == 8
        assert attrs["eps"].type == onnx.AttributeProto.FLOAT and attrs["eps"].f == pytest.approx(1e-6)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", DEFAULT_OPSET), ("sgf", 1)}
    assert [(f.domain, f.name) for f in model.functions] == [("sgf", "MCNS")]
    assert all(n.domain == "" for n in model.functions[0].node)
    onnx.checker.check_model(model, full_check=True)
    # only standard ops elsewhere; the attention is not hand-written beyond the exporter's SDPA lowering
    assert {d for d, _ in _ops(result.path)} == {"", "sgf"}


def test_interface_dynamic(lite_export):
    model = onnx.load(str(lite_export.path))
    assert [i.name for i in model.graph.input] == ["reference", "target"]
    assert [o.name for o in model.graph.output] == ["reconstruction"]
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        n, c, h, w = _dims(value)
        assert c == 1 and all(isinstance(d, str) for d in (n, h, w))
    assert not model.graph.initializer or all(not t.HasField("data_location") or t.data_location == 0 for t in model.graph.initializer)


def test_interface_static_paper(paper_export):
    model = onnx.load(str(paper_export.path))
    for value in list(model.graph.input) + list(model.graph.output):
        n, c, h, w = _dims(value)
        assert isinstance(n, str) and (c, h, w) == (1, *PAPER_STATIC)
    assert paper_export.metadata["sgf.dynamic"] == "N"
    assert [c["shape"] for c in paper_export.selfcheck["cases"]] == [[2, 1, *PAPER_STATIC]]


@pytest.mark.parametrize("which", ["lite_export", "paper_export"])
def test_selfcheck_passed(which, request):
    check = request.getfixturevalue(which).selfcheck
    assert check["passed"] and check["verdict"] == "pass"
    assert check["max_abs_error"] <= 1e-4 and check["psnr_db"] >= 80
    if which == "lite_export":
        assert len(check["cases"]) == 2 and len({tuple(c["shape"]) for c in check["cases"]}) == 2


def _parity(path, ckpt, count, shape):
    from sgf_deploy.model import load_checkpoint

    model, _ = load_checkpoint(ckpt)
    raw_ref, raw_tar, _ = load_slices("recon4x", "t1-t2", count, seed=99)
    ref, tar = _prepare(raw_ref, raw_tar, shape, 8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"reference": ref, "target": tar})[0]
    with torch.no_grad():
        want = model.forward_core(torch.from_numpy(ref), torch.from_numpy(tar)).numpy()
    assert got.shape == want.shape == (count, 1, *shape)
    max_abs, psnr_db = compare(want, got)
    assert max_abs <= 1e-4 and psnr_db >= 80, (max_abs, psnr_db)


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("shape", [(240, 200), (64, 88)])
def test_ort_parity_lite(lite_export, lite_ckpt, count, shape):
    _parity(lite_export.path, lite_ckpt, count, shape)


@pytest.mark.parametrize("count", [1, 3])
def test_ort_parity_paper(paper_export, paper_ckpt, count):
    _parity(paper_export.path, paper_ckpt, count, PAPER_STATIC)


def test_metadata_props(lite_export, lite_ckpt):
    model = onnx.load(str(lite_export.path))
    props = {p.key: p.value for p in model.metadata_props}
    assert set(METADATA_KEYS) <= set(props)
    assert all(isinstance(v, str) for v in props.values())
    meta = read_onnx_metadata(lite_export.path)
    assert meta == lite_export.metadata
    assert meta["sgf.preset"] == "lite" and meta["sgf.task"] == "recon4x" and meta["sgf.pair"] == "t1-t2"
    assert meta["sgf.checkpoint_sha256"] == sha256_file(lite_ckpt)
    assert meta["sgf.size_multiple"] == 8 and props["sgf.size_multiple"] == "8"
    assert meta["sgf.opset"] == DEFAULT_OPSET
    assert meta["sgf.dynamic"] == "N,H,W"
    assert meta["sgf.config"]["mcsd_scales"] == [3] and json.loads(props["sgf.config"]) == meta["sgf.config"]
    assert meta["sgf.normalization"]["pad"] == {"mode": "edge", "sides": "bottom,right", "multiple": 8}


def test_sidecar(lite_export):
    side = json.loads(lite_export.sidecar.read_text())
    assert lite_export.sidecar == lite_export.path.with_suffix(".json")
    assert side["onnx_sha256"] == sha256_file(lite_export.path) == lite_export.onnx_sha256
    for key in METADATA_KEYS:
        assert side[key] == lite_export.metadata[key], key
    assert side["selfcheck"]["passed"] is True and side["selfcheck"]["cases"]


def test_read_metadata_imports_no_torch(lite_export):
    code = (
        "import sys; from sgf_deploy.export.metadata import read_onnx_metadata; "
        f"m = read_onnx_metadata({str(lite_export.path)!r}); "
        "assert m['sgf.preset'] == 'lite'; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_read_metadata_errors(tmp_path):
    from sgf_deploy.errors import InputError

    with pytest.raises(InputError, match="not found"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(InputError):
        read_onnx_metadata(tmp_path / "junk.onnx")


# ---------------------------------------------------- what the engines stage does with the file
def _feeds(n=3):
    raw_ref, raw_tar, _ = load_slices("recon4x", "t1-t2", n, seed=5)
    ref, tar = _prepare(raw_ref, raw_tar, (64, 88), 8)
    return [{"reference": ref[i : i + 1], "target": tar[i : i + 1]} for i in range(n)]


def test_int8_qdq_quantize_static_keeps_mcns(lite_export, tmp_path):
    quant = pytest.importorskip("onnxruntime.quantization")

    feeds = _feeds()

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    out = tmp_path / "int8.onnx"
    quant.quantize_static(
        str(lite_export.path), str(out), Reader(), quant_format=quant.QuantFormat.QDQ,
        activation_type=quant.QuantType.QInt8, weight_type=quant.QuantType.QInt8,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    ops = _ops(out)
    assert ops[("sgf", "MCNS")] == 1 and ops[("", "QuantizeLinear")] > 0
    # ORT's QDQ propagation must not break session creation (it did with Unsqueeze'd function inputs)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert np.isfinite(sess.run(None, feeds[0])[0]).all()


@pytest.mark.filterwarnings("ignore:the float32 number")
def test_fp16_conversion(lite_export, tmp_path):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    model = float16.convert_float_to_float16(
        onnx.load(str(lite_export.path)), keep_io_types=True, op_block_list=["MCNS"] + float16.DEFAULT_OP_BLOCK_LIST
    )
    out = tmp_path / "fp16.onnx"
    onnx.save(model, str(out))
    feed = _feeds(1)[0]
    want = ort.InferenceSession(str(lite_export.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert np.abs(got - want).max() < 0.05


def test_tensorrt_rtx_parses_and_builds(lite_export):
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX (pip install tensorrt-rtx) not installed")
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(lite_export.path.read_bytes())
    assert ok, [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name in ("reference", "target"):
        profile.set_shape(name, (1, 1, 32, 40), (1, 1, 64, 64), (2, 1, 128, 128))
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(network, config) is not None
