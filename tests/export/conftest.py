"""Shared, session-scoped exports (each torch.onnx.export costs seconds on 2 cores)."""

from __future__ import annotations

import pytest

PROVENANCE = {"task": "recon4x", "pair": "t1-t2", "steps": 0, "seed": 0}
PAPER_STATIC = (32, 40)  # attention is quadratic: keep the paper preset's shapes small


def make_checkpoint(path, preset: str, seed: int = 0, provenance: dict | None = None):
    import torch

    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(preset)
    save_checkpoint(path, model, dict(provenance or PROVENANCE))
    return path


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export-ckpts")


@pytest.fixture(scope="session")
def lite_ckpt(ckpt_dir, torch_threads):
    return make_checkpoint(ckpt_dir / "lite.pt", "lite", seed=1)


@pytest.fixture(scope="session")
def paper_ckpt(ckpt_dir, torch_threads):
    return make_checkpoint(ckpt_dir / "paper.pt", "paper", seed=2)


@pytest.fixture(scope="session")
def lite_export(lite_ckpt, tmp_path_factory):
    """lite, default opset, dynamic N, H, W, through the library API."""
    from sgf_deploy.export import export_onnx

    out = tmp_path_factory.mktemp("lite-export") / "lite.onnx"
    return export_onnx(lite_ckpt, out)


@pytest.fixture(scope="session")
def paper_export(paper_ckpt, tmp_path_factory):
    """paper at a small static H x W (dynamic batch): self-check at that shape only."""
    from sgf_deploy.export import export_onnx

    out = tmp_path_factory.mktemp("paper-export") / "paper.onnx"
    return export_onnx(paper_ckpt, out, static=PAPER_STATIC)
