"""``sgf-deploy tune``: the batch and CPU threads a CPU engine runs fastest with on this machine,
measured, and recorded in the engine's manifest as its optimum.

For each threads setting the engine is loaded through the runtime's own loader
(:func:`sgf_deploy.engines.load_engine`, the runner ``run`` uses) and, for each batch, fed a
synthetic stack of contract-prepared slices (:func:`sgf_deploy.contract.prepare`: normalised,
edge-padded) at the given slice size: one warm-up call (OpenVINO compiles one static copy per input
shape there), then ``repeats`` timed ``runner.infer`` calls, the batches interleaved round-robin so
that a burst of load from elsewhere spreads over all of them. The figure is the median time per
call divided by the batch (ms per slice); the optimum is the lowest (ties: the smaller batch, then
fewer threads). The full table, the machine (CPU model string and core count, the description
``build`` records), the load average before and after and the date go into the manifest under
``tuning`` (:mod:`sgf_deploy.engines.optimum`), which ``run`` reads.

Batches the engine's profile does not accept, and batches that would not fit in the memory
available (when the engine's memory per slice at this size is recorded, :mod:`sgf_deploy.runtime.memory`)
are skipped with a note; an allocation failure during the measurement marks that cell and the
measurement goes on. GPU engines (TensorRT, TensorRT-RTX, ONNX Runtime on CUDA) are refused: their
threads do not matter and their batch comes from the profile.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import contract
from .. import defaults as D
from ..errors import InputError, SgfError

Echo = Callable[[str], None]
METHOD = ("runner.infer on contract-prepared synthetic slices (seeded uniform noise); per batch x threads one "
          "warm-up call, then the timed calls, batches interleaved round-robin; ms per slice = median call / batch")


# ------------------------------------------------------------------------------------- settings
def parse_counts(text: str | Sequence[int] | None, option: str) -> tuple[int, ...] | None:
    """``"1,2,4,8"`` -> ``(1, 2, 4, 8)`` (sorted, unique, each >= 1); None -> None."""
    if text is None:
        return None
    items = str(text).split(",") if isinstance(text, str) else list(text)
    values = []
    for item in items:
        piece = str(item).strip()
        if not piece:
            continue
        if not re.fullmatch(r"\d+", piece) or int(piece) < 1:
            raise InputError(f"{option} {text!r}: {piece!r} is not a whole number >= 1; give a comma-separated list, "
                             "e.g. 1,2,4,8")
        values.append(int(piece))
    if not values:
        raise InputError(f"{option} {text!r}: empty; give a comma-separated list, e.g. 1,2,4,8")
    return tuple(sorted(set(values)))


def parse_slice_shape(text: str | Sequence[int] | None) -> tuple[int, int] | None:
    """``"320x320"`` -> ``(320, 320)``; None -> None."""
    if text is None:
        return None
    if not isinstance(text, str):
        dims = [int(v) for v in text]
    else:
        parts = [p for p in re.split(r"[x,*]", text.strip().lower()) if p]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise InputError(f"--shape {text!r}: expected HxW, e.g. 320x320")
        dims = [int(p) for p in parts]
    if len(dims) != 2 or min(dims) < 1:
        raise InputError(f"--shape {text!r}: expected HxW with H, W >= 1, e.g. 320x320")
    return dims[0], dims[1]


def default_threads(cores: int | None = None) -> tuple[int, ...]:
    """1, 2, 4, ... below the core count, and the core count itself."""
    cores = max(1, int(cores or os.cpu_count() or 1))
    out, t = [], 1
    while t < cores:
        out.append(t)
        t *= 2
    return tuple(out + [cores])


@dataclass(frozen=True)
class TuneSettings:
    """What ``sgf-deploy tune`` measures; None takes the default (see :mod:`sgf_deploy.defaults`)."""

    shape: tuple[int, int] | str | None = None  # slice size H x W ("320x320"); None: the engine's fixed H x W, else TUNE_SHAPE
    batches: tuple[int, ...] | str = D.TUNE_BATCHES  # or "1,2,4,8"
    threads: tuple[int, ...] | str | None = None  # or "1,2"; None: default_threads()
    repeats: int = D.TUNE_REPEATS
    record: bool = True  # write the result into the engine's manifest

    def checked(self) -> "TuneSettings":
        if int(self.repeats) < 1:
            raise InputError(f"--repeats must be >= 1, got {self.repeats}")
        batches = parse_counts(self.batches, "--batches")
        threads = parse_counts(self.threads, "--threads") if self.threads is not None else None
        return TuneSettings(parse_slice_shape(self.shape), batches or D.TUNE_BATCHES, threads, int(self.repeats),
                            self.record)


@dataclass
class TuneResult:
    engine_path: Path
    record: dict[str, Any]  # what went into the manifest under "tuning"
    notes: list[str] = field(default_factory=list)
    manifest_path: Path | None = None  # None: not recorded (TuneSettings.record False)


# ---------------------------------------------------------------------------------- measurement
def tune_engine(engine: str | os.PathLike, settings: TuneSettings | None = None, *, echo: Echo | None = None
                ) -> TuneResult:
    """Time ``engine`` at each batch x threads of ``settings`` and record the optimum (see the
    module docstring). Bad options and engines that cannot be tuned are one-line :class:`SgfError`s."""
    from ..engines import load_engine
    from ..engines.identity import backend_label
    from ..engines.manifest import EngineManifest, manifest_path
    from ..engines.optimum import now_iso, record_optimum, this_machine
    from .machine import loadavg

    settings = (settings or TuneSettings()).checked()
    echo = echo or (lambda msg: None)
    path = Path(engine)
    if not path.is_file():
        raise InputError(f"{path}: engine file not found")
    manifest = EngineManifest.load(path)
    if manifest.backend not in ("onnxruntime", "openvino") or manifest.is_gpu:
        raise SgfError(f"{path}: tune measures CPU engines (ONNX Runtime, OpenVINO); this is a "
                       f"{backend_label(manifest.backend)} engine for {manifest.device_name}, whose batch comes from "
                       "its profile (and threads do not apply)")
    manifest.verify_file(path)
    notes: list[str] = []
    multiple = contract.size_multiple(manifest)
    shape = settings.shape or fixed_shape(manifest.profile) or D.TUNE_SHAPE
    padded = (contract.padded_size(shape[0], multiple), contract.padded_size(shape[1], multiple))
    problem = manifest.profile.spatial_problem(padded, shape)
    if problem:
        raise InputError(f"{path}: --shape {shape[0]}x{shape[1]}: {problem}")
    batches = usable_batches(manifest, settings.batches, padded, notes)
    threads = settings.threads or default_threads()
    cores = os.cpu_count() or 1
    if max(threads) > cores:
        notes.append(f"threads above this machine's {cores} core(s) were timed as asked ({', '.join(map(str, threads))})")
    for note in notes:
        echo(note)

    stack = _synthetic_stack(max(batches), shape)
    static = manifest.profile.static_batch
    inputs = {b: contract.prepare(stack[0][:b], stack[1][:b], multiple, static) for b in batches}
    load_start = loadavg()
    if load_start and load_start[0] > 0.5 * cores:
        echo(f"the machine is busy (load average {load_start[0]:.2f} on {cores} core(s)): the figures are contended")
    table: list[dict[str, Any]] = []
    for t in threads:
        runner = load_engine(path, threads=t)
        try:
            table += _time_threads(runner, t, batches, inputs, settings.repeats, echo)
        finally:
            runner.close()
    load_end = loadavg()
    timed = [row for row in table if "ms_per_slice" in row]
    if not timed:
        raise SgfError(f"{path}: no batch x threads could be timed ({'; '.join(r.get('error', '') for r in table)})")
    best = min(timed, key=lambda r: (r["ms_per_slice"], r["batch"], r["threads"]))
    from .. import __version__

    record = {
        "optimum": {"batch": best["batch"], "threads": best["threads"], "ms_per_slice": best["ms_per_slice"]},
        "machine": this_machine(),
        "shape": [shape[0], shape[1]],
        "padded_shape": [padded[0], padded[1]],
        "batches": list(batches),
        "threads": list(threads),
        "repeats": settings.repeats,
        "load_average": {"start": load_start, "end": load_end},
        "measured_at": now_iso(),
        "method": METHOD,
        "toolkit_version": __version__,
        "table": table,
        "notes": notes,
    }
    written = None
    if settings.record:
        record_optimum(path, record)
        written = manifest_path(path)
    return TuneResult(path, record, notes, written)


def fixed_shape(profile: Any) -> tuple[int, int] | None:
    """The engine's fixed slice size (H x W equal at min and max), or None when H, W vary."""
    if profile.min and profile.max and tuple(profile.min[2:]) == tuple(profile.max[2:]):
        return int(profile.min[2]), int(profile.min[3])
    return None


