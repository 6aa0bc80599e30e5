"""Which engine ``sgf-deploy run`` uses.

Selection rule (``--engine auto``, the default):

1. Candidates are the engines in ``./engines/`` that the trust rule accepts
   (:meth:`sgf_deploy.engines.EngineManifest.trust`: a passing validation recorded in the
   manifest). Failed or never-validated engines are never picked automatically.
2. If the candidates come from more than one checkpoint (different model, task or contrast pair),
   nothing is guessed: the run stops and asks for ``--engine PATH``.
3. Candidates are ranked by device, GPU (``device.kind == "cuda"``) before CPU, then by precision,
   INT8 before FP16 before FP32 (each one validated, so the faster one is as trustworthy), then by
   backend: on the CPU the one measured faster on this machine first (OpenVINO or ONNX Runtime, the
   record ``build --backend auto`` keeps in the engines folder,
   :mod:`sgf_deploy.engines.openvino.choice`), then by the most recent validation. The first that loads on this machine wins; engines built for another
   GPU / backend version (``EngineMismatchError``) or needing a backend that is not installed are
   skipped, and the summary says so.
4. No candidate, and ``--allow-unvalidated``: the user's own engines in ``./engines/`` that were
   never validated (ranked the same way; a failed verdict is never picked), with the run's warning.
5. No candidate: the embedded default model of the task (:mod:`.embedded`; ``task`` None: recon4x).
   Validated engines in ``engines/`` are used only when they were built for the requested task.

numpy/stdlib only; only the first use of the default engine imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..engines.manifest import EngineManifest
from ..errors import EngineMismatchError, MissingDependencyError, SgfError
from .embedded import default_engine
from .reconstructor import Reconstructor

PRECISION_RANK = {"int8": 0, "fp16": 1, "bf16": 1, "fp32": 2}


@dataclass
class Candidate:
    engine_path: Path
    manifest: EngineManifest

    @property
    def precision(self) -> str:
        return self.manifest.precision.lower()

    @property
    def checkpoint(self) -> str:
        return str(self.manifest.checkpoint_sha256 or "")


def rank(candidates: list[Candidate], faster_cpu_backend: str | None = None) -> list[Candidate]:
    """The selection rule's order: GPU first, then INT8 > FP16 > FP32, then the CPU backend measured
    faster here (``faster_cpu_backend``), then the newest validation."""
    ordered = sorted(candidates, key=lambda c: (c.manifest.validated_at, str(c.engine_path)), reverse=True)
    return sorted(ordered, key=lambda c: (0 if c.manifest.is_gpu else 1, PRECISION_RANK.get(c.precision, 3),
                                          0 if faster_cpu_backend and c.manifest.backend == faster_cpu_backend else 1))


def measured_cpu_backend(engines_dir: str | os.PathLike) -> str | None:
    """The CPU backend measured faster on this machine, from the engines folder's record (None: none)."""
    from ..engines.openvino.choice import read_record

    choice = (read_record(engines_dir) or {}).get("choice")
    return choice if choice in ("openvino", "onnxruntime") else None


def scan(engines_dir: str | os.PathLike) -> list[Candidate]:
    """Every engine in ``engines_dir`` with a readable manifest (export sidecars and manifests
    whose engine was deleted are not engines)."""
    found: list[Candidate] = []
    if not Path(engines_dir).is_dir():
        return found
    for manifest_file in sorted(Path(engines_dir).glob("*.json")):
        engine_path = manifest_file.with_name(manifest_file.name[: -len(".json")])
        if not engine_path.is_file():
            continue
        try:
            found.append(Candidate(engine_path, EngineManifest.load(engine_path)))
        except SgfError:
            continue
    return found


def validated_candidates(engines_dir: str | os.PathLike) -> list[Candidate]:
    """Engines in ``engines_dir`` the trust rule accepts, ranked."""
    return rank([c for c in scan(engines_dir) if c.manifest.trust(c.engine_path).ok], measured_cpu_backend(engines_dir))


def ignored_engines(engines_dir: str | os.PathLike) -> list[str]:
    """``"<file>: <why>"`` for each engine in ``engines_dir`` that ``auto`` will not consider."""
    out = []
    for c in scan(engines_dir):
        trust = c.manifest.trust(c.engine_path)
        if not trust.ok:
            out.append(f"{c.engine_path}: {trust.label}")
    return out


