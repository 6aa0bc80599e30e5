"""The sgf::MCNS TensorRT plugin: attribute parsing, shape and format logic (no GPU, no engine),
and a TensorRT-RTX engine built on the CPU from an ONNX model whose sgf.MCNS node becomes the
plugin. Engine execution needs an RTX-class GPU: not here.

TensorRT-RTX 1.7 wheels: the ONNX parser dlopen()s "libtensorrt_rtx.so" when it imports a plugin
node and the wheel ships only "libtensorrt_rtx.so.1"; without a link the process aborts (recorded
below). register_mcns_plugin() makes the link; these tests instead put a link on LD_LIBRARY_PATH
of a subprocess, so they never modify the installed package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from sgf_deploy.engines.plugins import mcns_plugin as mp
from sgf_deploy.errors import MissingDependencyError

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'sgf-deploy[rtx]')")

PROBE = Path(__file__).with_name("rtx_plugin_probe.py")
REPO = Path(__file__).resolve().parents[2]


def Field(name, data):  # noqa: N802 - a PluginField look-alike
    return SimpleNamespace(name=name, data=np.asarray(data))


# ---------------------------------------------------------------- fields


def test_parse_fields():
    assert mp.parse_fields([Field("groups", np.array([8], np.int32)), Field("eps", np.array([1e-5], np.float32))]) == (
        8,
        pytest.approx(1e-5),
    )
    # ONNX ints may arrive as int64; eps defaults to 1e-6; unknown fields are ignored
    assert mp.parse_fields([Field("groups", np.array([4], np.int64)), Field("plugin_version", np.array([1]))]) == (4, 1e-6)
    assert mp.parse_fields([Field(b"groups", [2])])[0] == 2


@pytest.mark.parametrize(
    "fields,match",
    [
        ([], "missing"),
        ([Field("groups", [0])], "positive integer"),
        ([Field("groups", [2.5])], "positive integer"),
        ([Field("groups", [2, 3])], "one number"),
        ([Field("groups", [2]), Field("eps", [-1.0])], "eps"),
        ([Field("groups", [2]), Field("eps", [np.inf])], "eps"),
    ],
)
def test_parse_fields_rejects(fields, match):
    with pytest.raises(ValueError, match=match):
        mp.parse_fields(fields)


def _real_fc(groups, eps):
    keep = (np.array([groups], np.int32), np.array([eps], np.float32))  # PluginField does not own its data
    fc = trt.PluginFieldCollection(
        [trt.PluginField("groups", keep[0], trt.PluginFieldType.INT32), trt.PluginField("eps", keep[1], trt.PluginFieldType.FLOAT32)]
    )
    return fc, keep


def test_creator_metadata_and_serialization_round_trip():
    plugin_cls, creator_cls = mp.plugin_classes(trt)
    assert mp.plugin_classes(trt) == (plugin_cls, creator_cls)  # cached per module
    creator = creator_cls()
    assert (creator.name, creator.plugin_namespace, creator.plugin_version) == ("MCNS", "sgf", "1")
    assert [f.name for f in creator.field_names] == ["groups", "eps"]

    fc, _keep = _real_fc(8, 2.5e-6)
    plugin = creator.create_plugin("mcns_0", fc, trt.TensorRTPhase.BUILD)
    assert (plugin.groups, plugin.eps) == (8, pytest.approx(2.5e-6))
    assert (plugin.plugin_name, plugin.plugin_namespace, plugin.plugin_version, plugin.num_outputs) == ("MCNS", "sgf", "1", 1)

    serialized = plugin.get_fields_to_serialize()
    assert [(f.name, f.type) for f in serialized] == [("groups", trt.PluginFieldType.INT32), ("eps", trt.PluginFieldType.FLOAT32)]
    assert mp.parse_fields(serialized) == (8, pytest.approx(2.5e-6))
    again = creator.create_plugin("mcns_0", serialized, trt.TensorRTPhase.RUNTIME)  # engine deserialisation
    assert (again.groups, again.eps, again.phase) == (8, pytest.approx(2.5e-6), trt.TensorRTPhase.RUNTIME)

    clone = plugin.clone()
    assert clone is not plugin and (clone.groups, clone.eps) == (plugin.groups, plugin.eps)
    assert plugin.get_capability_interface(trt.PluginCapabilityType.RUNTIME) is plugin
    assert plugin.attach_to_context(None).groups == 8


# ---------------------------------------------------------------- shapes, types, formats


class FakeExpr:
    def __init__(self, label):
        self.label = label


class FakeBuilder:
    def constant(self, value):
        return FakeExpr(int(value))


@pytest.mark.parametrize("groups", [1, 4, 8])
def test_output_shape_exprs(groups):
    b, c, h, w = (FakeExpr(s) for s in "BCHW")
    out = mp.output_shape_exprs([b, c, h, w], groups, FakeBuilder())
    assert [e.label for e in out] == ["B", 32 * groups, "H", "W"]
    assert out[0] is b and out[2] is h and out[3] is w


def test_output_data_type_follows_the_inputs():
    plugin = mp.plugin_classes(trt)[0](4, 1e-6)
    for t in (trt.DataType.FLOAT, trt.DataType.HALF):
        assert plugin.get_output_data_types([t] * 4) == [t]


def _desc(fmt, dtype):
    return SimpleNamespace(desc=SimpleNamespace(format=fmt, type=dtype))


def test_supports_format_combination_truth_table():
    plugin = mp.plugin_classes(trt)[0](4, 1e-6)
    lin, other_fmt = trt.TensorFormat.LINEAR, trt.TensorFormat.CHW32
    f32, f16, i8, bf16 = trt.DataType.FLOAT, trt.DataType.HALF, trt.DataType.INT8, trt.DataType.BF16
    for first in (f32, f16, i8, bf16):
        for pos in range(5):
            for dtype in (f32, f16, i8, bf16):
                for fmt in (lin, other_fmt):
                    in_out = [_desc(lin, first)] + [_desc(lin, first)] * 4
                    in_out[pos] = _desc(fmt, dtype)
                    base = first if pos else dtype
                    want = fmt == lin and base in (f32, f16) and (pos == 0 or dtype == first)
                    assert plugin.supports_format_combination(pos, in_out, 4) == want, (first, pos, dtype, fmt)
    # wrong arity
    assert not plugin.supports_format_combination(0, [_desc(lin, f32)] * 4, 3)
    assert not plugin.supports_format_combination(5, [_desc(lin, f32)] * 5, 4)


def test_io_dims_checks():
    mp.check_io_dims(4, (-1, 16, -1, -1), [(-1, 4, -1, -1)] * 2)
    with pytest.raises(ValueError, match="not divisible"):
        mp.check_io_dims(3, (1, 16, 8, 8), [(1, 3, 8, 8)])
    with pytest.raises(ValueError, match="saliency"):
        mp.check_io_dims(4, (1, 16, 8, 8), [(1, 2, 8, 8)])
    with pytest.raises(ValueError, match="4-D"):
        mp.check_io_dims(4, (16, 8, 8), [])


# ---------------------------------------------------------------- ONNX marking, registration


def _one_node_model(groups=4, channels=16):
    from sgf_deploy.export.mcns_function import make_mcns_model

    return make_mcns_model(18, groups, channels=channels)


def test_mark_mcns_nodes_for_plugin():
    model = _one_node_model()
    model.graph.node.extend([onnx.helper.make_node("Identity", ["distilled"], ["copy"])])
    assert mp.mark_mcns_nodes_for_plugin(model) == 1
    assert mp.mark_mcns_nodes_for_plugin(model) == 1  # idempotent: still one attribute
    node = model.graph.node[0]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"sgf" and attrs["groups"] == 4
    assert [a.name for a in node.attribute].count("plugin_namespace") == 1
    assert not model.graph.node[1].attribute  # other nodes untouched
    assert [f.name for f in model.functions] == ["MCNS"]  # the function stays for ONNX Runtime


def test_register_is_idempotent(monkeypatch):
    monkeypatch.setattr(mp, "rtx_library_resolvable", lambda *a, **k: True)  # never touch the venv here
    creator = mp.register_mcns_plugin(trt)
    assert mp.register_mcns_plugin(trt) is creator
    names = [(c.name, c.plugin_namespace, c.plugin_version) for c in trt.get_plugin_registry().all_creators]
    assert names.count(("MCNS", "sgf", "1")) == 1


def test_link_rtx_library_in_a_scratch_dir(tmp_path):
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"\x7fELF")
    link = mp.link_rtx_library(trt, libs_dir=tmp_path)
    assert link == tmp_path / "libtensorrt_rtx.so" and os.readlink(link) == "libtensorrt_rtx.so.1"
    assert mp.link_rtx_library(trt, libs_dir=tmp_path) is None  # already resolvable
    assert mp.rtx_library_resolvable(SimpleNamespace(__name__="tensorrt")) is True  # full TensorRT: not needed


def test_link_rtx_library_read_only_dir_names_the_fix(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    (tmp_path / "libtensorrt_rtx.so.1").write_bytes(b"\x7fELF")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(MissingDependencyError, match="ln -s"):
            mp.link_rtx_library(trt, libs_dir=tmp_path)
    finally:
        tmp_path.chmod(0o755)


# ---------------------------------------------------------------- TensorRT-RTX engine builds (CPU)


@pytest.fixture(scope="module")
def rtx_link_dir(tmp_path_factory):
    libs = mp._rtx_libs_dir(trt)
    versioned = sorted(libs.glob("libtensorrt_rtx.so.*"))
    assert versioned, f"no libtensorrt_rtx.so.* in {libs}"
    d = tmp_path_factory.mktemp("rtxlink")
    (d / "libtensorrt_rtx.so").symlink_to(versioned[0])
    return d


def _probe(*args, link_dir=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if link_dir is not None:
        env["LD_LIBRARY_PATH"] = str(link_dir)
    proc = subprocess.run([sys.executable, str(PROBE), *args], capture_output=True, text=True, env=env, timeout=timeout)
    result = None
    if proc.returncode == 0:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc, result


@pytest.mark.parametrize("dtype,out_dtype", [("fp32", "FLOAT"), ("fp16", "HALF")])
def test_rtx_builds_engine_with_the_plugin(rtx_link_dir, dtype, out_dtype):
    proc, r = _probe("--dtype", dtype, "--mode", "attr", link_dir=rtx_link_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r["parsed"] and not r["errors"] and r["marked"] == 1
    assert r["layer_types"] == ["PLUGIN_V3"] and r["num_layers"] == 1  # the function was not inlined
    assert r["output_shape"] == [-1, 128, -1, -1] and r["output_dtype"] == out_dtype  # (B, 32G, H, W), G=4
    assert r["built"] and r["engine_bytes"] > 0


def test_rtx_parser_flag_alone_keeps_the_function(rtx_link_dir):
    """ENABLE_PLUGIN_OVERRIDE without the node attribute looks in the empty namespace: the function
    is inlined (standard layers), which is why mark_mcns_nodes_for_plugin() exists."""
    proc, r = _probe("--mode", "flag", link_dir=rtx_link_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r["parsed"] and "PLUGIN_V3" not in r["layer_types"] and r["num_layers"] > 10
    assert r["built"]


def _skip_unless_rtx17_without_link():
    if not trt.__version__.startswith("1.7."):
        pytest.skip(f"the abort is recorded for tensorrt-rtx 1.7; this is {trt.__version__}")
    if mp.rtx_library_resolvable(trt):
        pytest.skip("libtensorrt_rtx.so is already resolvable on this machine (link present)")


def test_rtx17_parser_aborts_without_the_library_link():
    """The recorded failure mode: the parser throws 'Unable to open library: libtensorrt_rtx.so'
    inside C++ after creating the plugin; nothing catches it and the process aborts (SIGABRT)."""
    _skip_unless_rtx17_without_link()
    proc, _ = _probe("--bare-register", "--mode", "attr")
    assert proc.returncode == -6, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert "terminate called without an active exception" in proc.stderr


def test_rtx17_register_without_linking_refuses_cleanly():
    _skip_unless_rtx17_without_link()
    proc, _ = _probe("--no-link", "--mode", "attr")
    assert proc.returncode == 1
    assert "MissingDependencyError" in proc.stderr and "libtensorrt_rtx.so" in proc.stderr


@pytest.mark.slow
def test_rtx_builds_the_exported_lite_model_with_plugins(rtx_link_dir, tmp_path):
    """The whole lite network (export_onnx) with its sgf.MCNS nodes as plugins builds on the CPU."""
    torch = pytest.importorskip("torch")
    try:
        from sgf_deploy.export import export_onnx
        from sgf_deploy.model import build_model, save_checkpoint
    except ImportError as exc:
        pytest.skip(f"export stage not available: {exc}")
    torch.manual_seed(0)
    ckpt = tmp_path / "lite.pt"
    save_checkpoint(ckpt, build_model("lite"), {"task": "recon4x", "pair": "t1-t2", "steps": 0, "seed": 0})
    onnx_path = export_onnx(ckpt, tmp_path / "lite.onnx", static=(64, 64), batch=1).path
    n_mcns = sum(1 for n in onnx.load(onnx_path).graph.node if n.domain == "sgf" and n.op_type == "MCNS")
    assert n_mcns >= 1
    proc, r = _probe("--onnx", str(onnx_path), "--mode", "attr", link_dir=rtx_link_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert r["parsed"] and r["marked"] == n_mcns and "PLUGIN_V3" in r["layer_types"]
    assert r["output_shape"] == [1, 1, 64, 64] and r["built"]


@pytest.mark.slow
def test_build_cli_mcns_plugin_makes_a_plugin_engine(rtx_link_dir, lite_onnx, tmp_path):
    """`sgf-deploy build --backend tensorrt-rtx --mcns plugin`: the engine holds the plugin layer
    (not the inlined function) and its manifest says so. Run as a subprocess: a parser failure on a
    plugin node aborts the process."""
    out = tmp_path / "engines"
    code = ("import sys\nfrom sgf_deploy.cli import cli\n"
            "sys.exit(cli.main(args=sys.argv[1:], prog_name='sgf-deploy', standalone_mode=True))")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["LD_LIBRARY_PATH"] = str(rtx_link_dir)
    proc = subprocess.run([sys.executable, "-c", code, "build", "--onnx", str(lite_onnx), "--backend", "tensorrt-rtx",
                           "--fp32", "--mcns", "plugin", "--out", str(out), "--parity", "0"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    manifests = sorted(out.glob("*.json"))
    assert len(manifests) == 1, manifests
    man = json.loads(manifests[0].read_text())
    assert man["build_options"]["mcns"] == "plugin"
    # the build variant (mcns=plugin) is part of the engine's identity: "+<variant hash>" in its name
    assert f"+{man['build_options']['variant_hash']}." in manifests[0].name
    text = json.dumps(man)
    assert '"plugin_layers": 1' in text, text[:2000]
    assert not list(out.glob("*.plugin.onnx"))  # the marked copy is removed
