"""The engine's measured optimum (batch and CPU threads), kept in its manifest, and the rule for
when a run uses it.

``sgf-deploy tune`` (:mod:`sgf_deploy.bench.tuning`) times a CPU engine at each batch x threads and
records the result in the manifest under :data:`MANIFEST_KEY` with
:meth:`~sgf_deploy.engines.EngineManifest.update` (atomic; not an identity key, so the engine's
sha256, validation and trust are untouched)::

    "tuning": {"optimum": {"batch": 4, "threads": 2, "ms_per_slice": 41.2},
               "machine": {"cpu": "...", "cores": 2, "arch": "x86_64"}, "shape": [320, 320],
               "measured_at": "...", "load_average": {...}, "repeats": 5, "method": "...", "table": [...]}

:func:`run_choice` is the one place where a run's default batch and threads are decided from it:
a value the caller gives wins; otherwise the optimum is used only when it was measured on this
machine (same CPU model string and logical core count, :func:`this_machine`); otherwise the
defaults (the profile's ``opt`` batch or :data:`sgf_deploy.defaults.RUN_BATCH`, the backend's
threads). :meth:`RunChoice.note` is the run's one line on it (the reconstructor adds it to its
notices when the engine has a recorded optimum; an engine without one runs as before, silently).
Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any

from ..errors import SgfError
from .identity import cpu_device

MANIFEST_KEY = "tuning"


def this_machine() -> dict[str, Any]:
    """What an optimum is tied to: the CPU model string, the logical core count, the architecture
    (:func:`sgf_deploy.engines.identity.cpu_device`, the same description build records)."""
    cpu = cpu_device()
    return {"cpu": str(cpu.get("name") or "?"), "cores": cpu.get("cores"), "arch": cpu.get("arch")}


def describe_machine(machine: dict[str, Any]) -> str:
    cores = machine.get("cores")
    return f"{machine.get('cpu') or '?'}, {cores if cores is not None else '?'} core{'s' if cores != 1 else ''}"


def same_machine(recorded: dict[str, Any], here: dict[str, Any] | None = None) -> bool:
    """Same CPU model string and the same number of logical cores (and architecture, when recorded)."""
    here = here or this_machine()
    if not isinstance(recorded, dict):
        return False
    same = (str(recorded.get("cpu")) == str(here.get("cpu")) and recorded.get("cores") == here.get("cores"))
    if recorded.get("arch") and here.get("arch"):
        same = same and recorded.get("arch") == here.get("arch")
    return same


@dataclass(frozen=True)
class Optimum:
    """One recorded tuning result (the parts a run needs)."""

    batch: int
    threads: int
    ms_per_slice: float | None
    machine: dict[str, Any]
    shape: tuple[int, int] | None
    measured_at: str

    @property
    def date(self) -> str:
        return self.measured_at[:10] if self.measured_at else "?"

    def source(self) -> str:
        """``tune at 320x320, 2026-12-07``."""
        at = f" at {self.shape[0]}x{self.shape[1]}" if self.shape else ""
        return f"tune{at}, {self.date}"


def recorded_optimum(manifest: Any) -> Optimum | None:
    """The optimum in ``manifest`` (an :class:`EngineManifest` or its dict), or None when there is
    none or it is unreadable (a hand-edited record is ignored, never trusted half-way)."""
    extra = manifest.extra if hasattr(manifest, "extra") else manifest
    record = extra.get(MANIFEST_KEY) if isinstance(extra, dict) else None
    if not isinstance(record, dict):
        return None
    best = record.get("optimum")
    if not isinstance(best, dict):
        return None
    try:
        batch, threads = int(best["batch"]), int(best["threads"])
    except (KeyError, TypeError, ValueError):
        return None
    if batch < 1 or threads < 1:
        return None
    ms = best.get("ms_per_slice")
    shape = record.get("shape")
    shape_t = (int(shape[0]), int(shape[1])) if isinstance(shape, (list, tuple)) and len(shape) == 2 else None
    machine = record.get("machine") if isinstance(record.get("machine"), dict) else {}
    return Optimum(batch, threads, float(ms) if isinstance(ms, (int, float)) else None, machine, shape_t,
                   str(record.get("measured_at") or ""))


def record_optimum(engine_path: str | os.PathLike, record: dict[str, Any]) -> Any:
    """Write ``record`` (with ``optimum``, ``machine``, ``table``...) into the engine's manifest,
    atomically; returns the updated :class:`EngineManifest`."""
    from .manifest import EngineManifest

    if recorded_optimum({MANIFEST_KEY: record}) is None:
        raise SgfError(f"{engine_path}: refusing to record a tuning result without a valid optimum (batch, threads)")
    return EngineManifest.update(engine_path, **{MANIFEST_KEY: record})


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunChoice:
    """The batch and threads a run asks for (None: the default), and where each came from:
    ``"asked"``, ``"optimum"`` or ``"default"``; ``why_default`` says why the optimum was not used."""

    batch: int | None
    threads: int | None
    batch_source: str
    threads_source: str
    optimum: Optimum | None = None
    why_default: str = ""

    def note(self, batch: int, threads: int | None, *, gpu: bool = False, static_batch: bool = False,
             planned: int | None = None) -> str:
        """One line for the run: ``batch 4, 2 threads: the engine's measured optimum on this CPU
        (tune at 320x320, 2026-12-07)``; ``batch``/``threads`` are the values in effect, ``planned``
        the batch before the memory check lowered it (if it did)."""
        batch_src = "static" if static_batch else self.batch_source
        lowered = f" (lowered from {planned} to fit memory)" if planned and planned > batch else ""
        parts = [(f"batch {batch}{lowered}", batch_src)]
        if not gpu:
            cores = os.cpu_count()
            words = (f"{threads} thread{'s' if threads != 1 else ''}" if threads
                     else f"the backend's default threads ({cores} core{'s' if cores != 1 else ''} here)")
            parts.append((words, self.threads_source))
        if len({src for _, src in parts}) == 1:
            return f"{', '.join(w for w, _ in parts)}: {self._source_words(parts[0][1])}"
        return ", ".join(f"{w} ({self._source_words(src)})" for w, src in parts)

    def _source_words(self, source: str) -> str:
        if source == "asked":
            return "as asked"
        if source == "static":
            return "the engine's static batch"
        if source == "optimum" and self.optimum is not None:
            return f"the engine's measured optimum on this CPU ({self.optimum.source()})"
        return "the defaults" + (f" ({self.why_default})" if self.why_default else "")


def run_choice(manifest: Any, batch: int | None = None, threads: int | None = None,
               here: dict[str, Any] | None = None) -> RunChoice:
    """The batch and threads to run ``manifest``'s engine with: ``batch``/``threads`` when given;
    else the recorded optimum when it was measured on this machine (``here``, default
    :func:`this_machine`); else None (the defaults). GPU engines have no optimum here."""
    batch_src = "asked" if batch is not None else "default"
    threads_src = "asked" if threads is not None else "default"
    if batch is not None and threads is not None:
        return RunChoice(batch, threads, batch_src, threads_src, recorded_optimum(manifest))
    if getattr(manifest, "is_gpu", False):
        return RunChoice(batch, threads, batch_src, threads_src, why_default="GPU engine: not tuned here")
    best = recorded_optimum(manifest)
    if best is None:
        return RunChoice(batch, threads, batch_src, threads_src,
                         why_default="no measured optimum in the manifest; sgf-deploy tune measures it")
    here = here or this_machine()
    if not same_machine(best.machine, here):
        return RunChoice(batch, threads, batch_src, threads_src, best,
                         why_default=f"the measured optimum ({best.source()}) is for another machine "
                                     f"({describe_machine(best.machine)}; this one: {describe_machine(here)})")
    return RunChoice(batch if batch is not None else best.batch, threads if threads is not None else best.threads,
                     batch_src if batch is not None else "optimum", threads_src if threads is not None else "optimum",
                     best)
