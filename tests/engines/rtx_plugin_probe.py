"""Build a TensorRT-RTX engine (on the CPU) from an ONNX model whose sgf.MCNS node is imported as
the sgf::MCNS Python plugin. Run as a subprocess by test_mcns_plugin.py, because a failure inside
the RTX parser aborts the whole process rather than raising.

    python rtx_plugin_probe.py --dtype fp32|fp16 --mode attr|flag|attr+flag|none [--onnx PATH]

Prints one JSON line: parse/build outcome, layer types, output shape, engine size.
"""

from __future__ import annotations

import argparse
import json
import sys

import onnx
from onnx import TensorProto, helper


def minimal_model(groups: int, channels: int, elem_type: int, opset: int = 18) -> onnx.ModelProto:
    """One sgf.MCNS node with dynamic B, H, W and the model-local function attached."""
    from sgf_deploy.export.mcns_function import INPUTS, make_mcns_function

    feat = lambda n: helper.make_tensor_value_info(n, elem_type, ["B", channels, "H", "W"])  # noqa: E731
    sal = lambda n: helper.make_tensor_value_info(n, elem_type, ["B", groups, "H", "W"])  # noqa: E731
    node = helper.make_node("MCNS", list(INPUTS), ["distilled"], domain="sgf", groups=groups, eps=1e-6)
    graph = helper.make_graph(
        [node], "mcns_probe",
        [feat(INPUTS[0]), feat(INPUTS[1]), sal(INPUTS[2]), sal(INPUTS[3])],
        [helper.make_tensor_value_info("distilled", elem_type, ["B", 32 * groups, "H", "W"])],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("sgf", 1)],
        functions=[make_mcns_function(opset)],
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--mode", choices=["attr", "flag", "attr+flag", "none"], default="attr")
    ap.add_argument("--onnx", default=None, help="a full exported model instead of the one-node model")
    ap.add_argument("--no-register", action="store_true")
    ap.add_argument("--no-link", action="store_true", help="do not let register_mcns_plugin link the RTX library")
    ap.add_argument(
        "--bare-register", action="store_true",
        help="register the creator straight with the registry, skipping the RTX library check",
    )
    args = ap.parse_args()

    import tensorrt_rtx as trt

    from sgf_deploy.engines.plugins import mark_mcns_nodes_for_plugin, register_mcns_plugin

    groups, channels = 4, 16
    if args.onnx:
        model = onnx.load(args.onnx)
    else:
        elem = TensorProto.FLOAT if args.dtype == "fp32" else TensorProto.FLOAT16
        model = minimal_model(groups, channels, elem)
    if args.bare_register:
        from sgf_deploy.engines.plugins.mcns_plugin import PLUGIN_NAMESPACE, plugin_classes

        creator = plugin_classes(trt)[1]()
        trt.get_plugin_registry().register_creator(creator, PLUGIN_NAMESPACE)
    elif not args.no_register:
        register_mcns_plugin(trt, link_rtx=not args.no_link)
    marked = mark_mcns_nodes_for_plugin(model) if "attr" in args.mode else 0

    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if "flag" in args.mode:
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    ok = parser.parse(model.SerializeToString())
    result = {
        "parsed": bool(ok),
        "errors": [str(parser.get_error(i)) for i in range(parser.num_errors)],
        "marked": marked,
        "layer_types": sorted({str(network.get_layer(i).type).split(".")[-1] for i in range(network.num_layers)}),
        "num_layers": network.num_layers,
    }
    if ok:
        out = network.get_output(0)
        result["output_shape"] = list(out.shape)
        result["output_dtype"] = str(out.dtype).split(".")[-1]
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            t = network.get_input(i)
            shape = list(t.shape)
            lo = [1 if d < 0 else d for d in shape]
            opt = [d if d >= 0 else (1 if j == 0 else 32) for j, d in enumerate(shape)]
            hi = [d if d >= 0 else (2 if j == 0 else 64) for j, d in enumerate(shape)]
            if len(shape) == 4:
                lo[2:] = [max(v, 8) if shape[k + 2] < 0 else v for k, v in enumerate(lo[2:])]
            profile.set_shape(t.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        result["built"] = serialized is not None
        result["engine_bytes"] = int(serialized.nbytes) if serialized is not None else 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
