"""triton export: both layouts, every config.pbtxt against Triton's model-config schema, the trust
rule, refusals, hashes; the serving plan; the backend-free request core; the client's errors.
No server here (tests/serving/test_triton_server.py starts one)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import make_engine, pair

from sgf_deploy import contract
from sgf_deploy.engines.manifest import EngineManifest
from sgf_deploy.errors import InputError, OutputExistsError, ValidationFailed
from sgf_deploy.serving.backend import run_requests
from sgf_deploy.serving.config import serving_plan, to_pbtxt
from sgf_deploy.serving.repository import TritonExportSettings, export_repository


def parse_config(path: Path):
    """config.pbtxt -> tritonclient's ModelConfig message (raises on anything outside the schema)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                           reason="tritonclient[grpc] provides Triton's model_config schema")
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return make_engine(tmp_path_factory.mktemp("engines"))


def test_python_layout_config_parses_and_names_its_evidence(engine, tmp_path):
    result = export_repository(engine, tmp_path / "repo")
    assert result.models == ["sgf_mri"]
    config = parse_config(tmp_path / "repo" / "sgf_mri" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 16
    assert [i.name for i in config.input] == ["reference", "target"] and list(config.input[0].dims) == [-1, -1]
    assert config.output[0].name == "reconstruction"
    assert list(config.dynamic_batching.preferred_batch_size) == [4]
    # the engine records 1 thread: one instance per core
    assert config.instance_group[0].count == (__import__("os").cpu_count() or 1)
    params = {k: v.string_value for k, v in config.parameters.items()}
    version = tmp_path / "repo" / "sgf_mri" / "1"
    assert params["engine_sha256"] == EngineManifest.load(engine).engine_sha256
    for key in ("engine_file", "manifest_file", "hashes_file"):
        assert (version / params[key]).is_file(), key
    assert params["trusted"] == "true" and params["trust"].startswith("validated: pass")
    hashes = json.loads((version / "hashes.json").read_text())["files"]
    assert set(hashes) == {params["engine_file"], params["manifest_file"]}
    record = json.loads((tmp_path / "repo" / "repository.json").read_text())
    assert record["inputs"]["engine_sha256"] == params["engine_sha256"]
    assert "sgf_mri/config.pbtxt" in record["files"] and "sgf_mri/1/model.py" in record["files"]
    assert "SliceModel" in (version / "model.py").read_text()


def test_native_layout_every_config_parses_for_each_triton_backend(tmp_path):
    cases = {
        "onnxruntime": ({}, "onnxruntime_onnx", "", "model.onnx"),
        "tensorrt": ({"name": "tiny.trt.fp32.engine",
                      "profile": {"min": [1, 1, 64, 64], "opt": [2, 1, 320, 320], "max": [8, 1, 512, 512]},
                      "build_options": {"mcns": "function"}}, "tensorrt_plan", "", "model.plan"),
        "openvino": ({"name": "tiny.ov.fp32.xml", "suffix_files": {"tiny.ov.fp32.bin": b"weights"}}, "", "openvino",
                     "model.xml"),
    }
    for backend, (options, platform, triton_backend, file_name) in cases.items():
        engine = make_engine(tmp_path / f"eng-{backend}", backend=backend, **options)
        repo = tmp_path / f"repo-{backend}"
        result = export_repository(engine, repo, TritonExportSettings(layout="native"))
        configs = {name: parse_config(repo / name / "config.pbtxt") for name in result.models}
        assert set(configs) == {"sgf_mri", "sgf_mri_pre", "sgf_mri_engine", "sgf_mri_post"}
        ensemble, core = configs["sgf_mri"], configs["sgf_mri_engine"]
        assert ensemble.platform == "ensemble"
        assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["sgf_mri_pre", "sgf_mri_engine", "sgf_mri_post"]
        assert core.platform == platform and core.backend == triton_backend
        assert (repo / "sgf_mri_engine" / "1" / file_name).is_file()
        assert list(core.input[0].dims) == [1, -1, -1]
        # every tensor a step reads is the ensemble's input or an earlier step's output
        produced = {i.name for i in ensemble.input}
        for step in ensemble.ensemble_scheduling.step:
            assert set(step.input_map.values()) <= produced, (backend, step.model_name)
            produced |= set(step.output_map.values())
        assert {o.name for o in ensemble.output} <= produced
        if backend == "tensorrt":
            assert core.max_batch_size == 8 and list(core.dynamic_batching.preferred_batch_size) == [2]
            assert core.instance_group[0].kind == core.instance_group[0].KIND_CPU
        if backend == "openvino":
            assert (repo / "sgf_mri_engine" / "1" / "model.bin").read_bytes() == b"weights"


def test_unvalidated_engines_are_refused_as_run_refuses_them(tmp_path):
    engine = make_engine(tmp_path / "e", validated=False)
    with pytest.raises(ValidationFailed, match="refused: never validated.*--allow-unvalidated"):
        export_repository(engine, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    said = []
    export_repository(engine, tmp_path / "repo", TritonExportSettings(allow_unvalidated=True), echo=said.append)
    params = parse_config(tmp_path / "repo" / "sgf_mri" / "config.pbtxt").parameters
    assert params["trusted"].string_value == "false" and params["allow_unvalidated"].string_value == "true"
    assert "without a passing validation" in said[0]


def test_existing_output_tampered_engine_and_unservable_native_engines_are_refused(engine, tmp_path):
    (tmp_path / "repo").mkdir()
    with pytest.raises(OutputExistsError, match="--force"):
        export_repository(engine, tmp_path / "repo")
    export_repository(engine, tmp_path / "repo", TritonExportSettings(overwrite=True))
    assert (tmp_path / "repo" / "sgf_mri" / "config.pbtxt").is_file()
    plugin = make_engine(tmp_path / "p", backend="tensorrt", name="p.engine", build_options={"mcns": "sgf::MCNS plugin"})
    with pytest.raises(InputError, match="Python IPluginV3.*--layout python"):
        export_repository(plugin, tmp_path / "r1", TritonExportSettings(layout="native"))
    static = make_engine(tmp_path / "s", profile={"min": [4, 1, 64, 64], "opt": [4, 1, 64, 64], "max": [4, 1, 64, 64]})
    with pytest.raises(InputError, match="static batch 4"):
        export_repository(static, tmp_path / "r2", TritonExportSettings(layout="native"))
    rtx = make_engine(tmp_path / "x", backend="tensorrt-rtx", name="x.engine")
    with pytest.raises(InputError, match="no Triton backend"):
        export_repository(rtx, tmp_path / "r3", TritonExportSettings(layout="native"))
    tampered = make_engine(tmp_path / "t")
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    with pytest.raises(Exception, match="does not match its manifest"):
        export_repository(tampered, tmp_path / "r4")
    assert not any((tmp_path / n).exists() for n in ("r1", "r2", "r3", "r4"))


def test_serving_plan_follows_the_engine_and_explicit_values():
    m = EngineManifest.from_dict(json.loads(_manifest_text(threads=1, opt=[2, 1, 64, 64], max_=[8, 1, 512, 512])))
    plan = serving_plan(m, cores=4)
    assert (plan.preferred_batch, plan.max_batch, plan.instances, plan.threads) == (2, 8, 4, 1)
    assert serving_plan(m, cores=4, instances=1, max_batch=4, queue_delay_us=0).max_batch == 4
    with pytest.raises(InputError, match="at most 8"):
        serving_plan(m, max_batch=9)
    dyn = EngineManifest.from_dict(json.loads(_manifest_text(threads=None, opt=None, max_=None)))
    plan = serving_plan(dyn, cores=2, dynamic_batching=False)
    assert (plan.preferred_batch, plan.max_batch, plan.instances, plan.dynamic_batching) == (4, 16, 1, False)
    shared = serving_plan(dyn, cores=16, instances=4)  # asked-for instances share the cores
    assert (shared.instances, shared.threads) == (4, 4)


def _manifest_text(threads, opt, max_) -> str:
    profile = {"min": [1, 1, 8, 8] if opt else None, "opt": opt, "max": max_}
    return json.dumps({"format": "sgf-deploy-engine", "engine_sha256": "0", "onnx_sha256": "0", "checkpoint_sha256": "0",
                       "backend": "onnxruntime", "backend_version": "1", "precision": "fp32", "device": {"kind": "cpu"},
                       "profile": profile, "build_options": {"threads": threads}, "built_at": "", "toolkit_version": "",
                       "model": {}, "build_parity": {}})


def test_pbtxt_writer_escapes_strings():
    text = to_pbtxt({"name": 'a"b\\c\nd', "parameters": [{"key": "k", "value": {"string_value": "x"}}]})
    config = parse_config_text(text)
    assert config.name == 'a"b\\c\nd' and config.parameters["k"].string_value == "x"


def parse_config_text(text: str):
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_request_core_isolates_bad_requests_and_matches_the_contract():
    ref, tar = pair(3, 24, 30)

    def infer(r, t):
        return np.tanh(r) * 0.1 + t

    good = (ref, tar)
    nan = (ref.copy(), tar.copy())
    nan[1][0, 0, 0] = np.nan
    answers = run_requests(infer, [good, nan, (ref[:2], tar), (None, tar), good], multiple=8, batch=2)
    expected = contract.reconstruct(infer, ref, tar, 8, 2)
    assert answers[0].error is None and np.array_equal(answers[0].image, expected)
    assert np.array_equal(answers[4].image, expected)
    assert "non-finite" in answers[1].error and "does not match" in answers[2].error and "lacks" in answers[3].error
    blown = run_requests(lambda r, t: t * np.inf, [good], multiple=8, batch=2)
    assert "non-finite" in blown[0].error and not blown[0].bad_input


def test_triton_export_command(engine, tmp_path, capsys):
    from sgf_deploy.cli import main

    assert main(["triton", "export", "--engine", str(engine), "--out", str(tmp_path / "r"), "--instances", "1",
                 "--max-batch", "8", "--queue-delay-us", "500"]) == 0
    out = capsys.readouterr().out
    assert "layout:  python: sgf_mri" in out and "serve:   sgf-deploy triton serve --repo" in out
    config = parse_config(tmp_path / "r" / "sgf_mri" / "config.pbtxt")
    assert (config.max_batch_size, config.instance_group[0].count) == (8, 1)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert main(["triton", "export", "--engine", str(engine), "--out", str(tmp_path / "r")]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main(["triton", "export", "--engine", str(engine), "--out", str(tmp_path / "n"), "--layout", "native",
                 "--no-dynamic-batching"]) == 0
    assert not parse_config(tmp_path / "n" / "sgf_mri_engine" / "config.pbtxt").HasField("dynamic_batching")
