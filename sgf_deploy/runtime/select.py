"""Which engine ``sgf-deploy run`` uses, and whether it may be trusted.

Selection rule (``--engine auto``, the default):

1. Candidates are the engines in ``./engines/`` whose manifest (``<engine file>.json``) records a
   passing validation (``validation.verdict == "pass"``). Failed or never-validated engines are
   never picked automatically.
2. If the candidates come from more than one checkpoint (different model, task or contrast pair),
   nothing is guessed: the run stops and asks for ``--engine PATH``.
3. Candidates are ranked by device, GPU (``device.kind == "cuda"``) before CPU, then by precision,
   INT8 before FP16 before FP32 (each one validated, so the faster one is as trustworthy), then by
   the most recent validation. The first that loads on this machine wins; engines built for another
   GPU / backend version (``EngineMismatchError``) or needing a backend that is not installed are
   skipped, and the summary says so.
4. No candidate: the embedded default model (``lite``, recon 4x, T1 -> T2), exported to ONNX and
   built for ONNX Runtime CPU (FP32) on first use, then cached under ``$SGF_DEPLOY_CACHE`` or
   ``~/.cache/sgf-deploy/``, keyed by the default checkpoint's SHA-256. It has no validation report;
   it is trusted because the export self-check (ONNX Runtime vs PyTorch on the same inputs) passed,
   and the summary says exactly that.

Everything here is numpy/stdlib only; only the first use of the default engine imports torch
(through :func:`sgf_deploy.export.export_onnx`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..artifacts import sha256_file, write_json_atomic
from ..errors import EngineMismatchError, MissingDependencyError, SgfError, ValidationFailed

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# Mirrors sgf_deploy.model.DEFAULT_CHECKPOINT (importing sgf_deploy.model would import torch);
# tests/runtime check that the two agree.
DEFAULT_CHECKPOINT = PACKAGE_DIR / "assets" / "default" / "lite-recon4x-t1-t2.pt"
DEFAULT_LABEL = "embedded default (FP32, export self-check passed)"
CACHE_MARKER = "default-engine.json"
PRECISION_RANK = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}


@dataclass(frozen=True)
class ValidationStatus:
    ok: bool
    label: str


def validation_status(engine_path: Path, manifest: dict) -> ValidationStatus:
    """``ok`` when the manifest records a passing validation or the engine is the cached default."""
    validation = manifest.get("validation")
    if isinstance(validation, dict) and validation.get("verdict") == "pass":
        when = validation.get("validated_at")
        return ValidationStatus(True, "validated: pass" + (f" ({when})" if when else ""))
    cached = _cached_default_status(Path(engine_path), manifest)
    if cached is not None:
        return cached
    if isinstance(validation, dict) and validation.get("verdict"):
        return ValidationStatus(False, f"validation verdict '{validation.get('verdict')}'")
    return ValidationStatus(False, "never validated (no validation in its manifest)")


def _cached_default_status(engine_path: Path, manifest: dict) -> ValidationStatus | None:
    """The cache marker written by :func:`default_engine` after the export self-check passed,
    describing exactly this engine (its sha256 and checkpoint); ``None`` otherwise."""
    marker = engine_path.parent / CACHE_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if (
        isinstance(info, dict)
        and info.get("engine") == engine_path.name
        and info.get("selfcheck_passed") is True
        and info.get("engine_sha256")
        and info.get("engine_sha256") == manifest.get("engine_sha256")
        and info.get("checkpoint_sha256") == manifest.get("checkpoint_sha256")
    ):
        return ValidationStatus(True, DEFAULT_LABEL)
    return None


# -- engines/ ---------------------------------------------------------------------------------
@dataclass
class Candidate:
    engine_path: Path
    manifest: dict

    @property
    def gpu(self) -> bool:
        device = self.manifest.get("device") or {}
        return isinstance(device, dict) and str(device.get("kind", "")).lower() in ("cuda", "gpu")

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32")).lower()

    @property
    def validated_at(self) -> str:
        return str((self.manifest.get("validation") or {}).get("validated_at") or "")

    @property
    def checkpoint(self) -> str:
        return str(self.manifest.get("checkpoint_sha256") or "")

    def model_label(self) -> str:
        model = self.manifest.get("model") or {}
        parts = [str(model.get(k)) for k in ("preset", "task", "pair") if model.get(k)]
        return "-".join(parts + [self.checkpoint[:8] or "?"])


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """The selection rule's order: GPU first, then INT8 > FP16 > FP32, then the newest validation."""
    ordered = sorted(candidates, key=lambda c: (c.validated_at, str(c.engine_path)), reverse=True)
    return sorted(ordered, key=lambda c: (0 if c.gpu else 1, PRECISION_RANK.get(c.precision, 3)))


