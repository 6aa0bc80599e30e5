"""The error boundary and clean-up of ``sgf-deploy run``: OS errors on a user's path are one line,
a killed run's temporary and a killed build's folder are removed by the next run, the shared
cache honours the umask, and simultaneous first uses build the default engine once."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sgf_deploy.cli import cli

from runtime_helpers import copy_engine, phantom_pair


@pytest.fixture
def ws(tmp_path, monkeypatch, validated_engine):
    """A workspace with a validated engine in engines/ and a reference/target pair."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SGF_DEPLOY_CACHE", str(tmp_path / ".cache"))
    copy_engine(validated_engine, tmp_path / "engines")
    ref, tar, _ = phantom_pair(1, 32, 40)
    np.save(tmp_path / "ref.npy", ref[0])
    np.save(tmp_path / "tar.npy", tar[0])
    return tmp_path


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sgf-deploy: error:"), err
    return err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_output_folder_that_is_a_file_is_one_line(ws):
    (ws / "blocker").write_text("a file, not a folder")
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy", "--out", "blocker/out.npy"])
    err = _one_line_error(result)
    assert "blocker" in err and "nothing was written" in err


def test_full_file_system_is_one_line_and_leaves_nothing(ws, monkeypatch):
    """A write that fails half way (ENOSPC) is reported in one line; no temporary stays behind."""
    real_save = np.save

    def full(file, arr, *args, **kwargs):
        real_save(file, arr[:1], *args, **kwargs)  # some bytes made it to disk before the device filled up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))

    monkeypatch.setattr(np, "save", full)
    before = sorted(p.name for p in ws.iterdir())
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy"])
    err = _one_line_error(result)
    assert "No space left on device" in err
    assert sorted(p.name for p in ws.iterdir()) == before  # no output, no .tmp


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_folder_is_one_line(ws):
    (ws / "ro").mkdir()
    os.chmod(ws / "ro", 0o555)
    try:
        result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy", "--out", "ro/out.npy"])
        assert "Permission denied" in _one_line_error(result)
    finally:
        os.chmod(ws / "ro", 0o755)


def test_stale_temporary_of_a_killed_run_is_removed(ws):
    stale = ws / f".tar_sgf.npy.{_dead_pid()}-abc123.tmp"
    live = ws / f".tar_sgf.npy.{os.getpid()}-def456.tmp"  # a live writer's (this process): left alone
    stale.write_bytes(b"half an output")
    live.write_bytes(b"being written")
    result = CliRunner().invoke(cli, ["run", "--ref", "ref.npy", "--target", "tar.npy"])
    assert result.exit_code == 0, result.output
    assert not stale.exists() and live.exists() and (ws / "tar_sgf.npy").is_file()


def test_stale_build_folder_removed_and_cache_follows_umask(tmp_path, monkeypatch, lite):
    """A killed first use leaves ``.building-<pid>-*``: the next build removes it. The cache entry
    gets the permissions the umask gives (a cache shared by a workstation's users)."""
    from sgf_deploy.model import locate
    from sgf_deploy.runtime.embedded import default_engine

    cache = tmp_path / "cache"
    stale = cache / f".building-{_dead_pid()}-xyz"
    (stale / "engines").mkdir(parents=True)
    monkeypatch.setattr(locate, "DEFAULT_CHECKPOINT", lite[0])
    old = os.umask(0o022)
    try:
        engine, built = default_engine(cache=cache)
    finally:
        os.umask(old)
    assert built and not stale.exists()
    assert (engine.parent.stat().st_mode & 0o777) == 0o755
    assert (engine.stat().st_mode & 0o777) == 0o644


def test_simultaneous_first_uses_build_once(tmp_path, lite):
    """Three runs start together on an empty cache: one exports and builds, the others wait for
    its lock and reuse the engine; all three succeed with the same output."""
    ref, tar, _ = phantom_pair(1, 32, 40)
    np.save(tmp_path / "ref.npy", ref[0])
    np.save(tmp_path / "tar.npy", tar[0])
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import sgf_deploy.model.locate as locate
        locate.DEFAULT_CHECKPOINT = Path({str(lite[0])!r})
        from sgf_deploy.cli import main
        sys.exit(main(["run", "--ref", "ref.npy", "--target", "tar.npy", "--out", sys.argv[1]]))
    """)
    env = dict(os.environ, SGF_DEPLOY_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, f"out{i}.npy"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, out + err
    built = [out for out, _ in results if "built now and cached" in out]
    assert len(built) == 1, [out for out, _ in results]
    assert sum("first use" in err for _, err in results) == 1
    entries = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    outs = [np.load(tmp_path / f"out{i}.npy") for i in range(3)]
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


def test_engine_builds_clean_up_after_a_killed_build(tmp_path, onnx_model):
    """engines/: a killed build's temporary folder (``.<engine>.<pid>-*.tmp``) goes at the next
    build of the same engine."""
    from sgf_deploy.engines import build_engine

    first = build_engine(onnx_model, backend="onnxruntime", precision="fp32", out_dir=tmp_path, parity_n=0)
    stale = tmp_path / f".{first.engine_path.name}.{_dead_pid()}-zzz.tmp"
    (stale / "sub").mkdir(parents=True)
    build_engine(onnx_model, backend="onnxruntime", precision="fp32", out_dir=tmp_path, parity_n=0, overwrite=True)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.engine_path.name, first.manifest_path.name])
