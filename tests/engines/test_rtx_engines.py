"""TensorRT-RTX engines built ahead of time on this CPU-only machine (TensorRT-RTX needs no GPU to
build): FP32, FP16 and INT8 (Q/DQ) of both presets; running them needs an RTX-class GPU,
so on a machine without one loading must fail with a clear error, never a crash."""

from __future__ import annotations

import pytest

from sgf_deploy.engines import build_engine, load_engine, read_manifest
from sgf_deploy.engines.identity import RTX_DEFAULT_TARGETS, gpu_devices
from sgf_deploy.errors import EngineMismatchError

trt = pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx is not installed (pip install 'sgf-deploy[rtx]')")
NO_GPU = not gpu_devices()


@pytest.fixture(scope="module")
def rtx_engines(lite_onnx, paper_onnx, calib_set, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("rtx-engines")
    built = {}
    for preset, onnx_path in (("lite", lite_onnx), ("paper", paper_onnx)):
        for precision in ("fp32", "fp16", "int8"):
            if preset == "lite" and precision != "int8":
                parity = 1 if precision == "fp16" else 0
            else:
                parity = 1
            built[preset, precision] = build_engine(
                onnx_path, backend="tensorrt-rtx", precision=precision, calib=calib_set if precision == "int8" else None,
                out_dir=out_dir, parity_n=parity)
    return built


@pytest.mark.parametrize("preset", ["lite", "paper"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_rtx_engine_built_without_gpu(rtx_engines, preset, precision):
    built = rtx_engines[preset, precision]
    manifest = read_manifest(built.engine_path)
    assert built.engine_path.stat().st_size > 10_000 and built.engine_path.suffix == ".engine"
    assert manifest["backend"] == "tensorrt-rtx" and manifest["backend_version"] == trt.__version__
    assert manifest["device"]["targets"] == list(RTX_DEFAULT_TARGETS)
    assert ".sm80-86-89-120." in built.engine_path.name
    assert manifest["build_options"]["strongly_typed"] is True
    assert manifest["build_options"]["timing_cache"] is None  # RTX: a timing cache would force a GPU query
    if preset == "paper":
        assert manifest["profile"]["min"] == [1, 1, 32, 40] and manifest["profile"]["max"] == [4, 1, 32, 40]
    else:
        assert manifest["profile"] == dict(manifest["profile"], min=[1, 1, 64, 64], opt=[1, 1, 320, 320], max=[4, 1, 512, 512])
    parity = manifest["build_parity"]
    if NO_GPU and parity.get("status") != "not run: disabled (--n 0)":
        assert parity["status"] == "not run: no GPU" and parity["psnr_db"] is None
        proxy = parity["onnx_proxy"]
        assert "not the engine" in proxy["what"]
        assert proxy["psnr_db"] >= {"fp32": 80, "fp16": 50, "int8": 40}[precision]


def test_rtx_int8_qdq_is_int8_zero_point(rtx_engines):
    conv = read_manifest(rtx_engines["lite", "int8"].engine_path)["precision_conversion"]
    assert set(conv["qdq"]["zero_point_types"]) == {"INT8"}  # every zero point int8 0 (checked when built)
    assert "zero point 0" in conv["activations"]


@pytest.mark.skipif(not NO_GPU, reason="this machine has an NVIDIA GPU; the no-GPU refusal is not reachable")
def test_rtx_engine_refused_without_gpu(rtx_engines):
    with pytest.raises(EngineMismatchError) as info:
        load_engine(rtx_engines["lite", "fp16"].engine_path)
    message = str(info.value)
    assert "TensorRT-RTX targets [SM80, SM86, SM89, SM120]" in message
    assert "needs an NVIDIA RTX-class GPU; none found" in message


def test_rtx_targets_option(lite_onnx, tmp_path):
    built = build_engine(lite_onnx, backend="tensorrt-rtx", precision="fp32", targets="sm86", out_dir=tmp_path, parity_n=0)
    assert built.manifest.device["targets"] == ["SM86"] and ".sm86." in built.engine_path.name
    assert built.manifest.build_parity["status"].startswith("not run")
