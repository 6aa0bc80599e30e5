"""Fixtures for the DICOM node tests: one simulated study, one engine cache for the whole session
(the embedded default is built once, by the ``sgf-deploy run`` whose output the node must equal),
and node / destination processes that are always stopped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom", reason="the DICOM node needs pynetdicom (pip install 'sgf-deploy[dicom]')")

from dicom_helpers import CLI, Destination, NodeProcess  # noqa: E402


@pytest.fixture(scope="session")
def node_env(tmp_path_factory) -> dict[str, str]:
    cache = tmp_path_factory.mktemp("sgf-cache")
    env = dict(os.environ, SGF_DEPLOY_CACHE=str(cache), OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="session")
def study(tmp_path_factory):
    """(ref folder, target folder) of a 4-slice 64x64 simulated study."""
    from sgf_deploy.dicom.synthetic import write_study

    return write_study(tmp_path_factory.mktemp("study"), slices=4, size=64, seed=3)


@pytest.fixture(scope="session")
def run_output(study, node_env, tmp_path_factory) -> Path:
    """``sgf-deploy run`` on the study (this also builds the embedded default into the cache)."""
    out = tmp_path_factory.mktemp("run") / "out"
    proc = subprocess.run([*CLI, "run", "--ref", str(study[0]), "--target", str(study[1]), "--out", str(out),
                           "--threads", "1"], env=node_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def nodes():
    started: list[NodeProcess] = []

    def make(spool: Path, env: dict[str, str], *args: str, port: int | None = None) -> NodeProcess:
        node = NodeProcess(spool, env, *args, port=port)
        started.append(node)
        return node

    yield make
    for node in started:
        node.stop()


@pytest.fixture
def destinations():
    started: list[Destination] = []

    def make(folder: Path, port: int | None = None) -> Destination:
        dest = Destination(folder, port)
        started.append(dest)
        return dest

    yield make
    for dest in started:
        dest.stop()
