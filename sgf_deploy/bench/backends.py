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

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import machine as M

MODULE = "sgf_deploy.bench.backends"
DEFAULT_SIZES: tuple[int, ...] = (256, 320, 384, 512)
DEFAULT_BATCHES: tuple[int, ...] = (1, 4)
STACK = 32
PARITY_N = 16
PARITY_SEED = 0
CALIB_N = 64
INPUT_SLICES = 8  # distinct simulated slices cycled to fill the stack
DEFAULT_WORKDIR = Path("bench-work")
HEADLINE_SIZE = 320
# The issue-8 bar (2-core CPU, lite at 320x320): throughput ratios to PyTorch eager FP32 and INT8 parity.
BAR = {"preset": "lite", "size": 320, "fp32_ratio": 1.5, "int8_ratio": 2.5, "int8_min_parity_db": 40.0,
       "int8_max_abs_delta_psnr_db": 0.1}
PRECISIONS = ("fp32", "fp16", "int8")


# ===================================================================================== child side
def _load_backend(spec: dict[str, Any]) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], Any]:
    """``infer(ref, tar) -> out`` for a backend spec, plus the object that owns it."""
    if spec["kind"] == "torch":
        import torch

        torch.set_num_threads(M.THREADS)
        from ..model import load_checkpoint

        model, _ = load_checkpoint(spec["ckpt"])

        def infer(ref: np.ndarray, tar: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model.forward_core(torch.from_numpy(ref), torch.from_numpy(tar)).numpy()

        return infer, model
    from ..engines import load_engine

    runner = load_engine(spec["path"], threads=M.THREADS)
    return runner.infer, runner


class _Inputs:
    def __init__(self) -> None:
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        if path not in self._cache:
            self._cache.clear()
            with np.load(path, allow_pickle=False) as data:
                self._cache[path] = (np.ascontiguousarray(data["reference"]), np.ascontiguousarray(data["target"]))
        return self._cache[path]


def _run_stack(infer, ref: np.ndarray, tar: np.ndarray, batch: int, stack: int) -> dict[str, Any]:
    infer(ref[:batch], tar[:batch])  # warm-up, excluded
    calls = []
    c_start, t_start = time.process_time(), time.perf_counter()
    for i in range(0, stack, batch):
        t0 = time.perf_counter()
        infer(ref[i : i + batch], tar[i : i + batch])
        calls.append(time.perf_counter() - t0)
    return {"calls": calls, "stack_s": time.perf_counter() - t_start, "stack_cpu_s": time.process_time() - c_start}


def _ort_profile(spec: dict[str, Any], ref: np.ndarray, tar: np.ndarray, runs: int, workdir: str) -> dict[str, Any]:
    """Node times by op type from ONNX Runtime's profiler (a separate session on the engine file)."""
    import onnxruntime as ort

    from ..engines.onnxruntime.builder import LOAD_LEVEL, session_options

    so = session_options(LOAD_LEVEL, M.THREADS)
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(workdir) / f"ortprof-{os.getpid()}")
    sess = ort.InferenceSession(spec["path"], so, providers=["CPUExecutionProvider"])
    feeds = {"reference": ref, "target": tar}
    sess.run(None, feeds)  # warm-up
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feeds)
    wall = (time.perf_counter() - t0) / runs
    prof = sess.end_profiling()
    try:
        events = json.loads(Path(prof).read_text())
    finally:
        Path(prof).unlink(missing_ok=True)
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
    runs_profiled = runs + 1
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])
    return {
        "tool": "onnxruntime SessionOptions.enable_profiling (kernel times summed over op type)",
        "runs": runs_profiled,
        "wall_ms_per_run": wall * 1e3,
        "node_ms_per_run": total / runs_profiled / 1e3,
        "model_run_ms_median": float(np.median(model_run_us)) / 1e3 if model_run_us else None,
        "by_op_type": [{"op": op, "ms_per_run": us / runs_profiled / 1e3, "share": us / total,
                        "nodes_per_run": count[op] // runs_profiled} for op, us in ops],
    }


def _torch_profile(model: Any, ref: np.ndarray, tar: np.ndarray, runs: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    r, t = torch.from_numpy(ref), torch.from_numpy(tar)
    with torch.inference_mode():
        model.forward_core(r, t)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model.forward_core(r, t)
    rows = []
    total = 0.0
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") or ev.key.startswith("sgf::"):
            rows.append((ev.key, ev.self_cpu_time_total))
            total += ev.self_cpu_time_total
    rows.sort(key=lambda kv: -kv[1])
    total = total or 1.0
    return {"tool": "torch.profiler (self CPU time by op)", "runs": runs,
            "by_op_type": [{"op": k, "ms_per_run": v / runs / 1e3, "share": v / total} for k, v in rows[:15]]}


def _worker_main(spec: dict[str, Any]) -> None:
    infer, owner = _load_backend(spec)
    inputs = _Inputs()

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "stack":
            ref, tar = inputs.get(cmd["inputs"])
            return _run_stack(infer, ref, tar, int(cmd["batch"]), int(cmd["stack"]))
        if op == "parity":
            with np.load(cmd["inputs"], allow_pickle=False) as data:
                ref, tar = data["reference"], data["target"]
            out = np.concatenate([infer(ref[i : i + 1], tar[i : i + 1]) for i in range(ref.shape[0])])
            np.save(cmd["out"], np.asarray(out, np.float32))
            return {"out": cmd["out"]}
        if op == "profile":
            ref, tar = inputs.get(cmd["inputs"])
            b = int(cmd["batch"])
            if spec["kind"] == "torch":
                return _torch_profile(owner, ref[:b], tar[:b], int(cmd.get("runs", 3)))
            if spec.get("backend") == "onnxruntime":
                return _ort_profile(spec, ref[:b], tar[:b], int(cmd.get("runs", 3)), cmd["workdir"])
            return {"tool": None, "note": "profiling is implemented for ONNX Runtime engines and PyTorch only"}
        raise ValueError(f"unknown command {op}")

    M.serve(handle, {"name": spec["name"]})


def _probe_main(spec: dict[str, Any]) -> None:
    """Fresh process: load one backend, first output (start-up), a second call, peak RSS."""
    infer, _owner = _load_backend(spec)
    rss_loaded = M.current_rss_mb()
    with np.load(spec["inputs"], allow_pickle=False) as data:
        b = int(spec["batch"])
        ref, tar = np.ascontiguousarray(data["reference"][:b]), np.ascontiguousarray(data["target"][:b])
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


# ==================================================================================== parent side
def _checkpoint_info(path: Path) -> dict[str, Any]:
    from ..artifacts import sha256_file
    from ..model.checkpoint import read_checkpoint

    _, meta, _ = read_checkpoint(path)
    prov = meta.get("provenance") or {}
    steps = prov.get("steps")
    final = prov.get("final_validation")
    return {
        "path": str(path), "sha256": sha256_file(path), "config": meta.get("config"),
        "parameters": meta.get("parameters"), "task": prov.get("task"), "pair": prov.get("pair"),
        "steps": steps, "trained": bool(steps),
        "final_validation": final if isinstance(final, dict) else None,
    }


def resolve_checkpoint(ckpt: str | os.PathLike | None, workdir: Path, echo: Callable[[str], None]) -> tuple[Path, str]:
    """``--ckpt``, else the embedded default, else an untrained ``lite`` network (speed does not
    depend on the weights; parity does — the record says which)."""
    if ckpt is not None:
        p = Path(ckpt)
        if not p.is_file():
            from ..errors import CheckpointError

            raise CheckpointError(f"{p}: checkpoint not found")
        return p, "--ckpt"
    from ..model import DEFAULT_CHECKPOINT

    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, "embedded default checkpoint"
    import torch

    from ..model import build_model, save_checkpoint

    path = workdir / "untrained-lite-recon4x-t1-t2.pt"
    if not path.is_file():
        torch.manual_seed(0)
        save_checkpoint(path, build_model("lite"), {"task": "recon4x", "pair": "t1-t2", "steps": 0, "seed": 0,
                                                    "note": "untrained (sgf-deploy bench): for speed only"}, overwrite=True)
    echo(f"[bench] no embedded default checkpoint in this install: using an UNTRAINED lite network ({path}); "
         "speed does not depend on the weights, parity does")
    return path, "untrained lite (embedded default missing)"


def detect_backends() -> dict[str, Any]:
    """What can run here: ONNX Runtime CPU always; CUDA EP, TensorRT, TensorRT-RTX where present."""
    from ..engines.identity import trt_available

    found_gpus = M.gpus()
    providers = M.ort_providers()
    det: dict[str, Any] = {"gpus": found_gpus, "ort_providers": providers}
    det["onnxruntime-cpu"] = {"runnable": "CPUExecutionProvider" in providers}
    cuda_ep = "CUDAExecutionProvider" in providers
    det["onnxruntime-cuda"] = {"runnable": bool(cuda_ep and found_gpus),
                               "reason": None if cuda_ep and found_gpus else
                               ("no NVIDIA GPU" if not found_gpus else "onnxruntime-gpu (CUDAExecutionProvider) not installed")}
    for name in ("tensorrt", "tensorrt-rtx"):
        installed = trt_available(name)
        det[name] = {"installed": installed, "runnable": bool(installed and found_gpus),
                     "reason": None if installed and found_gpus else
                     ("not installed" if not installed else "installed, but engine execution needs an NVIDIA GPU (none found)")}
    return det


def _find_engine(engines_dir: Path, onnx_sha: str, backend: str, precision: str) -> Path | None:
    from ..engines import read_manifest

    if not engines_dir.is_dir():
        return None
    for js in sorted(engines_dir.glob("*.json")):
        eng = js.with_suffix("")
        if not eng.is_file():
            continue
        try:
            man = read_manifest(eng)
        except Exception:  # noqa: BLE001 - a foreign file: skip
            continue
        if man.get("onnx_sha256") == onnx_sha and man.get("backend") == backend and man.get("precision") == precision:
            return eng
    return None


def build_all(ckpt: Path, workdir: Path, detected: dict[str, Any], echo: Callable[[str], None],
              precisions: Sequence[str] = PRECISIONS, calib_n: int = CALIB_N) -> list[Path]:
    """Export ``ckpt`` (dynamic N, H, W), write a calibration set and build every runnable
    backend/precision into ``workdir`` (artefacts already there for the same ONNX are reused)."""
    from ..artifacts import sha256_file
    from ..calibration.dataset import CalibrationSet, write_calibration_set
    from ..engines import build_engine
    from ..export import export_onnx

    info = _checkpoint_info(ckpt)
    onnx_path = workdir / "export" / f"sgf_mri-{info['sha256'][:12]}.onnx"
    if not onnx_path.is_file():
        echo(f"[bench] exporting {ckpt} -> {onnx_path}")
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(ckpt, onnx_path, overwrite=True)
    onnx_sha = sha256_file(onnx_path)
    pair, task = info.get("pair") or "t1-t2", info.get("task") or "recon4x"
    calib = workdir / "calibration" / f"{pair}-{task}-sim-n{calib_n}"
    if "int8" in precisions:
        try:
            CalibrationSet(calib)
        except Exception:  # noqa: BLE001 - missing or stale: write it
            echo(f"[bench] writing the INT8 calibration set {calib} (simulator, train split, n={calib_n})")
            write_calibration_set("sim", n=calib_n, out=calib, pair=pair, task=task, overwrite=True)
    backends = []
    if detected["onnxruntime-cpu"]["runnable"] or detected["onnxruntime-cuda"]["runnable"]:
        backends.append("onnxruntime")
    backends += [b for b in ("tensorrt", "tensorrt-rtx") if detected[b]["runnable"]]
    engines = []
    for backend in backends:
        for precision in precisions:
            found = _find_engine(workdir / "engines", onnx_sha, backend, precision)
            if found is None:
                echo(f"[bench] building {backend} {precision}")
                res = build_engine(onnx_path, backend=backend, precision=precision,
                                   calib=calib if precision == "int8" else None, out_dir=workdir / "engines",
                                   threads=M.THREADS, parity=0, overwrite=True)
                found = res.engine_path
            engines.append(found)
    return engines


def _engine_spec(path: Path) -> dict[str, Any]:
    from ..engines import read_manifest
    from ..engines.identity import Profile

    man = read_manifest(path)
    device = man.get("device") or {}
    backend = man.get("backend")
    where = "cuda" if device.get("kind") == "cuda" else ("gpu" if backend != "onnxruntime" else "cpu")
    short = {"onnxruntime": "ort", "tensorrt": "trt", "tensorrt-rtx": "rtx"}.get(backend, backend)
    conv = man.get("precision_conversion") or {}
    return {
        "name": f"{short}{'-cuda' if where == 'cuda' else ''}-{man.get('precision')}",
        "kind": "engine", "path": str(path), "backend": backend, "precision": man.get("precision"),
        "backend_version": man.get("backend_version"), "device": device,
        "profile": Profile.from_manifest(man.get("profile")).describe(),
        "_profile": man.get("profile"),
        "checkpoint_sha256": man.get("checkpoint_sha256"), "engine_sha256": man.get("engine_sha256"),
        "precision_detail": {k: conv.get(k) for k in ("activations", "weights", "calibration_method", "float_patterns",
                                                       "format", "quant_format", "per_channel", "kind", "keep_fp32")
                             if conv.get(k) is not None},
    }


def _fits_profile(spec: dict[str, Any], shape: tuple[int, int, int, int]) -> bool:
    if spec["kind"] == "torch":
        return True
    from ..engines.identity import Profile

    return Profile.from_manifest(spec.get("_profile")).contains(shape)


def _prepare_inputs(pair: str, task: str, sizes: Sequence[int], stack: int, parity_n: int, workdir: Path
                    ) -> tuple[dict[int, str], dict[str, Any]]:
    """Stacks of simulated held-out slices, normalised and edge-padded to S x S, one file per size;
    the parity set at the native size (233x197 padded to 240x200) with its ground truth."""
    from ..calibration.dataset import fit_shape
    from ..data.simulator import simulate
    from ..runtime.preprocess import normalize_slices

    n_in = min(INPUT_SLICES, stack)
    sim = simulate(pair, task, "test", max(parity_n, n_in), seed=PARITY_SEED)
    inputs_dir = workdir / "inputs"
    inputs_dir.mkdir(parents=True, exist_ok=True)
    ref_p, tar_p, _, _ = normalize_slices(sim["reference"][:n_in], sim["target"][:n_in], 8)
    files = {}
    for s in sizes:
        idx = [i % n_in for i in range(stack)]
        ref = np.stack([fit_shape(ref_p[i, 0], (s, s)) for i in idx])[:, None]
        tar = np.stack([fit_shape(tar_p[i, 0], (s, s)) for i in idx])[:, None]
        path = inputs_dir / f"stack-{stack}x{s}x{s}.npz"
        np.savez(path, reference=ref.astype(np.float32), target=tar.astype(np.float32))
        files[s] = str(path)
    ref_q, tar_q, means, stds = normalize_slices(sim["reference"][:parity_n], sim["target"][:parity_n], 8)
    ppath = inputs_dir / f"parity-{parity_n}.npz"
    np.savez(ppath, reference=ref_q, target=tar_q)
    parity = {"path": str(ppath), "ground_truth": sim["ground_truth"][:parity_n], "means": means, "stds": stds,
              "shape": sim["target"].shape[1:], "n": parity_n, "pair": pair, "task": task, "seed": PARITY_SEED,
              "subjects": sim["subject"][:parity_n].tolist(), "slices": sim["slice_index"][:parity_n].tolist(),
              "padded_shape": list(tar_q.shape[2:])}
    return files, parity


def _parity_figures(parity: dict[str, Any], outputs: dict[str, str], specs: list[dict[str, Any]]) -> dict[str, Any]:
    from ..runtime.preprocess import restore
    from ..validate.parity import compare_outputs
    from ..validate.thresholds import judge, thresholds_for

    n = parity["n"]
    h, w = parity["shape"]
    gt = parity["ground_truth"]

    def load(name: str) -> np.ndarray:
        return restore(np.load(outputs[name], allow_pickle=False), n, h, w, parity["means"], parity["stds"])

    pt = load("pytorch-fp32")
    gts = [gt[i : i + 1] for i in range(n)]
    out: dict[str, Any] = {}
    for spec in specs:
        if spec["kind"] == "torch" or spec["name"] not in outputs:
            continue
        eng = load(spec["name"])
        cmp = compare_outputs(gts, [pt[i : i + 1] for i in range(n)], [eng[i : i + 1] for i in range(n)])
        summ = cmp["summary"]
        par = summ.get("parity_psnr") or {}
        dp = summ.get("delta_psnr") or {}
        delta_mean = dp.get("mean_diff")
        th = thresholds_for(spec.get("precision"))
        nonfinite = int(cmp["nonfinite"]["engine"]) + int(cmp["nonfinite"]["pytorch"])
        verdict, reasons = judge(nonfinite=nonfinite, parity_psnr_min=par.get("min"), delta_psnr_mean=delta_mean,
                                 thresholds=th)
        out[spec["name"]] = {
            "psnr_engine_vs_pytorch_db": {"min": par.get("min"), "mean": par.get("mean"), "median": par.get("median"),
                                          "identical_slices": par.get("identical_slices")},
            "delta_psnr_vs_gt_db": {"mean": delta_mean, "ci95": [dp.get("ci95_low"), dp.get("ci95_high")],
                                    "wilcoxon_p": dp.get("wilcoxon_p")},
            "psnr_vs_gt_db": {"pytorch": (summ.get("pytorch") or {}).get("psnr"), "engine": (summ.get("engine") or {}).get("psnr")},
            "max_abs_error": (summ.get("max_abs_error") or {}).get("max"),
            "nonfinite": nonfinite,
            "gate": {"precision": th.precision, "min_parity_psnr_db": th.min_parity_psnr, "max_abs_delta_psnr_db": th.max_delta_psnr,
                     "verdict": verdict, "reasons": reasons},
        }
    return out


def run_backends(
    engines: Sequence[str | os.PathLike] | None = None,
    *,
    all_backends: bool = False,
    ckpt: str | os.PathLike | None = None,
    sizes: Sequence[int] = DEFAULT_SIZES,
    batches: Sequence[int] = DEFAULT_BATCHES,
    repeat: int = 5,
    stack: int = STACK,
    parity_n: int = PARITY_N,
    startup_repeat: int = 3,
    memory: bool = True,
    profile: bool = True,
    workdir: str | os.PathLike = DEFAULT_WORKDIR,
    precisions: Sequence[str] = PRECISIONS,
    calib_n: int = CALIB_N,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the comparison; returns the JSON-ready record (see the module docstring)."""
    from ..errors import InputError

    say = echo or (lambda _m: None)
    sizes = sorted({int(s) for s in sizes})
    batches = sorted({int(b) for b in batches})
    for s in sizes:
        if s % 8:
            raise InputError(f"--sizes {s}: sizes must be multiples of 8 (the engines see padded slices)")
    for b in batches:
        if b < 1 or stack % b:
            raise InputError(f"--batch {b}: must divide the {stack}-slice stack")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"study": "backends", "machine": M.machine_info(), "loadavg_start": M.loadavg()}
    detected = detect_backends()

    engine_paths = [Path(e) for e in (engines or [])]
    if all_backends or not engine_paths:
        ckpt_path, ckpt_source = resolve_checkpoint(ckpt, workdir, say)
        engine_paths += build_all(ckpt_path, workdir, detected, say, precisions, calib_n)
    elif ckpt is None:
        from ..engines import read_manifest
        from ..validate.parity import resolve_checkpoint as resolve_engine_ckpt

        ckpt_path, _, ckpt_source = resolve_engine_ckpt(engine_paths[0], read_manifest(engine_paths[0]), None, None)
    else:
        ckpt_path, ckpt_source = Path(ckpt), "--ckpt"
    ckpt_info = _checkpoint_info(ckpt_path)
    ckpt_info["source"] = ckpt_source
    specs: list[dict[str, Any]] = [{"name": "pytorch-fp32", "kind": "torch", "ckpt": str(ckpt_path), "precision": "fp32",
                                    "backend": "pytorch-eager", "device": {"kind": "cpu"}}]
    names = {"pytorch-fp32"}
    for p in dict.fromkeys(engine_paths):
        spec = _engine_spec(p)
        if spec["checkpoint_sha256"] and spec["checkpoint_sha256"] != ckpt_info["sha256"]:
            raise InputError(f"{p}: built from checkpoint {spec['checkpoint_sha256'][:12]}..., not {ckpt_path} "
                             f"({ckpt_info['sha256'][:12]}...); pass the checkpoint it was built from with --ckpt")
        base, k = spec["name"], 2
        while spec["name"] in names:
            spec["name"] = f"{base}-{k}"
            k += 1
        names.add(spec["name"])
        specs.append(spec)

    pair, task = ckpt_info.get("pair") or "t1-t2", ckpt_info.get("task") or "recon4x"
    say(f"[bench] inputs: {stack}-slice stacks of simulated held-out ({pair}, {task}) slices at {sizes}; parity on {parity_n}")
    input_files, parity = _prepare_inputs(pair, task, sizes, stack, parity_n, workdir)
    configs = [(s, b) for s in sizes for b in batches]
    record["settings"] = {
        "sizes": sizes, "batches": batches, "repeat": repeat, "stack": stack, "parity_n": parity_n,
        "startup_repeat": startup_repeat, "threads": M.THREADS, "workdir": str(workdir),
        "method": "one persistent worker process per backend; per (size, batch) the backends run round-robin, order rotated "
                  "every repeat; 1 warm-up call per command excluded; medians over repeats",
        "latency": "wall time of one infer() call of b slices / b (normalised, padded float32 in, float32 out; "
                   "pre/post-processing excluded)",
        "throughput": f"{stack} / median wall time of the {stack}-slice stack",
        "cpu_time": "process CPU time (all threads) of the stack; ratio_vs_pytorch_cpu_time = PyTorch CPU s / engine CPU s, "
                    "a contention-robust cross-check of the wall-clock ratio (ONNX Runtime's intra-op threads spin while "
                    "waiting, so its CPU time includes spinning: conservative for ONNX Runtime)",
        "calib_n": calib_n,
        "memory": "peak RSS (VmHWM = ru_maxrss) of a fresh process that loads one backend and runs 2 calls at (size, batch)",
        "startup": "fresh process: spawn -> first output at (size, batch) (interpreter, imports, load, first call)",
        "parity": f"simulate({pair!r}, {task!r}, 'test', {parity_n}, seed={PARITY_SEED}) at native 233x197 "
                  "(padded to 240x200), batch 1; metrics as sgf-deploy validate",
        "inputs": f"{INPUT_SLICES} simulated held-out slices (normalised, edge-padded/centre-cropped to S x S) cycled to {stack}",
    }
    record["checkpoint"] = ckpt_info
    record["detected"] = detected
    record["backends"] = [{k: v for k, v in s.items() if not k.startswith("_")} for s in specs]

    # ---------------------------------------------------------------- timing (interleaved)
    times: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in specs}
    workers: dict[str, M.Worker] = {}
    outputs: dict[str, str] = {}
    profiles: dict[str, Any] = {}
    try:
        for spec in specs:
            say(f"[bench] starting worker {spec['name']}")
            workers[spec["name"]] = M.Worker(MODULE, spec)
        for s, b in configs:
            runnable = [sp["name"] for sp in specs if _fits_profile(sp, (b, 1, s, s))]
            say(f"[bench] {s}x{s} batch {b}: {len(runnable)} backends x {repeat} repeats (load {M.loadavg()})")
            for rep in range(repeat):
                for name in M.rotations(runnable, rep):
                    reply = workers[name].call(op="stack", inputs=input_files[s], batch=b, stack=stack)
                    times[name].setdefault(f"{s}x{b}", []).append(reply)
        say("[bench] parity on simulated held-out slices")
        pdir = workdir / "parity-out"
        pdir.mkdir(exist_ok=True)
        for spec in specs:
            if not _fits_profile(spec, (1, 1) + tuple(parity["padded_shape"])):
                continue
            outputs[spec["name"]] = workers[spec["name"]].call(op="parity", inputs=parity["path"],
                                                               out=str(pdir / f"{spec['name']}.npy"))["out"]
        if profile:
            s_prof = HEADLINE_SIZE if HEADLINE_SIZE in sizes else sizes[0]
            for spec in specs:
                if _fits_profile(spec, (1, 1, s_prof, s_prof)):
                    say(f"[bench] profiling {spec['name']} at {s_prof}x{s_prof}")
                    profiles[spec["name"]] = workers[spec["name"]].call(op="profile", inputs=input_files[s_prof], batch=1,
                                                                        runs=3, workdir=str(workdir)) | {"size": s_prof, "batch": 1}
    finally:
        for w in workers.values():
            w.close()

    # ---------------------------------------------------------------- memory / start-up (fresh processes)
    probes: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in specs}
    if memory:
        head = (HEADLINE_SIZE if HEADLINE_SIZE in sizes else sizes[0], batches[0])
        rounds = [(cfg, 0) for cfg in configs] + [(head, r) for r in range(1, max(1, startup_repeat))]
        for i, ((s, b), _r) in enumerate(rounds):
            for name in M.rotations([sp["name"] for sp in specs if _fits_profile(sp, (b, 1, s, s))], i):
                spec = next(sp for sp in specs if sp["name"] == name)
                res = M.run_probe(MODULE, {k: v for k, v in spec.items() if not k.startswith("_")}
                                  | {"size": s, "batch": b, "inputs": input_files[s], "t_spawn": time.time()})
                probes[name].setdefault(f"{s}x{b}", []).append(res)
            say(f"[bench] memory/start-up probes {s}x{s} batch {b} done")

    record["results"] = analyse(specs, configs, times, probes, stack)
    record["parity"] = _parity_figures(parity, outputs, specs) if "pytorch-fp32" in outputs else {}
    record["parity_set"] = {k: parity[k] for k in ("n", "pair", "task", "seed", "subjects", "slices")} | {"shape": list(parity["shape"])}
    record["profiles"] = profiles
    record["bar"] = judge_bar(record)
    record["loadavg_end"] = M.loadavg()
    return record


def analyse(specs: list[dict[str, Any]], configs: list[tuple[int, int]], times: dict[str, Any],
            probes: dict[str, Any], stack: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s, b in configs:
        key = f"{s}x{b}"
        ref_runs = times.get("pytorch-fp32", {}).get(key, [])
        ref_med = float(np.median([r["stack_s"] for r in ref_runs])) if ref_runs else None
        ref_cpu = float(np.median([r["stack_cpu_s"] for r in ref_runs])) if ref_runs else None
        rows = {}
        for spec in specs:
            runs = times.get(spec["name"], {}).get(key, [])
            pr = probes.get(spec["name"], {}).get(key, [])
            if not runs:
                rows[spec["name"]] = {"skipped": "outside the engine's profile"}
                continue
            per_slice = [c / b for r in runs for c in r["calls"]]
            stack_times = [r["stack_s"] for r in runs]
            med = float(np.median(stack_times))
            cpu_med = float(np.median([r["stack_cpu_s"] for r in runs]))
            paired = [rr["stack_s"] / r["stack_s"] for r, rr in zip(runs, ref_runs)] if ref_runs else []
            ok = [p for p in pr if "error" not in p]
            rows[spec["name"]] = {
                "latency_ms_per_slice": {"p50": M.percentile(per_slice, 50) * 1e3, "p95": M.percentile(per_slice, 95) * 1e3,
                                         "calls": len(per_slice)},
                "stack_s": M.summarize(stack_times),
                "throughput_slices_per_s": stack / med,
                "ratio_vs_pytorch": (ref_med / med) if ref_med else None,
                "ratio_vs_pytorch_paired_median": float(np.median(paired)) if paired else None,
                "ratio_vs_pytorch_paired_range": [float(min(paired)), float(max(paired))] if paired else None,
                "stack_cpu_s_median": cpu_med,
                "ratio_vs_pytorch_cpu_time": (ref_cpu / cpu_med) if ref_cpu and cpu_med else None,
                "peak_rss_mb": max((p["peak_rss_mb"] for p in ok), default=None),
                "rss_after_load_mb": max((p["rss_after_load_mb"] for p in ok if p.get("rss_after_load_mb")), default=None),
                "startup_s": M.summarize([p["startup_s"] for p in ok]) if ok else None,
                "device_memory": "n/a (CPU)" if (spec.get("device") or {}).get("kind", "cpu") == "cpu" else None,
                "probe_errors": [p["error"] for p in pr if "error" in p] or None,
            }
        out[key] = {"size": s, "batch": b, "backends": rows}
    return out


def judge_bar(record: dict[str, Any]) -> dict[str, Any]:
    """The issue-8 bar on ``lite`` at 320x320 (every batch measured): ORT INT8 >= 2.5x and ORT FP32
    >= 1.5x PyTorch eager throughput, INT8 parity >= 40 dB and |mean delta PSNR| <= 0.1 dB."""
    cfg = (record.get("checkpoint") or {}).get("config") or {}
    from ..model.presets import PRESETS

    preset = next((n for n, c in PRESETS.items() if c.to_dict() == cfg), "custom")
    bar: dict[str, Any] = {"definition": BAR, "preset": preset, "checks": []}
    if preset != BAR["preset"]:
        bar["note"] = f"the bar is defined for the {BAR['preset']} preset; this run used {preset}"
    results = record.get("results", {})
    for key, res in results.items():
        if res["size"] != BAR["size"]:
            continue
        for name, need in (("ort-fp32", BAR["fp32_ratio"]), ("ort-int8", BAR["int8_ratio"])):
            row = res["backends"].get(name)
            if not row or row.get("ratio_vs_pytorch") is None:
                continue
            got = row["ratio_vs_pytorch"]
            bar["checks"].append({"what": f"{name} throughput / pytorch-fp32 at {res['size']}x{res['size']} batch {res['batch']}",
                                  "value": got, "paired_median": row.get("ratio_vs_pytorch_paired_median"),
                                  "cpu_time_ratio": row.get("ratio_vs_pytorch_cpu_time"),
                                  "need": need, "pass": got >= need,
                                  "shortfall": None if got >= need else need - got})
    par = (record.get("parity") or {}).get("ort-int8")
    if par:
        pmin = par["psnr_engine_vs_pytorch_db"]["min"]
        dmean = par["delta_psnr_vs_gt_db"]["mean"]
        bar["checks"].append({"what": "ort-int8 worst-slice PSNR(engine, PyTorch) dB", "value": pmin,
                              "need": BAR["int8_min_parity_db"], "pass": pmin is not None and pmin >= BAR["int8_min_parity_db"]})
        bar["checks"].append({"what": "ort-int8 |mean delta PSNR vs ground truth| dB", "value": abs(dmean) if dmean is not None else None,
                              "need": BAR["int8_max_abs_delta_psnr_db"],
                              "pass": dmean is not None and abs(dmean) <= BAR["int8_max_abs_delta_psnr_db"]})
    bar["met"] = bool(bar["checks"]) and all(c["pass"] for c in bar["checks"])
    trained = (record.get("checkpoint") or {}).get("trained")
    if not trained:
        bar["parity_note"] = "checkpoint is untrained: parity figures do not speak for the trained model"
    return bar


# ========================================================================================= report
def summary_lines(record: dict[str, Any]) -> list[str]:
    ck = record.get("checkpoint", {})
    lines = [
        f"machine: {record['machine']['cpu']} ({record['machine']['logical_cores']} cores), threads {M.THREADS}; "
        f"load average start {record.get('loadavg_start')} end {record.get('loadavg_end')}",
        f"checkpoint: {ck.get('path')} ({ck.get('source')}; {'trained ' + str(ck.get('steps')) + ' steps' if ck.get('trained') else 'UNTRAINED'}; "
        f"sha256 {str(ck.get('sha256'))[:12]})",
    ]
    gpu = record.get("detected", {})
    lines.append("not measured here: " + "; ".join(f"{k}: {v.get('reason')}" for k, v in gpu.items()
                                                   if isinstance(v, dict) and not v.get("runnable") and v.get("reason")))
    for key, res in record.get("results", {}).items():
        lines.append(f"-- {res['size']}x{res['size']} batch {res['batch']} --  backend: p50/p95 ms/slice, slices/s, x pytorch "
                     "(paired median) [CPU-time ratio], peak RSS MB, start-up s")
        order = [b["name"] for b in record.get("backends", []) if b["name"] in res["backends"]]
        for name in order + [n for n in res["backends"] if n not in order]:
            row = res["backends"][name]
            if "skipped" in row:
                lines.append(f"  {name:14s} skipped: {row['skipped']}")
                continue
            lat = row["latency_ms_per_slice"]
            st = row.get("startup_s") or {}
            lines.append(
                f"  {name:14s} {lat['p50']:8.1f} / {lat['p95']:8.1f}  {row['throughput_slices_per_s']:7.2f}  "
                f"x{row['ratio_vs_pytorch']:.2f} ({row['ratio_vs_pytorch_paired_median']:.2f}) [{row['ratio_vs_pytorch_cpu_time']:.2f}]  "
                f"{row['peak_rss_mb'] or float('nan'):7.0f}  {st.get('median', float('nan')):6.2f}")
    for name, par in (record.get("parity") or {}).items():
        pe = par["psnr_engine_vs_pytorch_db"]
        d = par["delta_psnr_vs_gt_db"]["mean"]
        lines.append(f"parity {name}: PSNR(engine, PyTorch) min {pe['min']:.2f} dB mean {pe['mean']:.2f} dB; "
                     f"mean dPSNR vs GT {d:+.4f} dB; gate {par['gate']['precision']}: {par['gate']['verdict']}"
                     if pe.get("min") is not None and d is not None else f"parity {name}: {par}")
    bar = record.get("bar", {})
    for c in bar.get("checks", []):
        lines.append(f"bar: {c['what']}: {c['value']:.3f} (need {c['need']}) {'PASS' if c['pass'] else 'FAIL'}"
                     + (f" short by {c['shortfall']:.3f}" if c.get("shortfall") else ""))
    if bar:
        lines.append(f"bar met: {bar.get('met')}" + (f" ({bar['parity_note']})" if bar.get("parity_note") else ""))
    for name, prof in (record.get("profiles") or {}).items():
        top = ", ".join(f"{r['op']} {r['share'] * 100:.0f}%" for r in prof.get("by_op_type", [])[:5])
        if top:
            lines.append(f"profile {name} ({prof.get('size')}x{prof.get('size')}): {top}")
    return lines


def markdown(record: dict[str, Any]) -> str:
    """README tables rendered from a recorded JSON (so the README carries exactly the recorded numbers)."""
    out = []
    ck = record.get("checkpoint", {})
    m = record["machine"]
    out.append(f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m.get('cpu_flags', []))}), "
               f"{m.get('memory_gb')} GB; {m['os']}; Python {m['python']}; "
               + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v) + f". Threads: torch 2, ORT intra-op 2 / inter-op 1; "
               f"child env {m.get('child_environment')}. Load average at start {record.get('loadavg_start')}, "
               f"at end {record.get('loadavg_end')}. Recorded {m.get('recorded_at')}.")
    out.append("")
    out.append(f"Checkpoint: `{Path(str(ck.get('path'))).name}` ({ck.get('source')}; "
               f"{'trained, ' + str(ck.get('steps')) + ' steps' if ck.get('trained') else 'UNTRAINED'}; sha256 `{str(ck.get('sha256'))[:12]}`).")
    out.append("")
    for key, res in record.get("results", {}).items():
        out.append(f"**{res['size']}x{res['size']}, batch {res['batch']}**")
        out.append("")
        out.append("| backend | p50 ms/slice | p95 ms/slice | slices/s (32-stack) | x PyTorch (ratio of medians) | paired median [min, max] | "
                   "x PyTorch in CPU time | peak RSS MB | start-up s (median) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        order = [b["name"] for b in record.get("backends", []) if b["name"] in res["backends"]]
        for name in order + [n for n in res["backends"] if n not in order]:
            row = res["backends"][name]
            if "skipped" in row:
                out.append(f"| {name} | skipped: {row['skipped']} ||||||||")
                continue
            lat = row["latency_ms_per_slice"]
            rng = row.get("ratio_vs_pytorch_paired_range") or [float("nan")] * 2
            st = (row.get("startup_s") or {}).get("median")
            out.append(f"| {name} | {lat['p50']:.1f} | {lat['p95']:.1f} | {row['throughput_slices_per_s']:.2f} | "
                       f"{row['ratio_vs_pytorch']:.2f} | {row['ratio_vs_pytorch_paired_median']:.2f} [{rng[0]:.2f}, {rng[1]:.2f}] | "
                f"{row['ratio_vs_pytorch_cpu_time']:.2f} | "
                       f"{row['peak_rss_mb']:.0f} | {st if st is None else format(st, '.2f')} |")
        out.append("")
    if record.get("parity"):
        out.append("| engine | worst-slice PSNR(engine, PyTorch) dB | mean | mean dPSNR vs GT dB [95% CI] | gate (min dB / max abs dPSNR) | verdict |")
        out.append("|---|---:|---:|---:|---|---|")
        for name, par in record["parity"].items():
            pe, d, g = par["psnr_engine_vs_pytorch_db"], par["delta_psnr_vs_gt_db"], par["gate"]
            ci = d.get("ci95") or [None, None]
            fmt = lambda x, f=".2f": "n/a" if x is None else format(x, f)  # noqa: E731
            out.append(f"| {name} | {fmt(pe['min'])} | {fmt(pe['mean'])} | {fmt(d['mean'], '+.4f')} [{fmt(ci[0], '+.4f')}, {fmt(ci[1], '+.4f')}] | "
                       f"{g['precision']}: {g['min_parity_psnr_db']:g} / {g['max_abs_delta_psnr_db']:g} | {g['verdict']} |")
        out.append("")
    bar = record.get("bar") or {}
    if bar.get("checks"):
        out.append("| bar check | value | need | result |")
        out.append("|---|---:|---:|---|")
        for c in bar["checks"]:
            verdict = "pass" if c["pass"] else ("FAIL (short by %.3f)" % c["shortfall"] if c.get("shortfall") else "FAIL")
            out.append(f"| {c['what']} | {c['value']:.3f} | {c['need']} | {verdict} |")
        out.append("")
    for name, prof in (record.get("profiles") or {}).items():
        rows = prof.get("by_op_type") or []
        if not rows:
            continue
        out.append(f"Profile {name} at {prof.get('size')}x{prof.get('size')} batch {prof.get('batch')} ({prof.get('tool')}): "
                   + ", ".join(f"{r['op']} {r['ms_per_run']:.1f} ms ({r['share'] * 100:.0f}%)" for r in rows[:8]))
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SGF-MRI backend comparison (speed, memory, start-up, parity)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--engine", action="append", default=[])
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--batch", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--stack", type=int, default=STACK)
    parser.add_argument("--parity-n", type=int, default=PARITY_N)
    parser.add_argument("--startup-repeat", type=int, default=3)
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR))
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None, metavar="JSON", help="print README tables of a recorded JSON and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    if args.worker:
        _worker_main(json.loads(args.worker))
        return 0
    if args.probe:
        _probe_main(json.loads(args.probe))
        return 0
    record = run_backends(args.engine, all_backends=args.all, ckpt=args.ckpt,
                          sizes=[int(s) for s in args.sizes.split(",")], batches=[int(b) for b in args.batch.split(",")],
                          repeat=args.repeat, stack=args.stack, parity_n=args.parity_n, startup_repeat=args.startup_repeat,
                          memory=not args.no_memory, workdir=args.workdir)
    for line in summary_lines(record):
        print(line)
    if args.json:
        from ..artifacts import write_json_atomic

        write_json_atomic(args.json, record, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
