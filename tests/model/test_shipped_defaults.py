"""Every shipped default (the old T1->T2 checkpoint included: users hold engines built from it)
loads with ``weights_only=True``, matches the registry, and reconstructs the embedded sample."""

import pytest

from sgf_deploy.artifacts import sha256_file
from sgf_deploy.model.registry import default_for_task, shipped_models


@pytest.mark.parametrize("name", sorted(shipped_models()))
def test_shipped_checkpoint_loads_and_runs(name):
    from sgf_deploy.data import sample
    from sgf_deploy.metrics import psnr
    from sgf_deploy.model import load_checkpoint
    from sgf_deploy.model.infer import reconstruct

    model_entry = shipped_models()[name]
    assert sha256_file(model_entry.checkpoint_path) == model_entry.checkpoint_sha256
    assert sha256_file(model_entry.onnx_path) == model_entry.onnx_sha256
    assert model_entry.checkpoint_path.stat().st_size < 10 * 2**20 and model_entry.onnx_path.stat().st_size < 10 * 2**20
    model, meta = load_checkpoint(model_entry.checkpoint_path)
    assert meta["sha256"] == model_entry.checkpoint_sha256
    assert sum(p.numel() for p in model.parameters()) < 1_000_000  # lite
    s = sample()
    pred = reconstruct(model, s["reference"], s["target"])
    assert psnr(s["ground_truth"], pred) > psnr(s["ground_truth"], s["target"]) + 3.0


def test_old_t1_t2_checkpoint_is_kept():
    assert "lite-recon4x-t1-t2" in shipped_models()
    assert default_for_task("recon4x").name in shipped_models()


def test_a_task_without_a_default_names_the_models_shipped_for_it(monkeypatch):
    import copy

    from sgf_deploy.errors import SgfError
    from sgf_deploy.model import registry

    assert default_for_task("recon8x").name == "lite-recon8x-mixed"
    real = registry.read_registry

    def without_recon8x(folder=None):
        data = copy.deepcopy(real(folder))
        data["tasks"].pop("recon8x", None)
        return data

    monkeypatch.setattr(registry, "read_registry", without_recon8x)
    with pytest.raises(SgfError, match="--engine lite-recon8x-mixed"):
        default_for_task("recon8x")  # a model shipped for the task, but not its default: named
    with pytest.raises(SgfError, match=r"no shipped default model for task sr4x \(shipped defaults: recon4x\); train"):
        default_for_task("sr4x")
