#!/usr/bin/env python
"""The whole network on a CUDA GPU with PyTorch: latency, throughput, device memory, start-up, parity.

    python benchmarks/gpu_network.py [--sizes 256,320,384,512] [--reps 30] [--stack 32] [--batch 8]
                                     [--json benchmarks/results/gpu_network.json] [--overwrite]

One fresh process per variant (so start-up and peak device memory are that variant's alone):

* ``lite`` = the embedded default checkpoint; ``paper`` = an untrained ``paper`` network (seed 0;
  timings and memory do not depend on the weight values, and its parity is against its own
  float32 composite output);
* ``fp32-composite``: float32, MCNS as the eager composite (``SGF_MCNS_KERNEL=0``);
* ``fp32-fused``: float32, MCNS as the fused NVRTC kernel (``SGF_MCNS_KERNEL=1``);
* ``fp16-fused``: ``model.half()`` with float16 inputs and the fused kernel.

Per square size S: latency per slice p50/p95 (numpy in -> numpy out, host<->device copies
included, ``--reps`` calls after 5 warm-up calls), throughput of a ``--stack``-slice stack in
batches of ``--batch`` (median of 5 stacks), peak device memory (``torch.cuda.max_memory_allocated``
and ``..._reserved`` over that size's calls). Start-up = process spawn to the first output
(interpreter, imports, checkpoint load, CUDA context, NVRTC compile, first call). Parity: each
variant reconstructs the shipped sample slice (233x197); PSNR against the same preset's
``fp32-composite`` output and, for ``lite``, against PyTorch on the CPU (the reference the engines
are validated against), on the de-normalised image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = (  # (name, dtype, fused)
    ("fp32-composite", "float32", False),
    ("fp32-fused", "float32", True),
    ("fp16-fused", "float16", True),
)
PRESETS = ("lite", "paper")


# ------------------------------------------------------------------------------ child process
def _sample() -> tuple[np.ndarray, np.ndarray]:
    d = REPO / "sgf_deploy" / "assets" / "sample"
    return (np.load(d / "reference.npy", allow_pickle=False), np.load(d / "target.npy", allow_pickle=False))


def _normalised(size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sample slice prepared by the model's input contract, brought to size x size, n copies."""
    from sgf_deploy.contract import fit, prepare

    prepared = prepare(*_sample(), 8)
    ref, tar = (np.ascontiguousarray(np.broadcast_to(fit(x, (size, size)), (n, 1, size, size)))
                for x in (prepared.reference, prepared.target))
    return ref, tar


def _model(preset: str, torch):
    from sgf_deploy.model import build_model, default_checkpoint, load_checkpoint

    if preset == "lite":
        model, _ = load_checkpoint(default_checkpoint())
    else:
        torch.manual_seed(0)
        model = build_model(preset)
    return model.eval()


def _measure_size(spec: dict, s: int, infer, model, dtype, torch) -> dict:
    ref, tar = _normalised(s, spec["batch"])
    b = spec["batch"]
    for _ in range(5):  # warm-up, cuDNN autotuning included (excluded from timing and memory)
        infer(ref[:1], tar[:1])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    lat = []
    for _ in range(spec["reps"]):
        a = time.perf_counter()
        infer(ref[:1], tar[:1])
        lat.append(time.perf_counter() - a)
    peak_b1 = torch.cuda.max_memory_allocated() / 2**20
    stacks, stack_error = [], None
    try:
        infer(ref, tar)  # warm-up at batch N (autotuning), excluded
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(5):
            a = time.perf_counter()
            for _i in range(0, spec["stack"], b):
                infer(ref, tar)
            stacks.append(time.perf_counter() - a)
    except torch.OutOfMemoryError:
        stack_error = f"batch {b}: CUDA out of memory"
        stacks = []
        torch.cuda.empty_cache()
    # GPU-only time of one batch-1 forward (CUDA events, inputs already on the device).
    with torch.inference_mode():
        rg = torch.from_numpy(ref[:1]).to("cuda", dtype)
        tg = torch.from_numpy(tar[:1]).to("cuda", dtype)
        ev = []
        for _ in range(spec["reps"]):
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            model.forward_core(rg, tg)
            e1.record()
            e1.synchronize()
            ev.append(e0.elapsed_time(e1))
    lat_sorted = sorted(lat)
    return {
        "size": s,
        "latency_ms_p50": 1e3 * statistics.median(lat),
        "latency_ms_p95": 1e3 * lat_sorted[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))],
        "gpu_forward_ms_p50": statistics.median(ev),
        "stack_s_median": statistics.median(stacks) if stacks else None,
        "throughput_slices_per_s": spec["stack"] / statistics.median(stacks) if stacks else None,
        "stack_error": stack_error,
        "peak_allocated_mb_batch1": peak_b1,
        "peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if stacks else None,
        "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20,
    }


