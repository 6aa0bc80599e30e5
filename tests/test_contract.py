"""The input contract: one implementation of normalise / pad / batch / restore (numpy only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sgf_deploy import contract
from sgf_deploy.errors import InputError


def _pair(n=3, h=13, w=21, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 900, (n, h, w)).astype(np.float32), rng.uniform(10, 400, (n, h, w)).astype(np.float32))


def test_normalize_matches_fastmri_and_round_trips():
    x = np.random.default_rng(1).uniform(0, 5, (17, 9)).astype(np.float32)
    xn, mean, std = contract.normalize_instance(x)
    assert xn.dtype == np.float32
    assert mean == pytest.approx(float(x.astype(np.float64).mean()))
    assert std == pytest.approx(float(x.astype(np.float64).std(ddof=1)))  # torch's unbiased std
    assert np.allclose(contract.denormalize(xn, mean, std), x, atol=1e-5)


def test_pad_edge_replicates_bottom_right_like_torch_replicate():
    torch = pytest.importorskip("torch")
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    padded = contract.pad_edge(x, (5, 7))
    want = torch.nn.functional.pad(torch.from_numpy(x)[None, None], (0, 3, 0, 2), mode="replicate")[0, 0].numpy()
    np.testing.assert_array_equal(padded, want)
    with pytest.raises(ValueError):
        contract.pad_edge(x, (2, 4))


def test_fit_crops_centre_then_pads():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert contract.fit(x, (2, 6)).tolist() == [[0, 1, 2, 3, 3, 3], [4, 5, 6, 7, 7, 7]]
    assert contract.fit(x, (3, 2)).tolist() == [[1, 2], [5, 6], [9, 10]]


def test_prepare_restore_round_trip_and_static_fill():
    ref, tar = _pair()
    prepared = contract.prepare(ref, tar, 8, fill_to=4)
    assert prepared.reference.shape == (4, 1, 16, 24) and prepared.padded_shape == (16, 24)
    np.testing.assert_array_equal(prepared.target[3], prepared.target[2])  # filled with the last slice
    restored = contract.restore(prepared.target, prepared)  # an identity "engine"
    assert restored.shape == tar.shape
    assert np.allclose(restored, tar, rtol=1e-5, atol=1e-3)


def test_run_batched_static_batch_and_shape_check():
    ref, tar = _pair(n=5, h=8, w=8)
    prepared = contract.prepare(ref, tar, 8)
    calls = []

    def echo(r, t):
        calls.append(r.shape[0])
        return t * 2

    out = contract.run_batched(echo, prepared.reference, prepared.target, batch=2, static_batch=4)
    assert calls == [4, 4] and out.shape == prepared.target.shape
    np.testing.assert_array_equal(out, prepared.target * 2)
    with pytest.raises(InputError, match="engine returned shape"):
        contract.run_batched(lambda r, t: t[:, :, :4], prepared.reference, prepared.target, batch=2)


def test_reconstruct_is_the_whole_contract():
    ref, tar = _pair(n=2, h=11, w=9)
    out = contract.reconstruct(lambda r, t: t, ref, tar, 8, batch=1)
    assert np.allclose(out, tar, rtol=1e-5, atol=1e-3)
    assert contract.reconstruct(lambda r, t: t, ref[0], tar[0], 8).shape == tar[0].shape


def test_size_multiple_sources():
    assert contract.size_multiple({"model": {"size_multiple": 16}}) == 16
    assert contract.size_multiple({"sgf.size_multiple": 4}) == 4
    assert contract.size_multiple({"config": {"channels": [8, 16, 32]}}) == 4
    assert contract.size_multiple(None, {}) == contract.DEFAULT_SIZE_MULTIPLE


def test_check_pair_notes_negative_target_and_refuses_bad_input():
    ref, tar = _pair(n=1)
    _, _, notes = contract.check_pair(ref, tar - 50)
    assert any("negative" in n for n in notes)
    with pytest.raises(InputError, match="non-finite"):
        contract.check_pair(ref, np.full_like(tar, np.nan))
    with pytest.raises(InputError, match="does not match"):
        contract.check_pair(ref, tar[:, :5])


def test_contract_imports_numpy_only():
    code = ("import sys, sgf_deploy.contract, sgf_deploy.compare; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'scipy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
