"""``sgf-deploy triton serve``: start Triton Inference Server on a model repository.

The server is the ``tritonserver`` binary bundled in the ``nvidia-pytriton`` wheel (extra
``[triton]``; Python backend only), started directly on the repository -- PyTriton's own
``Triton().bind()`` path fails on Python 3.11 (its multiprocessing helper needs
``RLock._recursion_count``, missing in the backend stub's interpreter). The Python backend needs
the stub built for this interpreter's version beside ``libtriton_python.so``; the wheel keeps the
stubs apart, so a private backend folder (the backend files + the matching stub) is assembled in a
temporary folder for each server and removed when it stops. The backend's Python finds sgf-deploy
and this environment's packages through ``PYTHONPATH``.

:class:`TritonServer` starts it, forwards its log lines, waits until ``/v2/health/ready`` answers
(bounded; a server that exits meanwhile is reported with its last log lines) and stops it with
SIGTERM (SIGKILL after a grace period).
"""

from __future__ import annotations

import collections
import importlib.util
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import defaults as D
from ..errors import InputError, MissingDependencyError, SgfError

Echo = Callable[[str], None]
STOP_GRACE_S = 20.0  # SIGTERM -> SIGKILL; tritonserver itself gives in-flight work 10 s less

# what the bundled server logs as errors on a machine without a GPU, although it serves fine
HARMLESS = ("CudaDriverHelper", "pinned memory", "CUDA driver", "NVML", "DCGM", "GPU metrics")

NO_SERVER = ("no tritonserver found: install the one bundled with nvidia-pytriton with "
             "pip install 'sgf-deploy[triton]', or serve the exported repository with Triton's container "
             "(docker run ... nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models) "
             "and point clients at it with --server HOST:PORT")


@dataclass(frozen=True)
class TritonInstall:
    """Where the bundled server lives: its binary, its backends and the Python-backend stubs."""

    binary: Path
    backends: Path
    stubs: Path | None

    def stub(self) -> Path | None:
        if self.stubs is None:
            return None
        path = self.stubs / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
        return path if path.is_file() else None


@dataclass(frozen=True)
class ServeSettings:
    """Options of ``sgf-deploy triton serve``; defaults in :mod:`sgf_deploy.defaults`."""

    repo: str | os.PathLike
    http_port: int = D.TRITON_HTTP_PORT
    grpc_port: int = D.TRITON_GRPC_PORT
    metrics_port: int = D.TRITON_METRICS_PORT
    address: str = "127.0.0.1"
    ready_timeout: float = D.TRITON_READY_TIMEOUT_S
    log_verbose: int = 0


