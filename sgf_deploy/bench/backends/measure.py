"""Inside a backend's own process: load it, time a stack of calls, run the parity slices, profile.

Used by the worker and probe processes (:mod:`sgf_deploy.bench.workers`); torch and ONNX Runtime
are imported only by the backend that needs them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import machine as M

Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def load_backend(spec: dict[str, Any]) -> tuple[Infer, Any]:
    """``infer(ref, tar) -> out`` for a backend spec, plus the object that owns it (the PyTorch
    model or the engine runner)."""
    if spec["kind"] == "torch":
        import torch

        torch.set_num_threads(M.THREADS)
        from ...model import load_checkpoint

        model, _ = load_checkpoint(spec["ckpt"])
        # torch.compile (inductor): compiled on the first call at each shape (the excluded warm-up).
        forward = torch.compile(model.forward_core, dynamic=False) if spec.get("compile") else model.forward_core

        def infer(ref: np.ndarray, tar: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return forward(torch.from_numpy(ref), torch.from_numpy(tar)).numpy()

        return infer, model
    from ...engines import load_engine

    runner = load_engine(spec["path"], threads=M.THREADS)
    return runner.infer, runner


def load_pair(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The contiguous ``reference`` and ``target`` arrays of an input ``.npz``."""
    with np.load(path, allow_pickle=False) as data:
        return np.ascontiguousarray(data["reference"]), np.ascontiguousarray(data["target"])


class StackInputs:
    """The input stack of the current size, loaded once (one size at a time is kept)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        if path not in self._cache:
            self._cache.clear()
            self._cache[path] = load_pair(path)
        return self._cache[path]


def run_stack(infer: Infer, ref: np.ndarray, tar: np.ndarray, batch: int, stack: int) -> dict[str, Any]:
    """One warm-up call (excluded), then ``stack`` slices in calls of ``batch``: the wall time of
    each call, of the whole stack, and the process CPU time of the stack."""
    infer(ref[:batch], tar[:batch])
    calls = []
    c_start, t_start = time.process_time(), time.perf_counter()
    for i in range(0, stack, batch):
        t0 = time.perf_counter()
        infer(ref[i : i + batch], tar[i : i + batch])
        calls.append(time.perf_counter() - t0)
    return {"calls": calls, "stack_s": time.perf_counter() - t_start, "stack_cpu_s": time.process_time() - c_start}


def parity_outputs(infer: Infer, inputs: str, out: str) -> dict[str, Any]:
    """Run the parity set slice by slice and save the raw (normalised, padded) outputs to ``out``."""
    from ...contract import run_batched

    ref, tar = load_pair(inputs)
    np.save(out, run_batched(infer, ref, tar, batch=1))
    return {"out": out}


def profile(spec: dict[str, Any], owner: Any, ref: np.ndarray, tar: np.ndarray, runs: int, workdir: str) -> dict[str, Any]:
    """Where the time goes, by op type: torch's profiler for PyTorch, ONNX Runtime's for its engines."""
    if spec["kind"] == "torch" and spec.get("compile"):
        return {"tool": None, "note": "not profiled: torch.compile's generated kernels (eager PyTorch is profiled)"}
    if spec["kind"] == "torch":
        return torch_profile(owner, ref, tar, runs)
    if spec.get("backend") == "onnxruntime":
        return ort_profile(spec["path"], ref, tar, runs, workdir)
    return {"tool": None, "note": "profiling is implemented for ONNX Runtime engines and PyTorch only"}


def ort_profile(engine: str, ref: np.ndarray, tar: np.ndarray, runs: int, workdir: str) -> dict[str, Any]:
    """Node times by op type from ONNX Runtime's profiler (a separate session on the engine file,
    with the options the runner uses)."""
    import onnxruntime as ort

    from ...engines.onnxruntime.builder import LOAD_LEVEL, session_options

    so = session_options(LOAD_LEVEL, M.THREADS)
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(workdir) / f"ortprof-{os.getpid()}")
    sess = ort.InferenceSession(engine, so, providers=["CPUExecutionProvider"])
    feeds = {"reference": ref, "target": tar}
    sess.run(None, feeds)  # warm-up (profiled too: runs + 1 runs in the trace)
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feeds)
    wall = (time.perf_counter() - t0) / runs
    trace = Path(sess.end_profiling())
    try:
        events = json.loads(trace.read_text())
    finally:
        trace.unlink(missing_ok=True)
    return {"tool": "onnxruntime SessionOptions.enable_profiling (kernel times summed over op type)",
            "wall_ms_per_run": wall * 1e3, **_ort_by_op(events, runs + 1)}


def _ort_by_op(events: list[dict[str, Any]], runs: int) -> dict[str, Any]:
    by_op: dict[str, float] = {}
    count: dict[str, int] = {}
    model_run_us = []
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + float(ev.get("dur", 0))
            count[op] = count.get(op, 0) + 1
        elif ev.get("cat") == "Session" and ev.get("name") == "model_run":
            model_run_us.append(float(ev.get("dur", 0)))
    total = sum(by_op.values()) or 1.0
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "runs": runs,
        "node_ms_per_run": total / runs / 1e3,
        "model_run_ms_median": float(np.median(model_run_us)) / 1e3 if model_run_us else None,
        "by_op_type": [{"op": op, "ms_per_run": us / runs / 1e3, "share": us / total, "nodes_per_run": count[op] // runs}
                       for op, us in ops],
    }


def torch_profile(model: Any, ref: np.ndarray, tar: np.ndarray, runs: int) -> dict[str, Any]:
    """Self CPU time by op (the 15 largest) from torch's profiler, after one unprofiled call."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profiler

    r, t = torch.from_numpy(ref), torch.from_numpy(tar)
    with torch.inference_mode():
        model.forward_core(r, t)
        with torch_profiler(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model.forward_core(r, t)
    rows = [(ev.key, ev.self_cpu_time_total) for ev in prof.key_averages()
            if ev.key.startswith("aten::") or ev.key.startswith("sgf::")]
    rows.sort(key=lambda kv: -kv[1])
    total = sum(v for _, v in rows) or 1.0
    return {"tool": "torch.profiler (self CPU time by op)", "runs": runs,
            "by_op_type": [{"op": k, "ms_per_run": v / runs / 1e3, "share": v / total} for k, v in rows[:15]]}
