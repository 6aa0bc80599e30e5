"""The client's and the launcher's one-line errors, without a server."""

from __future__ import annotations

import pytest

from sgf_deploy.errors import InputError, MissingDependencyError
from sgf_deploy.serving import server as server_mod
from sgf_deploy.serving.client import ServerError, TritonSession, parse_server


def test_server_addresses():
    assert parse_server("127.0.0.1:8000") == "127.0.0.1:8000"
    assert parse_server("http://gpu-box:8000/") == "gpu-box:8000"
    for bad in ("8000", "grpc://h:8001", "h:0", "h:port", "h:8000/v2"):
        with pytest.raises(InputError, match="HOST:PORT"):
            parse_server(bad)


def test_retries_then_one_line_and_server_refusals():
    pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    slept = []
    session = TritonSession("127.0.0.1:9", retries=3, sleep=slept.append)
    calls = []

    def refused(client):
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(ServerError) as info:
        session.call("a request", refused)
    message = str(info.value)
    assert len(calls) == 3 and slept == [0.5, 1.0] and "\n" not in message
    assert "cannot reach the Triton server at 127.0.0.1:9" in message and "nothing was written" in message

    restarting = iter([InferenceServerException("Server is not ready", status="503"), "ok"])

    def flaky(client):
        item = next(restarting)
        if isinstance(item, Exception):
            raise item
        return item

    assert session.call("a request", flaky) == "ok"

    def bad_input(client):
        raise InferenceServerException("request: reference contains 1 non-finite value(s)", status="400")

    with pytest.raises(InputError, match="refused a request: request: reference contains 1 non-finite"):
        session.call("a request", bad_input)


def test_no_tritonserver_is_one_line_with_the_way_out(monkeypatch):
    monkeypatch.setattr(server_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError) as info:
        server_mod.find_tritonserver()
    text = str(info.value)
    assert "pip install 'sgf-deploy[triton]'" in text and "--server HOST:PORT" in text and "\n" not in text


def test_missing_repository_is_refused(tmp_path):
    with pytest.raises(InputError, match="model repository not found"):
        server_mod.TritonServer(server_mod.ServeSettings(repo=tmp_path / "none")).start()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model folder"):
        server_mod.TritonServer(server_mod.ServeSettings(repo=tmp_path / "empty")).start()


def test_the_serving_modules_never_import_torch():
    import subprocess
    import sys

    code = ("import sys, sgf_deploy.serving.client, sgf_deploy.serving.backend, sgf_deploy.serving.repository, "
            "sgf_deploy.serving.server, sgf_deploy.commands.triton; import tritonclient.http; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-500:]


def test_an_unreadable_answer_is_one_line_without_retries():
    pytest.importorskip("tritonclient.http")
    calls = []

    def garbled(client):
        calls.append(1)
        raise ValueError("cannot reshape array of size 0 into shape (2,40,48)")

    with pytest.raises(ServerError, match="unexpected answer to a request .*cannot reshape") as info:
        TritonSession("127.0.0.1:9", retries=3, sleep=lambda s: None).call("a request", garbled)
    assert len(calls) == 1 and "\n" not in str(info.value)
