"""Shared fixtures for the runtime tests: one untrained ``lite`` checkpoint and one ORT FP32 engine,
built once for the whole directory (export + build is the slow part)."""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import copy_engine, mark_validated


@pytest.fixture(scope="session")
def lite(tmp_path_factory):
    """(checkpoint path, eval model) of an untrained ``lite`` network (seeded)."""
    import torch

    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(0)
    model = build_model("lite").eval()
    path = tmp_path_factory.mktemp("ckpt") / "lite-untrained.pt"
    save_checkpoint(path, model, {"task": "recon4x", "pair": "t1-t2", "note": "untrained, runtime tests"})
    return path, model


@pytest.fixture(scope="session")
def onnx_model(lite, tmp_path_factory):
    from sgf_deploy.export import export_onnx

    out = tmp_path_factory.mktemp("export") / "lite.onnx"
    return Path(export_onnx(lite[0], out=out).path)


@pytest.fixture(scope="session")
def ort_engine(onnx_model, tmp_path_factory) -> Path:
    """An ONNX Runtime CPU FP32 engine (never validated)."""
    from sgf_deploy.engines import build_engine

    # parity=0: the build-time PSNR is the engines package's business (tests/engines); parity with
    # PyTorch is what these tests check themselves.
    built = build_engine(onnx_model, backend="onnxruntime", precision="fp32",
                         out_dir=tmp_path_factory.mktemp("engines"), parity_n=0)
    return Path(built.engine_path)


@pytest.fixture(scope="session")
def validated_engine(ort_engine, tmp_path_factory) -> Path:
    """A copy of the ORT engine whose manifest records a passing validation."""
    engine = copy_engine(ort_engine, tmp_path_factory.mktemp("validated"))
    mark_validated(engine)
    return engine