def validated_candidates(engines_dir: Path) -> list[Candidate]:
    """Engines in ``engines_dir`` whose manifest says ``validation.verdict == "pass"``, ranked."""
    return rank([c for c in _scan(engines_dir) if validation_status(c.engine_path, c.manifest).ok])


def ignored_engines(engines_dir: Path) -> list[str]:
    """``"<file>: <why>"`` for each engine in ``engines_dir`` that ``auto`` will not consider."""
    out = []
    for c in _scan(engines_dir):
        status = validation_status(c.engine_path, c.manifest)
        if not status.ok:
            out.append(f"{c.engine_path}: {status.label}")
    return out


def _scan(engines_dir: Path) -> list[Candidate]:
    from ..engines import read_manifest

    found: list[Candidate] = []
    if not Path(engines_dir).is_dir():
        return found
    for manifest_file in sorted(Path(engines_dir).glob("*.json")):
        engine_path = manifest_file.with_name(manifest_file.name[: -len(".json")])
        if not engine_path.is_file():
            continue  # e.g. an export sidecar, or a manifest whose engine was deleted
        try:
            manifest = read_manifest(engine_path)
        except SgfError:
            continue
        if isinstance(manifest, dict):
            found.append(Candidate(engine_path, manifest))
    return found


@dataclass
class Selection:
    """What :func:`select_engine` decided: a loaded reconstructor and why."""

    reconstructor: Any
    source: str  # "explicit" | "engines" | "default"
    skipped: list[str] = field(default_factory=list)
    built_default: bool = False


def select_engine(engine: str | None, *, engines_dir: str | os.PathLike = "engines", batch: int | None = None,
                  threads: int | None = None, allow_unvalidated: bool = False,
                  echo: Callable[[str], None] | None = None) -> Selection:
    """Load the engine ``sgf-deploy run`` should use (see the module docstring for the rule)."""
    from .reconstructor import Reconstructor

    if engine and engine != "auto":
        path = Path(engine)
        if not path.is_file():
            raise SgfError(f"{path}: engine file not found")
        return Selection(Reconstructor.load(path, batch=batch, threads=threads,
                                            allow_unvalidated=allow_unvalidated), "explicit")

    candidates = validated_candidates(Path(engines_dir))
    if echo:
        for line in ignored_engines(Path(engines_dir)):
            echo(f"not considered (no passing validation): {line}")
    models = sorted({c.model_label() for c in candidates if c.checkpoint} or set())
    if len({c.checkpoint for c in candidates}) > 1:
        raise SgfError(
            f"{engines_dir}: validated engines of {len({c.checkpoint for c in candidates})} different models "
            f"({', '.join(models)}); choose one with --engine PATH"
        )
    skipped: list[str] = []
    for candidate in candidates:
        try:
            rec = Reconstructor.load(candidate.engine_path, batch=batch, threads=threads)
        except (EngineMismatchError, MissingDependencyError) as exc:
            skipped.append(str(exc))
            continue
        return Selection(rec, "engines", skipped)

    engine_path, built = default_engine(echo=echo)
    try:
        rec = Reconstructor.load(engine_path, batch=batch, threads=threads)
    except EngineMismatchError as exc:
        if built:
            raise
        # e.g. ONNX Runtime was upgraded since the engine was cached: rebuild it once.
        if echo:
            echo(f"the cached default engine no longer loads here ({exc}); rebuilding it")
        engine_path, built = default_engine(echo=echo, rebuild=True)
        rec = Reconstructor.load(engine_path, batch=batch, threads=threads)
    return Selection(rec, "default", skipped, built_default=built)


