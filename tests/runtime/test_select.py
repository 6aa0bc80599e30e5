"""Engine selection (``--engine auto``), refusal of unvalidated engines, and the cached default."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sgf_deploy.cli import cli
from sgf_deploy.errors import EngineMismatchError, SgfError
from sgf_deploy.engines.manifest import CACHE_MARKER, DEFAULT_LABEL, EngineManifest
from sgf_deploy.model import locate
from sgf_deploy.runtime import embedded as cached_default
from sgf_deploy.runtime import select
from sgf_deploy.runtime.select import Candidate, rank

from runtime_helpers import copy_engine, mark_validated, phantom_pair


def _manifest(kind="cpu", precision="fp32", verdict="pass", when="2026-11-24T10:00:00", ckpt="a" * 64):
    """A complete manifest (every required key) of a fake engine."""
    m = {"format": "sgf-deploy-engine", "format_version": 1, "engine_file": "x",
         "backend": "onnxruntime" if kind == "cpu" else "tensorrt", "backend_version": "1", "precision": precision,
         "device": {"kind": kind, "name": "GPU X" if kind == "cuda" else "cpu"},
         "checkpoint_sha256": ckpt, "engine_sha256": "e" * 64, "onnx_sha256": "o" * 64, "profile": {},
         "build_options": {}, "built_at": "2026-11-24T09:00:00", "toolkit_version": "0.1.0", "build_parity": {},
         "model": {"preset": "lite", "task": "recon4x", "pair": "t1-t2"}}
    if verdict:
        m["validation"] = {"verdict": verdict, "validated_at": when, "report_sha256": "0" * 64}
    return m


def test_rank_prefers_gpu_then_int8_fp16_fp32_then_newest():
    names = {
        "cpu-fp32": _manifest("cpu", "fp32"),
        "cpu-int8": _manifest("cpu", "int8"),
        "cpu-fp16": _manifest("cpu", "fp16"),
        "gpu-fp32": _manifest("cuda", "fp32"),
        "gpu-int8-old": _manifest("cuda", "int8", when="2026-01-01T00:00:00"),
        "gpu-int8-new": _manifest("cuda", "int8", when="2026-06-01T00:00:00"),
    }
    ordered = rank([Candidate(Path(n), EngineManifest.from_dict(m)) for n, m in names.items()])
    assert [str(c.engine_path) for c in ordered] == [
        "gpu-int8-new", "gpu-int8-old", "gpu-fp32", "cpu-int8", "cpu-fp16", "cpu-fp32"]


def _fake_engines(root: Path, manifests: dict[str, dict]) -> Path:
    d = root / "engines"
    d.mkdir()
    for name, m in manifests.items():
        (d / name).write_bytes(b"engine")
        (d / f"{name}.json").write_text(json.dumps(m))
    return d


class _FakeRunner:
    def __init__(self, path):
        self.path = Path(path)
        self.manifest = EngineManifest.load(self.path)

    def infer(self, reference, target):
        return target


@pytest.fixture
def fake_backend(monkeypatch):
    """load_engine on fake engine files; 'gpu' engines do not load here."""
    import sgf_deploy.engines as engines

    def load_engine(path, threads=None):
        m = EngineManifest.load(path)
        if m.is_gpu:
            raise EngineMismatchError(f"{path}: built for {m.device['name']}, this machine has no GPU")
        return _FakeRunner(path)

    monkeypatch.setattr(engines, "load_engine", load_engine)


def test_auto_picks_best_runnable_validated(tmp_path, fake_backend):
    d = _fake_engines(tmp_path, {
        "a-fp32.onnx": _manifest("cpu", "fp32"),
        "b-int8.onnx": _manifest("cpu", "int8"),
        "c-int8-unvalidated.onnx": _manifest("cpu", "int8", verdict=None),
        "d-int8-failed.onnx": _manifest("cpu", "int8", verdict="fail"),
        "e-gpu.engine": _manifest("cuda", "int8"),
    })
    notes = []
    sel = select.select_engine(None, engines_dir=d, echo=notes.append)
    assert sel.source == "engines"
    assert sorted(n.split("/")[-1] for n in notes) == [
        "c-int8-unvalidated.onnx: never validated (no validation in its manifest)",
        "d-int8-failed.onnx: validation verdict 'fail'"]
    assert sel.reconstructor.engine_path.name == "b-int8.onnx"
    assert len(sel.skipped) == 1 and "e-gpu.engine" in sel.skipped[0] and "no GPU" in sel.skipped[0]
    assert [c.engine_path.name for c in select.validated_candidates(d)] == ["e-gpu.engine", "b-int8.onnx", "a-fp32.onnx"]


def test_auto_refuses_to_guess_between_models(tmp_path, fake_backend):
    d = _fake_engines(tmp_path, {"x.onnx": _manifest(ckpt="a" * 64), "y.onnx": _manifest(ckpt="b" * 64)})
    with pytest.raises(SgfError, match="2 different models.*--engine PATH"):
        select.select_engine("auto", engines_dir=d)


def test_auto_without_candidates_and_without_default_checkpoint(tmp_path, fake_backend, monkeypatch):
    from sgf_deploy.model import registry

    monkeypatch.setattr(locate, "DEFAULT_CHECKPOINT", tmp_path / "missing.pt")
    monkeypatch.setattr(registry, "DEFAULTS_DIR", tmp_path / "no-defaults")  # no shipped defaults either
    _fake_engines(tmp_path, {"u.onnx": _manifest(verdict=None)})
    with pytest.raises(SgfError, match="no validated engine; pass --engine PATH"):
        select.select_engine(None, engines_dir=tmp_path / "engines")


def test_stale_cached_default_is_rebuilt(tmp_path, monkeypatch, ort_engine, validated_engine):
    """A cached default engine that no longer loads (e.g. ONNX Runtime upgraded) is rebuilt once."""
    stale = copy_engine(ort_engine, tmp_path / "stale")
    mark_validated(stale)  # stands in for the cache marker: trusted, but built for another version
    manifest_file = stale.with_name(stale.name + ".json")
    manifest = json.loads(manifest_file.read_text())
    manifest["backend_version"] = "0.0.1"
    manifest_file.write_text(json.dumps(manifest))
    calls = []

    def fake_default_engine(echo=None, rebuild=False, task=None):
        calls.append(rebuild)
        return (validated_engine, True) if rebuild else (stale, False)

    monkeypatch.setattr(select, "default_engine", fake_default_engine)
    notes = []
    sel = select.select_engine(None, engines_dir=tmp_path / "none", echo=notes.append)
    assert calls == [False, True] and sel.reconstructor.engine_path == validated_engine and sel.built_default
    assert any("rebuilding" in n and "0.0.1" in n for n in notes)


def test_trust_labels(tmp_path):
    def trust(m):
        return EngineManifest.from_dict(m).trust(tmp_path / "x")

    assert trust(_manifest()).ok
    status = trust(_manifest(verdict=None))
    assert not status.ok and "never validated" in status.label
    status = trust(_manifest(verdict="fail"))
    assert not status.ok and "'fail'" in status.label


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / "c"))
    assert cached_default.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SGF_DEPLOY_CACHE")
    assert cached_default.cache_dir() == Path.home() / ".cache" / "sgf-deploy"


def test_auto_uses_validated_engine_in_workspace(tmp_path, monkeypatch, ort_engine):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / ".cache"))
    engine = copy_engine(ort_engine, tmp_path / "engines")
    mark_validated(engine)
    ref, tar, _ = phantom_pair(1, 32, 40)
    np.save("ref.npy", ref[0])
    np.save("tar.npy", tar[0])
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy"])
    assert result.exit_code == 0, result.output
    assert "engines/" in result.stdout and "validated: pass" in result.stdout
    assert not (tmp_path / ".cache").exists()


def _registry_of(checkpoint: Path, folder: Path) -> Path:
    """A registry of shipped defaults in ``folder`` naming ``checkpoint`` (no ONNX file) for recon4x."""
    import shutil

    from sgf_deploy.artifacts import sha256_file
    from sgf_deploy.model.registry import write_registry

    folder.mkdir()
    shutil.copyfile(checkpoint, folder / checkpoint.name)
    write_registry({"tasks": {"recon4x": "test"}, "models": {"test": {
        "checkpoint": checkpoint.name, "checkpoint_sha256": sha256_file(checkpoint), "tasks": ["recon4x"],
        "contrasts": "untrained test network"}}}, folder)
    return folder


def test_default_engine_first_use_then_cached_without_torch(tmp_path, monkeypatch, lite):
    """No validated engine in engines/: the embedded default (here: the untrained test
    checkpoint standing in for it) is exported + built once, cached by checkpoint SHA-256, and a
    later run in a fresh process loads it without importing torch."""
    from sgf_deploy.model import registry

    cache = tmp_path / "cache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(cache))
    monkeypatch.setattr(locate, "DEFAULT_CHECKPOINT", lite[0])
    defaults = _registry_of(lite[0], tmp_path / "defaults")  # a default without a shipped ONNX file
    monkeypatch.setattr(registry, "DEFAULTS_DIR", defaults)
    ref, tar, gt = phantom_pair(1, 40, 48)
    np.save("ref.npy", ref[0])
    np.save("tar.npy", tar[0])
    np.save("gt.npy", gt[0])
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy", "--gt", "gt.npy"])
    assert result.exit_code == 0, result.output
    assert DEFAULT_LABEL in result.stdout and "built now and cached" in result.stdout
    assert "first use" in result.stderr
    from sgf_deploy.artifacts import sha256_file

    entry = cache / f"default-{sha256_file(lite[0])}"
    marker = json.loads((entry / CACHE_MARKER).read_text())
    assert marker["selfcheck_passed"] is True and marker["checkpoint_sha256"] == sha256_file(lite[0])
    assert sorted(p.name for p in cache.iterdir()) == [".lock", entry.name]  # no temporary build folder left
    engine, built = cached_default.default_engine()
    assert not built and engine.parent == entry
    assert EngineManifest.load(engine).trust(engine).ok

    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import sgf_deploy.model.locate as locate
        import sgf_deploy.model.registry as registry
        locate.DEFAULT_CHECKPOINT = Path({str(lite[0])!r})
        registry.DEFAULTS_DIR = Path({str(defaults)!r})
        from sgf_deploy.cli import main
        rc = main(["run", "--ref", "ref.npy", "--target", "tar.npy", "--out", "second.npy"])
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH_MODULES", bad)
        sys.exit(rc or (3 if bad else 0))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(cached)" in proc.stdout and DEFAULT_LABEL in proc.stdout
    assert np.allclose(np.load(tmp_path / "second.npy"), np.load(tmp_path / "tar_sgf.npy"))
