"""A runtime-only install (``pip install .``: numpy, ONNX Runtime, the readers; no torch, no onnx)
runs ``sample`` and ``run`` on the shipped defaults, first use included.

Slow (a fresh virtual environment: about 90-120 s on the 2-core CI machine, most of it pip);
skipped with the reason when pip cannot install the runtime dependencies (offline, no index).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory):
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout (no pyproject.toml): nothing to install")
    env_dir = tmp_path_factory.mktemp("runtime-only") / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        pytest.skip(f"pip could not install the runtime dependencies here (offline?): {' | '.join(tail)}")
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path, cache: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ, SGF_DEPLOY_CACHE=str(cache), OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    proc = subprocess.run([str(env_dir / "bin" / "sgf-deploy"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, time.perf_counter() - start


def test_sample_and_run_without_torch(runtime_env, tmp_path):
    py = runtime_env / "bin" / "python"
    missing = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'onnx') "
                              "if u.find_spec(m)])"], capture_output=True, text=True, cwd=tmp_path)
    assert missing.stdout.strip() == "[]", "the runtime-only install pulled torch or onnx"
    cache = tmp_path / "cache"
    proc, _ = _run(runtime_env, ["sample", "--out", "."], tmp_path, cache)
    assert proc.returncode == 0, proc.stderr
    assert "ONNX Runtime" in proc.stdout and "PSNR" in proc.stdout
    cache = tmp_path / "cache-run"  # a cache of its own: this run is the default's first use
    first, t_first = _run(runtime_env, ["run", "--ref", "t1.npy", "--target", "t2_us.npy", "--gt", "t2_gt.npy",
                                        "--register", "off"], tmp_path, cache)
    assert first.returncode == 0, first.stderr
    assert "fidelity:" in first.stdout and "model:" in first.stdout and "Traceback" not in first.stderr
    assert "built now and cached" in first.stdout
    second, t_second = _run(runtime_env, ["run", "--ref", "t1.npy", "--target", "t2_us.npy", "--gt", "t2_gt.npy",
                                          "--register", "off", "--out", "again.npy"], tmp_path, cache)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "again.npy").is_file()
    print(f"runtime-only install: sample ok; first run {t_first:.2f} s (process wall, first use: engine built from the shipped ONNX), "
          f"second run {t_second:.2f} s")
    # an optional dependency that is missing: one line naming the extra, no traceback
    proc, _ = _run(runtime_env, ["train", "--steps", "1", "--out", "x.pt"], tmp_path, cache)
    assert proc.returncode == 2 and "pip install 'sgf-deploy[torch]'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
