"""Layer-wise comparison on small graphs: the jump rule, name matching through Q/DQ and
integer kernels, and the build line it suggests."""

from __future__ import annotations

import numpy as np
import pytest

from sgf_deploy.validate.layerwise import build_suggestion, compare_graphs, find_jump

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_find_jump():
    assert find_jump([0.0, 0.0, 1e-7, 2e-7, 5e-2, 6e-2]) == (4, pytest.approx(5e-8))
    assert find_jump([5e-3, 4e-3, 6e-3, 5e-3]) == (None, 0.0)  # all alike: no jump
    assert find_jump([0.02, 0.03, 0.02, 0.5, 0.6])[0] == 3
    assert find_jump([1.0])[0] is None  # the first tensor has no history


def _manifest(**fields):
    """A complete engine manifest with ``fields`` changed."""
    from sgf_deploy.engines.manifest import EngineManifest

    data = {"format": "sgf-deploy-engine", "format_version": 1, "engine_file": "e", "engine_sha256": "e" * 64,
            "onnx_sha256": "o" * 64, "checkpoint_sha256": "c" * 64, "backend": "onnxruntime", "backend_version": "1",
            "precision": "fp32", "device": {"kind": "cpu"}, "profile": {}, "build_options": {},
            "built_at": "2026-12-01T00:00:00", "toolkit_version": "0.1.0", "model": {}, "build_parity": {}}
    return EngineManifest.from_dict(data | fields)


def test_build_suggestion():
    int8 = _manifest(precision="int8", backend="onnxruntime", calibration={"path": "calibration/c"},
                     build_options={"exclude": "node_a", "shapes": None, "calib_method": "max"})
    line = build_suggestion("export/m.onnx", int8, ["node_b", "node_a"])
    assert line == ("sgf-deploy build --onnx export/m.onnx --backend onnxruntime --int8 --calib calibration/c "
                    "--calib-method max --exclude node_a,node_b")
    fp16 = _manifest(precision="fp16", backend="tensorrt-rtx", build_options={"keep_fp32": None})
    assert build_suggestion("m.onnx", fp16, ["n1"]).endswith("--fp16 --keep-fp32 @default,n1")


def _toy(path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []
    for name, cin, cout, x, out in (("conv1", 1, 8, "target", "c1"), ("conv2", 8, 8, "r1", "c2"),
                                    ("conv3", 8, 1, "e2", "c3")):
        inits += [numpy_helper.from_array(rng.normal(0, 0.3, (cout, cin, 3, 3)).astype(np.float32), f"{name}.weight"),
                  numpy_helper.from_array(rng.normal(0, 0.1, (cout,)).astype(np.float32), f"{name}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=f"node_{name}",
                                      pads=[1, 1, 1, 1]))
        if name == "conv1":
            nodes.append(helper.make_node("LeakyRelu", ["c1"], ["r1"], name="node_act1", alpha=0.1))
        if name == "conv2":
            nodes.append(helper.make_node("Sigmoid", ["c2"], ["e2"], name="node_sig"))
    nodes.append(helper.make_node("Add", ["c3", "target"], ["reconstruction"], name="node_resid"))
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, "H", "W"])  # noqa: E731
    graph = helper.make_graph(nodes, "toy", [vi("target")], [vi("reconstruction")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))
    return model


def test_int8_engine_graph_matches_through_integer_kernels(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    fp32 = _toy(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"target": rng.normal(size=(1, 1, 16, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    so = ort.SessionOptions()  # what the engine build does: optimise and save (QLinearConv etc.)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "engine.onnx")
    ort.InferenceSession(str(tmp_path / "qdq.onnx"), so, providers=["CPUExecutionProvider"])
    engine = onnx.load(str(tmp_path / "engine.onnx"))
    assert any(n.op_type == "QLinearConv" for n in engine.graph.node)

    x = rng.normal(size=(1, 1, 16, 16)).astype(np.float32)
    result = compare_graphs(fp32, engine, {"target": x})
    rows = {r["tensor"]: r for r in result["tensors"]}
    assert rows["target"]["op"] == "GraphInput" and rows["target"]["node"] == "node_conv1,node_resid"
    assert any(r["dequantized"] for r in result["tensors"])
    for r in result["tensors"]:
        assert 0 < r["rel_error"] < 0.2, r  # quantisation noise, correctly dequantized (not garbage)
    # the cross-check: the last tensor is the engine's output
    out = ort.InferenceSession(str(tmp_path / "engine.onnx"), providers=["CPUExecutionProvider"]).run(None, {"target": x})[0]
    ref = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(None, {"target": x})[0]
    rel = np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref)
    assert result["final_output"]["tensor"] == "reconstruction"
    assert result["final_output"]["rel_error"] == pytest.approx(rel, rel=1e-3)
