"""Session fixtures for the validate tests: a briefly trained ``lite`` checkpoint (30 steps: its
output is no longer its residual input, so parity is not trivially met), its ONNX export and ONNX
Runtime FP32/FP16 engines, built once per test session (training + export + builds are the slow
part, about a minute and a half of CPU on 2 cores)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


def _loadable(path: Path) -> Path:
    """Work around checkpoints whose provenance pickles ``torch.__version__`` (a ``TorchVersion``,
    which ``torch.load(weights_only=True)`` refuses): store it as a plain string."""
    import torch

    from sgf_deploy.errors import CheckpointError
    from sgf_deploy.model import load_checkpoint

    try:
        load_checkpoint(path)
        return path
    except CheckpointError:
        blob = torch.load(path, map_location="cpu", weights_only=False)  # our own file, just written
        prov = blob.get("provenance") or {}
        for key, value in list(prov.items()):
            if type(value).__name__ == "TorchVersion":
                prov[key] = str(value)
        torch.save(blob, path)
        load_checkpoint(path)
        return path


@pytest.fixture(scope="session")
def trained_ckpt(tmp_path_factory, torch_threads) -> Path:
    from sgf_deploy.model.train import TrainSettings, train

    out = tmp_path_factory.mktemp("validate-ckpt") / "lite-30steps.pt"
    train(TrainSettings(steps=30, crop=64, val_every=30, val_n=2, threads=2), out, progress=False,
          log=lambda msg: None)
    return _loadable(out)


@pytest.fixture(scope="session")
def exported(trained_ckpt, tmp_path_factory) -> Path:
    from sgf_deploy.export import export_onnx

    out = tmp_path_factory.mktemp("validate-export") / "export" / "lite30.onnx"
    return Path(export_onnx(trained_ckpt, out=out).path).resolve()


@pytest.fixture(scope="session")
def built(exported, tmp_path_factory) -> SimpleNamespace:
    """FP32 and FP16 ONNX Runtime engines (never validated; copy before validating)."""
    from sgf_deploy.engines import build_engine

    out = tmp_path_factory.mktemp("validate-engines")
    fp32 = build_engine(exported, backend="onnxruntime", precision="fp32", out_dir=out, parity_n=0).engine_path
    fp16 = build_engine(exported, backend="onnxruntime", precision="fp16", out_dir=out, parity_n=0).engine_path
    return SimpleNamespace(fp32=Path(fp32), fp16=Path(fp16), onnx=exported)
