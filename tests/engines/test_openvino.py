"""OpenVINO engines: FP32 and INT8 (NNCF) built through the CLI in a `make demo`-style workspace;
parity with ONNX Runtime at odd sizes, the INT8 float scope, every refusal path, validate -> run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from engine_cli import run_cli

from sgf_deploy.engines import load_engine, read_manifest
from sgf_deploy.engines.manifest import manifest_path
from sgf_deploy.errors import EngineMismatchError, InputError

ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install 'sgf-deploy[openvino]')")
pytest.importorskip("nncf", reason="nncf is not installed (pip install 'sgf-deploy[openvino]')")


@pytest.fixture(scope="module")
def ov_engines(workspace):
    """{precision: engine path}: `sgf-deploy build --backend openvino` with no paths."""
    out = {}
    for flag, parity in (("--fp32", "0"), ("--int8", "1")):
        code, text = run_cli(["build", flag, "--backend", "openvino", "--parity", parity, "--threads", "2"], workspace)
        assert code == 0, text
        out[flag[2:]] = next(p for p in (workspace / "engines").glob(f"*.ov-*.{flag[2:]}*.xml"))
    return out


def _copy(engine: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for path in (engine, engine.with_suffix(".bin"), manifest_path(engine)):
        shutil.copy(path, dest / path.name)
    return dest / engine.name


def _edit(engine: Path, **fields) -> None:
    data = json.loads(manifest_path(engine).read_text())
    data.update(fields)
    manifest_path(engine).write_text(json.dumps(data))


def test_manifest_and_name(ov_engines):
    for precision, engine in ov_engines.items():
        man = read_manifest(engine)
        assert man["backend"] == "openvino" and man["precision"] == precision
        assert man["backend_version"] == ov.__version__.split("-")[0] and ".ov-" in engine.name
        assert engine.with_suffix(".bin").is_file() and len(man["build_options"]["weights_sha256"]) == 64
        assert "inlined" in man["precision_conversion"]["mcns"]
        assert man["build_parity"]["status"] == ("run" if precision == "int8" else "not run: disabled (--n 0)")
    assert ".int8-histogram." in ov_engines["int8"].name


def test_odd_sizes_match_onnxruntime(ov_engines, workspace):
    import onnxruntime as ort

    onnx_path = next((workspace / "export").glob("*.onnx"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    with load_engine(ov_engines["fp32"], threads=1) as runner:
        for shape in ((1, 1, 40, 56), (3, 1, 64, 48), (1, 1, 40, 56)):
            ref, tar = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
            expected = session.run(None, {"reference": ref, "target": tar})[0]
            out = runner.infer(ref, tar)
            assert out.shape == shape and out.dtype == np.float32
            assert np.abs(out - expected).max() < 1e-4
        assert len(runner._requests) == 2  # one static compilation per shape, reused
        with pytest.raises(InputError, match=r"\(N, 1, H, W\)"):
            runner.infer(ref[:, 0], tar[:, 0])


def test_int8_float_scope_and_gate(ov_engines):
    from sgf_deploy.cpu import has_int8_dot_product

    conv = read_manifest(ov_engines["int8"])["precision_conversion"]
    assert conv["float_patterns"] == ["@mcns", "@attention", "@input", "@output"]
    assert conv["fake_quantize"] > 10 and conv["calibration_pairs"] == 8
    assert conv["overflow_fix"] == ("disable" if has_int8_dot_product() else "enable")
    model = ov.Core().read_model(str(ov_engines["int8"]))
    mcns_call = next(n for n in conv["float_nodes"] if "conv" not in n and "Mul" not in n and "MatMul" not in n
                     and "Softmax" not in n and "add" not in n and "attention" not in n)
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":  # nothing quantised inside MCNS
            for target in op.output(0).get_target_inputs():
                assert not target.get_node().get_friendly_name().startswith(f"{mcns_call}/mcns/")
    parity = read_manifest(ov_engines["int8"])["build_parity"]
    assert parity["psnr_db"] >= 40, parity  # the INT8 guide (validate's gate) on the build-time slices


def test_refusals(ov_engines, tmp_path):
    engine = _copy(ov_engines["fp32"], tmp_path / "version")
    _edit(engine, backend_version="2020.1.0")
    with pytest.raises(EngineMismatchError, match=r"OpenVINO 2020\.1\.0.*rebuild"):
        load_engine(engine)
    engine = _copy(ov_engines["fp32"], tmp_path / "weights")
    with open(engine.with_suffix(".bin"), "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(EngineMismatchError, match="weights file changed"):
        load_engine(engine)
    engine.with_suffix(".bin").unlink()
    with pytest.raises(EngineMismatchError, match="weights file .* is missing"):
        load_engine(engine)
    engine = _copy(ov_engines["fp32"], tmp_path / "xml")
    with open(engine, "ab") as handle:
        handle.write(b"\n")
    with pytest.raises(EngineMismatchError, match="sha256 .* does not match"):
        load_engine(engine)


def test_fp16_refused_without_fp16_arithmetic(ov_engines, workspace):
    from sgf_deploy.engines.openvino.builder import fp16_problem, ov_device

    if not fp16_problem(ov_device()):
        pytest.skip("this CPU has FP16 arithmetic")
    code, text = run_cli(["build", "--fp16", "--backend", "openvino", "--parity", "0"], workspace)
    assert code != 0 and "no FP16 arithmetic" in text and len(text.strip().splitlines()) == 1


def test_validate_then_run_selects_it(ov_engines, lite_onnx, tmp_path):
    from sgf_deploy.runtime.select import select_engine
    from sgf_deploy.validate import validate_engine

    engine = _copy(ov_engines["fp32"], tmp_path / "engines")
    ckpt = lite_onnx.parent.parent / "lite-untrained.pt"  # the engine tests' checkpoint (conftest._export)
    outcome = validate_engine(engine, ckpt=ckpt, n=2, threads=2, report=tmp_path / "report")
    assert outcome.verdict == "pass", outcome.line()
    assert read_manifest(engine)["validation"]["verdict"] == "pass"
    selection = select_engine("auto", engines_dir=tmp_path / "engines", threads=1)
    assert selection.source == "engines" and selection.reconstructor.runner.backend == "openvino"


def test_rank_prefers_the_measured_faster_cpu_backend(tmp_path):
    from sgf_deploy.engines.openvino.choice import RECORD
    from sgf_deploy.runtime.select import Candidate, measured_cpu_backend, rank

    def cand(backend: str, precision: str, when: str) -> Candidate:
        man = SimpleNamespace(backend=backend, precision=precision, is_gpu=False, validated_at=when)
        return Candidate(Path(f"{backend}-{precision}"), man)  # type: ignore[arg-type]

    cands = [cand("onnxruntime", "int8", "2026-12-02"), cand("openvino", "int8", "2026-12-01"),
             cand("openvino", "fp32", "2026-12-03")]
    assert [c.manifest.backend for c in rank(cands)][:2] == ["onnxruntime", "openvino"]  # newest first
    (tmp_path / RECORD).write_text(json.dumps({"choice": "openvino"}))
    assert measured_cpu_backend(tmp_path) == "openvino"
    ranked = rank(cands, measured_cpu_backend(tmp_path))
    assert [(c.manifest.backend, c.precision) for c in ranked] == [
        ("openvino", "int8"), ("onnxruntime", "int8"), ("openvino", "fp32")]


def test_auto_reuses_the_recorded_measurement(lite_onnx, tmp_path, monkeypatch):
    from sgf_deploy.engines.openvino import choice

    monkeypatch.setattr(choice, "measure", lambda *a: {"onnxruntime": 2.0, "openvino": 1.0})
    assert choice.choose_cpu_backend(lite_onnx, "fp32", tmp_path, 2) == "openvino"
    record = json.loads((tmp_path / choice.RECORD).read_text())
    assert record["ms_per_call"] == {"onnxruntime": 2.0, "openvino": 1.0} and record["key"]["threads"] == 2
    monkeypatch.setattr(choice, "measure", lambda *a: pytest.fail("measured again"))
    assert choice.choose_cpu_backend(lite_onnx, "int8", tmp_path, 2) == "openvino"
    from sgf_deploy.engines.openvino.builder import fp16_problem, ov_device

    if fp16_problem(ov_device()):
        assert choice.choose_cpu_backend(lite_onnx, "fp16", tmp_path, 2) == "onnxruntime"
