"""Calibration sets (simulator and folder sources), the reader, node patterns, FP16 conversion and
INT8 Q/DQ quantization on a small hand-built SGF-like graph (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from sgf_deploy.calibration import (
    CalibrationSet,
    CalibrationSetReader,
    check_qdq,
    convert_fp16,
    find_calibration_set,
    quantize_int8,
    select_nodes,
    write_calibration_set,
)
from sgf_deploy.contract import fit as fit_shape
from sgf_deploy.calibration.patterns import parse_patterns
from sgf_deploy.errors import InputError, OutputExistsError

GROUPS = 4


@pytest.fixture(scope="module")
def sim_set(tmp_path_factory) -> Path:
    return write_calibration_set("sim", 3, tmp_path_factory.mktemp("c") / "sim3", pair="t1-t2", task="recon4x", seed=1)


def test_sim_set_layout(sim_set):
    manifest = json.loads((sim_set / "manifest.json").read_text())
    assert manifest["n"] == 3 and manifest["source"] == "sim"
    assert manifest["source_detail"] == {"kind": "simulator", "split": "train", "pair": "t1-t2", "task": "recon4x", "seed": 1}
    assert manifest["shapes"] == {"240x200": 3} and manifest["convention"]["pad"]["multiple"] == 8
    assert sorted(manifest["files"]) == ["0000.npz", "0001.npz", "0002.npz"]
    with np.load(sim_set / "0000.npz", allow_pickle=False) as data:
        ref, tar = data["reference"], data["target"]
        assert ref.dtype == tar.dtype == np.float32 and ref.shape == (240, 200)
        # normalised on the unpadded 233x197 slice; edge padding repeats the last row/column
        assert abs(float(tar[:233, :197].mean())) < 1e-4 and abs(float(tar[:233, :197].std(ddof=1)) - 1) < 1e-3
        assert np.array_equal(tar[233:, :197], np.repeat(tar[232:233, :197], 7, 0))


def test_set_verified_and_overwrite_rules(sim_set, tmp_path):
    s = CalibrationSet(sim_set)
    assert len(s) == 3 and s.describe()["n"] == 3
    with pytest.raises(OutputExistsError, match="--force"):
        write_calibration_set("sim", 3, sim_set)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in sim_set.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "0001.npz").write_bytes((copy / "0001.npz").read_bytes()[:-10] + b"0123456789")
    with pytest.raises(InputError, match="sha256 does not match"):
        CalibrationSet(copy)
    (tmp_path / "notaset").mkdir()
    (tmp_path / "notaset" / "x.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not a calibration set"):
        write_calibration_set("sim", 1, tmp_path / "notaset", overwrite=True)


def test_reader(sim_set):
    reader = CalibrationSetReader(sim_set)
    assert len(reader) == 3
    item = reader.get_next()
    assert set(item) == {"reference", "target"} and item["target"].shape == (1, 1, 240, 200)
    reader.set_range(1, 3)
    assert sum(1 for _ in iter(reader.get_next, None)) == 2
    fixed = CalibrationSetReader(sim_set, input_shape=(64, 320)).get_next()
    assert fixed["reference"].shape == (1, 1, 64, 320)
    assert fit_shape(np.arange(12, dtype=np.float32).reshape(3, 4), (2, 6)).tolist() == [[0, 1, 2, 3, 3, 3], [4, 5, 6, 7, 7, 7]]


def test_folder_source(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    vol = rng.random((3, 20, 30)).astype(np.float32)
    vol[0] = 1.0  # a constant (empty) slice is skipped
    np.save(data / "s1_ref.npy", vol)
    np.save(data / "s1_target.npy", vol * 2)
    np.save(data / "s2_ref.npy", vol[1:])
    np.save(data / "s2_target.npy", vol[1:] + 1)
    out = write_calibration_set(data, 10, tmp_path / "set")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n"] == 4 and manifest["source_detail"]["available_slices"] == 4
    assert manifest["shapes"] == {"24x32": 4}
    assert [p for p in manifest["source_detail"]["pairs"]] == [["s1_ref.npy", "s1_target.npy"], ["s2_ref.npy", "s2_target.npy"]]
    (data / "pairs.csv").write_text("reference,target\ns2_ref.npy,s2_target.npy\n")
    assert json.loads((write_calibration_set(data, 1, tmp_path / "csv") / "manifest.json").read_text())["n"] == 1
    (data / "pairs.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="header"):
        write_calibration_set(data, 1, tmp_path / "bad")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="_ref"):
        write_calibration_set(empty, 1, tmp_path / "none")


def test_calibrate_cli_default_name(tmp_path):
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(cli, ["calibrate", "--from", "sim", "--n", "1", "--task", "sr2x"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "calibration" / "t1-t2-sr2x-sim-n1" / "manifest.json").is_file()
    assert find_calibration_set(None, folder=tmp_path / "calibration").name == "t1-t2-sr2x-sim-n1"


def test_find_calibration_set_errors(tmp_path):
    with pytest.raises(InputError, match=r"make one with: sgf-deploy calibrate --from sim --pair pd-t2 --task recon8x --n 64"):
        find_calibration_set(None, folder=tmp_path / "calibration", pair="pd-t2", task="recon8x")
    with pytest.raises(InputError, match="not found"):
        find_calibration_set(tmp_path / "nope")


# ------------------------------------------------------------------------ a small SGF-like graph
def _tiny_model(path: Path) -> Path:
    """target/reference -> shared conv -> SAN -> sgf.MCNS -> squeeze -> attention -> head + residual."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from sgf_deploy.export.mcns_function import make_mcns_function

    rng = np.random.default_rng(0)
    c, g, d = 8, GROUPS, 8
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32))  # noqa: E731
    inits = []
    for name, arr in (("w_enc", w(c, 1, 3, 3)), ("b_enc", w(c)), ("w_san", w(g, c, 1, 1)), ("b_san", w(g)),
                      ("w_sq", w(d, 32 * g, 1, 1)), ("b_sq", w(d)), ("w_head", w(1, c + d, 3, 3)), ("b_head", w(1))):
        arr.name = name
        inits.append(arr)
    inits.append(numpy_helper.from_array(np.array([0, d, -1], np.int64), "shape_q"))
    inits.append(numpy_helper.from_array(np.array([0.35], np.float32), "scale"))
    nodes = [
        helper.make_node("Conv", ["target", "w_enc", "b_enc"], ["ft0"], pads=[1, 1, 1, 1], name="enc_t"),
        helper.make_node("LeakyRelu", ["ft0"], ["ft"], alpha=0.1, name="act_t"),
        helper.make_node("Conv", ["reference", "w_enc", "b_enc"], ["fr0"], pads=[1, 1, 1, 1], name="enc_r"),
        helper.make_node("LeakyRelu", ["fr0"], ["fr"], alpha=0.1, name="act_r"),
        helper.make_node("Conv", ["ft", "w_san", "b_san"], ["st0"], name="san_t"),
        helper.make_node("Sigmoid", ["st0"], ["st"], name="sig_t"),
        helper.make_node("Conv", ["fr", "w_san", "b_san"], ["sr0"], name="san_r"),
        helper.make_node("Sigmoid", ["sr0"], ["sr"], name="sig_r"),
        helper.make_node("MCNS", ["ft", "fr", "st", "sr"], ["dist"], domain="sgf", groups=g, eps=1e-6, name="mcns0"),
        helper.make_node("Conv", ["dist", "w_sq", "b_sq"], ["q"], name="squeeze"),
        helper.make_node("Reshape", ["q", "shape_q"], ["q2"], name="flat"),
        helper.make_node("Transpose", ["q2"], ["qt"], perm=[0, 2, 1], name="tr"),
        helper.make_node("Mul", ["qt", "scale"], ["qs"], name="attn_scale"),
        helper.make_node("MatMul", ["qs", "q2"], ["logits"], name="attn_qk"),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1, name="attn_softmax"),
        helper.make_node("MatMul", ["q2", "p"], ["att"], name="attn_v"),
        helper.make_node("Reshape", ["att", "qshape"], ["att4"], name="unflat"),
        helper.make_node("Shape", ["q"], ["qshape"], name="qshape"),
        helper.make_node("Concat", ["ft", "att4"], ["cat"], axis=1, name="cat"),
        helper.make_node("Conv", ["cat", "w_head", "b_head"], ["res"], pads=[1, 1, 1, 1], name="tail"),
        helper.make_node("Add", ["target", "res"], ["reconstruction"], name="residual"),
    ]
    nodes.insert(16, nodes.pop(17))  # Shape before the Reshape that uses it
    io = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, "H", "W"])  # noqa: E731
    graph = helper.make_graph(nodes, "tiny", [io("reference"), io("target")], [io("reconstruction")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("sgf", 1)],
                              functions=[make_mcns_function(21)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return _tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx")


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    rng = np.random.default_rng(1)
    data = tmp_path_factory.mktemp("small")
    base = rng.random((4, 16, 16)).astype(np.float32)
    np.save(data / "a_ref.npy", base)
    np.save(data / "a_target.npy", base + 0.1 * rng.random((4, 16, 16)).astype(np.float32))
    return write_calibration_set(data, 4, data / "set")


def _run(path, ref, tar):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"reference": ref, "target": tar})[0]