def find_tritonserver() -> TritonInstall:
    """The ``tritonserver`` bundled in nvidia-pytriton, or a one-line error saying what to do."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(NO_SERVER)
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    backends = root / "backends"
    if not binary.is_file() or not (backends / "python" / "libtriton_python.so").is_file():
        raise MissingDependencyError(f"{root}: incomplete nvidia-pytriton install (no bin/tritonserver or Python "
                                     f"backend); {NO_SERVER}")
    stubs = root / "python_backend_stubs"
    return TritonInstall(binary, backends, stubs if stubs.is_dir() else None)


def prepare_backends(install: TritonInstall, folder: Path) -> Path:
    """A backend folder whose ``python/`` holds the backend and the stub for this interpreter."""
    target = folder / "backends" / "python"
    target.mkdir(parents=True)
    for item in (install.backends / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    if not (target / "triton_python_backend_stub").is_file():
        stub = install.stub()
        if stub is None:
            raise MissingDependencyError(
                f"{install.stubs}: no Python-backend stub for Python {sys.version_info.major}.{sys.version_info.minor}; "
                "use a Python the installed nvidia-pytriton supports")
        shutil.copy2(stub, target / stub.name)
    return folder / "backends"


PATH_VARIABLE = "SGF_DEPLOY_PYTHONPATH"


def backend_environment(install: TritonInstall | None = None) -> dict[str, str]:
    """The server's environment. The Python backend's embedded interpreter ignores ``PYTHONPATH``,
    so the folders where it finds sgf-deploy and this environment's packages (the package's
    parent, then site-packages) go into ``SGF_DEPLOY_PYTHONPATH``, which the generated
    ``model.py`` adds before importing sgf-deploy; the copied stub finds the libraries the wheel
    ships through ``LD_LIBRARY_PATH`` (its RPATH is relative to where the wheel put it)."""
    package_root = str(Path(__file__).resolve().parents[2])
    paths = [package_root] + list(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str) and Path(user).is_dir():
        paths.append(user)
    env = dict(os.environ)
    env[PATH_VARIABLE] = os.pathsep.join(dict.fromkeys(paths))
    if install is not None:
        libs = install.binary.parents[3] / "nvidia_pytriton.libs"
        if libs.is_dir():
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH")) if p)
    return env


def check_repository(repo: Path) -> None:
    if not repo.is_dir():
        raise InputError(f"{repo}: model repository not found (write one with sgf-deploy triton export)")
    if not any((child / "config.pbtxt").is_file() for child in repo.iterdir() if child.is_dir()):
        raise InputError(f"{repo}: no model folder with a config.pbtxt; write one with sgf-deploy triton export")


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the process that started the server dies,
    so a killed ``triton serve`` leaves no orphan server holding the ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TritonServer:
    """One ``tritonserver`` process on a repository (a context manager: stopped on exit)."""

    def __init__(self, settings: ServeSettings, *, echo: Echo | None = None, install: TritonInstall | None = None):
        self.settings = settings
        self.repo = Path(settings.repo).resolve()
        self.echo = echo or (lambda line: None)
        self.install = install
        self.process: subprocess.Popen | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=300)
        self._workdir: Path | None = None
        self._reader: threading.Thread | None = None

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.settings.address in ("0.0.0.0", "") else self.settings.address
        return f"{host}:{self.settings.http_port}"

    def command(self, backends: Path) -> list[str]:
        s = self.settings
        return [str(self.install.binary), "--model-repository", str(self.repo), "--backend-directory", str(backends),
                "--http-address", s.address, "--http-port", str(s.http_port),
                "--grpc-address", s.address, "--grpc-port", str(s.grpc_port),
                "--metrics-address", s.address, "--metrics-port", str(s.metrics_port),
                "--allow-gpu-metrics", "false", "--exit-on-error", "true", "--strict-readiness", "true",
                "--exit-timeout-secs", str(int(STOP_GRACE_S) - 10), "--log-verbose", str(int(s.log_verbose))]

    def start(self) -> "TritonServer":
        check_repository(self.repo)
        self.install = self.install or find_tritonserver()
        self._workdir = Path(tempfile.mkdtemp(prefix="sgf-triton-"))
        try:
            backends = prepare_backends(self.install, self._workdir)
            self.process = subprocess.Popen(self.command(backends), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=backend_environment(self.install),
                                            start_new_session=True, text=True, errors="replace", bufsize=1,
                                            preexec_fn=_stop_with_parent)
        except BaseException:
            self._cleanup()
            raise
        self._reader = threading.Thread(target=self._forward, name="tritonserver-log", daemon=True)
        self._reader.start()
        return self

    def _forward(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            if line:
                self.tail.append(line)
                self.echo(line)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until the server and every model are ready; SgfError (with the server's last log lines)
        when it exits first or ``timeout`` passes."""
        deadline = time.monotonic() + (self.settings.ready_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=5)
                code = None if self.process is None else self.process.returncode
                self._cleanup()
                raise SgfError(f"tritonserver on {self.repo} exited (code {code}) before it was ready: {self._why()}")
            if self.ready():
                return
            time.sleep(0.25)
        self.stop()
        raise SgfError(f"tritonserver on {self.repo} was not ready after {self.settings.ready_timeout:g} s; "
                       f"stopped it: {self._why()}")

    def _why(self) -> str:
        """The reason in the server's last log lines: a model's UNAVAILABLE status first."""
        for line in self.tail:
            if "UNAVAILABLE:" in line:
                return " ".join(line.split("UNAVAILABLE:", 1)[1].replace("|", " ").split())[:400]
        errors = [line for line in self.tail if (line[:1] == "E" or "error" in line.lower())
                  and not any(noise in line for noise in HARMLESS)]
        return " | ".join((errors or list(self.tail))[-3:])[:600] or "no log output"

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the process group; returns the code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.process.wait(timeout=10)
            code = self.process.returncode
            if self._reader is not None:
                self._reader.join(timeout=5)
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        if self.process is None:
            self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: ServeSettings, *, echo: Echo | None = None, on_ready: Callable[[TritonServer], None] | None = None
          ) -> int:
    """Run the server until SIGTERM/SIGINT (then stop it cleanly) or until it exits; returns its
    exit code (0 after a requested stop)."""
    server = TritonServer(settings, echo=echo).start()
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.wait_ready()
        if on_ready:
            on_ready(server)
        while not stop.is_set() and server.process is not None and server.process.poll() is None:
            stop.wait(0.5)
        if stop.is_set():
            server.stop()
            return 0
        server.stop()
        raise SgfError(f"tritonserver exited with code {server.process.returncode if server.process else '?'}: "
                       f"{server._why()}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()
