"""``sgf-deploy validate`` end to end on a briefly trained model: FP32/FP16 pass, a perturbed
convolution fails (and --layerwise names it), INT8 gets an honest verdict, engines that cannot
run here are reported, checkpoints are matched by SHA-256."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sgf_deploy.artifacts import sha256_file, write_json_atomic
from sgf_deploy.engines import read_manifest

from validate_helpers import N_SLICES, copy_engine, invoke

pytestmark = pytest.mark.slow


def _workspace(tmp_path: Path, built, *engines: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "export").mkdir(parents=True)
    shutil.copy2(built.onnx, ws / "export" / built.onnx.name)
    for engine in engines:
        copy_engine(engine, ws / "engines")
    return ws


def _report(ws: Path, engine: Path) -> dict:
    return json.loads((ws / "reports" / engine.stem / "report.json").read_text())


def test_validate_all_in_a_workspace_fp32_fp16_pass(tmp_path, built, monkeypatch):
    ws = _workspace(tmp_path, built, built.fp32, built.fp16)
    monkeypatch.chdir(ws)
    result = invoke(["validate", "--n", N_SLICES])
    print(result.output)
    assert result.exit_code == 0, result.output
    for engine, precision in ((built.fp32, "fp32"), (built.fp16, "fp16")):
        assert f"{engine.name} [{precision.upper()}]: PASS" in result.output
        manifest = read_manifest(ws / "engines" / engine.name)
        validation = manifest["validation"]
        assert validation["verdict"] == "pass"
        report_json = ws / "reports" / engine.stem / "report.json"
        assert validation["report_sha256"] == sha256_file(report_json)
        report = _report(ws, engine)
        assert report["verdict"] == "pass" and report["reasons"] == []
        assert report["engine"]["sha256"] == manifest["engine_sha256"]
        assert report["onnx"]["sha256"] == sha256_file(built.onnx) and report["onnx"]["found"]
        assert report["checkpoint"]["sha256"] == manifest["checkpoint_sha256"]
        assert report["thresholds"]["precision"] == precision and report["thresholds"]["source"] == "default"
        assert report["data"]["source"] == "sim" and report["data"]["split"] == "test"
        assert report["data"]["n_slices"] == int(N_SLICES) == len(report["per_slice"])
        s = report["summary"]
        assert s["parity_psnr"]["min"] >= report["thresholds"]["min_parity_psnr"]
        assert abs(s["delta_psnr"]["mean_diff"]) <= report["thresholds"]["max_delta_psnr"]
        for key in ("ci95_low", "ci95_high", "wilcoxon_p", "mean_a", "mean_b"):
            assert key in s["delta_psnr"] and key in s["delta_ssim"]
        assert report["environment"]["onnxruntime"] and report["environment"]["torch"]
        assert (ws / "reports" / engine.stem / "panel.png").stat().st_size > 10_000
        assert (ws / "reports" / engine.stem / "summary.md").is_file()
        # a 30-step model is no longer its residual input: parity is not trivially met
        assert abs(s["pytorch"]["psnr"] - float(np.mean([r["psnr_pytorch"] for r in report["per_slice"]]))) < 1e-9

    again = invoke(["validate", "--n", N_SLICES])
    assert again.exit_code == 0
    assert "nothing to validate" in again.output and "already validated (pass)" in again.output


def _perturbed_onnx(src: Path, dest: Path, weight: str, rel: float = 0.03) -> list[str]:
    """Scale ``weight`` by (1 + rel * N(0,1)) per element; returns the Conv nodes that use it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    for init in model.graph.initializer:
        if init.name == weight:
            w = numpy_helper.to_array(init)
            noise = np.random.default_rng(0).standard_normal(w.shape).astype(np.float32)
            init.CopyFrom(numpy_helper.from_array((w * (1 + rel * noise)).astype(np.float32), weight))
            break
    else:
        raise AssertionError(f"{weight} not in the exported graph")
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return [n.name for n in model.graph.node if weight in n.input]


