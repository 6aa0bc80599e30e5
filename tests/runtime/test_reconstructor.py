"""Reconstructor parity with the PyTorch reference, batching, timings, safety of its outputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sgf_deploy.errors import InputError, ValidationFailed
from sgf_deploy.runtime import NonFiniteOutputError, Reconstructor, ShapeNotSupportedError
from sgf_deploy.engines.identity import Profile
from sgf_deploy.engines.manifest import EngineManifest, TrustStatus

from runtime_helpers import phantom_pair


def _tol(x: np.ndarray) -> float:
    """ORT vs torch FP32: a few float32 ulps of the network's normalised output, in target units."""
    return 1e-4 * float(np.abs(x).max()) + 1e-6


@pytest.fixture(scope="module")
def rec(ort_engine):
    return Reconstructor.load(ort_engine, allow_unvalidated=True)


@pytest.mark.parametrize("shape", [(40, 56), (37, 45), (3, 40, 56), (3, 37, 45)])
def test_matches_pytorch_reference(rec, lite, shape):
    from sgf_deploy.model.infer import reconstruct

    n = shape[0] if len(shape) == 3 else 1
    ref, tar, _ = phantom_pair(n, *shape[-2:])
    if len(shape) == 2:
        ref, tar = ref[0], tar[0]
    out = rec(ref, tar)
    expected = reconstruct(lite[1], ref, tar)
    assert out.shape == tar.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    err = float(np.abs(out - expected).max())
    assert err <= _tol(expected), f"max abs error {err:g} vs PyTorch reference"
    # the output is in the target's intensity scale, not the normalised one
    assert abs(float(out.mean()) - float(tar.mean())) < 0.5 * float(tar.std()) + 1


def test_batch_size_does_not_change_the_result(ort_engine):
    ref, tar, _ = phantom_pair(5, 40, 48)
    outs = [Reconstructor.load(ort_engine, batch=b, allow_unvalidated=True)(ref, tar) for b in (1, 2, 5)]
    for out in outs[1:]:
        assert np.abs(out - outs[0]).max() <= _tol(outs[0])


def test_timings_and_description(rec):
    ref, tar, _ = phantom_pair(2, 32, 40)
    rec(ref, tar)
    assert set(rec.timings) >= {"load", "preprocess", "inference", "postprocess"}
    assert all(v >= 0 for v in rec.timings.values())
    assert rec.timings["load"] > 0
    assert "fp32" in rec.describe().lower() and "onnxruntime" in rec.describe().lower()


def test_integer_and_complex_inputs(rec):
    ref, tar, _ = phantom_pair(1, 32, 40)
    out_f = rec(ref, tar)
    out_i = rec(np.round(ref).astype(np.int16), np.round(tar).astype(np.uint16))
    assert np.isfinite(out_i).all() and out_i.shape == out_f.shape
    out_c = rec(ref.astype(np.complex64), (tar * np.exp(1j * 0.3)).astype(np.complex64))
    assert any("magnitude" in n for n in rec.notices)
    assert np.abs(out_c - out_f).max() <= _tol(out_f) * 10


@pytest.mark.parametrize("value", [0.0, 7.5])
def test_constant_target_gives_finite_output(rec, value):
    ref, _, _ = phantom_pair(2, 32, 40)
    tar = np.full_like(ref, value)
    out = rec(ref, tar)
    assert np.isfinite(out).all()
    # std 0: normalised input is exactly 0 and de-normalisation scales the output by 1e-11
    assert np.allclose(out, value, atol=1e-6)


def test_normalize_instance_std_zero_is_finite():
    from sgf_deploy.data.degrade import normalize_instance

    for x in (np.zeros((8, 8), np.float32), np.full((8, 8), 3.0e38, np.float32), np.ones((1, 1), np.float32)):
        y, mean, std = normalize_instance(x)
        assert np.isfinite(y).all() and np.isfinite(mean) and np.isfinite(std)


