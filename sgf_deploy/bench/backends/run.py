"""Backend comparison: PyTorch eager FP32 (the reference) against every engine this machine runs.

For each backend (``pytorch-fp32``, and every engine: ONNX Runtime FP32/FP16/INT8 on the CPU here;
CUDA / TensorRT engines where a GPU and the libraries are present — detected, never assumed), each
square size S and each batch b:

* **latency per slice** p50 / p95: the wall time of one ``infer`` call of b slices divided by b;
* **throughput** (slices/s) on a 32-slice stack: 32 / median wall time of the whole stack
  (32/b calls); **ratio** to PyTorch = median PyTorch stack time / median engine stack time, and
  the median of the per-repeat paired ratios (the repeats are interleaved, so both see the same
  contention);
* **peak host memory**: ``ru_maxrss`` (VmHWM) of a fresh process that loads that backend alone and
  runs two calls at (S, b) — peaks never mix; device memory would come from the GPU (none here);
* **start-up**: a fresh process, from spawn to the first output at (S, b): interpreter, imports,
  model/engine load, first call;
* **parity** on simulated held-out slices (``simulate(pair, task, "test", n, seed)``, native size
  233x197 padded to 240x200), as ``sgf-deploy validate`` computes it: worst-slice
  PSNR(engine, PyTorch) and |mean delta PSNR vs ground truth|, with the precision's gate.

Method: one persistent worker process per backend (threads: ``torch.set_num_threads(2)``,
ONNX Runtime ``intra_op_num_threads=2``, ``inter_op_num_threads=1``), commanded by the parent one
at a time; per (S, b) the backends run round-robin, the order rotated every repeat; each command
starts with one warm-up call that is excluded. Inputs: simulated held-out slices (normalised,
edge-padded to S x S), the same arrays for every backend. ORT engines are also profiled (node
times by op type) at the headline size so that a missed bar can be explained.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .. import machine as M
from ..settings import BackendsBenchSettings
from ..workers import MODULE
from .analyse import analyse, judge_bar, parity_figures
from .build import backend_specs, detect_backends, fits_profile, public
from .inputs import INPUT_SLICES, PARITY_SEED, ParitySet, prepare_inputs

HEADLINE_SIZE = 320  # where the profiles and the repeated start-up probes are taken

Specs = list[dict[str, Any]]
Configs = list[tuple[int, int]]


def run_backends(settings: BackendsBenchSettings | None = None, *,
                 echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the comparison (``None``: the default settings); returns the JSON-ready record (see the
    module docstring)."""
    from ...contract import size_multiple

    say = echo or (lambda _m: None)
    settings = (settings or BackendsBenchSettings()).checked()
    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"study": "backends", "machine": M.machine_info(), "loadavg_start": M.loadavg()}
    detected = detect_backends()
    specs, ckpt_info = backend_specs(settings, workdir, detected, say)
    pair, task = ckpt_info.get("pair") or "t1-t2", ckpt_info.get("task") or "recon4x"
    say(f"[bench] inputs: {settings.stack}-slice stacks of simulated held-out ({pair}, {task}) slices at "
        f"{list(settings.sizes)}; parity on {settings.parity_n}")
    input_files, parity = prepare_inputs(pair, task, settings.sizes, settings.stack, settings.parity_n,
                                         size_multiple(ckpt_info), workdir)
    configs = [(s, b) for s in settings.sizes for b in settings.batches]
    record["settings"] = _settings_record(settings, pair, task)
    record["checkpoint"] = ckpt_info
    record["detected"] = detected
    record["backends"] = [public(s) for s in specs]

    peaks = None
    if settings.roofline or (settings.roofline is None and (settings.all_backends or not settings.engines)):
        from ..roofline import measure_peaks

        say("[bench] roofline: measuring this CPU's FP32 / INT8 GEMM peak")
        peaks = measure_peaks()
    times, outputs, profiles = _measure_in_workers(specs, configs, input_files, parity, settings, say)
    probes = _probe_fresh_processes(specs, configs, input_files, settings, say) if settings.memory else {}

    record["results"] = analyse(specs, configs, times, probes, settings.stack)
    if peaks is not None:
        from ..roofline import fractions, gflop_per_slice

        gflop = {s: gflop_per_slice(specs[0]["ckpt"], s) for s in settings.sizes}
        record["roofline"] = {"gflop_per_slice": gflop, "peaks": peaks,
                              "fractions": fractions(record["results"], specs, gflop, peaks)}
    record["parity"] = parity_figures(parity, outputs, specs) if "pytorch-fp32" in outputs else {}
    record["parity_set"] = parity.record()
    record["profiles"] = profiles
    record["bar"] = judge_bar(record)
    record["loadavg_end"] = M.loadavg()
    return record


