"""The machine a figure was measured on, and the measurement mechanics every benchmark shares.

* :func:`machine_info` — CPU model, cores, vector extensions, memory, GPUs (NVML, never torch),
  library versions, thread settings; recorded beside every figure.
* :func:`loadavg` — the 1/5/15-minute load average, recorded at the start and the end of a run:
  on a shared machine the absolute times are contended, which is why every comparison is measured
  in one run with the backends interleaved round-robin (:func:`rotations`) and reported as medians
  of paired ratios.
* Memory: :func:`current_rss_mb`, :func:`peak_rss_mb` (``ru_maxrss``), and
  :func:`reset_peak_rss` (Linux ``/proc/self/clear_refs`` = 5 resets the high-water mark, so a probe
  can measure the peak of one call rather than of its whole life).
* :class:`Worker` — a persistent child process that speaks one JSON object per line; each backend
  runs in its own process so that thread pools never compete and peaks never mix.
* Statistics: :func:`summarize` (median, p95, ...) and :func:`power_law` (log-log least squares).

Imports only the standard library and numpy (never torch): the ONNX Runtime workers stay lean.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

THREADS = 2  # torch.set_num_threads(2) and ORT intra_op_num_threads=2 for every figure

LIBRARIES = ("torch", "onnxruntime", "onnx", "onnxscript", "onnxconverter_common", "numpy", "tensorrt",
             "tensorrt_rtx", "polygraphy")


# ------------------------------------------------------------------------------------- machine
def _cpu_flags() -> list[str]:
    from ..cpu import RELEVANT_FLAGS, cpu_flags

    flags = cpu_flags()
    return [f for f in RELEVANT_FLAGS if f in flags]


def _mem_total_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions (``importlib.metadata``; nothing is imported)."""
    from importlib import metadata

    dist = {"onnxconverter_common": "onnxconverter-common", "tensorrt_rtx": "tensorrt-rtx"}
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(dist.get(name, name))
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        out["sgf_deploy"] = importlib.import_module("sgf_deploy").__version__
    except Exception:  # noqa: BLE001
        out["sgf_deploy"] = None
    return out


def gpus() -> list[dict[str, Any]]:
    """NVIDIA GPUs seen through NVML (empty without a driver); never imports torch."""
    from ..engines.identity import gpu_devices

    return [dict(g) for g in gpu_devices()]


def ort_providers() -> list[str]:
    try:
        import onnxruntime as ort

        return list(ort.get_available_providers())
    except ImportError:
        return []


