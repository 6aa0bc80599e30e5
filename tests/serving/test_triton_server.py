"""Against a real tritonserver (the one bundled in nvidia-pytriton) on loopback: one server per
module, started with ``sgf-deploy triton serve`` on free ports and stopped with SIGTERM.

run --server equals the local engine, concurrent clients agree, malformed requests and a client
killed mid-request leave the server serving, an unreachable server is one line with no output, a
restart under load is retried or reported, and SIGTERM stops the server cleanly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import free_ports, make_engine, pair

from sgf_deploy.serving.server import find_tritonserver

try:
    find_tritonserver()
    HAVE_SERVER = True
except Exception:  # noqa: BLE001 - any reason means: no server to test against
    HAVE_SERVER = False

pytestmark = pytest.mark.skipif(not HAVE_SERVER, reason="no tritonserver (pip install 'sgf-deploy[triton]')")
READY_S = 90.0


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_server(repo: Path, ports: list[int], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sgf_deploy.cli", "triton", "serve", "--repo", str(repo), "--http-port", str(ports[0]),
           "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    handle = open(log, "a")
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"))
    handle.close()
    url = f"127.0.0.1:{ports[0]}"
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and proc.poll() is None and not ready(url):
        time.sleep(0.2)
    if not ready(url):
        proc.kill()
        proc.wait(10)
        pytest.fail(f"server not ready within {READY_S} s: {log.read_text()[-2000:]}")
    return proc


def stop_server(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from sgf_deploy.serving.repository import TritonExportSettings, export_repository

    root = tmp_path_factory.mktemp("triton")
    engine = make_engine(root / "engines")
    unvalidated = make_engine(root / "unvalidated", validated=False)
    repo = export_repository(engine, root / "repo", TritonExportSettings(instances=2)).path  # bounded on big CI boxes
    other = export_repository(unvalidated, root / "repo-u", TritonExportSettings(
        model_name="sgf_unvalidated", allow_unvalidated=True, instances=1)).path
    shutil.move(str(other / "sgf_unvalidated"), str(repo / "sgf_unvalidated"))
    ports = free_ports(3)
    state = {"repo": repo, "ports": ports, "url": f"127.0.0.1:{ports[0]}", "engine": engine, "root": root,
             "log": root / "server.log"}
    state["proc"] = start_server(repo, ports, state["log"])
    yield state
    stop_server(state["proc"])


def local(engine: Path, ref: np.ndarray, tar: np.ndarray) -> np.ndarray:
    from sgf_deploy.runtime.reconstructor import Reconstructor

    rec = Reconstructor.load(engine, threads=1)
    try:
        return rec(ref, tar)
    finally:
        rec.runner.close()


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_run_server_equals_the_local_engine(served, tmp_path, capsys):
    from sgf_deploy.cli import main

    ref, tar = pair(5, 40, 44)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "tar.npy", tar)
    base = ["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"), "--batch", "2",
            "--register", "off"]  # one grid; registration is the geometry tests' business
    assert main(base + ["--engine", str(served["engine"]), "--out", str(tmp_path / "local.npy")]) == 0
    local_out = capsys.readouterr().out
    assert main(base + ["--server", served["url"], "--out", str(tmp_path / "served.npy")]) == 0
    out = capsys.readouterr().out
    assert f"engine:  triton://{served['url']}/sgf_mri: {served['engine'].name}" in out and "validated: pass" in out

    def same_part(text: str) -> list[str]:  # everything but where it ran, how long, and the file name
        return [line for line in text.splitlines() if not line.startswith(("engine:", "time:", "wrote:"))]

    assert same_part(out) == same_part(local_out) and any(line.startswith("input:") for line in same_part(out))
    served_img, local_img = np.load(tmp_path / "served.npy"), np.load(tmp_path / "local.npy")
    assert served_img.shape == (5, 40, 44) and max_rel(served_img, local_img) <= 1e-5


def test_four_concurrent_clients_get_identical_results(served):
    from sgf_deploy.serving.client import connect

    ref, tar = pair(8, 48, 40, seed=1)
    results, errors = [None] * 4, []

    def client(i: int) -> None:
        try:
            rec = connect(served["url"], batch=1 + i % 2)
            try:
                results[i] = rec(ref, tar)
            finally:
                rec.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and all(r is not None for r in results)
    expected = local(served["engine"], ref, tar)
    for r in results:
        assert max_rel(r, results[0]) <= 1e-6 and max_rel(r, expected) <= 1e-5


def infer_raw(url: str, arrays: dict[str, np.ndarray], datatype: str = "FP32"):
    import tritonclient.http as http

    client = http.InferenceServerClient(url, network_timeout=30)
    try:
        inputs = []
        for name, array in arrays.items():
            item = http.InferInput(name, list(array.shape), datatype)
            item.set_data_from_numpy(array)
            inputs.append(item)
        return client.infer("sgf_mri", inputs).as_numpy("reconstruction")
    finally:
        client.close()


def test_malformed_requests_leave_the_server_serving(served):
    from tritonclient.utils import InferenceServerException

    ref, tar = pair(2, 40, 44)
    expected = local(served["engine"], ref, tar)
    nan = tar.copy()
    nan[1, 3, 3] = np.nan
    bad = {
        "shape mismatch": ({"reference": ref[:, :, :40], "target": tar}, "FP32", "does not match"),
        "rank": ({"reference": ref[None], "target": tar[None]}, "FP32", "shape"),
        "dtype": ({"reference": ref.astype(np.float64), "target": tar.astype(np.float64)}, "FP64", "data-type"),
        "nan": ({"reference": ref, "target": nan}, "FP32", "non-finite"),
        "missing input": ({"reference": ref}, "FP32", "target"),
    }
    for what, (arrays, datatype, words) in bad.items():
        with pytest.raises(InferenceServerException) as info:
            infer_raw(served["url"], arrays, datatype)
        assert words in str(info.value), (what, str(info.value))
        assert ready(served["url"]), what
    assert max_rel(infer_raw(served["url"], {"reference": ref, "target": tar}), expected) <= 1e-5


KILLED_CLIENT = textwrap.dedent("""
    import socket, sys, numpy as np
    import tritonclient.http as http
    url, mode = sys.argv[1], sys.argv[2]
    if mode == "half":   # a request whose body never arrives in full
        host, port = url.split(":")
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v2/models/sgf_mri/infer HTTP/1.1\\r\\nHost: x\\r\\nContent-Type: application/json\\r\\n"
                  b"Content-Length: 100000\\r\\n\\r\\n{\\"inputs\\": [")
    else:                # a whole request, killed while the server works on it
        a = np.random.default_rng(0).random((16, 256, 256), dtype=np.float32) + 1
        c = http.InferenceServerClient(url, network_timeout=60)
        ins = [http.InferInput(n, list(a.shape), "FP32") for n in ("reference", "target")]
        for i in ins:
            i.set_data_from_numpy(a)
        print("sending", flush=True)
        c.infer("sgf_mri", ins)
    print("sent", flush=True)
    import time; time.sleep(60)