def test_patterns(tiny):
    import onnx

    m = onnx.load(str(tiny))
    assert select_nodes(m, ["@mcns"]) == ["mcns0"]
    assert select_nodes(m, ["@attention"]) == ["attn_scale", "attn_qk", "attn_softmax", "attn_v"]
    assert select_nodes(m, ["@head"]) == ["tail", "residual"]
    assert select_nodes(m, ["@output"]) == ["residual"]
    inputs = {i.name for i in m.graph.input}
    first = select_nodes(m, ["@input"])
    assert first, "the tiny model's first convs read the inputs"
    by_name = {n.name: n for n in m.graph.node}
    assert all(by_name[n].op_type == "Conv" and inputs & set(by_name[n].input) for n in first)
    assert "residual" not in first  # the residual Add reads the target too, but is no compute layer
    assert select_nodes(m, ["san_*", "Sigmoid"]) == ["san_t", "sig_t", "san_r", "sig_r"]
    assert parse_patterns("@default,foo", ["@mcns"]) == ["@mcns", "foo"] and parse_patterns("none", ["@mcns"]) == []
    with pytest.raises(InputError, match="unknown node group"):
        parse_patterns("@nonsense", [])


def test_fp16_keeps_mcns_function_and_runs(tiny, tmp_path):
    import onnx

    rng = np.random.default_rng(2)
    ref, tar = (rng.standard_normal((1, 1, 16, 24)).astype(np.float32) for _ in range(2))
    model, info = convert_fp16(tiny, tmp_path / "fp16.onnx")
    assert info["mcns_function_kept"] and any(f.domain == "sgf" and f.name == "MCNS" for f in model.functions)
    assert set(info["fp32_nodes"]) == {"mcns0", "attn_scale", "attn_qk", "attn_softmax", "attn_v", "tail", "residual"}
    assert info["output_casts_fixed"] == 1  # the converter's Cast-to-float16 before a float32 output
    inits = {t.name: t.data_type for t in model.graph.initializer}
    head = next(n for n in model.graph.node if n.name == "tail")
    assert all(inits[name] == onnx.TensorProto.FLOAT for name in head.input[1:])  # true FP32 weights
    assert inits["w_enc"] == onnx.TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out = _run(tmp_path / "fp16.onnx", ref, tar)
    assert out.dtype == np.float32 and np.abs(out - _run(tiny, ref, tar)).max() < 1e-2
    everything, info2 = convert_fp16(tiny, keep_fp32="none")
    assert info2["fp32_nodes"] == ["mcns0"]  # MCNS always stays FP32


