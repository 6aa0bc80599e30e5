"""Artefact hygiene shared by every stage: SHA-256, atomic writes, no silent overwrites."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import OutputExistsError

_CHUNK = 1 << 20
TEMP_SUFFIX = ".tmp"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_writable(path: str | os.PathLike, overwrite: bool, flag: str = "--force") -> Path:
    """Refuse an existing output unless overwriting was asked for."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path}: already exists; pass {flag} to overwrite it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, flag: str = "--force") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A failure (or an interrupted process) leaves no partial file behind and never touches an
    existing ``path``.
    """
    path = check_writable(path, overwrite, flag)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        yield tmp
        if tmp.is_file():  # mkstemp makes 0600; give the output the permissions a plain open() would
            os.chmod(tmp, umask_mode(0o666))
        if not overwrite and path.exists():
            raise OutputExistsError(f"{path}: appeared while writing; pass {flag} to overwrite it")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def temp_beside(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """A new hidden temporary file (or folder) beside ``path``: ``.<name>.<pid>-<random>.tmp``.

    Temporaries of the same output left by a process that no longer runs (a killed run) are
    removed first; the PID in the name is what tells them apart from a live writer's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    prefix = f".{path.name}.{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=path.parent))
        os.chmod(tmp, umask_mode(0o777))  # mkdtemp makes 0700; outputs are meant to be shared
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(name)


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove ``.<name>.<pid>-*.tmp`` beside ``path`` whose process no longer runs."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TEMP_SUFFIX}"):
        pid = tmp.name[len(path.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def umask_mode(mode: int) -> int:
    """``mode`` as the process umask lets a plain ``open()`` / ``mkdir()`` create it."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, overwrite: bool = False) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return write_bytes_atomic(path, text.encode(), overwrite)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