@pytest.mark.parametrize(
    "ref,tar,match",
    [
        (np.zeros((4, 4, 4, 4)), np.zeros((4, 4, 4, 4)), "shape"),
        (np.zeros(16), np.zeros(16), "shape"),
        (np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), "empty"),
        (np.zeros((8, 8)), np.zeros((8, 9)), "does not match"),
        (np.full((8, 8), np.nan), np.zeros((8, 8)), "non-finite"),
        (np.zeros((8, 8)), np.full((8, 8), np.inf), "non-finite"),
        (np.array([["a"] * 8] * 8), np.zeros((8, 8)), "dtype"),
        (np.zeros((8, 8), dtype=object), np.zeros((8, 8)), "dtype"),
        (np.zeros((8, 8), dtype=bool), np.zeros((8, 8)), "dtype"),
    ],
)
def test_bad_arrays(rec, ref, tar, match):
    with pytest.raises(InputError, match=match):
        rec(ref, tar)


class _NaNRunner:
    def infer(self, reference, target):
        return np.full_like(target, np.nan)


def _fake_manifest(ort_engine, **changes) -> EngineManifest:
    """The test engine's manifest with ``changes`` (a fake engine behind a real manifest)."""
    data = EngineManifest.load(ort_engine).to_dict()
    data.update(changes)
    return EngineManifest.from_dict(data)


def test_non_finite_engine_output_is_an_error(ort_engine):
    rec = Reconstructor(_NaNRunner(), ort_engine, _fake_manifest(ort_engine, precision="fp16"), batch=None,
                        trust=TrustStatus(True, "test"), load_seconds=0.0)
    ref, tar, _ = phantom_pair(1, 16, 16)
    with pytest.raises(NonFiniteOutputError, match="non-finite"):
        rec(ref, tar)


def test_unvalidated_engine_refused_by_default(ort_engine):
    with pytest.raises(ValidationFailed, match="never validated"):
        Reconstructor.load(ort_engine)
    rec = Reconstructor.load(ort_engine, allow_unvalidated=True)
    assert not rec.trust.ok


def test_validated_engine_loads(validated_engine):
    rec = Reconstructor.load(validated_engine)
    assert rec.trust.ok and "pass" in rec.trust.label


class _EchoRunner:
    def __init__(self):
        self.calls = []

    def infer(self, reference, target):
        self.calls.append(reference.shape)
        return target.copy()


def test_static_profile_pads_the_last_batch(ort_engine):
    manifest = _fake_manifest(ort_engine, profile={"min": [4, 1, 16, 24], "opt": [4, 1, 16, 24], "max": [4, 1, 16, 24]})
    runner = _EchoRunner()
    rec = Reconstructor(runner, ort_engine, manifest, batch=2, trust=TrustStatus(True, "t"), load_seconds=0)
    assert rec.batch == 4
    ref, tar, _ = phantom_pair(6, 13, 20)
    out = rec(ref, tar)
    assert runner.calls == [(4, 1, 16, 24), (4, 1, 16, 24)]
    # echo engine: the output is the target itself after normalise -> denormalise
    assert np.allclose(out, tar, rtol=1e-5, atol=1e-3)
    with pytest.raises(ShapeNotSupportedError, match="exactly 16x24"):
        rec(*phantom_pair(1, 20, 20)[:2])


def test_dynamic_profile_limits_batch():
    prof = Profile.from_manifest({"min": [1, 1, 8, 8], "opt": [2, 1, 320, 320], "max": [8, 1, 512, 512]})
    assert prof.static_batch is None
    assert prof.choose_batch(None, 4) == 2
    assert prof.choose_batch(32, 4) == 8
    assert prof.choose_batch(3, 4) == 3
    per_input = Profile.from_manifest({"target": {"min": [2, 1, 8, 8], "opt": [2, 1, 8, 8], "max": [2, 1, 8, 8]}})
    assert per_input.static_batch == 2
    assert Profile.from_manifest({}).choose_batch(None, 4) == 4


def test_runtime_does_not_import_torch(ort_engine):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from sgf_deploy.runtime import Reconstructor
        rec = Reconstructor.load({str(ort_engine)!r}, allow_unvalidated=True)
        rng = np.random.default_rng(0)
        out = rec(rng.random((2, 24, 32), dtype=np.float32), rng.random((2, 24, 32), dtype=np.float32))
        assert out.shape == (2, 24, 32) and np.isfinite(out).all()
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print("TORCH_MODULES", bad)
        sys.exit(1 if bad else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
