import os
import pickle
import subprocess
import sys

import pytest
import torch

from sgf_deploy.artifacts import sha256_file
from sgf_deploy.errors import CheckpointError, OutputExistsError
from sgf_deploy.model import build_model, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip(tmp_path, suffix):
    model = build_model("lite")
    path = tmp_path / f"m{suffix}"
    meta = save_checkpoint(path, model, {"task": "recon4x", "steps": 3})
    assert meta["sha256"] == sha256_file(path)
    loaded, meta2 = load_checkpoint(path)
    assert meta2["provenance"]["task"] == "recon4x" and meta2["config"] == model.config.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert not loaded.training


def test_provenance_is_stored_as_plain_values(tmp_path):
    """numpy scalars and torch's TorchVersion must not make the file unloadable with weights_only."""
    import numpy as np

    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("lite"), {"torch": torch.__version__, "psnr": np.float64(31.5), "where": tmp_path})
    _, meta = load_checkpoint(path)
    assert meta["provenance"] == {"torch": str(torch.__version__), "psnr": 31.5, "where": str(tmp_path)}


def test_refuses_overwrite(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("lite"), {})
    before = sha256_file(path)
    with pytest.raises(OutputExistsError):
        save_checkpoint(path, build_model("lite"), {})
    assert sha256_file(path) == before


def test_shape_mismatch_refused(tmp_path):
    model = build_model("lite")
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, {})
    blob = torch.load(path, weights_only=True)
    blob["config"]["channels"] = [16, 32, 48, 72]
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(path)


def test_unknown_architecture_refused(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="not an sgf-deploy checkpoint"):
        load_checkpoint(path)
    blob = {"format": "sgf-deploy-checkpoint", "format_version": 1, "config": {"heads": 3}, "state_dict": {}}
    torch.save(blob, path)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_checkpoint(path)


def test_corrupt_and_missing(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    bad2 = tmp_path / "bad.safetensors"
    bad2.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError):
        load_checkpoint(bad2)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_refused_without_executing(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    path = tmp_path / "evil.pt"
    torch.save({"format": "sgf-deploy-checkpoint", "state_dict": {}, "x": payload}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists(), "loading must not execute pickled code"
