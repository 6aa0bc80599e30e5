"""The float list reaches NNCF on OpenVINO: ops named after a graph output are ignored too."""

import re

import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'sgf-deploy[torch]')")
from onnx import TensorProto, helper  # noqa: E402

from sgf_deploy.calibration.nncf_int8 import ignored_patterns  # noqa: E402


def test_graph_output_names_of_float_nodes_are_ignored():
    x = helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, [1, 1, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["target"], ["h"], name="node_relu_1"),
                               helper.make_node("Add", ["h", "target"], ["reconstruction"], name="node_add_631")],
                              "g", [x], [y])
    model = helper.make_model(graph)
    pats = ignored_patterns(["node_add_631"], model)
    # OpenVINO names the Add after its output tensor: both names must match
    assert any(re.match(p, "reconstruction") for p in pats) and any(re.match(p, "node_add_631/sub") for p in pats)
    assert not any(re.match(p, "node_relu_1") for p in pats)  # a quantised node stays quantised
    assert not any(re.match(p, "reconstruction") for p in ignored_patterns(["node_relu_1"], model))