def machine_info() -> dict[str, Any]:
    """Everything needed to read a figure: where, with what, how many threads."""
    from ..engines.identity import cpu_device

    found = gpus()
    return {
        "cpu": cpu_device()["name"],
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_flags": _cpu_flags(),
        "memory_gb": _mem_total_gb(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "libraries": library_versions(),
        "gpus": found,
        "gpu_note": None if found else "no NVIDIA GPU found (NVML): CUDA/TensorRT figures are not measured here",
        "ort_providers": ort_providers(),
        "threads": {"torch.set_num_threads": THREADS, "ort.intra_op_num_threads": THREADS, "ort.inter_op_num_threads": 1},
        "child_environment": child_env_record(),
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -------------------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


def current_rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """The process's peak resident set (``ru_maxrss``; the high-water mark since the last reset)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def reset_peak_rss() -> bool:
    """Reset the peak-RSS high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------- workers
#: Environment of every benchmark child. ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP (libgomp)
#: threads otherwise spin at every barrier, and on an oversubscribed machine (other jobs on the same
#: 2 cores) a parallel region then waits a scheduler slice for its descheduled partner: measured
#: here at load average ~8, lite 64x64 took 1.2-6 s per forward with the default policy, 43-90 ms
#: with PASSIVE (320x320: 4.8-9.8 s vs 1.6-3.0 s). ONNX Runtime does not use OpenMP (its own thread
#: pool's caller thread picks up unfinished shards), so this only keeps the PyTorch reference from
#: being penalised by the contention. A value already set in the environment wins.
CHILD_ENV = {"OMP_NUM_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


def child_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with :data:`CHILD_ENV` defaults, then ``extra`` on top."""
    env = dict(os.environ)
    for key, value in CHILD_ENV.items():
        if key == "PYTHONUNBUFFERED":
            env[key] = value
        else:
            env.setdefault(key, value)
    env.update(extra or {})
    return env


def child_env_record() -> dict[str, str | None]:
    env = child_environment()
    return {k: env.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}


class WorkerError(RuntimeError):
    pass


class Worker:
    """A child ``python -m <module> --worker <spec-json>`` answering one JSON line per command.

    The child prints ``{"ready": true, ...}`` once set up; ``startup_s`` here is the parent's wall
    time from spawning to that line."""

    def __init__(self, module: str, spec: dict[str, Any], env: dict[str, str] | None = None, timeout: float = 3600) -> None:
        self.spec = spec
        self.timeout = timeout
        child_env = child_environment(env)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env,
        )
        self.hello = self._read()
        self.startup_s = time.perf_counter() - t0

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise WorkerError(f"benchmark worker {self.spec.get('name', self.spec)} died: {err.strip()[-2000:]}")
            line = line.strip()
            if line.startswith("{"):
                msg = json.loads(line)
                if "error" in msg:
                    raise WorkerError(f"benchmark worker {self.spec.get('name', self.spec)}: {msg['error']}")
                return msg

    def call(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict[str, Any]:
        """Ask the child to exit; returns its last message (peak RSS) if it sent one."""
        last: dict[str, Any] = {}
        try:
            last = self.call(op="exit")
        except (WorkerError, BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return last

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.close()


def serve(handler: Callable[[dict[str, Any]], dict[str, Any]], hello: dict[str, Any]) -> None:
    """The child side of :class:`Worker`: answer JSON commands on stdin until ``exit``.

    ``handler(command) -> dict``. Exceptions are reported as ``{"error": ...}`` and end the child."""
    out = sys.stdout
    out.write(json.dumps(dict(hello, ready=True)) + "\n")
    out.flush()
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        command = json.loads(line)
        if command.get("op") == "exit":
            out.write(json.dumps({"exit": True, "peak_rss_mb": peak_rss_mb()}) + "\n")
            out.flush()
            return
        try:
            reply = handler(command)
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
            out.flush()
            return
        out.write(json.dumps(reply) + "\n")
        out.flush()


def run_probe(module: str, spec: dict[str, Any], timeout: float = 1800,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """A fresh ``python -m <module> --probe <spec>`` whose last JSON line is the result; the
    parent measures wall time from spawn to exit and adds the child's rusage peak. ``env`` is
    added to the children's standard environment."""
    child_env = child_environment(env)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, "--probe", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    result: dict[str, Any] | None = None
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
    if proc.returncode != 0 or result is None:
        return {"error": (stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1][:500], "returncode": proc.returncode}
    result.setdefault("wall_s", wall)
    return result


# ----------------------------------------------------------------------------------- statistics
def rotations(items: Sequence[Any], rep: int) -> list[Any]:
    """``items`` rotated by ``rep``: round-robin order that changes every repeat, so no backend
    always runs first (or right after the same neighbour)."""
    if not items:
        return []
    k = rep % len(items)
    return list(items[k:]) + list(items[:k])


def percentile(values: Sequence[float], q: float) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.percentile(vals, q)) if vals else None


def summarize(values: Sequence[float]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"n": 0}
    arr = np.asarray(vals)
    return {"n": len(vals), "median": float(np.median(arr)), "p95": float(np.percentile(arr, 95)),
            "min": float(arr.min()), "max": float(arr.max())}


def power_law(x: Sequence[float], y: Sequence[float]) -> dict[str, Any] | None:
    """Least-squares fit ``y = a * x**k`` in log-log space: ``{"exponent", "coefficient", "r2", "n"}``."""
    pts = [(float(a), float(b)) for a, b in zip(x, y) if a is not None and b is not None and float(a) > 0 and float(b) > 0]
    if len(pts) < 2:
        return None
    lx = np.log([p[0] for p in pts])
    ly = np.log([p[1] for p in pts])
    k, c = np.polyfit(lx, ly, 1)
    pred = k * lx + c
    ss_res = float(np.sum((ly - pred) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    return {"exponent": float(k), "coefficient": float(math.exp(c)), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 1.0, "n": len(pts)}


def crossover(fit_a: dict[str, Any] | None, fit_b: dict[str, Any] | None) -> float | None:
    """x where ``a x^ka == b x^kb`` for two power-law fits (None if parallel or missing)."""
    if not fit_a or not fit_b:
        return None
    dk = fit_a["exponent"] - fit_b["exponent"]
    if abs(dk) < 1e-9:
        return None
    return float((fit_b["coefficient"] / fit_a["coefficient"]) ** (1.0 / dk))
