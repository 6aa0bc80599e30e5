#!/usr/bin/env python
"""GPU benchmark of the fused sgf::MCNS kernel: correctness, then timings; writes benchmarks/gpu.md.

Needs a CUDA GPU, a CUDA build of torch, and cuda-python + NVRTC
(``pip install 'cuda-bindings>=13,<14' 'nvidia-cuda-nvrtc>=13,<14'``, or the ``-cu12`` / 12.x
variants for a CUDA 12 driver). From the repository root::

    python benchmarks/gpu_mcns.py --overwrite            # full run, rewrites benchmarks/gpu.md
    python benchmarks/gpu_mcns.py --quick --out /tmp/gpu.md

1. Correctness: the kernel (``torch.ops.sgf.mcns`` with the CUDA kernel registered) against the
   eager composite ``mcns_reference`` evaluated in float32 on the same values, on random inputs
   with odd sizes, 1-pixel images (every neighbour clamped), B = 1 and 4, float32 and float16.
2. Timings (CUDA events, median of ``--reps`` after warm-up) at C=64, G=8, H=W in 40/80/160,
   B in 1/4, float32 and float16: fused kernel vs the eager composite vs the composite compiled by
   ``torch.compile`` (inlined: the custom op itself is opaque to the compiler). Target: the kernel
   at least 5x faster than eager.

Every step that can fail on an unusual setup (torch.compile without Triton, out of memory) is
caught and reported in the table rather than aborting the run. Exit status: 0 when all
correctness checks pass, 1 when one fails, 2 when no GPU/dependency is available.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_SPEEDUP = 5.0
CORRECTNESS_CASES = [
    # (B, C, H, W, G)
    (1, 8, 5, 7, 2),
    (4, 16, 9, 11, 8),
    (1, 6, 1, 3, 3),
    (4, 8, 2, 1, 4),
    (1, 64, 40, 40, 8),
    (4, 64, 33, 17, 8),
    (4, 64, 80, 80, 8),
]
TIMING_SIZES = (40, 80, 160)
TIMING_BATCHES = (1, 4)
C, G, EPS = 64, 8, 1e-6


def _inputs(torch, b, c, h, w, g, dtype, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ft = torch.randn((b, c, h, w), generator=gen)
    fr = torch.randn((b, c, h, w), generator=gen)
    st = torch.rand((b, g, h, w), generator=gen)
    sr = torch.rand((b, g, h, w), generator=gen)
    return [t.to(device="cuda", dtype=dtype) for t in (ft, fr, st, sr)]


def _time_cuda(torch, fn, reps: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def _env(torch, machine: dict) -> dict:
    """The GPU as torch, NVRTC and the driver see it, with the host from ``machine_info``."""
    from sgf_deploy.kernels import nvrtc

    props = torch.cuda.get_device_properties(0)
    env = {
        "device": torch.cuda.get_device_name(0),
        "compute_capability": f"{props.major}.{props.minor}",
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": machine["libraries"]["torch"],
        "torch_cuda": torch.version.cuda,
        "python": machine["python"],
        "cpu": machine["cpu"],
        "date": machine["recorded_at"],
    }
    try:
        env["nvrtc"] = "%d.%d" % nvrtc.nvrtc_version()
        arch, output = nvrtc.pick_target(props.major, props.minor)
        env["kernel_target"] = f"{arch} ({output})"
    except Exception as exc:  # pragma: no cover - reported, not fatal here
        env["nvrtc"] = f"unavailable: {exc}"
    try:
        import cuda.bindings.driver as drv

        err, version = drv.cuDriverGetVersion()
        env["cuda_driver"] = f"{version // 1000}.{(version % 1000) // 10}"
    except Exception:
        pass
    return env


def correctness(torch, mcns_reference) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.float16):
        for b, c, h, w, g in CORRECTNESS_CASES:
            row = {"shape": f"B={b} C={c} H={h} W={w} G={g}", "dtype": str(dtype).split(".")[-1]}
            try:
                x = _inputs(torch, b, c, h, w, g, dtype, seed=b * 1000 + c * 10 + h + w)
                got = torch.ops.sgf.mcns(*x, g, EPS)
                want = mcns_reference(*(t.float() for t in x), g, EPS)
                torch.cuda.synchronize()
                err = (got.float() - want).abs()
                row["max_abs_err"] = float(err.max())
                row["dtype_ok"] = got.dtype == dtype and tuple(got.shape) == (b, 32 * g, h, w)
                tol = 1e-5 + 1e-4 * want.abs() if dtype == torch.float32 else torch.full_like(want, 1e-3)
                row["passed"] = bool(row["dtype_ok"] and bool((err <= tol).all()) and torch.isfinite(got).all())
            except Exception as exc:
                row.update(max_abs_err=float("nan"), passed=False, error=f"{type(exc).__name__}: {exc}")
            rows.append(row)
    return rows


def timings(torch, mcns_reference, reps: int, sizes, batches, dtypes, use_compile: bool = True) -> list[dict]:
    rows = []
    for dtype in dtypes:
        for b in batches:
            for hw in sizes:
                row = {"B": b, "HxW": f"{hw}x{hw}", "dtype": str(dtype).split(".")[-1]}
                try:
                    x = _inputs(torch, b, C, hw, hw, G, dtype, seed=hw + b)
                    row["fused"] = _time_cuda(torch, lambda: torch.ops.sgf.mcns(*x, G, EPS), reps, 10)
                    with torch.no_grad():
                        row["eager"] = _time_cuda(torch, lambda: mcns_reference(*x, G, EPS), reps, 5)
                    out_bytes = b * 32 * G * hw * hw * x[0].element_size()
                    in_bytes = sum(t.numel() * t.element_size() for t in x)
                    row["fused_gbps"] = (in_bytes + out_bytes) / (row["fused"]["median_ms"] * 1e-3) / 1e9
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    rows.append(row)
                    torch.cuda.empty_cache()
                    continue
                try:
                    if not use_compile:
                        raise RuntimeError("skipped (--no-compile)")
                    torch._dynamo.reset()
                    compiled = torch.compile(mcns_reference, dynamic=False)
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        compiled(*x, G, EPS)
                        torch.cuda.synchronize()
                        row["compile_s"] = time.perf_counter() - t0
                        row["compiled"] = _time_cuda(torch, lambda: compiled(*x, G, EPS), reps, 5)
                except Exception as exc:
                    row["compiled_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                row["speedup_vs_eager"] = row["eager"]["median_ms"] / row["fused"]["median_ms"]
                if "compiled" in row:
                    row["speedup_vs_compiled"] = row["compiled"]["median_ms"] / row["fused"]["median_ms"]
                rows.append(row)
                del x
                torch.cuda.empty_cache()
    return rows


def render(env: dict, checks: list[dict], times: list[dict], reps: int) -> str:
    ok = all(r["passed"] for r in checks)
    lines = [
        "# GPU benchmark: fused sgf::MCNS kernel",
        "",
        f"Produced by `python benchmarks/gpu_mcns.py` on **{env['device']}** (compute capability "
        f"{env['compute_capability']}, {env['memory_gib']} GiB) on {env['date']}.",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += [
        "",
        "## Correctness (kernel vs eager composite in float32 on the same values)",
        "",
        f"Overall: **{'PASS' if ok else 'FAIL'}** (float32: |err| <= 1e-5 + 1e-4 |ref|; float16: |err| <= 1e-3).",
        "",
        "| shape | dtype | max abs error | result |",
        "|---|---|---|---|",
    ]
    for r in checks:
        res = "pass" if r["passed"] else f"FAIL {r.get('error', '')}".strip()
        lines.append(f"| {r['shape']} | {r['dtype']} | {r['max_abs_err']:.3g} | {res} |")
    lines += [
        "",
        f"## Timings (C={C}, G={G}; median of {reps} runs, CUDA events, forward only)",
        "",
        "| B | HxW | dtype | fused ms | eager ms | torch.compile ms | fused vs eager | fused vs compile | fused GB/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    speedups = []
    for r in times:
        if "error" in r:
            lines.append(f"| {r['B']} | {r['HxW']} | {r['dtype']} | error: {r['error']} | | | | | |")
            continue
        comp = f"{r['compiled']['median_ms']:.3f}" if "compiled" in r else f"failed: {r.get('compiled_error', '')}"
        vs_comp = f"{r['speedup_vs_compiled']:.1f}x" if "speedup_vs_compiled" in r else "-"
        speedups.append(r["speedup_vs_eager"])
        lines.append(
            f"| {r['B']} | {r['HxW']} | {r['dtype']} | {r['fused']['median_ms']:.3f} | {r['eager']['median_ms']:.3f} | "
            f"{comp} | {r['speedup_vs_eager']:.1f}x | {vs_comp} | {r['fused_gbps']:.0f} |"
        )
    if speedups:
        met = min(speedups) >= TARGET_SPEEDUP
        lines += [
            "",
            f"Target (fused >= {TARGET_SPEEDUP:.0f}x faster than eager at every size): "
            f"**{'met' if met else 'NOT met'}** (smallest speedup {min(speedups):.1f}x).",
        ]
    lines += [
        "",
        "GB/s counts each input read once and the output written once (the kernel's minimum traffic).",
        "torch.compile times exclude compilation (`compile_s` in the JSON).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "gpu.md"))
    ap.add_argument("--json", default=None, help="also write the raw results as JSON here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out/--json")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="H=W=80 and B=4 only, 20 reps")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        print("gpu_mcns: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_mcns: no CUDA GPU visible to torch (torch.cuda.is_available() is False); nothing measured", file=sys.stderr)
        return 2

    from sgf_deploy.artifacts import atomic_path
    from sgf_deploy.bench.machine import machine_info
    from sgf_deploy.errors import SgfError
    from sgf_deploy.model.mcns import maybe_register_fused_kernel, mcns_reference

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"gpu_mcns: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        if not maybe_register_fused_kernel():
            print("gpu_mcns: the fused kernel could not be registered (cuda-python/NVRTC missing, or SGF_MCNS_KERNEL=0)", file=sys.stderr)
            return 2
    except SgfError as exc:
        print(f"gpu_mcns: {exc}", file=sys.stderr)
        return 2

    reps = 20 if args.quick else args.reps
    sizes = (80,) if args.quick else TIMING_SIZES
    batches = (4,) if args.quick else TIMING_BATCHES
    machine = machine_info()
    env = _env(torch, machine)
    print(f"device: {env['device']} (cc {env['compute_capability']})", flush=True)
    checks = correctness(torch, mcns_reference)
    for r in checks:
        print(f"  {r['shape']:<28} {r['dtype']:<8} max|err| {r['max_abs_err']:.3g} {'ok' if r['passed'] else 'FAIL ' + r.get('error', '')}")
    try:
        times = timings(
            torch, mcns_reference, reps, sizes, batches, (torch.float32, torch.float16), use_compile=not args.no_compile
        )
    except Exception:
        traceback.print_exc()
        times = []
    for r in times:
        print("  " + json.dumps({k: v for k, v in r.items() if k in ("B", "HxW", "dtype", "speedup_vs_eager", "speedup_vs_compiled", "error")}))

    text = render(env, checks, times, reps)
    with atomic_path(out, overwrite=args.overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    if args.json:
        with atomic_path(args.json, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps({"machine": machine, "env": env, "correctness": checks, "timings": times}, indent=2), encoding="utf-8")
    return 0 if all(r["passed"] for r in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
