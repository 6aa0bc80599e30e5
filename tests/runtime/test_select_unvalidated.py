"""``run --allow-unvalidated`` without ``--engine``: the user's own never-validated engine comes
before the embedded default (it used to be passed over with only a note)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgf_deploy.engines.manifest import EngineManifest
from sgf_deploy.errors import SgfError
from sgf_deploy.runtime import select


def _write(d: Path, name: str, verdict: str | None, ckpt: str = "a" * 64, precision: str = "fp32") -> None:
    m = {"format": "sgf-deploy-engine", "format_version": 1, "engine_file": name, "backend": "onnxruntime",
         "backend_version": "1", "precision": precision, "device": {"kind": "cpu", "name": "cpu"},
         "checkpoint_sha256": ckpt, "engine_sha256": "e" * 64, "onnx_sha256": "o" * 64, "profile": {},
         "build_options": {}, "built_at": "2026-12-07T00:00:00", "toolkit_version": "0.1.0", "build_parity": {},
         "model": {"preset": "lite", "task": "recon4x", "pair": "pd-pdfs"}}
    if verdict:
        m["validation"] = {"verdict": verdict, "validated_at": "2026-12-07T01:00:00", "report_sha256": "0" * 64}
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(b"engine")
    (d / f"{name}.json").write_text(json.dumps(m))


class _Runner:
    def __init__(self, path):
        self.manifest = EngineManifest.load(path)

    def infer(self, reference, target):
        return target


@pytest.fixture
def no_default(monkeypatch):
    import sgf_deploy.engines as engines

    monkeypatch.setattr(engines, "load_engine", lambda path, threads=None: _Runner(path))

    def default_engine(*args, **kwargs):
        raise AssertionError("the embedded default must not be chosen over the user's engine")

    monkeypatch.setattr(select, "default_engine", default_engine)


def test_own_unvalidated_engine_before_the_default(tmp_path, no_default):
    d = tmp_path / "engines"
    _write(d, "mine-fp32.onnx", None)
    _write(d, "mine-int8.onnx", None, precision="int8")
    _write(d, "bad-int8.onnx", "fail", precision="int8")
    sel = select.select_engine(None, engines_dir=d, allow_unvalidated=True)
    assert sel.reconstructor.engine_path.name == "mine-int8.onnx" and not sel.reconstructor.trust.ok


def test_failed_engines_are_never_picked_and_two_models_are_not_guessed(tmp_path, no_default):
    d = tmp_path / "engines"
    _write(d, "x.onnx", None, ckpt="a" * 64)
    _write(d, "y.onnx", None, ckpt="b" * 64)
    with pytest.raises(SgfError, match="2 different models.*--engine PATH"):
        select.select_engine("auto", engines_dir=d, allow_unvalidated=True)
    with pytest.raises(SgfError, match="refused"):  # without the flag the engine itself is refused
        select.Reconstructor.load(d / "x.onnx")
    only_failed = tmp_path / "failed"
    _write(only_failed, "z.onnx", "fail")
    assert select._unvalidated(only_failed, None, None, []) is None  # -> the embedded default


def test_hdf5_error_names_no_missing_option(tmp_path):
    h5py = pytest.importorskip("h5py")
    from sgf_deploy.data.readers import read_volume

    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("images", data=[[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(SgfError) as info:
        read_volume(tmp_path / "x.h5", role="target")
    msg = str(info.value)
    assert "reconstruction_rss" in msg and "(h5_key)" not in msg and "--h5" not in msg