def usable_batches(manifest: Any, asked: Sequence[int], padded: tuple[int, int], notes: list[str]) -> tuple[int, ...]:
    """The batches of ``asked`` the profile accepts and the memory available fits (notes say which
    were dropped and why); an :class:`InputError` when none is left."""
    from ..runtime import memory

    profile = manifest.profile
    if profile.static_batch:
        if set(asked) != {profile.static_batch}:
            notes.append(f"the engine's batch is fixed at {profile.static_batch}: only that batch is timed")
        keep = [profile.static_batch]
    else:
        lo = profile.min[0] if profile.min else 1
        hi = profile.max[0] if profile.max else None
        keep = [b for b in asked if b >= lo and (hi is None or b <= hi)]
        dropped = [b for b in asked if b not in keep]
        if dropped:
            notes.append(f"batch {', '.join(map(str, dropped))} outside the engine's profile "
                         f"({profile.describe()}): not timed")
    per_slice = memory.recorded(manifest, padded)
    available = memory.available_bytes()
    if per_slice is not None and available is not None:
        fits = [b for b in keep if b * per_slice <= memory.SAFETY * available]
        too_big = [b for b in keep if b not in fits]
        if too_big:
            notes.append(f"batch {', '.join(map(str, too_big))} would need more than {memory.SAFETY:.0%} of the "
                         f"{memory.mb(available)} available ({memory.mb(per_slice)} per slice measured): not timed")
        keep = fits or keep[:1]
    if not keep:
        raise InputError(f"{manifest.engine_file or 'engine'}: none of the batches {', '.join(map(str, asked))} fits "
                         f"the engine's profile ({profile.describe()})")
    return tuple(keep)


