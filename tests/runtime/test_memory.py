"""The memory-safe batch (sgf_deploy.runtime.memory): measured per slice, recorded, chosen from
the memory available; an allocation failure is one line that suggests --batch 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from sgf_deploy.engines.manifest import EngineManifest, TrustStatus
from sgf_deploy.runtime import memory
from sgf_deploy.runtime.reconstructor import OutOfMemoryError, Reconstructor

GB = 10**9


def _engine(tmp_path: Path, **changes) -> Path:
    """A fake CPU engine file with a complete manifest beside it."""
    m = {"format": "sgf-deploy-engine", "format_version": 1, "engine_file": "e.onnx", "backend": "onnxruntime",
         "backend_version": "1", "precision": "fp32", "device": {"kind": "cpu", "name": "cpu"},
         "checkpoint_sha256": "a" * 64, "engine_sha256": "e" * 64, "onnx_sha256": "o" * 64, "profile": {},
         "build_options": {}, "built_at": "2026-12-07T00:00:00", "toolkit_version": "0.1.0", "build_parity": {},
         "model": {"preset": "paper", "task": "recon4x", "pair": "t1-t2"}, **changes}
    engine = tmp_path / "e.onnx"
    engine.write_bytes(b"engine")
    (tmp_path / "e.onnx.json").write_text(json.dumps(m))
    return engine


class _Runner:
    """Echoes the target; records the batch of each call; optionally fails to allocate."""

    def __init__(self, fail_above: int | None = None) -> None:
        self.calls: list[int] = []
        self.fail_above = fail_above

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        self.calls.append(int(target.shape[0]))
        if self.fail_above is not None and target.shape[0] > self.fail_above:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested "
                               "buffer of size 10522669056")
        return target.copy()


def _rec(engine: Path, runner: _Runner, batch: int | None = None) -> Reconstructor:
    return Reconstructor(runner, engine, EngineManifest.load(engine), batch=batch, trust=TrustStatus(True, "t"),
                         load_seconds=0.0)


def _stack(n: int = 6, h: int = 24, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, h, w), np.float32) + 1, rng.random((n, h, w), np.float32) + 1


def test_choose_never_more_than_fits_nor_more_than_the_cap():
    assert memory.choose(6 * GB, 20 * GB, 4)[0] == 1  # 2 x 6 GB > half of 20 GB
    assert memory.choose(1 * GB, 20 * GB, 4)[0] == 4
    assert memory.choose(3 * GB, 20 * GB, 4)[0] == 3
    assert memory.choose(30 * GB, 20 * GB, 4) == (1, memory.choose(30 * GB, 20 * GB, 4)[1])
    assert "even one slice may not fit" in memory.choose(30 * GB, 20 * GB, 4)[1]
    assert memory.choose(None, 20 * GB, 4)[0] == 4


def test_allocation_failures_are_recognised():
    assert memory.is_allocation_failure(MemoryError())
    assert memory.is_allocation_failure(RuntimeError("Failed to allocate memory for requested buffer of size 1"))
    assert memory.is_allocation_failure(RuntimeError("std::bad_alloc"))
    assert not memory.is_allocation_failure(RuntimeError("Got invalid dimensions for input: target"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux)")
def test_peak_probe_sees_an_allocation():
    with memory.PeakProbe() as probe:
        block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
    del block
    assert probe.growth is not None and 50 * 2**20 < probe.growth < 200 * 2**20
    assert memory.available_bytes() > 0


def test_recorded_memory_chooses_the_batch_and_says_so(tmp_path, monkeypatch):
    engine = _engine(tmp_path, memory_per_slice={"24x24": {"bytes": 6 * GB}})
    monkeypatch.setattr(memory, "available_bytes", lambda: 20 * GB)
    runner = _Runner()
    rec = _rec(engine, runner)
    ref, tar = _stack(4)
    out = rec(ref, tar)
    assert runner.calls == [1, 1, 1, 1] and rec.batch == 1
    assert np.allclose(out, tar, rtol=1e-4, atol=1e-4)
    assert any("batch 1: 6.00 GB per slice measured, 20.00 GB available" in n for n in rec.notices)
    runner.calls.clear()
    monkeypatch.setattr(memory, "available_bytes", lambda: 100 * GB)
    rec(ref, tar)
    assert runner.calls == [4]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS is read from /proc (Linux)")
def test_first_run_measures_one_slice_and_records_it(tmp_path):
    engine = _engine(tmp_path)
    runner = _Runner()
    rec = _rec(engine, runner)
    ref, tar = _stack(6)
    rec(ref, tar)
    assert runner.calls[0] == 1 and sum(runner.calls) == 6 and max(runner.calls) <= 4
    entry = EngineManifest.load(engine).extra["memory_per_slice"]["24x24"]
    assert entry["bytes"] > 0 and "VmHWM" in entry["method"]
    runner.calls.clear()
    _rec(engine, runner)(ref, tar)  # recorded now: no lone first slice
    assert runner.calls[0] == 4


def test_explicit_batch_is_kept_and_allocation_failure_is_one_line(tmp_path):
    engine = _engine(tmp_path, memory_per_slice={"24x24": {"bytes": 1}})
    runner = _Runner(fail_above=1)
    ref, tar = _stack(4)
    with pytest.raises(OutOfMemoryError, match=r"out of memory running 4 slice\(s\) of 24x24 at once.*pass --batch 1"):
        _rec(engine, runner, batch=4)(ref, tar)
    assert runner.calls == [4]
    assert _rec(engine, _Runner(fail_above=1), batch=1)(ref, tar).shape == tar.shape
