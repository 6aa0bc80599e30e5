"""ONNX Runtime engines: FP32 and INT8 built through the CLI with no paths (the `make demo`
chain), FP16 through the library; parity, manifests, loading, and every refusal path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_cli import run_cli

from sgf_deploy.engines import build_engine, load_engine, read_manifest, update_manifest
from sgf_deploy.engines.manifest import REQUIRED_KEYS, manifest_path
from sgf_deploy.errors import EngineMismatchError, InputError, SgfError

PARITY = "2"


@pytest.fixture(scope="module")
def engines(workspace):
    """{precision: engine path}; FP32 and INT8 via `sgf-deploy build` in the workspace, no paths."""
    out = {}
    for flag in ("--fp32", "--int8"):
        code, text = run_cli(["build", flag, "--backend", "onnxruntime", "--parity", PARITY, "--threads", "2"], workspace)
        assert code == 0, text
        assert "parity vs pytorch: PSNR" in text, text
        out[flag[2:]] = (workspace / "engines" / text.split("wrote engines/")[1].split(" ")[0], text)
    built = build_engine(workspace / "export" / next((workspace / "export").glob("*.onnx")).name,
                         backend="onnxruntime", precision="fp16", out_dir=workspace / "engines", parity_n=int(PARITY))
    out["fp16"] = (built.engine_path, "")
    return out


@pytest.mark.parametrize("precision, guide", [("fp32", 80.0), ("fp16", 50.0), ("int8", 40.0)])
def test_built_with_parity(engines, precision, guide):
    engine, _ = engines[precision]
    manifest = read_manifest(engine)
    assert set(REQUIRED_KEYS) <= set(manifest)
    assert manifest["precision"] == precision and manifest["backend"] == "onnxruntime"
    parity = manifest["build_parity"]
    assert parity["status"] == "run" and parity["reference"].startswith("pytorch")
    assert parity["psnr_db"] >= guide, parity
    assert "test split" in parity["slices"]
    # identity in the name: <stem>.ort-<version>.<precision>.<device>.<profile>.onnx
    import onnxruntime

    assert f".ort-{onnxruntime.__version__}.{precision}" in engine.name
    assert engine.name.endswith(".cpu-x86_64.dyn.onnx") or ".cpu-" in engine.name
    assert manifest["device"]["kind"] == "cpu" and manifest["build_options"]["execution_provider"] == "CPUExecutionProvider"
    assert manifest["build_options"]["saved_optimization_level"] == "ORT_ENABLE_EXTENDED"


@pytest.mark.parametrize("precision, guide", [("fp32", 80.0), ("int8", 40.0)])
def test_cli_prints_parity(engines, precision, guide):
    """The CLI prints the measured build parity (the manifest's figure), above the precision's guide."""
    engine, text = engines[precision]
    printed = re.search(r"parity vs pytorch: PSNR (\d+\.\d+|inf) dB", text)
    assert printed, text
    assert float(printed.group(1)) >= guide, text
    assert float(printed.group(1)) == pytest.approx(read_manifest(engine)["build_parity"]["psnr_db"])
    assert "dB guide for" not in text  # the CLI flags a figure below the guide; none here


def test_fp16_keeps_mcns_head_attention_fp32(engines, workspace):
    import onnx

    conv = read_manifest(engines["fp16"][0])["precision_conversion"]
    assert conv["mcns_function_kept"] and conv["keep_fp32"] == ["@mcns", "@norm", "@attention", "@head"]
    kept = conv["fp32_nodes"]
    # every sgf.MCNS node of the exported graph (named by the exporter, e.g. "n0") is kept in FP32
    exported = onnx.load(str(next((workspace / "export").glob("*.onnx")))).graph.node
    mcns_nodes = [n.name for n in exported if (n.domain, n.op_type) == ("sgf", "MCNS")]
    assert mcns_nodes and set(mcns_nodes) <= set(kept), (mcns_nodes, kept)
    assert any("Softmax" in k for k in kept) and any("add" in k for k in kept)
    assert conv["fp32_weights_restored"] >= 2  # the output head's weight and bias


def test_int8_qdq(engines):
    manifest = read_manifest(engines["int8"][0])
    conv = manifest["precision_conversion"]
    assert conv["qdq"]["int32_dequantize_inputs"] == 0 and conv["qdq"]["quantize_linear"] > 20
    assert conv["activations"].startswith("uint8, asymmetric") and conv["bias"].startswith("float")
    assert conv["qdq"]["zero_point_types"].keys() <= {"UINT8", "INT8"}
    assert conv["extra_options"]["QuantizeBias"] is False
    assert any("Softmax" in n for n in conv["float_nodes"])
    assert manifest["calibration"]["n"] == 8 and manifest["calibration"]["source"] == "sim"
    assert manifest["build_options"]["calib_method"] == "entropy"


def test_load_and_infer_matches_fp32_onnx(engines, workspace):
    import onnxruntime as ort

    onnx_path = next((workspace / "export").glob("*.onnx"))
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 1, 48, 64)).astype(np.float32)
    tar = rng.standard_normal((2, 1, 48, 64)).astype(np.float32)
    expected = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"reference": ref, "target": tar})[0]
    for precision, tol in (("fp32", 1e-4), ("fp16", 5e-2)):
        with load_engine(engines[precision][0], threads=1) as runner:
            out = runner.infer(ref, tar)
            assert out.shape == (2, 1, 48, 64) and out.dtype == np.float32
            assert np.abs(out - expected).max() < tol
            assert runner.manifest.precision == precision
    with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
        load_engine(engines["fp32"][0]).infer(ref[:, 0], tar[:, 0])


def _copy(engine: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(engine, dest / engine.name)
    shutil.copy(manifest_path(engine), manifest_path(dest / engine.name))
    return dest / engine.name


def _edit(engine: Path, **fields) -> None:
    path = manifest_path(engine)
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_refuses_other_backend_version(engines, tmp_path):
    import onnxruntime

    engine = _copy(engines["fp32"][0], tmp_path)
    _edit(engine, backend_version="1.0.0")
    with pytest.raises(EngineMismatchError, match=rf"ONNX Runtime 1\.0\.0.*ONNX Runtime {onnxruntime.__version__}"):
        load_engine(engine)


def test_refuses_other_arch_and_provider(engines, tmp_path):
    engine = _copy(engines["fp32"][0], tmp_path / "arch")
    manifest = read_manifest(engine)
    _edit(engine, device=dict(manifest["device"], arch="aarch64", name="Neoverse-V2"))
    with pytest.raises(EngineMismatchError, match="aarch64.*x86_64|aarch64"):
        load_engine(engine)
    engine = _copy(engines["fp32"][0], tmp_path / "ep")
    _edit(engine, build_options=dict(manifest["build_options"], execution_provider="CUDAExecutionProvider"))
    with pytest.raises(EngineMismatchError, match="CUDAExecutionProvider"):
        load_engine(engine)


def test_refuses_missing_corrupt_manifest_and_changed_engine(engines, tmp_path):
    engine = _copy(engines["fp32"][0], tmp_path / "missing")
    manifest_path(engine).unlink()
    with pytest.raises(EngineMismatchError, match="manifest .* is missing"):
        load_engine(engine)
    engine = _copy(engines["fp32"][0], tmp_path / "corrupt")
    manifest_path(engine).write_text("{not json")
    with pytest.raises(EngineMismatchError, match="corrupt engine manifest"):
        load_engine(engine)
    engine = _copy(engines["fp32"][0], tmp_path / "changed")
    with open(engine, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EngineMismatchError, match="sha256 .* does not match"):
        load_engine(engine)


def test_update_manifest_atomic_and_identity_frozen(engines, tmp_path):
    engine = _copy(engines["int8"][0], tmp_path)
    validation = {"verdict": "pass", "report_sha256": "0" * 64, "report_path": "reports/x.json", "validated_at": "now"}
    updated = update_manifest(engine, validation=validation)
    assert updated["validation"] == validation == read_manifest(engine)["validation"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([engine.name, engine.name + ".json"])  # no temp files
    with pytest.raises(SgfError, match="identity"):
        update_manifest(engine, precision="fp32")
    load_engine(engine).close()  # still loads: the engine's sha is untouched


def test_existing_engine_refused_without_force(engines, workspace):
    code, text = run_cli(["build", "--fp32", "--backend", "onnxruntime", "--parity", "0"], workspace)
    assert code != 0 and "already exists; pass --force" in text


def test_int8_without_calibration_says_how(lite_onnx, tmp_path):
    with pytest.raises(InputError) as info:
        build_engine(lite_onnx, backend="onnxruntime", precision="int8", out_dir=tmp_path / "e",
                     calibration_dir=tmp_path / "calibration")
    assert "sgf-deploy calibrate --from sim --pair t1-t2 --task recon4x --n 64" in str(info.value)
    for name in ("a", "b"):
        (tmp_path / "calibration" / name).mkdir(parents=True)
        (tmp_path / "calibration" / name / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="2 calibration sets .*choose one with --calib"):
        build_engine(lite_onnx, backend="onnxruntime", precision="int8", out_dir=tmp_path / "e",
                     calibration_dir=tmp_path / "calibration")


def test_onnx_discovery_errors(tmp_path):
    code, text = run_cli(["build", "--fp32"], tmp_path)
    assert code != 0 and "run `sgf-deploy export` first" in text
    (tmp_path / "export").mkdir()
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / "export" / name).write_bytes(b"")
    code, text = run_cli(["build", "--fp32"], tmp_path)
    assert code != 0 and "a.onnx, b.onnx" in text and "--onnx" in text


def test_mcns_plugin_is_for_tensorrt_only(lite_onnx, tmp_path):
    with pytest.raises(SgfError, match="applies to TensorRT and TensorRT-RTX"):
        build_engine(lite_onnx, backend="onnxruntime", precision="fp32", mcns="plugin", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_static_shapes_profile_recorded_and_enforced(lite_onnx, tmp_path):
    built = build_engine(lite_onnx, backend="onnxruntime", precision="fp32", shapes="1x1x64x64:1x1x64x96:2x1x96x96",
                         out_dir=tmp_path, parity_n=1)
    assert built.engine_path.name.endswith(".1x64x64-1x64x96-2x96x96.onnx")
    assert built.manifest.profile.max == (2, 1, 96, 96)
    assert "96x96" in built.manifest.build_parity["slices"]  # slices cropped into the profile
    runner = load_engine(built.engine_path)
    with pytest.raises(InputError, match="outside the engine's profile"):
        runner.infer(np.zeros((1, 1, 128, 128), np.float32), np.zeros((1, 1, 128, 128), np.float32))
    with pytest.raises(InputError, match="multiples of 8"):
        build_engine(lite_onnx, backend="onnxruntime", precision="fp32", shapes="1x1x60x64", out_dir=tmp_path)


def test_loading_and_running_never_imports_torch(engines):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from sgf_deploy.engines import load_engine\n"
        f"r = load_engine({str(engines['int8'][0])!r}, threads=1)\n"
        "x = np.zeros((1, 1, 32, 32), np.float32)\n"
        "assert r.infer(x, x).shape == (1, 1, 32, 32)\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
