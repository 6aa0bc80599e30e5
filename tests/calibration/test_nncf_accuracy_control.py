"""OpenVINO INT8 with NNCF accuracy control (``build --int8-max-drop DB``) on a tiny hand-built
graph with one layer that 8-bit activations ruin: the option builds through ``build_engine``,
the manifest names the layer reverted to float and the max_drop used, a generous max_drop
reverts nothing, and a bad max_drop is a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sgf_deploy.calibration import write_calibration_set
from sgf_deploy.calibration import nncf_int8
from sgf_deploy.errors import InputError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sgf-deploy[openvino]')")
pytest.importorskip("nncf", reason="nncf is not installed (pip install 'sgf-deploy[openvino]')")

VAL_N = 3  # validation slices (simulator val split) for the tests


def _fragile_model(path: Path) -> Path:
    """target/reference -> input convs (float by default) -> ``mix`` -> ``amp`` -> ``tail`` -> + target.

    ``amp`` writes ``100 m0`` (which sets the 8-bit range of ``tail``'s input), ``m0``, ``m1`` and
    ``m0 + m1``; ``tail`` adds ``0.5 m0 + (m0 + m1 - (m0 + m1))``: the bracket is zero in float,
    but rounded channel by channel to a step of ~0.5 it is noise on the output. Accuracy control
    must revert ``tail``; ``mix`` and ``amp`` quantise harmlessly (their errors cancel in ``tail``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = 4
    w_amp = np.zeros((c, c, 1, 1), np.float32)
    w_amp[0, 0], w_amp[1, 0], w_amp[2, 1], w_amp[3, 0], w_amp[3, 1] = 100.0, 1.0, 1.0, 1.0, 1.0
    w_tail = np.array([0.0, 1.5, 1.0, -1.0], np.float32).reshape(1, c, 1, 1)
    arrays = {
        "w_enc": (rng.standard_normal((c, 1, 3, 3)) * 0.3).astype(np.float32), "b_enc": np.zeros(c, np.float32),
        "w_mix": (rng.standard_normal((c, 2 * c, 1, 1)) * 0.3).astype(np.float32), "b_mix": np.zeros(c, np.float32),
        "w_amp": w_amp, "b_amp": np.zeros(c, np.float32), "w_tail": w_tail, "b_tail": np.zeros(1, np.float32),
    }
    inits = [numpy_helper.from_array(a, name) for name, a in arrays.items()]
    nodes = [
        helper.make_node("Conv", ["target", "w_enc", "b_enc"], ["ft0"], pads=[1, 1, 1, 1], name="enc_t"),
        helper.make_node("LeakyRelu", ["ft0"], ["ft"], alpha=0.1, name="act_t"),
        helper.make_node("Conv", ["reference", "w_enc", "b_enc"], ["fr0"], pads=[1, 1, 1, 1], name="enc_r"),
        helper.make_node("LeakyRelu", ["fr0"], ["fr"], alpha=0.1, name="act_r"),
        helper.make_node("Concat", ["ft", "fr"], ["cat"], axis=1, name="cat"),
        helper.make_node("Conv", ["cat", "w_mix", "b_mix"], ["m0"], name="mix"),
        helper.make_node("LeakyRelu", ["m0"], ["m"], alpha=0.1, name="act_m"),
        helper.make_node("Conv", ["m", "w_amp", "b_amp"], ["a"], name="amp"),
        helper.make_node("Conv", ["a", "w_tail", "b_tail"], ["res"], name="tail"),
        helper.make_node("Add", ["target", "res"], ["reconstruction"], name="residual"),
    ]
    io = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 1, "H", "W"])  # noqa: E731
    graph = helper.make_graph(nodes, "fragile", [io("reference"), io("target")], [io("reconstruction")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    helper.set_model_props(model, {"sgf.preset": "tiny", "sgf.pair": "t1-t2", "sgf.task": "recon4x",
                                   "sgf.size_multiple": "8"})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def fragile(tmp_path_factory) -> Path:
    return _fragile_model(tmp_path_factory.mktemp("fragile") / "fragile.onnx")


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    return write_calibration_set("sim", 3, tmp_path_factory.mktemp("c") / "sim3", pair="t1-t2", task="recon4x", seed=1)


@pytest.fixture(scope="module")
def built(fragile, calib, tmp_path_factory):
    """``build_engine`` with ``int8_max_drop=0.05`` (``build --int8-max-drop 0.05``); min/max ranges,
    so that ``amp``'s x100 channel sets the range of ``tail``'s input."""
    from sgf_deploy.engines import BuildSettings, build_engine

    mp = pytest.MonkeyPatch()
    mp.setattr(nncf_int8, "ACCURACY_VAL_N", VAL_N)
    try:
        settings = BuildSettings(backend="openvino", precision="int8", calib=calib, calib_method="max",
                                 int8_max_drop=0.05, threads=1,
                                 parity_n=0, out_dir=tmp_path_factory.mktemp("engines"))
        return build_engine(fragile, settings, echo=lambda _: None)
    finally:
        mp.undo()


def test_accuracy_control_builds_and_records_reverted_layers(built):
    man = built.manifest.to_dict()
    conv = man["precision_conversion"]
    acc = conv["accuracy_control"]
    assert conv["quantizer"].startswith("nncf.quantize_with_accuracy_control")
    assert acc["max_drop_db"] == 0.05 and acc["drop_type"] == "absolute"
    assert man["build_options"]["int8_max_drop"] == 0.05 and man["build_options"]["variant_hash"]
    assert acc["validation"]["split"] == "val" and acc["validation"]["n"] == VAL_N
    assert conv["float_patterns"] == ["@mcns", "@attention", "@input", "@output"]  # the float list as without it
    # the ruined layer is reverted, the harmless ones stay INT8
    assert [name.split("/")[0] for name in conv["reverted_to_float"]] == ["tail"], conv["reverted_to_float"]
    assert acc["reverted_count"] == 1 and acc["reached_max_drop"] is True and conv["fake_quantize"] > 0
    assert acc["val_psnr_int8_before_revert_db"] < acc["val_psnr_float_db"] - 0.05
    assert acc["val_drop_db"] <= 0.05
    model = ov.Core().read_model(str(built.engine_path))
    in_float = {name.split("/")[0] for name in nncf_int8.float_compute_ops(model)}
    assert "tail" in in_float and not {"mix", "amp"} & in_float


def test_generous_max_drop_reverts_nothing(fragile, calib):
    import onnx

    from sgf_deploy.calibration import CalibrationSet

    ov_model = ov.Core().read_model(str(fragile))
    _, record = nncf_int8.quantize_openvino(ov_model, onnx.load(str(fragile)), CalibrationSet(calib), max_drop=1000.0,
                                            pair="t1-t2", task="recon4x", val_n=2)
    assert record["reverted_to_float"] == [] and record["accuracy_control"]["max_drop_db"] == 1000.0


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf"), "lots"])
def test_bad_max_drop_is_an_input_error(value):
    from sgf_deploy.engines import BuildSettings

    with pytest.raises(InputError, match=r"--int8-max-drop must be a finite PSNR drop in dB >= 0"):
        BuildSettings(backend="openvino", precision="int8", int8_max_drop=value)
    with pytest.raises(InputError, match="applies to --int8 only"):
        BuildSettings(backend="openvino", precision="fp32", int8_max_drop=0.02)


@pytest.mark.parametrize("args, message", [
    (["--int8-max-drop", "-1"], "--int8-max-drop must be"),
    (["--int8-max-drop", "abc"], "--int8-max-drop must be"),
    (["--int8-max-drop", "0.02", "--backend", "onnxruntime"], "applies to --backend openvino"),
])
def test_cli_bad_max_drop_is_one_line(fragile, calib, tmp_path, args, message):
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    argv = ["build", "--int8", "--onnx", str(fragile), "--calib", str(calib), "--out", str(tmp_path), "--n", "0"]
    argv += args if "--backend" in args else args + ["--backend", "openvino"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