def test_perturbed_convolution_fails_and_layerwise_names_it(tmp_path, built, trained_ckpt, monkeypatch):
    import onnx

    from sgf_deploy.engines import build_engine

    # The head conv (shared by both contrasts' encoders), 4 % multiplicative noise: about 68 dB of
    # PSNR(engine, PyTorch) on the 30-step model, far below the FP32 gate (80 dB). Deeper layers of
    # so briefly trained a model barely move its output (its residual is ~1 % of the range).
    weight = "net.head.weight"
    ws = tmp_path / "ws"
    onnx_path = ws / "export" / "perturbed.onnx"
    convs = _perturbed_onnx(built.onnx, onnx_path, weight, rel=0.04)
    engine = Path(build_engine(onnx_path, backend="onnxruntime", precision="fp32", out_dir=ws / "engines",
                               parity_n=0).engine_path)
    monkeypatch.chdir(ws)
    result = invoke(["validate", "--engine", str(engine.relative_to(ws)), "--ckpt", str(trained_ckpt),
                     "--n", N_SLICES, "--layerwise"])
    print(result.output)
    assert result.exit_code == 3, result.output
    assert "FAIL" in result.output and "failed validation" in result.output
    manifest = read_manifest(engine)
    assert manifest["validation"]["verdict"] == "fail"
    report = json.loads((ws / "reports" / engine.stem / "report.json").read_text())
    assert manifest["validation"]["report_sha256"] == sha256_file(ws / "reports" / engine.stem / "report.json")
    assert report["verdict"] == "fail" and report["reasons"]
    assert report["summary"]["parity_psnr"]["min"] < 80
    # the first tensor whose error jumps is the perturbed convolution's output, or (when ONNX
    # Runtime fused the conv with its activation) the output of that fused activation
    lw = report["layerwise"]
    assert lw["run"] and lw["first_jump"], lw
    graph = onnx.load(str(built.onnx)).graph
    conv_outputs = {o for n in graph.node if n.name in convs for o in n.output}
    consumers = {n.name for n in graph.node if conv_outputs & set(n.input)}
    fj = lw["first_jump"]
    assert fj["node"] in set(convs) | consumers, fj
    if fj["node"] not in convs:  # fused: the report names the conv behind it
        assert {f["node"] for f in fj["fused_inputs_from"]} & set(convs), fj
    assert lw["first_jump"]["rel_error"] > 1e-3
    # the FP32 side is a fresh export of the checkpoint: the perturbed file is caught by name too
    assert lw["fp32_reference"].startswith("fresh FP32 export")
    assert [d["initializer"] for d in lw["onnx_vs_checkpoint"]["differing"]] == [weight]
    assert "does not carry the checkpoint's weights" in result.output
    assert "layer-wise: error first jumps at node" in result.output
    assert "suggestion" not in lw  # FP32: nothing to keep in higher precision; re-export instead


# Gates whose verdict on an INT8 engine is known in advance: a sane engine's worst-slice
# PSNR(engine, PyTorch) is far above 0 dB and its delta PSNR far inside 100 dB; no quantized
# engine reaches 500 dB (that is float32 rounding). The INT8 defaults are in test_validate_thresholds.
INT8_GATES = {
    "pass": ["--min-parity-psnr", "0", "--max-delta-psnr", "100"],
    "fail": ["--min-parity-psnr", "500"],
}


