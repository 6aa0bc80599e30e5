"""Engine identity: shape profiles, names, backend choice; and no torch in engines/calibration."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sgf_deploy.engines.identity import (
    Profile,
    device_token,
    engine_filename,
    normalize_targets,
    parse_shapes,
    resolve_backend,
    resolve_profile,
)
from sgf_deploy.errors import InputError


def test_parse_shapes():
    p = parse_shapes("1x1x64x64:1x1x320x320:4x1x512x512")
    assert (p.min, p.opt, p.max) == ((1, 1, 64, 64), (1, 1, 320, 320), (4, 1, 512, 512))
    assert p.token() == "1x64x64-1x320x320-4x512x512"
    s = parse_shapes("320x320")
    assert s.static and s.min == (1, 1, 320, 320) and s.token() == "1x320x320"
    assert parse_shapes("2x64x64:2x64x64:2x64x64").min == (2, 1, 64, 64)
    assert parse_shapes(None) is None
    for bad, match in (("1x1x60x64", "multiples of 8"), ("1x3x64x64", "channels"), ("64x64:32x32", "MIN:OPT:MAX"),
                       ("128x128:64x64:256x256", "MIN <= OPT <= MAX"), ("axb", "cannot read")):
        with pytest.raises(InputError, match=match):
            parse_shapes(bad)


def test_resolve_profile_defaults():
    dynamic = (None, 1, None, None)
    assert resolve_profile("onnxruntime", None, dynamic, "x").dynamic
    trt = resolve_profile("tensorrt-rtx", None, dynamic, "x")
    assert (trt.min, trt.opt, trt.max) == ((1, 1, 64, 64), (1, 1, 320, 320), (4, 1, 512, 512))
    fixed_hw = resolve_profile("tensorrt-rtx", None, (None, 1, 32, 40), "x")
    assert fixed_hw.min == (1, 1, 32, 40) and fixed_hw.max == (4, 1, 32, 40)
    static = resolve_profile("onnxruntime", None, (1, 1, 320, 320), "x")
    assert static.static and static.token() == "1x320x320"
    with pytest.raises(InputError, match="fixed at"):
        resolve_profile("onnxruntime", parse_shapes("64x64"), (1, 1, 320, 320), "x")


def test_names_and_tokens():
    assert normalize_targets("sm86, 8.9,SM120") == ("SM86", "SM89", "SM120")
    with pytest.raises(InputError):
        normalize_targets("ampere")
    assert device_token("tensorrt-rtx", {"targets": ["SM80", "SM86", "SM89", "SM120"]}) == "sm80-86-89-120"
    assert device_token("tensorrt", {"sm": "SM89"}) == "sm89"
    assert device_token("onnxruntime", {"kind": "cpu", "arch": "x86_64"}) == "cpu-x86_64"
    name = engine_filename("m", "onnxruntime", "1.32.0", "int8-entropy", "cpu-x86_64", Profile(None, None, None))
    assert name == "m.ort-1.32.0.int8-entropy.cpu-x86_64.dyn.onnx"


def test_resolve_backend():
    import importlib.util

    from sgf_deploy.engines.identity import gpu_devices

    expected = "tensorrt" if importlib.util.find_spec("tensorrt") and gpu_devices() else "onnxruntime"
    assert resolve_backend("auto") == expected
    assert resolve_backend("ort") == "onnxruntime"
    with pytest.raises(InputError, match="unknown backend"):
        resolve_backend("tvm")
    if importlib.util.find_spec("openvino"):  # issue 18: OpenVINO is a backend ("ov" for short)
        assert resolve_backend("ov") == resolve_backend("openvino") == "openvino"


def test_engines_and_calibration_never_import_torch(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import sgf_deploy.engines, sgf_deploy.calibration\n"
        "from sgf_deploy.engines import build, identity, manifest, parity, base\n"
        "from sgf_deploy.engines.onnxruntime import builder, runner\n"
        "from sgf_deploy.engines.tensorrt import builder as b2, runner as r2\n"
        "from sgf_deploy.calibration import dataset, fp16, int8, patterns, reader\n"
        "from sgf_deploy.commands import build as cb, calibrate as cc\n"
        "assert 'torch' not in sys.modules, [m for m in sys.modules if m.startswith('torch')][:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
