"""A short stack with ``register auto`` registers beside a first inference on the unregistered
reference (pipeline._infer): the image, the provenance and the refusals are those of registering
first; the inference is redone only when the registration moved the reference."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import phantom_pair

from sgf_deploy import defaults as D
from sgf_deploy.data.volume import Volume
from sgf_deploy.errors import InputError
from sgf_deploy.geometry import resample, rigid_index_matrix
from sgf_deploy.runtime.pipeline import RunSettings, reconstruct_volumes

SIDE = 128  # REGISTER_AUTO_MIN_SIDE: auto registers slices this large


def _shifted(data: np.ndarray, shifts) -> np.ndarray:
    out = []
    for sl, shift in zip(data, shifts):
        m = rigid_index_matrix(shift, 0.0, ((SIDE - 1) / 2, (SIDE - 1) / 2), (1.0, 1.0))
        out.append(resample(sl[None], [np.linalg.inv(m)], (1, SIDE, SIDE), interpolator="bspline")[0])
    return np.stack(out).astype(np.float32)


def _untimed(provenance: dict) -> dict:
    return {k: re.sub(r"[0-9.]+ s/slice", "", v) for k, v in provenance.items()}


def _npy(data: np.ndarray, name: str) -> Volume:
    return Volume(data=np.ascontiguousarray(data, np.float32), source=Path(name), fmt="npy")


def _both_ways(monkeypatch, ref: np.ndarray, tar: np.ndarray, engine: Path):
    settings = RunSettings(engine=str(engine), register="auto", allow_unvalidated=True)
    beside = reconstruct_volumes(_npy(ref, "ref.npy"), _npy(tar, "tar.npy"), settings)
    monkeypatch.setattr(D, "REGISTER_BESIDE_MAX_SLICES", 0)  # register first, as for a long stack
    in_turn = reconstruct_volumes(_npy(ref, "ref.npy"), _npy(tar, "tar.npy"), settings)
    monkeypatch.undo()
    return beside, in_turn


@pytest.mark.parametrize("shift", [(0.0, 0.0), (4.0, -3.0)])
def test_beside_gives_the_image_of_registering_first(monkeypatch, ort_engine, shift):
    ref, tar, _ = phantom_pair(1, SIDE, SIDE)
    ref = _shifted(ref, [shift])
    beside, in_turn = _both_ways(monkeypatch, ref, tar, ort_engine)
    assert "register (beside)" in beside.timings and "register (beside)" not in in_turn.timings
    assert np.array_equal(beside.image, in_turn.image)
    assert _untimed(beside.provenance) == _untimed(in_turn.provenance)
    applied = "applied" in beside.provenance["registration"] and "not applied" not in beside.provenance["registration"]
    assert ("inference, unregistered" in beside.timings) == applied  # redone only when the reference moved
    if shift != (0.0, 0.0):
        assert applied


def test_beside_refuses_as_registering_first_does(ort_engine):
    ref, tar, _ = phantom_pair(3, SIDE, SIDE)
    ref = _shifted(ref, [(0.0, 0.0), (0.0, 0.0), (9.0, 0.0)])  # one slice disagrees with the others
    settings = RunSettings(engine=str(ort_engine), register="auto", allow_unvalidated=True, strict=True)
    with pytest.raises(InputError, match="--strict"):
        reconstruct_volumes(_npy(ref, "ref.npy"), _npy(tar, "tar.npy"), settings)
    warnings: list[str] = []
    out = reconstruct_volumes(_npy(ref, "ref.npy"), _npy(tar, "tar.npy"), RunSettings(
        engine=str(ort_engine), register="auto", allow_unvalidated=True), warn=warnings.append)
    assert "register (beside)" in out.timings and any("residual misalignment" in w for w in warnings)