@pytest.mark.parametrize("backend, zp_type", [("onnxruntime", "UINT8"), ("tensorrt-rtx", "INT8")])
def test_int8_qdq(tiny, small_set, tmp_path, backend, zp_type):
    import onnx

    out = tmp_path / "int8.onnx"
    info = quantize_int8(tiny, out, small_set, method="max", backend=backend, exclude="enc_r")
    model = onnx.load(str(out))
    assert any(f.domain == "sgf" for f in model.functions) and any(n.op_type == "MCNS" for n in model.graph.node)
    # defaults: MCNS, attention, the input layer (@input) and the residual Add (@output) stay float
    assert {"mcns0", "attn_qk", "attn_softmax", "residual", "enc_t", "enc_r"} <= set(info["float_nodes"])
    assert not {"san_t", "san_r", "squeeze", "tail"} & set(info["float_nodes"])  # the convs in between are int8
    assert set(info["qdq"]["zero_point_types"]) == {zp_type, "INT8"} or set(info["qdq"]["zero_point_types"]) == {zp_type}
    assert info["qdq"]["int32_dequantize_inputs"] == 0
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].data_type != onnx.TensorProto.INT32  # biases stay float
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and "b_" in n.input[0] for n in model.graph.node)
    rng = np.random.default_rng(3)
    ref = rng.random((1, 1, 16, 16)).astype(np.float32)
    tar = ref + 0.1 * rng.random((1, 1, 16, 16)).astype(np.float32)
    expected = _run(tiny, ref, tar)
    assert np.abs(_run(out, ref, tar) - expected).max() < 0.1 * np.ptp(expected)


def test_int8_methods_and_check(tiny, small_set, tmp_path):
    for method in ("entropy", "percentile"):
        info = quantize_int8(tiny, tmp_path / f"{method}.onnx", small_set, method=method)
        assert info["calibration_method"] == method
    with pytest.raises(InputError, match="calibration method"):
        quantize_int8(tiny, tmp_path / "x.onnx", small_set, method="mse")
    with pytest.raises(InputError, match="modelopt|ModelOpt"):
        quantize_int8(tiny, tmp_path / "x.onnx", small_set, method="percentile", quantizer="modelopt")
    import onnx
    from onnx import helper, numpy_helper

    bad = helper.make_model(helper.make_graph(
        [helper.make_node("DequantizeLinear", ["b_q", "s"], ["b"])], "g", [],
        [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1, 2], np.int32), "b_q"), numpy_helper.from_array(np.array(0.1, np.float32), "s")]))
    from sgf_deploy.errors import SgfError

    with pytest.raises(SgfError, match="int32"):
        check_qdq(bad)