# -- the cached embedded default --------------------------------------------------------------
def cache_dir() -> Path:
    """``$SGF_DEPLOY_CACHE`` or ``~/.cache/sgf-deploy``."""
    env = os.environ.get("SGF_DEPLOY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sgf-deploy"


def default_checkpoint_path() -> Path:
    if not DEFAULT_CHECKPOINT.is_file():
        raise SgfError(
            f"{DEFAULT_CHECKPOINT}: the embedded default checkpoint is missing from this install, "
            "and engines/ holds no validated engine; pass --engine PATH"
        )
    return DEFAULT_CHECKPOINT


def cached_default_engine(checkpoint: Path | None = None, cache: Path | None = None) -> Path | None:
    """The cached default engine for the current default checkpoint, if built and intact."""
    checkpoint = checkpoint or default_checkpoint_path()
    entry = (cache or cache_dir()) / f"default-{sha256_file(checkpoint)}"
    marker = entry / CACHE_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
        engine = entry / str(info["engine"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not engine.is_file() or not info.get("selfcheck_passed"):
        return None
    try:
        manifest = json.loads(engine.with_name(engine.name + ".json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or _cached_default_status(engine, manifest) is None:
        return None
    return engine


def default_engine(cache: Path | None = None, checkpoint: Path | None = None,
                   echo: Callable[[str], None] | None = None, rebuild: bool = False) -> tuple[Path, bool]:
    """(engine path, built now?) of the default model for ONNX Runtime CPU FP32, building it once.

    First use exports the embedded checkpoint (this imports torch), requires the export self-check
    to pass, builds the engine, and moves the finished directory into the cache in one rename, so
    an interrupted build leaves nothing half-written behind. ``rebuild`` replaces a cached engine
    that no longer loads (another ONNX Runtime version).
    """
    checkpoint = checkpoint or default_checkpoint_path()
    cache = cache or cache_dir()
    existing = cached_default_engine(checkpoint, cache)
    if existing is not None and not rebuild:
        return existing, False
    sha = sha256_file(checkpoint)
    entry = cache / f"default-{sha}"
    if echo:
        echo(f"first use: exporting and building the embedded default model for ONNX Runtime CPU into {entry} "
             "(once; later runs reuse it)")
    from ..engines import build_engine
    from ..export import export_onnx

    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        start = time.perf_counter()
        exported = export_onnx(checkpoint, out=work / "sgf_mri-default.onnx", echo=echo)
        selfcheck = dict(getattr(exported, "selfcheck", None) or {})
        if not _selfcheck_passed(selfcheck):
            raise ValidationFailed(
                f"{checkpoint}: export self-check of the embedded default model did not pass ({_brief(selfcheck)}); "
                "refusing to cache an engine"
            )
        built = build_engine(exported.path, backend="onnxruntime", precision="fp32", out_dir=work / "engines",
                             echo=echo)
        engine_rel = Path(built.engine_path).resolve().relative_to(work.resolve())
        # Flatten: the engine and its manifest live at the top of the cache entry.
        engine_name = engine_rel.name
        if engine_rel.parent != Path("."):
            shutil.move(str(work / engine_rel), str(work / engine_name))
            manifest_src = Path(built.manifest_path)
            shutil.move(str(manifest_src), str(work / (engine_name + ".json")))
        manifest = json.loads((work / (engine_name + ".json")).read_text())
        write_json_atomic(work / CACHE_MARKER, {
            "engine": engine_name,
            "engine_sha256": manifest.get("engine_sha256") or sha256_file(work / engine_name),
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha,
            "selfcheck_passed": True,
            "selfcheck": selfcheck,
            "backend": manifest.get("backend"),
            "precision": manifest.get("precision"),
            "toolkit_version": __version__,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.perf_counter() - start, 3),
        })
        if rebuild or (entry.exists() and cached_default_engine(checkpoint, cache) is None):
            # A stale or broken entry: move it aside in one rename, then drop it.
            aside = cache / f".stale-{entry.name}-{os.getpid()}"
            if entry.exists():
                os.replace(entry, aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            os.replace(work, entry)
        except OSError:
            if cached_default_engine(checkpoint, cache) is None:  # not a concurrent success: a real error
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    engine = cached_default_engine(checkpoint, cache)
    if engine is None:  # pragma: no cover - only on a broken file system
        raise SgfError(f"{entry}: could not cache the default engine")
    return engine, True


def _selfcheck_passed(selfcheck: dict) -> bool:
    for key in ("passed", "ok", "pass"):
        if key in selfcheck:
            return bool(selfcheck[key])
    verdict = selfcheck.get("verdict") or selfcheck.get("status")
    return str(verdict).lower() in ("pass", "passed", "ok")


def _brief(selfcheck: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in list(selfcheck.items())[:4]) or "no result"