@pytest.mark.parametrize("verdict", ["pass", "fail"])
def test_int8_verdict_is_honest(tmp_path, built, trained_ckpt, monkeypatch, verdict):
    """The verdict follows the gate and comes with the numbers; a failure comes with the layer-wise
    diagnosis and the build line that keeps the culprits in float, a pass skips the layer-wise run."""
    from sgf_deploy.calibration.dataset import write_calibration_set
    from sgf_deploy.engines import build_engine

    ws = _workspace(tmp_path, built)
    calib = write_calibration_set("sim", 8, ws / "calibration" / "sim8")
    engine = Path(build_engine(ws / "export" / built.onnx.name, backend="onnxruntime", precision="int8", calib=calib,
                               out_dir=ws / "engines", parity_n=0).engine_path)
    monkeypatch.chdir(ws)
    result = invoke(["validate", "--engine", str(engine), "--n", N_SLICES, "--layerwise", *INT8_GATES[verdict]])
    print(result.output)
    report = json.loads((ws / "reports" / engine.stem / "report.json").read_text())
    s = report["summary"]
    print(f"INT8: worst PSNR(engine, PyTorch) {s['parity_psnr']['min']:.2f} dB, "
          f"delta PSNR {s['delta_psnr']['mean_diff']:+.4f} dB, verdict {report['verdict']}")
    assert report["verdict"] == verdict, result.output
    assert read_manifest(engine)["validation"]["verdict"] == verdict
    assert report["thresholds"]["precision"] == "int8" and report["thresholds"]["source"].startswith("user")
    if verdict == "pass":
        assert result.exit_code == 0, result.output
        assert report["reasons"] == [] and report["layerwise"]["run"] is False
    else:
        assert result.exit_code == 3, result.output
        assert (report["thresholds"]["min_parity_psnr"], report["thresholds"]["max_delta_psnr"]) == (500.0, 0.1)
        assert s["parity_psnr"]["min"] < 500
        assert any("< 500 dB" in reason for reason in report["reasons"]), report["reasons"]
        assert report["layerwise"]["run"] and report["layerwise"]["top_added"]
        assert "--exclude" in report["layerwise"]["suggestion"]


def test_user_threshold_fails_fp16_and_layerwise_runs_on_its_graph(tmp_path, built, monkeypatch):
    """FP16 made to fail with a user threshold: exit 3 after the report, layer-wise runs on the
    FP16 graph (float16 tensors matched by name)."""
    ws = _workspace(tmp_path, built, built.fp16)
    monkeypatch.chdir(ws)
    result = invoke(["validate", "--engine", f"engines/{built.fp16.name}", "--n", "2", "--min-parity-psnr", "500",
                     "--layerwise", "--report", "reports/strict"])
    assert result.exit_code == 3, result.output
    report = json.loads((ws / "reports" / "strict" / "report.json").read_text())
    assert report["thresholds"]["min_parity_psnr"] == 500 and report["thresholds"]["source"].startswith("user")
    lw = report["layerwise"]
    assert lw["run"] and lw["tensors_compared"] > 50 and lw["tensors_unmatched"] < lw["tensors_compared"]
    # the existing report is not replaced without --force
    again = invoke(["validate", "--engine", f"engines/{built.fp16.name}", "--n", "2", "--report", "reports/strict"])
    assert again.exit_code != 0 and "--force" in again.output


def test_checkpoint_must_match(tmp_path, built, monkeypatch):
    import torch

    from sgf_deploy.model import build_model, save_checkpoint

    ws = _workspace(tmp_path, built, built.fp32)
    monkeypatch.chdir(ws)
    torch.manual_seed(5)
    other = save_checkpoint(tmp_path / "other.pt", build_model("lite"), {"task": "recon4x", "pair": "t1-t2"})
    result = invoke(["validate", "--engine", f"engines/{built.fp32.name}", "--ckpt", other["path"], "--n", "2"])
    assert result.exit_code == 2
    assert "is not the checkpoint" in result.output
    assert "validation" not in read_manifest(ws / "engines" / built.fp32.name)


