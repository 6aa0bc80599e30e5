"""The engine's measured optimum in ``run`` (sgf_deploy.engines.optimum.run_choice, used by
Reconstructor.load): used when --batch/--threads are not given and it was measured on this
machine (same CPU model and core count), ignored otherwise; one note says which and why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sgf_deploy import defaults as D
from sgf_deploy.cli import cli
from sgf_deploy.engines.manifest import EngineManifest
from sgf_deploy.engines.optimum import MANIFEST_KEY, record_optimum, recorded_optimum, run_choice, this_machine
from sgf_deploy.errors import SgfError
from sgf_deploy.runtime.reconstructor import Reconstructor

from runtime_helpers import copy_engine
from tiny_engine_helpers import tiny_ort_engine

WHEN = "2026-12-07T20:40:00+00:00"


def _record(batch: int = 3, threads: int = 1, machine: dict | None = None) -> dict:
    return {"optimum": {"batch": batch, "threads": threads, "ms_per_slice": 1.5}, "machine": machine or this_machine(),
            "shape": [320, 320], "measured_at": WHEN, "table": []}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_ort_engine(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def engine(tiny, tmp_path) -> Path:
    return copy_engine(tiny, tmp_path / "engines")


def _stack(n: int = 5, h: int = 16, w: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, h, w), np.float32) + 1, rng.random((n, h, w), np.float32) + 1


def test_run_choice_rule():
    here = {"cpu": "Test CPU @ 2.6GHz", "cores": 2, "arch": "x86_64"}
    with_optimum = {MANIFEST_KEY: _record(4, 2, here)}
    chosen = run_choice(with_optimum, here=here)
    assert (chosen.batch, chosen.threads, chosen.batch_source, chosen.threads_source) == (4, 2, "optimum", "optimum")
    assert chosen.note(4, 2) == "batch 4, 2 threads: the engine's measured optimum on this CPU (tune at 320x320, 2026-12-07)"
    partly = run_choice(with_optimum, batch=8, here=here)
    assert (partly.batch, partly.threads) == (8, 2)
    assert partly.note(8, 2).startswith("batch 8 (as asked), 2 threads (the engine's measured optimum on this CPU")
    for other in ({**here, "cores": 16}, {**here, "cpu": "Other CPU"}):
        ignored = run_choice({MANIFEST_KEY: _record(4, 2, other)}, here=here)
        assert (ignored.batch, ignored.threads, ignored.batch_source) == (None, None, "default")
        assert "another machine" in ignored.note(4, None)
    none = run_choice({}, here=here)
    assert none.batch is None and "sgf-deploy tune" in none.note(4, None)
    asked = run_choice(with_optimum, batch=1, threads=1, here=here)
    assert asked.note(1, 1) == "batch 1, 1 thread: as asked"
    assert recorded_optimum({MANIFEST_KEY: {"optimum": {"batch": 0, "threads": 1}}}) is None  # unreadable: ignored


def test_run_uses_the_optimum_measured_here(engine):
    record_optimum(engine, _record(batch=3, threads=1))
    rec = Reconstructor.load(engine, allow_unvalidated=True)
    assert rec.max_batch == 3 and rec.runner.threads == 1 and rec.threads == 1
    rec(*_stack())
    assert any(n.startswith("batch 3, 1 thread: the engine's measured optimum on this CPU (tune at 320x320, 2026-12-07)")
               for n in rec.notices), rec.notices
    EngineManifest.load(engine).verify_file(engine)  # the record left the engine's identity alone


def test_run_ignores_an_optimum_from_another_machine(engine):
    record_optimum(engine, _record(batch=3, threads=1, machine={"cpu": "Some Other CPU", "cores": 64,
                                                                "arch": "x86_64"}))
    rec = Reconstructor.load(engine, allow_unvalidated=True)
    assert rec.max_batch == D.RUN_BATCH and rec.runner.threads is None
    rec(*_stack())
    assert any("the defaults (the measured optimum (tune at 320x320, 2026-12-07) is for another machine "
               "(Some Other CPU, 64 cores" in n for n in rec.notices), rec.notices


def test_asked_batch_and_threads_win(engine):
    record_optimum(engine, _record(batch=3, threads=1))
    rec = Reconstructor.load(engine, batch=2, threads=2, allow_unvalidated=True)
    assert rec.max_batch == 2 and rec.runner.threads == 2
    rec(*_stack())
    assert "batch 2, 2 threads: as asked" in rec.notices


def test_no_optimum_runs_as_before(engine):
    rec = Reconstructor.load(engine, allow_unvalidated=True)
    assert rec.max_batch == D.RUN_BATCH and rec.runner.threads is None and rec.choice.optimum is None
    rec(*_stack(1))
    assert not any("optimum" in n or "as asked" in n for n in rec.notices), rec.notices


def test_invalid_record_is_refused(engine):
    with pytest.raises(SgfError, match="without a valid optimum"):
        record_optimum(engine, {"optimum": {"batch": "x"}})


def test_run_command_prints_the_note(engine, tmp_path, monkeypatch):
    record_optimum(engine, _record(batch=2, threads=1))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / ".cache"))
    ref, tar = _stack(3)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "tar.npy", tar)
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy", "--engine", str(engine),
                                      "--allow-unvalidated", "--register", "off"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "measured optimum" in line]
    assert notes == ["sgf-deploy: note: batch 2, 1 thread: the engine's measured optimum on this CPU "
                     "(tune at 320x320, 2026-12-07)"], result.stderr
    assert "batch 2" in result.stdout


def test_memory_still_lowers_the_optimum_batch(engine, monkeypatch):
    from sgf_deploy.runtime import memory

    record_optimum(engine, _record(batch=4, threads=1))
    rec = Reconstructor.load(engine, allow_unvalidated=True)
    monkeypatch.setattr(memory, "recorded", lambda manifest, shape: 6 * 10**9)
    monkeypatch.setattr(memory, "available_bytes", lambda: 20 * 10**9)
    rec(*_stack(5))
    assert rec.batch == 1
    assert any(n.startswith("batch 1 (lowered from 4 to fit memory), 1 thread: the engine's measured optimum")
               for n in rec.notices), rec.notices