@dataclass
class Selection:
    """What :func:`select_engine` decided: a loaded reconstructor and why."""

    reconstructor: Reconstructor
    source: str  # "explicit" | "engines" | "default"
    skipped: list[str] = field(default_factory=list)
    built_default: bool = False


def select_engine(engine: str | None, *, engines_dir: str | os.PathLike = "engines", batch: int | None = None,
                  threads: int | None = None, allow_unvalidated: bool = False,
                  echo: Callable[[str], None] | None = None, task: str | None = None) -> Selection:
    """Load the engine ``sgf-deploy run`` should use (see the module docstring for the rule);
    ``task`` picks the embedded default (an explicit engine's own task wins)."""
    if engine and engine != "auto":
        path = Path(engine)
        if not path.is_file():
            from ..model.registry import shipped_models

            shipped = shipped_models().get(str(engine))
            if shipped is not None:  # a shipped model by name (e.g. one that is not a task's default)
                engine_path, built = default_engine(echo=echo, checkpoint=shipped.checkpoint_path)
                return Selection(Reconstructor.load(engine_path, batch=batch, threads=threads), "default",
                                 built_default=built)
            raise SgfError(f"{path}: engine file not found (nor the name of a shipped model: "
                           f"{', '.join(sorted(shipped_models()))})")
        return Selection(Reconstructor.load(path, batch=batch, threads=threads,
                                            allow_unvalidated=allow_unvalidated), "explicit")
    candidates = validated_candidates(engines_dir)
    if task is not None:
        candidates = [c for c in candidates if c.manifest.model.task in (None, task)]
    if echo:
        for line in ignored_engines(engines_dir):
            echo(f"not considered (no passing validation): {line}")
    checkpoints = {c.checkpoint for c in candidates}
    if len(checkpoints) > 1:
        models = sorted({c.manifest.model_label() for c in candidates if c.checkpoint})
        raise SgfError(f"{engines_dir}: validated engines of {len(checkpoints)} different models "
                       f"({', '.join(models)}); choose one with --engine PATH")
    skipped: list[str] = []
    for candidate in candidates:
        try:
            return Selection(Reconstructor.load(candidate.engine_path, batch=batch, threads=threads), "engines", skipped)
        except (EngineMismatchError, MissingDependencyError) as exc:
            skipped.append(str(exc))
    if allow_unvalidated and not candidates:
        own = _unvalidated(engines_dir, batch, threads, skipped, task)
        if own is not None:
            return own
    return _load_default(batch, threads, skipped, echo, task)


def _unvalidated(engines_dir: str | os.PathLike, batch: int | None, threads: int | None, skipped: list[str],
                 task: str | None = None) -> Selection | None:
    """``--allow-unvalidated`` with no validated engine: the user's own never-validated engines
    come before the embedded default (ranked like validated ones; a failed verdict is never
    picked). Engines of several models are not guessed between."""
    pool = [c for c in scan(engines_dir) if not c.manifest.trust(c.engine_path).ok and c.manifest.verdict is None
            and (task is None or c.manifest.model.task in (None, task))]
    if len({c.checkpoint for c in pool}) > 1:
        models = sorted({c.manifest.model_label() for c in pool})
        raise SgfError(f"{engines_dir}: unvalidated engines of {len({c.checkpoint for c in pool})} different models "
                       f"({', '.join(models)}); choose one with --engine PATH")
    for candidate in rank(pool):
        try:
            return Selection(Reconstructor.load(candidate.engine_path, batch=batch, threads=threads,
                                                allow_unvalidated=True), "engines", skipped)
        except (EngineMismatchError, MissingDependencyError) as exc:
            skipped.append(str(exc))
    return None


def _load_default(batch: int | None, threads: int | None, skipped: list[str],
                  echo: Callable[[str], None] | None, task: str | None = None) -> Selection:
    engine_path, built = default_engine(echo=echo, task=task)
    try:
        rec = Reconstructor.load(engine_path, batch=batch, threads=threads)
    except EngineMismatchError as exc:
        if built:
            raise
        # e.g. ONNX Runtime was upgraded since the engine was cached: rebuild it once.
        if echo:
            echo(f"the cached default engine no longer loads here ({exc}); rebuilding it")
        engine_path, built = default_engine(echo=echo, rebuild=True, task=task)
        rec = Reconstructor.load(engine_path, batch=batch, threads=threads)
    return Selection(rec, "default", skipped, built_default=built)
