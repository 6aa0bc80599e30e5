"""How many slices a CPU engine may take at once without running the machine out of memory.

The ``paper`` preset at 320x320 needs gigabytes per slice in ONNX Runtime on a CPU; a fixed batch of
4 can ask for more than the machine has, and under a memory limit the process is killed. So the
batch is chosen from two measured numbers:

* the engine's **memory per slice** at the padded slice size: the growth of this process's peak
  resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) while the engine runs one
  slice, measured on the first run at that size (that slice is part of the run, not extra work)
  and recorded in the engine manifest (``memory_per_slice``) so later runs choose at once;
* the memory **available** now: ``MemAvailable`` of ``/proc/meminfo``, or the cgroup's limit minus
  its usage when that is smaller (containers).

The batch is the largest ``b <= cap`` with ``b x per-slice <= SAFETY x available`` (at least 1).
``SAFETY`` is 0.5: ONNX Runtime's arena grows in large steps and a larger batch can need more than
``b`` times one slice; half of what is free leaves room for that and for the rest of the machine.
Linux only (``/proc``); elsewhere nothing is measured and the engine's batch is used as before.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any

SAFETY = 0.5
MANIFEST_KEY = "memory_per_slice"
METHOD = "peak RSS growth (VmHWM after /proc/self/clear_refs) while the engine ran one slice, batch 1"
_ALLOCATION_WORDS = re.compile(r"fail(ed)? to allocate|bad_alloc|out of memory|cannot allocate memory|"
                               r"allocation fail|memoryerror|insufficient memory", re.IGNORECASE)


def _read_kb(path: str, key: str) -> int | None:
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Memory this process may still use: ``MemAvailable``, or the cgroup's headroom when smaller."""
    avail = _read_kb("/proc/meminfo", "MemAvailable")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            headroom = max(0, limit - usage)
            avail = headroom if avail is None else min(avail, headroom)
    return avail


class PeakProbe:
    """``with PeakProbe() as probe: ...`` -> ``probe.growth``: bytes the peak RSS rose above the
    RSS at entry (None where /proc cannot be reset or read)."""

    def __init__(self) -> None:
        self.growth: int | None = None
        self._start: int | None = None

    def __enter__(self) -> "PeakProbe":
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            return self
        self._start = _read_kb("/proc/self/status", "VmRSS")
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = _read_kb("/proc/self/status", "VmHWM")
        if self._start is not None and peak is not None:
            self.growth = max(0, peak - self._start)


def recorded(manifest: Any, shape: tuple[int, int]) -> int | None:
    """Bytes per slice recorded in the manifest for the padded ``shape``, or None."""
    table = manifest.extra.get(MANIFEST_KEY) if hasattr(manifest, "extra") else None
    entry = table.get(f"{shape[0]}x{shape[1]}") if isinstance(table, dict) else None
    value = entry.get("bytes") if isinstance(entry, dict) else None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def record(engine_path: str | os.PathLike, manifest: Any, shape: tuple[int, int], per_slice: int,
           threads: int | None) -> str | None:
    """Add the measurement to the engine manifest; returns why it could not be written, or None."""
    from ..engines.manifest import EngineManifest
    from ..errors import SgfError

    table = dict(manifest.extra.get(MANIFEST_KEY) or {}) if hasattr(manifest, "extra") else {}
    table[f"{shape[0]}x{shape[1]}"] = {"bytes": int(per_slice), "method": METHOD, "threads": threads,
                                       "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    try:
        updated = EngineManifest.update(engine_path, **{MANIFEST_KEY: table})
    except (OSError, SgfError) as exc:
        return str(exc).splitlines()[0][:160]
    if hasattr(manifest, "extra"):
        manifest.extra[MANIFEST_KEY] = updated.extra.get(MANIFEST_KEY, table)
    return None


def choose(per_slice: int | None, available: int | None, cap: int) -> tuple[int, str]:
    """(batch, the words that say why) for ``per_slice`` bytes and ``available`` bytes."""
    if per_slice is None or available is None:
        return cap, f"batch {cap} (memory per slice not measured here)"
    fits = int(SAFETY * available // max(per_slice, 1))
    batch = max(1, min(cap, fits))
    why = (f"batch {batch}: {mb(per_slice)} per slice measured, {mb(available)} available "
           f"(at most {SAFETY:.0%} of it used)")
    if per_slice > available:
        why += "; even one slice may not fit"
    return batch, why


def mb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def is_allocation_failure(exc: BaseException) -> bool:
    """A backend's out-of-memory error (numpy MemoryError, ONNX Runtime 'Failed to allocate' ...)."""
    return isinstance(exc, MemoryError) or bool(_ALLOCATION_WORDS.search(f"{type(exc).__name__}: {exc}"))
