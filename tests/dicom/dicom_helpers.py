"""Helpers for the DICOM node tests: real ``sgf-deploy dicom serve`` processes on loopback free
ports, DCMTK ``storescu``/``storescp`` as sender and destination (pynetdicom's SCU/SCP when DCMTK
is missing)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DCMTK = shutil.which("storescu") is not None and shutil.which("storescp") is not None
CLI = [sys.executable, "-m", "sgf_deploy.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class NodeProcess:
    """A ``sgf-deploy dicom serve`` child process on 127.0.0.1."""

    def __init__(self, spool: Path, env: dict[str, str], *args: str, port: int | None = None) -> None:
        self.spool, self.env, self.args = spool, env, args
        self.port = port or free_port()
        self.log = spool.parent / f"{spool.name}-node.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "NodeProcess":
        self.log_fh = open(self.log, "a")
        self.proc = subprocess.Popen([*CLI, "dicom", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--spool", str(self.spool), "--threads", "1", *self.args],
                                     env=self.env, stdout=self.log_fh, stderr=subprocess.STDOUT)
        start_len = self.log.stat().st_size if self.log.exists() else 0

        def ready():
            assert self.proc.poll() is None, f"node exited:\n{self.log.read_text()}"
            return "listening as" in self.log.read_text()[start_len:]

        wait_for(ready, timeout, "the node to listen")
        return self

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "log_fh", None):
            self.log_fh.close()

    def status(self) -> dict:
        from sgf_deploy.dicom.status import collect

        return collect(self.spool)


class Destination:
    """The PACS side: DCMTK ``storescp`` (unique file per received instance, so a duplicate send
    shows as an extra file), else pynetdicom's SCP."""

    def __init__(self, folder: Path, port: int | None = None, ae_title: str = "PACS") -> None:
        self.folder, self.port, self.ae_title = folder, port or free_port(), ae_title
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = self.server = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> "Destination":
        if DCMTK:
            self.proc = subprocess.Popen(["storescp", "--unique-filenames", "--output-directory", str(self.folder),
                                          "-aet", self.ae_title, str(self.port)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(self._listening, 10, "storescp to listen")
        else:
            self.server = _pynetdicom_scp(self.folder, self.port, self.ae_title)
        return self

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def _pynetdicom_scp(folder: Path, port: int, ae_title: str):
    import itertools

    from pynetdicom import AE, StoragePresentationContexts, evt

    counter = itertools.count()

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        ds.save_as(folder / f"{next(counter):05d}-{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        return 0x0000

    ae = AE(ae_title=ae_title)
    ae.supported_contexts = StoragePresentationContexts
    return ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])


def send(files: list[Path], port: int, calling: str = "SCANNER", called: str = "SGF_DEPLOY",
         storescu_args: tuple[str, ...] = ()) -> None:
    """C-STORE ``files`` to the node with DCMTK ``storescu`` (else pynetdicom); asserts success."""
    if DCMTK:
        proc = subprocess.run(["storescu", *storescu_args, "-aet", calling, "-aec", called, "127.0.0.1", str(port),
                               *map(str, files)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return
    from pydicom import dcmread
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        for f in files:
            status = assoc.send_c_store(dcmread(f))
            assert status and status.Status == 0x0000, status
    finally:
        assoc.release()