def child(spec: dict) -> dict:
    import torch

    from sgf_deploy.contract import prepare, restore
    from sgf_deploy.kernels import torch_cuda

    dtype = getattr(torch, spec["dtype"])
    model = _model(spec["preset"], torch).to("cuda", dtype)
    torch.backends.cudnn.benchmark = True

    def infer(ref: np.ndarray, tar: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            r = torch.from_numpy(ref).to("cuda", dtype, non_blocking=False)
            t = torch.from_numpy(tar).to("cuda", dtype, non_blocking=False)
            return model.forward_core(r, t).float().cpu().numpy()

    sizes = spec["sizes"]
    r0, t0 = _normalised(sizes[0], 1)
    infer(r0, t0)
    torch.cuda.synchronize()
    startup_s = time.time() - spec["t_spawn"]
    out = {"startup_s": startup_s, "fused_registered": torch_cuda.is_registered(), "per_size": []}

    for s in sizes:
        try:
            out["per_size"].append(_measure_size(spec, s, infer, model, dtype, torch))
        except torch.OutOfMemoryError as exc:
            out["per_size"].append({"size": s, "error": "CUDA out of memory: " + str(exc).split(".")[0]})
        torch.cuda.empty_cache()

    prepared = prepare(*_sample(), 8)
    np.save(spec["parity_out"], restore(infer(prepared.reference, prepared.target), prepared))
    return out


# ----------------------------------------------------------------------------- parent process
def _env(torch) -> dict:
    """What torch sees of the GPU (the rest of the machine: ``machine_info`` in the record)."""
    props = torch.cuda.get_device_properties(0)
    env = {
        "device": torch.cuda.get_device_name(0),
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }
    try:
        from sgf_deploy.kernels import nvrtc

        env["nvrtc"] = "%d.%d" % nvrtc.nvrtc_version()
    except Exception as exc:  # noqa: BLE001 - reported
        env["nvrtc"] = f"unavailable: {exc}"
    return env


def _cpu_reference() -> np.ndarray:
    """lite on the CPU in float32 on the sample: the reference every engine is validated against."""
    import torch

    from sgf_deploy.contract import prepare, restore

    model = _model("lite", torch)
    prepared = prepare(*_sample(), 8)
    with torch.inference_mode():
        pred = model.forward_core(torch.from_numpy(prepared.reference), torch.from_numpy(prepared.target)).numpy()
    return restore(pred, prepared)


def _n(x, why=None) -> str:
    return why or "-" if x is None else f"{x:.0f}"


def render(record: dict) -> str:
    env = record["env"]
    machine = record["machine"]
    lines = [
        "## Whole network on the GPU (PyTorch)",
        "",
        f"`python benchmarks/gpu_network.py` on **{env['device']}** (compute capability {env['compute_capability']}, "
        f"{env['memory_gib']} GiB), torch {machine['libraries']['torch']} (CUDA {env['torch_cuda']}, "
        f"cuDNN {env['cudnn']}), NVRTC {env['nvrtc']}, {machine['recorded_at']}. Latency: one slice, numpy in -> numpy out (copies included); "
        f"GPU ms: CUDA events around the forward alone; throughput: {record['settings']['stack']}-slice stack in "
        f"batches of {record['settings']['batch']}; memory: peak allocated / reserved by PyTorch.",
        "",
        "| preset | variant | size | p50 ms | p95 ms | GPU ms | slices/s | peak alloc MB (batch 1) | peak alloc MB (batch N) | peak reserved MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in record["variants"]:
        if "error" in v:
            lines.append(f"| {v['preset']} | {v['variant']} | error: {v['error']} | | | | | | |")
            continue
        for r in v["per_size"]:
            if "error" in r:
                lines.append(f"| {v['preset']} | {v['variant']} | {r['size']} | {r['error']} | | | | | | |")
                continue
            lines.append(f"| {v['preset']} | {v['variant']} | {r['size']} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p95']:.2f} | "
                         f"{r['gpu_forward_ms_p50']:.2f} | {_n(r['throughput_slices_per_s'], r['stack_error'])} | "
                         f"{r['peak_allocated_mb_batch1']:.0f} | {_n(r['peak_allocated_mb'], r['stack_error'])} | "
                         f"{r['peak_reserved_mb']:.0f} |")
    lines += ["", "| preset | variant | start-up s | fused kernel | PSNR vs fp32-composite (dB) | PSNR vs CPU PyTorch (dB) |",
              "|---|---|---|---|---|---|"]
    for v in record["variants"]:
        if "error" in v:
            continue
        def f(x):
            return "-" if x is None else ("inf" if x == float("inf") else f"{x:.1f}")
        lines.append(f"| {v['preset']} | {v['variant']} | {v['startup_s']:.2f} | {v['fused_registered']} | "
                     f"{f(v.get('psnr_vs_fp32_composite_db'))} | {f(v.get('psnr_vs_cpu_pytorch_db'))} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256,320,384,512")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--stack", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "gpu_network.json"))
    ap.add_argument("--markdown", default=None, help="also write the tables here")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(child(spec)), flush=True)
        return 0

    import torch

    if not torch.cuda.is_available():
        print("gpu_network: no CUDA GPU visible to torch; nothing measured", file=sys.stderr)
        return 2
    out_json = Path(args.json)
    if out_json.exists() and not args.overwrite:
        print(f"{out_json}: exists; pass --overwrite", file=sys.stderr)
        return 2
    from sgf_deploy.bench.machine import loadavg, machine_info
    from sgf_deploy.metrics import psnr

    sizes = [int(s) for s in args.sizes.split(",")]
    record = {"study": "gpu_network", "machine": machine_info(), "loadavg_start": loadavg(), "env": _env(torch),
              "settings": {"sizes": sizes, "reps": args.reps, "stack": args.stack, "batch": args.batch},
              "variants": []}
    cpu_ref = _cpu_reference()
    with tempfile.TemporaryDirectory(prefix="gpu-network-") as tmp:
        outs: dict[tuple[str, str], np.ndarray] = {}
        for preset in args.presets.split(","):
            for name, dtype, fused in VARIANTS:
                spec = {"preset": preset, "dtype": dtype, "sizes": sizes, "reps": args.reps, "stack": args.stack,
                        "batch": args.batch, "parity_out": str(Path(tmp) / f"{preset}-{name}.npy"), "t_spawn": time.time()}
                env = dict(os.environ, SGF_MCNS_KERNEL="1" if fused else "0", PYTHONUNBUFFERED="1")
                proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                      capture_output=True, text=True)
                row = {"preset": preset, "variant": name, "dtype": dtype, "fused_requested": fused}
                res = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode or not res:
                    row["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
                    print(f"{preset} {name}: FAILED {row['error']}", flush=True)
                    print(proc.stderr[-3000:], file=sys.stderr)
                    record["variants"].append(row)
                    continue
                row.update(json.loads(res[-1][len("RESULT "):]))
                outs[(preset, name)] = np.load(spec["parity_out"])
                base = outs.get((preset, "fp32-composite"))
                if base is not None:
                    row["psnr_vs_fp32_composite_db"] = float(psnr(base, outs[(preset, name)]))
                if preset == "lite":
                    row["psnr_vs_cpu_pytorch_db"] = float(psnr(cpu_ref, outs[(preset, name)]))
                record["variants"].append(row)
                ok = [r for r in row["per_size"] if "error" not in r]
                if not ok:
                    continue
                head = next((r for r in ok if r["size"] == 320), ok[0])
                print(f"{preset} {name}: start-up {row['startup_s']:.2f} s, fused {row['fused_registered']}, "
                      f"{head['size']}^2 p50 {head['latency_ms_p50']:.2f} ms, GPU {head['gpu_forward_ms_p50']:.2f} ms, "
                      f"{_n(head['throughput_slices_per_s'], head['stack_error'])} slices/s, peak batch 1 {head['peak_allocated_mb_batch1']:.0f} MB, "
                      f"PSNR vs composite {row.get('psnr_vs_fp32_composite_db', float('nan')):.1f} dB", flush=True)
    record["loadavg_end"] = loadavg()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=1))
    md = render(record)
    if args.markdown:
        Path(args.markdown).write_text(md)
    print(md)
    bad = [v for v in record["variants"] if "error" in v or (v["variant"] != "fp32-composite" and v["fused_requested"]
                                                               and not v.get("fused_registered"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
