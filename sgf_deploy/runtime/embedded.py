"""The embedded default model as a cached ONNX Runtime engine, built once per machine.

When ``engines/`` holds no validated engine, ``sgf-deploy run`` uses the embedded default model
(``lite``), exported to ONNX and built for ONNX Runtime CPU (FP32) on first use, then cached under
``$SGF_DEPLOY_CACHE`` or ``~/.cache/sgf-deploy/``, keyed by the default checkpoint's SHA-256. It
has no validation report; it is trusted because the export self-check (ONNX Runtime vs PyTorch on
the same inputs) passed, and the summary says exactly that (the cache marker beside the engine is
what :meth:`sgf_deploy.engines.EngineManifest.trust` reads).

The cache is shared by the users of a workstation: it is created with the umask's permissions,
a build holds an exclusive lock (``.lock``) so that simultaneous first uses build once and the
others wait and reuse it, and a build folder left by a killed process (``.building-<pid>-*``
whose process no longer runs) is removed by the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from .. import __version__
from ..artifacts import pid_alive, sha256_file, umask_mode, write_json_atomic
from ..engines.manifest import CACHE_MARKER, EngineManifest, read_cache_marker
from ..errors import SgfError, ValidationFailed
from ..model.locate import default_checkpoint

Echo = Callable[[str], None]
BUILD_PREFIX = ".building-"
LOCK_NAME = ".lock"


def cache_dir() -> Path:
    """``$SGF_DEPLOY_CACHE`` or ``~/.cache/sgf-deploy``."""
    env = os.environ.get("SGF_DEPLOY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgf-deploy"


def default_checkpoint_path() -> Path:
    """The embedded default checkpoint, or an error saying how to run without it."""
    try:
        return default_checkpoint()
    except SgfError as exc:
        raise SgfError(f"{exc}, and engines/ holds no validated engine; pass --engine PATH") from None


def _entry(checkpoint: Path, cache: Path) -> Path:
    return cache / f"default-{sha256_file(checkpoint)}"


def cached_default_engine(checkpoint: Path | None = None, cache: Path | None = None) -> Path | None:
    """The cached default engine for the current default checkpoint, if built and intact."""
    checkpoint = checkpoint or default_checkpoint_path()
    entry = _entry(checkpoint, cache or cache_dir())
    info = read_cache_marker(entry)
    if info is None or not isinstance(info.get("engine"), str) or not info.get("selfcheck_passed"):
        return None
    engine = entry / info["engine"]
    if not engine.is_file():
        return None
    try:
        manifest = EngineManifest.load(engine)
    except SgfError:
        return None
    return engine if manifest.is_cached_default(engine) else None


@contextlib.contextmanager
def cache_lock(cache: Path) -> Iterator[None]:
    """An exclusive lock on the cache for the length of a build (released if the process dies)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / LOCK_NAME, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def remove_stale_builds(cache: Path) -> list[Path]:
    """Remove ``.building-<pid>-*`` folders whose process no longer runs; returns what was removed."""
    removed = []
    for folder in cache.glob(BUILD_PREFIX + "*"):
        pid_text = folder.name[len(BUILD_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and not (pid_text.isdigit() and pid_alive(int(pid_text))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def default_engine(cache: Path | None = None, checkpoint: Path | None = None, echo: Echo | None = None,
                   rebuild: bool = False) -> tuple[Path, bool]:
    """(engine path, built now?) of the default model for ONNX Runtime CPU FP32, building it once.

    First use exports the embedded checkpoint (this imports torch), requires the export self-check
    to pass, builds the engine, and moves the finished folder into the cache in one rename, so an
    interrupted build leaves nothing half-written behind. ``rebuild`` replaces a cached engine that
    no longer loads (another ONNX Runtime version)."""
    checkpoint = checkpoint or default_checkpoint_path()
    cache = cache or cache_dir()
    existing = cached_default_engine(checkpoint, cache)
    if existing is not None and not rebuild:
        return existing, False
    with cache_lock(cache):
        existing = cached_default_engine(checkpoint, cache)  # built by another process while we waited
        if existing is not None and not rebuild:
            return existing, False
        remove_stale_builds(cache)
        entry = _entry(checkpoint, cache)
        if echo:
            echo(f"first use: exporting and building the embedded default model for ONNX Runtime CPU into {entry} "
                 "(once; later runs reuse it)")
        work = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=cache))
        try:
            os.chmod(work, umask_mode(0o777))  # mkdtemp makes 0700: the cache is shared
            _build_into(work, checkpoint, echo)
            _replace_entry(work, entry)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    engine = cached_default_engine(checkpoint, cache)
    if engine is None:  # pragma: no cover - only on a broken file system
        raise SgfError(f"{entry}: could not cache the default engine")
    return engine, True


def _build_into(work: Path, checkpoint: Path, echo: Echo | None) -> None:
    """Export + self-check + build into ``work``, flattened: engine, manifest and marker at its top."""
    from ..engines import build_engine
    from ..export import export_onnx

    start = time.perf_counter()
    exported = export_onnx(checkpoint, out=work / "sgf_mri-default.onnx", echo=echo)
    selfcheck = dict(exported.selfcheck or {})
    if selfcheck.get("passed") is not True:
        raise ValidationFailed(
            f"{checkpoint}: export self-check of the embedded default model did not pass "
            f"(max abs error {selfcheck.get('max_abs_error')}, PSNR {selfcheck.get('psnr_db')} dB); refusing to cache an engine"
        )
    built = build_engine(exported.path, backend="onnxruntime", precision="fp32", out_dir=work / "engines", echo=echo)
    name = built.engine_path.name
    shutil.move(str(built.engine_path), str(work / name))
    shutil.move(str(built.manifest_path), str(work / (name + ".json")))
    write_json_atomic(work / CACHE_MARKER, {
        "engine": name,
        "engine_sha256": built.manifest.engine_sha256,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": built.manifest.checkpoint_sha256,
        "selfcheck_passed": True,
        "selfcheck": selfcheck,
        "backend": built.manifest.backend,
        "precision": built.manifest.precision,
        "toolkit_version": __version__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - start, 3),
    })


def _replace_entry(work: Path, entry: Path) -> None:
    """Move the finished build to ``entry`` in one rename; a stale entry is moved aside first."""
    if entry.exists():
        aside = entry.with_name(f".stale-{entry.name}-{os.getpid()}")
        os.replace(entry, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(work, entry)