""")


def test_a_client_killed_mid_request_leaves_the_server_serving(served, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT)
    ref, tar = pair(2, 40, 44)
    expected = local(served["engine"], ref, tar)
    for mode in ("half", "whole"):
        proc = subprocess.Popen([sys.executable, str(script), served["url"], mode], stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()  # "sent" (half) / "sending" (whole: the request is then on its way)
        assert line.strip() in ("sent", "sending"), line
        time.sleep(0.5)
        proc.kill()
        proc.wait(10)
        assert ready(served["url"]), mode
        assert max_rel(infer_raw(served["url"], {"reference": ref, "target": tar}), expected) <= 1e-5, mode


def test_unvalidated_model_is_refused_unless_allowed(served):
    from sgf_deploy.errors import ValidationFailed
    from sgf_deploy.serving.client import connect

    with pytest.raises(ValidationFailed, match="refused: never validated.*--allow-unvalidated"):
        connect(served["url"], model="sgf_unvalidated")
    rec = connect(served["url"], model="sgf_unvalidated", allow_unvalidated=True)
    ref, tar = pair(1, 16, 16)
    assert not rec.trust.ok and rec(ref[0], tar[0]).shape == (16, 16)
    rec.close()


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path, capsys):
    from sgf_deploy.cli import main

    ref, tar = pair(2, 24, 24)
    np.save(tmp_path / "ref.npy", ref)
    np.save(tmp_path / "tar.npy", tar)
    port = free_ports(1)[0]
    code = main(["run", "--ref", str(tmp_path / "ref.npy"), "--target", str(tmp_path / "tar.npy"),
                 "--server", f"127.0.0.1:{port}", "--out", str(tmp_path / "out.npy"), "--register", "off"])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("sgf-deploy: note:")]
    assert code == 2 and len(err) == 1 and f"cannot reach the Triton server at 127.0.0.1:{port}" in err[0], err
    assert not (tmp_path / "out.npy").exists()


def test_restart_under_load_is_retried_or_reported_then_sigterm_stops_cleanly(served):
    """Last in the module: it replaces the module's server."""
    from sgf_deploy.serving.client import ServerError, connect

    ref, tar = pair(2, 32, 32, seed=3)
    expected = local(served["engine"], ref, tar)
    outcomes: list[str] = []
    stop = threading.Event()
    restarted = threading.Event()

    def load() -> None:
        rec = connect(served["url"], retries=8)
        while not stop.is_set():
            try:
                out = rec(ref, tar)
                outcomes.append("after" if restarted.is_set() else "before")
                assert max_rel(out, expected) <= 1e-5
            except ServerError as exc:
                assert "\n" not in str(exc)
                outcomes.append("error")
        rec.close()

    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1.0)
    assert stop_server(served["proc"]) == 0  # SIGTERM under load: a clean stop
    served["proc"] = start_server(served["repo"], served["ports"], served["log"])
    restarted.set()
    deadline = time.monotonic() + 30
    while "after" not in outcomes and time.monotonic() < deadline and worker.is_alive():
        time.sleep(0.1)
    stop.set()
    worker.join(timeout=60)
    assert "before" in outcomes and "after" in outcomes, outcomes
    assert "stopped" in served["log"].read_text()


def test_a_tampered_repository_fails_to_start_with_the_reason(tmp_path):
    from sgf_deploy.errors import SgfError
    from sgf_deploy.serving.repository import export_repository
    from sgf_deploy.serving.server import ServeSettings, TritonServer

    repo = export_repository(make_engine(tmp_path / "e"), tmp_path / "repo").path
    manifest = next((repo / "sgf_mri" / "1").glob("*.onnx.json"))
    manifest.write_text(manifest.read_text() + " ")
    ports = free_ports(3)
    server = TritonServer(ServeSettings(repo=repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                                       ready_timeout=60))
    with pytest.raises(SgfError) as info:
        with server:
            pass
    assert "does not match hashes.json" in str(info.value) and "\n" not in str(info.value)
    assert server.process.poll() is not None