def test_recorded_checkpoint_resolution(tmp_path, built, trained_ckpt, monkeypatch):
    from sgf_deploy.errors import CheckpointError
    from sgf_deploy.model import locate

    sha = read_manifest(built.fp32)["checkpoint_sha256"]

    def resolve(recorded):
        return locate.resolve_checkpoint(sha, recorded=[recorded], what=built.fp32.name)

    # recorded path, SHA-256 matches
    p, got, how = resolve(str(trained_ckpt))
    assert (p, got) == (Path(trained_ckpt), sha) and how.startswith("recorded")
    # recorded path gone: error asking for --ckpt
    with pytest.raises(CheckpointError, match="pass --ckpt"):
        resolve(str(tmp_path / "gone.pt"))
    # recorded path holds another file: not used
    (tmp_path / "impostor.pt").write_bytes(b"not it")
    with pytest.raises(CheckpointError, match="another SHA-256"):
        resolve(str(tmp_path / "impostor.pt"))
    # an embedded default is used only when its SHA-256 matches
    monkeypatch.setattr(locate, "DEFAULT_CHECKPOINT", Path(trained_ckpt))
    p, _, how = resolve(str(tmp_path / "gone.pt"))
    assert p == Path(trained_ckpt) and how.startswith("embedded default")
    monkeypatch.setattr(locate, "DEFAULT_CHECKPOINT", tmp_path / "impostor.pt")
    monkeypatch.setattr(locate, "DEFAULTS_DIR", tmp_path / "no-defaults")
    with pytest.raises(CheckpointError):
        resolve(str(tmp_path / "gone.pt"))


def test_data_dir(tmp_path, built, monkeypatch):
    from sgf_deploy.data.simulator import simulate

    ws = _workspace(tmp_path, built, built.fp32)
    sim = simulate("t1-t2", "recon4x", "test", 3, seed=7)
    cases = ws / "cases"
    cases.mkdir()
    for i in range(3):
        np.save(cases / f"case{i}_ref.npy", sim["reference"][i])
        np.save(cases / f"case{i}_target.npy", sim["target"][i])
        np.save(cases / f"case{i}_gt.npy", sim["ground_truth"][i])
    monkeypatch.chdir(ws)
    result = invoke(["validate", "--engine", f"engines/{built.fp32.name}", "--data", "cases"])
    assert result.exit_code == 0, result.output
    report = _report(ws, built.fp32)
    assert report["data"]["source"] == "dir" and report["data"]["n_slices"] == 3 and report["data"]["n_volumes"] == 3
    assert [r["volume"] for r in report["per_slice"]] == ["case0", "case1", "case2"]


def _fake_rtx_engine(dest: Path, like: Path) -> Path:
    """A TensorRT-RTX engine file + manifest (no GPU here: it can never run)."""
    engine = dest / "model.rtx-1.7.fp16.sm86.engine"
    dest.mkdir(parents=True, exist_ok=True)
    engine.write_bytes(b"not a real plan file")
    manifest = dict(read_manifest(like))
    manifest.update({"engine_file": engine.name, "engine_sha256": sha256_file(engine), "backend": "tensorrt-rtx",
                     "backend_version": "1.7.1.116", "precision": "fp16",
                     "device": {"kind": "cuda", "targets": ["SM86"], "name": "ahead-of-time"}})
    write_json_atomic(engine.with_name(engine.name + ".json"), manifest)
    return engine


def test_engine_that_cannot_run_here(tmp_path, built, monkeypatch):
    ws = _workspace(tmp_path, built, built.fp32)
    rtx = _fake_rtx_engine(ws / "engines", built.fp32)
    monkeypatch.chdir(ws)
    explicit = invoke(["validate", "--engine", f"engines/{rtx.name}", "--n", "2"])
    assert explicit.exit_code != 0
    assert "not run" in explicit.output and "GPU" in explicit.output
    assert not (ws / "reports" / rtx.stem).exists()
    assert "validation" not in read_manifest(rtx)
    everything = invoke(["validate", "--n", "2"])
    assert everything.exit_code == 0, everything.output
    assert "skipped, not run" in everything.output and "PASS" in everything.output