def _synthetic_stack(n: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.random((n,) + shape, dtype=np.float32) + 0.5
    tar = rng.random((n,) + shape, dtype=np.float32) + 0.5
    return ref, tar


def _time_threads(runner: Any, threads: int, batches: Sequence[int], inputs: dict[int, Any], repeats: int,
                  echo: Echo) -> list[dict[str, Any]]:
    """Rows of the table for one loaded runner: a warm-up then ``repeats`` timed calls per batch,
    interleaved; OpenVINO keeps a few compiled shapes, so the batches go in groups of that many."""
    from ..runtime.memory import is_allocation_failure

    group_size = len(batches)
    if getattr(runner, "backend", "") == "openvino":
        from ..engines.openvino.runner import MAX_SHAPES

        group_size = MAX_SHAPES
    rows: dict[int, dict[str, Any]] = {}
    for first in range(0, len(batches), group_size):
        group = list(batches[first:first + group_size])
        times: dict[int, list[float]] = {b: [] for b in group}
        live = list(group)
        for b in group:  # warm-up (and the first allocation at this shape)
            if not _call(runner, inputs[b], rows, b, threads, is_allocation_failure, None):
                live.remove(b)
        for _ in range(repeats):
            for b in list(live):
                if not _call(runner, inputs[b], rows, b, threads, is_allocation_failure, times[b]):
                    live.remove(b)
        for b in live:
            calls = times[b]
            median = statistics.median(calls) * 1e3
            rows[b] = {"batch": b, "threads": threads, "ms_per_slice": round(median / b, 3),
                       "median_ms": round(median, 3), "min_ms": round(min(calls) * 1e3, 3),
                       "max_ms": round(max(calls) * 1e3, 3), "calls": len(calls)}
        for b in group:
            row = rows[b]
            echo(f"threads {threads}, batch {b}: " + (f"{ms(row['ms_per_slice'])} ms/slice (median of {row['calls']})"
                                                      if "ms_per_slice" in row else row["error"]))
    return [rows[b] for b in batches]


def _call(runner: Any, prepared: Any, rows: dict[int, dict[str, Any]], batch: int, threads: int,
          is_allocation_failure: Callable[[BaseException], bool], times: list[float] | None) -> bool:
    """One ``runner.infer``; its seconds appended to ``times``. An allocation failure marks the
    cell (False); any other error is the engine's and propagates."""
    try:
        start = time.perf_counter()
        runner.infer(prepared.reference, prepared.target)
        elapsed = time.perf_counter() - start
    except Exception as exc:
        if not is_allocation_failure(exc):
            raise
        rows[batch] = {"batch": batch, "threads": threads, "error": f"out of memory ({type(exc).__name__})"}
        return False
    if times is not None:
        times.append(elapsed)
    return True


# ------------------------------------------------------------------------------------ rendering
def ms(value: float) -> str:
    """Milliseconds with three significant figures at small values (a tiny test engine's 0.14)."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def table_lines(record: dict[str, Any]) -> list[str]:
    """The measured table as text: one row per batch, one column per threads setting (ms/slice)."""
    threads = list(record.get("threads") or [])
    batches = list(record.get("batches") or [])
    cells = {(r["batch"], r["threads"]): r for r in record.get("table") or []}
    best = record.get("optimum") or {}
    head = "batch  " + "".join(f"{f'{t} thread' + ('s' if t != 1 else ''):>14}" for t in threads)
    lines = [head]
    for b in batches:
        row = f"{b:>5}  "
        for t in threads:
            cell = cells.get((b, t), {})
            if "ms_per_slice" in cell:
                mark = "*" if (b, t) == (best.get("batch"), best.get("threads")) else " "
                row += f"{ms(cell['ms_per_slice']):>13}{mark}"
            else:
                row += f"{cell.get('error', 'not timed')[:13]:>14}"
        lines.append(row)
    return lines


def summary_lines(result: TuneResult) -> list[str]:
    """What ``sgf-deploy tune`` prints on stdout."""
    from ..engines.optimum import describe_machine

    rec = result.record
    load = rec.get("load_average") or {}
    fmt = (lambda v: " ".join(f"{x:.2f}" for x in v) if v else "?")
    best = rec["optimum"]
    shape, padded = rec["shape"], rec["padded_shape"]
    size = f"{shape[0]}x{shape[1]}" + (f" (padded {padded[0]}x{padded[1]})" if shape != padded else "")
    lines = [f"engine:  {result.engine_path}",
             f"machine: {describe_machine(rec['machine'])}; load average {fmt(load.get('start'))} before, "
             f"{fmt(load.get('end'))} after",
             f"slices:  {size}, ms per slice, median of {rec['repeats']} call(s) after one warm-up",
             *[f"         {line}" for line in table_lines(rec)],
             f"optimum: batch {best['batch']}, {best['threads']} thread{'s' if best['threads'] != 1 else ''}: "
             f"{ms(best['ms_per_slice'])} ms/slice"]
    lines.append(f"recorded in {result.manifest_path} ({rec['measured_at']}); run uses it on this machine "
                 "when --batch / --threads are not given" if result.manifest_path else "not recorded (--no-record)")
    return lines
