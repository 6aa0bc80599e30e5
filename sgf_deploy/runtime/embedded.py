"""The embedded default models as cached ONNX Runtime engines, built once per machine.

When ``engines/`` holds no validated engine, ``sgf-deploy run`` uses the shipped default model of
the task (:mod:`sgf_deploy.model.registry`), built for ONNX Runtime CPU (FP32) on first use, then
cached under ``$SGF_DEPLOY_CACHE`` or ``~/.cache/sgf-deploy/``, keyed by the checkpoint's SHA-256.
Each default ships as an ONNX file exported and self-checked (ONNX Runtime vs PyTorch) when it was
packaged, so the first use needs numpy and ONNX Runtime only (no torch, no onnx): the file's
SHA-256 is checked against the registry, ONNX Runtime optimises it, and the manifest is written
from the file's own metadata. Only a default without a shipped ONNX file is exported from its
checkpoint on first use (that imports torch). The engine has no validation report; it is trusted
because the export self-check passed, and the summary says exactly that (the cache marker beside
the engine is what :meth:`sgf_deploy.engines.EngineManifest.trust` reads).

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
from ..model.registry import ShippedModel, default_for_task, model_by_checkpoint

Echo = Callable[[str], None]
BUILD_PREFIX = ".building-"
LOCK_NAME = ".lock"


def cache_dir() -> Path:
    """``$SGF_DEPLOY_CACHE`` or ``~/.cache/sgf-deploy``."""
    env = os.environ.get("SGF_DEPLOY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgf-deploy"


def default_checkpoint_path(task: str | None = None) -> Path:
    """The embedded default checkpoint (of ``task``), or an error saying how to run without it."""
    try:
        if task is not None:
            path = default_for_task(task).checkpoint_path
            if not path.is_file():
                raise SgfError(f"{path}: the embedded default checkpoint is missing from this install")
            return path
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
                   rebuild: bool = False, task: str | None = None) -> tuple[Path, bool]:
    """(engine path, built now?) of the default model (of ``task``; ``None``: the registry's
    recon4x default) for ONNX Runtime CPU FP32, building it once.

    First use builds the engine from the shipped, self-checked ONNX file (numpy + ONNX Runtime
    only); a default without one is exported from its checkpoint (this imports torch) and must pass
    the export self-check. The finished folder moves into the cache in one rename, so an
    interrupted build leaves nothing half-written behind. ``rebuild`` replaces a cached engine that
    no longer loads (another ONNX Runtime version)."""
    checkpoint = checkpoint or default_checkpoint_path(task or "recon4x")
    cache = cache or cache_dir()
    existing = cached_default_engine(checkpoint, cache)
    if existing is not None and not rebuild:
        return existing, False
    with cache_lock(cache):
        existing = cached_default_engine(checkpoint, cache)  # built by another process while we waited
        if existing is not None and not rebuild:
            return existing, False
        remove_stale_builds(cache)
        checkpoint_sha256 = sha256_file(checkpoint)
        entry = cache / f"default-{checkpoint_sha256}"  # as _entry names it
        shipped = model_by_checkpoint(checkpoint_sha256, checkpoint.parent)
        if echo:
            how = "building" if _has_shipped_onnx(shipped) else "exporting and building"
            echo(f"first use: {how} the embedded default model for ONNX Runtime CPU into {entry} "
                 "(once; later runs reuse it)")
        work = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{os.getpid()}-", dir=cache))
        try:
            os.chmod(work, umask_mode(0o777))  # mkdtemp makes 0700: the cache is shared
            if _has_shipped_onnx(shipped):
                _build_from_shipped(work, shipped, echo)  # type: ignore[arg-type]
            else:
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


def _has_shipped_onnx(model: ShippedModel | None) -> bool:
    return bool(model is not None and model.onnx_path is not None and model.onnx_path.is_file()
                and model.selfcheck.get("passed") is True)


def _build_from_shipped(work: Path, model: ShippedModel, echo: Echo | None) -> None:
    """Build the cached engine from the shipped ONNX file with ONNX Runtime alone (no torch, no
    onnx): its SHA-256 must match the registry, its packaging self-check must have passed."""
    from ..engines.identity import Profile, device_token, engine_filename
    from ..engines.manifest import FORMAT_VERSION, ModelInfo
    from ..engines.onnxruntime.builder import build as ort_build
    from ..engines.onnxruntime.builder import ort_device

    start = time.perf_counter()
    onnx_path = model.onnx_path
    assert onnx_path is not None
    actual = sha256_file(onnx_path)
    if actual != model.onnx_sha256:
        raise ValidationFailed(f"{onnx_path}: sha256 {actual[:16]}... does not match the registry's "
                               f"{str(model.onnx_sha256)[:16]}...: the shipped default was modified; reinstall sgf-deploy")
    meta = _ort_metadata(onnx_path)
    if meta.get("sgf.checkpoint_sha256") != model.checkpoint_sha256:
        raise ValidationFailed(f"{onnx_path}: exported from checkpoint {str(meta.get('sgf.checkpoint_sha256'))[:12]}..., "
                               f"the registry names {model.checkpoint_sha256[:12]}...; reinstall sgf-deploy")
    import onnxruntime

    version = str(onnxruntime.__version__)
    device = ort_device()
    profile = Profile(None, None, None, "dynamic ONNX input (ONNX Runtime accepts any N, H, W)")
    name = engine_filename(onnx_path.stem, "onnxruntime", version, "fp32", device_token("onnxruntime", device), profile)
    engine = work / name
    info = ort_build(onnx_path, engine, device=device)
    manifest = EngineManifest(
        engine_file=name, engine_sha256=sha256_file(engine), onnx_sha256=actual, onnx_path=str(onnx_path),
        checkpoint_sha256=model.checkpoint_sha256, backend="onnxruntime", backend_version=version,
        precision="fp32", device=device, profile=profile,
        build_options={"backend": "onnxruntime", "precision": "fp32", "source": "shipped default ONNX", **info},
        precision_conversion={"kind": "none (FP32 as exported)"},
        built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), toolkit_version=__version__,
        model=ModelInfo.from_dict({
            "preset": meta.get("sgf.preset"), "task": meta.get("sgf.task"), "pair": meta.get("sgf.pair"),
            "config": meta.get("sgf.config"), "size_multiple": meta.get("sgf.size_multiple"),
            "normalization": meta.get("sgf.normalization"), "opset": meta.get("sgf.opset"),
            "dynamic": meta.get("sgf.dynamic"), "shipped_default": model.name,
            "tasks": list(model.tasks), "contrasts": model.contrasts,
        }),
        build_parity={"status": "not run: export self-check at packaging", "selfcheck": model.selfcheck},
        format_version=FORMAT_VERSION,
    )
    manifest.save(engine)
    write_json_atomic(work / CACHE_MARKER, {
        "engine": name, "engine_sha256": manifest.engine_sha256, "checkpoint": str(model.checkpoint_path),
        "checkpoint_sha256": model.checkpoint_sha256, "onnx_sha256": actual, "shipped_default": model.name,
        "selfcheck_passed": True, "selfcheck": model.selfcheck, "backend": "onnxruntime", "precision": "fp32",
        "toolkit_version": __version__, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - start, 3),
    })
    if echo:
        echo(f"built {name} from the shipped {onnx_path.name} (self-checked at packaging: "
             f"PSNR {model.selfcheck.get('psnr_db', float('nan')):.1f} dB vs PyTorch)")


def _ort_metadata(onnx_path: Path) -> dict:
    """The file's ``sgf.*`` metadata read with ONNX Runtime (no onnx package needed)."""
    import onnxruntime as ort

    from ..export.metadata import decode_metadata

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return decode_metadata(dict(session.get_modelmeta().custom_metadata_map))


def _replace_entry(work: Path, entry: Path) -> None:
    """Move the finished build to ``entry`` in one rename; a stale entry is moved aside first."""
    if entry.exists():
        aside = entry.with_name(f".stale-{entry.name}-{os.getpid()}")
        os.replace(entry, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(work, entry)
