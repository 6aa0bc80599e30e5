"""The benchmark subprocesses: what runs inside the worker and probe processes of both studies.

``python -m sgf_deploy.bench.workers --worker SPEC`` is a persistent worker
(:class:`~sgf_deploy.bench.machine.Worker`: one JSON command per line on stdin, one JSON reply
per line on stdout); ``--probe SPEC`` is one measurement in a fresh process
(:func:`~sgf_deploy.bench.machine.run_probe`: its last JSON line is the result). ``SPEC`` is a
JSON object whose ``"study"`` (``backends`` or ``scaling``) picks the code. Started by the
studies only; not a user command.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, Sequence

from . import machine as M

MODULE = "sgf_deploy.bench.workers"


# ------------------------------------------------------------------------------------ backends
def _backends_worker(spec: dict[str, Any]) -> None:
    """One backend, loaded once: ``stack`` timings, ``parity`` outputs and ``profile`` on command."""
    from .backends.measure import (
        StackInputs,
        load_backend,
        parity_outputs,
        profile,
        run_stack,
    )

    infer, owner = load_backend(spec)
    inputs = StackInputs()

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "stack":
            ref, tar = inputs.get(cmd["inputs"])
            return run_stack(infer, ref, tar, int(cmd["batch"]), int(cmd["stack"]))
        if op == "parity":
            return parity_outputs(infer, cmd["inputs"], cmd["out"])
        if op == "profile":
            ref, tar = inputs.get(cmd["inputs"])
            b = int(cmd["batch"])
            return profile(spec, owner, ref[:b], tar[:b], int(cmd.get("runs", 3)), cmd["workdir"])
        raise ValueError(f"unknown command {op}")

    M.serve(handle, {"name": spec["name"]})


def _backends_probe(spec: dict[str, Any]) -> None:
    """Fresh process: load one backend, first output (start-up), a second call, peak RSS."""
    from .backends.measure import load_backend, load_pair

    infer, _owner = load_backend(spec)
    rss_loaded = M.current_rss_mb()
    b = int(spec["batch"])
    ref, tar = (a[:b] for a in load_pair(spec["inputs"]))
    t0 = time.perf_counter()
    infer(ref, tar)
    first_output = time.time()
    first_call = time.perf_counter() - t0
    infer(ref, tar)
    print(json.dumps({
        "startup_s": first_output - float(spec["t_spawn"]),
        "first_call_s": first_call,
        "rss_after_load_mb": rss_loaded,
        "peak_rss_mb": M.peak_rss_mb(),
    }))


# ------------------------------------------------------------------------------------- scaling
def _scaling_worker(spec: dict[str, Any]) -> None:
    """One timing worker (``torch``, ``torch-reuse`` or ``ort``): one timed call of (item, size)
    per command, with a warm-up call the first time an (item, size) is seen."""
    from .scaling.kernels import Kernels

    kernels = Kernels(spec["backend"])
    seen: set[tuple[str, int]] = set()

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        key = (cmd["item"], int(cmd["size"]))
        reply = kernels.time_once(*key, warmup=key not in seen)
        seen.add(key)
        return reply

    M.serve(handle, {"backend": spec["backend"]})


def _scaling_probe(spec: dict[str, Any]) -> None:
    """One cold call in a fresh process: RSS before, peak during, seconds."""
    from .scaling.kernels import Kernels
    from .scaling.plan import WARM_SIZE, backend_of

    kernels = Kernels(backend_of(spec["item"]))
    kernels.build(spec["item"], WARM_SIZE)()  # one-off lazy initialisation (thread pools, kernels) at a tiny size
    fn = kernels.build(spec["item"], int(spec["size"]))
    before = M.current_rss_mb()
    reset = M.reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    peak = M.peak_rss_mb()
    del out
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "delta_mb": (peak - before) if reset and before else None,
                      "cold_seconds": secs, "peak_reset": reset}))


ENTRIES: dict[tuple[str, str], Callable[[dict[str, Any]], None]] = {
    ("--worker", "backends"): _backends_worker,
    ("--probe", "backends"): _backends_probe,
    ("--worker", "scaling"): _scaling_worker,
    ("--probe", "scaling"): _scaling_probe,
}


def main(argv: Sequence[str]) -> int:
    """``--worker SPEC`` or ``--probe SPEC``: run the entry of ``SPEC["study"]``."""
    if len(argv) != 2 or argv[0] not in ("--worker", "--probe"):
        print(f"usage: python -m {MODULE} --worker|--probe SPEC-JSON (started by sgf-deploy bench)", file=sys.stderr)
        return 2
    spec = json.loads(argv[1])
    entry = ENTRIES.get((argv[0], spec.get("study")))
    if entry is None:
        print(f"{MODULE}: unknown study {spec.get('study')!r} (backends or scaling)", file=sys.stderr)
        return 2
    entry(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
