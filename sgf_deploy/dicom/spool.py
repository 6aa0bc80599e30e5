"""The spool on disk: where received instances, results and quarantined data live.

Layout (all under ``--spool DIR``)::

    journal.sqlite               the journal (:mod:`.journal`)
    incoming/<study>/<series>/<sop>.dcm   every received instance, as received (Part 10 file)
    results/job<id>/IM00001.dcm  the derived series of a job (written atomically)
    quarantine/<time>-<n>.dcm    received data that could not be used (the reason is in the journal)
    tmp/                         files being written (never inside a series folder a worker reads)

:func:`durable_write` makes a file survive a power cut or ``kill -9`` before the C-STORE
response says success: temporary file, ``fsync``, rename, ``fsync`` of the folder.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_uid(value: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters) -- safe as a file or folder name."""
    return bool(value) and len(value) <= 64 and bool(_UID.match(value))


class Spool:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()  # the journal records paths: valid from any working directory
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.quarantine_dir = self.root / "quarantine"
        self.tmp = self.root / "tmp"

    def create(self) -> "Spool":
        for d in (self.root, self.incoming, self.results, self.quarantine_dir, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def instance_path(self, study: str, series: str, sop: str) -> Path:
        return self.incoming / study / series / f"{sop}.dcm"

    def result_dir(self, job_id: int) -> Path:
        return self.results / f"job{job_id:06d}"

    def quarantine_path(self) -> Path:
        return self.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9:09d}.dcm"

    def stored_instances(self) -> list[Path]:
        return sorted(self.incoming.glob("*/*/*.dcm"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write(path: Path, chunks: list[bytes], tmp_dir: Path) -> None:
    """Write ``chunks`` to ``path`` so that it is complete on disk when this returns. The
    temporary file lives in ``tmp_dir`` (same file system), so a reader of ``path``'s folder never
    sees a partial file."""
    parent = path.parent
    new_dirs = []
    p = parent
    while not p.exists():
        new_dirs.append(p)
        p = p.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
    with open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(parent)
    for d in new_dirs:  # a new study/series folder: its entry in the parent must be durable too
        _fsync_dir(d.parent)
