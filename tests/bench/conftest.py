"""Fixtures for the benchmark tests: an untrained (seeded) lite checkpoint and its ONNX export."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lite_ckpt(tmp_path_factory) -> Path:
    import torch

    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench-ckpt") / "lite-untrained.pt"
    save_checkpoint(path, build_model("lite").eval(), {"task": "recon4x", "pair": "t1-t2", "steps": 0,
                                                       "note": "untrained, bench tests"})
    return path


@pytest.fixture(scope="session")
def fp32_engine(tmp_path_factory, lite_ckpt) -> Path:
    from sgf_deploy.engines import build_engine
    from sgf_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("bench-engine")
    onnx = export_onnx(lite_ckpt, out=root / "export" / "lite.onnx").path
    return build_engine(onnx, backend="onnxruntime", precision="fp32", out_dir=root / "engines", threads=2, parity_n=0).engine_path