def _settings_record(settings: BackendsBenchSettings, pair: str, task: str) -> dict[str, Any]:
    """The settings and the method, in words, as the record carries them."""
    stack = settings.stack
    return {
        "sizes": list(settings.sizes), "batches": list(settings.batches), "repeat": settings.repeat, "stack": stack,
        "parity_n": settings.parity_n, "startup_repeat": settings.startup_repeat, "threads": M.THREADS,
        "workdir": str(settings.workdir),
        "method": "one persistent worker process per backend; per (size, batch) the backends run round-robin, order rotated "
                  "every repeat; 1 warm-up call per command excluded; medians over repeats",
        "latency": "wall time of one infer() call of b slices / b (normalised, padded float32 in, float32 out; "
                   "pre/post-processing excluded)",
        "throughput": f"{stack} / median wall time of the {stack}-slice stack",
        "cpu_time": "process CPU time (all threads) of the stack; ratio_vs_pytorch_cpu_time = PyTorch CPU s / engine CPU s, "
                    "a contention-robust cross-check of the wall-clock ratio (ONNX Runtime's intra-op threads spin while "
                    "waiting, so its CPU time includes spinning: conservative for ONNX Runtime)",
        "calib_n": settings.calib_n,
        "memory": "peak RSS (VmHWM = ru_maxrss) of a fresh process that loads one backend and runs 2 calls at (size, batch)",
        "startup": "fresh process: spawn -> first output at (size, batch) (interpreter, imports, load, first call)",
        "parity": f"simulate({pair!r}, {task!r}, 'test', {settings.parity_n}, seed={PARITY_SEED}) at native 233x197 "
                  "(padded to 240x200), batch 1; metrics as sgf-deploy validate",
        "inputs": f"{INPUT_SLICES} simulated held-out slices (normalised, edge-padded/centre-cropped to S x S) cycled to {stack}",
    }


def _headline(sizes: tuple[int, ...]) -> int:
    return HEADLINE_SIZE if HEADLINE_SIZE in sizes else sizes[0]


def _measure_in_workers(specs: Specs, configs: Configs, input_files: dict[int, str], parity: ParitySet,
                        settings: BackendsBenchSettings, say: Callable[[str], None]
                        ) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """One persistent worker per backend: interleaved stack timings, then the parity outputs, then
    the profiles at the headline size. Returns (times, parity output files, profiles)."""
    times: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in specs}
    outputs: dict[str, str] = {}
    profiles: dict[str, Any] = {}
    workers: dict[str, M.Worker] = {}
    try:
        for spec in specs:
            say(f"[bench] starting worker {spec['name']}")
            workers[spec["name"]] = M.Worker(MODULE, spec | {"study": "backends"})
        for s, b in configs:
            runnable = [sp["name"] for sp in specs if fits_profile(sp, (b, 1, s, s))]
            say(f"[bench] {s}x{s} batch {b}: {len(runnable)} backends x {settings.repeat} repeats (load {M.loadavg()})")
            for rep in range(settings.repeat):
                for name in M.rotations(runnable, rep):
                    reply = workers[name].call(op="stack", inputs=input_files[s], batch=b, stack=settings.stack)
                    times[name].setdefault(f"{s}x{b}", []).append(reply)
        say("[bench] parity on simulated held-out slices")
        pdir = Path(settings.workdir) / "parity-out"
        pdir.mkdir(exist_ok=True)
        for spec in specs:
            if fits_profile(spec, (1, 1) + parity.prepared.padded_shape):
                outputs[spec["name"]] = workers[spec["name"]].call(op="parity", inputs=parity.path,
                                                                   out=str(pdir / f"{spec['name']}.npy"))["out"]
        if settings.profile:
            s_prof = _headline(settings.sizes)
            for spec in specs:
                if fits_profile(spec, (1, 1, s_prof, s_prof)):
                    say(f"[bench] profiling {spec['name']} at {s_prof}x{s_prof}")
                    profiles[spec["name"]] = workers[spec["name"]].call(
                        op="profile", inputs=input_files[s_prof], batch=1, runs=3,
                        workdir=str(settings.workdir)) | {"size": s_prof, "batch": 1}
    finally:
        for w in workers.values():
            w.close()
    return times, outputs, profiles


def _probe_fresh_processes(specs: Specs, configs: Configs, input_files: dict[int, str],
                           settings: BackendsBenchSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Peak memory and start-up: one fresh process per backend and configuration (round-robin),
    plus ``startup_repeat - 1`` more rounds at the headline configuration."""
    probes: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in specs}
    head = (_headline(settings.sizes), settings.batches[0])
    rounds = configs + [head] * max(0, settings.startup_repeat - 1)
    by_name = {sp["name"]: sp for sp in specs}
    for i, (s, b) in enumerate(rounds):
        for name in M.rotations([sp["name"] for sp in specs if fits_profile(sp, (b, 1, s, s))], i):
            spec = public(by_name[name]) | {"study": "backends", "size": s, "batch": b, "inputs": input_files[s],
                                            "t_spawn": time.time()}
            probes[name].setdefault(f"{s}x{b}", []).append(M.run_probe(MODULE, spec))
        say(f"[bench] memory/start-up probes {s}x{s} batch {b} done")
    return probes
