"""Shared, session-scoped models for the engine tests: untrained (seeded) checkpoints exported with
the real exporter. ``lite`` is dynamic (N, H, W); ``paper`` is exported at a static 32x40 (its
attention is quadratic in the number of positions) with a dynamic batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_cli import run_cli  # noqa: F401  (used by fixtures here)


def _export(tmp_path_factory, preset: str, static=None) -> Path:
    import torch

    from sgf_deploy.export import export_onnx
    from sgf_deploy.model import build_model, save_checkpoint

    torch.set_num_threads(2)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp(f"model-{preset}")
    ckpt = root / f"{preset}-untrained.pt"
    save_checkpoint(ckpt, build_model(preset).eval(), {"task": "recon4x", "pair": "t1-t2", "note": "untrained, engine tests"})
    return Path(export_onnx(ckpt, out=root / "export" / f"{preset}.onnx", static=static).path)


@pytest.fixture(scope="session")
def lite_onnx(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "lite")


@pytest.fixture(scope="session")
def paper_onnx(tmp_path_factory) -> Path:
    return _export(tmp_path_factory, "paper", static=(32, 40))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, lite_onnx) -> Path:
    """A workspace like `make demo` uses: export/ holds one .onnx; `sgf-deploy calibrate` was run
    there with no paths (8 simulated pairs)."""
    import shutil

    ws = tmp_path_factory.mktemp("workspace")
    (ws / "export").mkdir()
    shutil.copy(lite_onnx, ws / "export" / lite_onnx.name)
    code, out = run_cli(["calibrate", "--from", "sim", "--n", "8"], ws)
    assert code == 0, out
    return ws


@pytest.fixture(scope="session")
def calib_set(workspace) -> Path:
    return workspace / "calibration" / "t1-t2-recon4x-sim-n8"
