"""``sgf-deploy tune`` (sgf_deploy.bench.tuning): times a CPU engine per batch x threads through
the runtime's runner and records the optimum in the manifest, which stays valid; bad options and
GPU engines are one-line errors. No timed assertions: only that the figures exist and are used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgf_deploy.bench.tuning import TuneSettings, default_threads, parse_counts, parse_slice_shape, tune_engine
from sgf_deploy.cli import cli
from sgf_deploy.engines import load_engine
from sgf_deploy.engines.manifest import EngineManifest, manifest_path
from sgf_deploy.engines.optimum import MANIFEST_KEY, recorded_optimum, this_machine
from sgf_deploy.errors import InputError, SgfError

from tiny_engine_helpers import tiny_ort_engine


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    return tiny_ort_engine(tmp_path_factory.mktemp("tune"))


def test_tune_records_the_optimum_and_the_manifest_stays_valid(engine):
    before = EngineManifest.load(engine)
    result = tune_engine(engine, TuneSettings(shape="16x20", batches="1,2", threads=(1,), repeats=2))
    manifest = EngineManifest.load(engine)
    record = manifest.extra[MANIFEST_KEY]
    assert result.manifest_path == manifest_path(engine)
    assert record == json.loads(json.dumps(result.record))
    assert record["machine"] == this_machine()
    assert record["shape"] == [16, 20] and record["padded_shape"] == [16, 24]
    assert [(r["batch"], r["threads"]) for r in record["table"]] == [(1, 1), (2, 1)]
    for row in record["table"]:
        assert row["ms_per_slice"] > 0 and row["calls"] == 2 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    best = min(record["table"], key=lambda r: (r["ms_per_slice"], r["batch"]))
    assert record["optimum"] == {"batch": best["batch"], "threads": 1, "ms_per_slice": best["ms_per_slice"]}
    assert record["measured_at"] and "start" in record["load_average"]
    optimum = recorded_optimum(manifest)
    assert optimum is not None and (optimum.batch, optimum.threads) == (best["batch"], 1)
    # identity and integrity untouched: the engine still verifies and loads
    assert manifest.engine_sha256 == before.engine_sha256 and manifest.profile == before.profile
    manifest.verify_file(engine)
    load_engine(engine, threads=1).close()


def test_tune_command_prints_the_table(engine):
    result = CliRunner().invoke(cli, ["tune", str(engine), "--shape", "16x16", "--batches", "1,2", "--threads", "1",
                                      "--repeats", "1", "--no-record"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "optimum: batch" in out and "ms/slice" in out and "1 thread" in out
    assert "not recorded" in out


@pytest.mark.parametrize("args, words", [
    (["--batches", "0,2"], "--batches"),
    (["--batches", "a,b"], "--batches"),
    (["--threads", "2,x"], "--threads"),
    (["--shape", "16"], "--shape"),
    (["--repeats", "0"], "--repeats"),
])
def test_bad_options_are_one_line(engine, args, words):
    text = manifest_path(engine).read_text()
    result = CliRunner().invoke(cli, ["tune", str(engine), *args])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sgf-deploy: error:") and words in err, err
    assert manifest_path(engine).read_text() == text


def test_missing_engine_and_gpu_engine_are_refused(engine, tmp_path):
    result = CliRunner().invoke(cli, ["tune", str(tmp_path / "none.onnx")])
    assert result.exit_code == 2 and "engine file not found" in result.stderr
    gpu = tmp_path / "gpu.plan"
    gpu.write_bytes(b"plan")
    data = json.loads(manifest_path(engine).read_text())
    data.update(backend="tensorrt", device={"kind": "cuda", "name": "NVIDIA H200", "compute_capability": "9.0"})
    manifest_path(gpu).write_text(json.dumps(data))
    result = CliRunner().invoke(cli, ["tune", str(gpu)])
    err = result.stderr.strip()
    assert result.exit_code == 2 and len(err.splitlines()) == 1 and "tune measures CPU engines" in err, err
    with pytest.raises(SgfError, match="CPU engines"):
        tune_engine(gpu)


def test_option_parsing():
    assert parse_counts("8, 1,2,2", "--batches") == (1, 2, 8)
    assert parse_counts(None, "--threads") is None
    assert parse_slice_shape("320x256") == (320, 256)
    assert default_threads(1) == (1,) and default_threads(2) == (1, 2)
    assert default_threads(6) == (1, 2, 4, 6) and default_threads(16) == (1, 2, 4, 8, 16)
    with pytest.raises(InputError, match="--batches"):
        parse_counts(",", "--batches")
    with pytest.raises(InputError, match="--shape"):
        parse_slice_shape("0x8")
