"""Runtime benchmark (issue 6): one run measures the three targets and writes runtime.json.

    python benchmarks/runtime_bench.py [--repeats 7] [--out benchmarks/results/runtime.json]

1. ``sgf-deploy run`` on one 320x320 slice, process start to file written, with a cached engine:
   subprocess wall time, median of ``--repeats`` runs after one warm-up; target <= 3 s.
2. Peak RSS of those runs (GNU ``/usr/bin/time -f %M`` of each run, the maximum); target <= 500 MB.
3. Throughput on a 32-slice 320x320 stack: the runtime's ORT FP32 engine (``Reconstructor``) vs
   PyTorch eager (``sgf_deploy.model.infer.reconstruct``, ``torch.set_num_threads(2)``) on the same
   checkpoint, same batch, same pre/post-processing, each in its own fresh process so their thread
   pools never compete, alternating for ``--rounds`` rounds so both see the same background load;
   target ORT >= 1.5x torch.

The checkpoint is the embedded default if this install has it, else an untrained ``lite`` network
(speed does not depend on the weights); the JSON says which. Not a test: run it by hand.
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

ROOT = Path(__file__).resolve().parent.parent
H = W = 320
STACK = 32
TARGETS = {"cli_one_slice_s": 3.0, "peak_rss_mb": 500.0, "speedup_vs_torch": 1.5}


def phantom(n: int, seed: int = 0):
    """Deterministic smooth images (content does not change the speed)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    ref = np.empty((n, H, W), np.float32)
    tar = np.empty((n, H, W), np.float32)
    for i in range(n):
        cy, cx = H / 2 + rng.normal(0, 5), W / 2 + rng.normal(0, 5)
        r = np.hypot(yy - cy, xx - cx)
        head = (r < 130 + 4 * i % 7).astype(np.float32)
        ref[i] = head * (0.6 + 0.3 * np.cos(r / 9)) + 0.02 * rng.standard_normal((H, W))
        tar[i] = head * (0.4 + 0.4 * np.sin(r / 11)) + 0.05 * rng.standard_normal((H, W))
    return np.abs(ref), np.abs(tar)


# -- workers (run in fresh processes) --------------------------------------------------------
def worker_ort(engine: str, batch: int, repeats: int) -> dict:
    from sgf_deploy.runtime import Reconstructor

    ref, tar = phantom(STACK)
    rec = Reconstructor.load(engine, batch=batch, threads=2, allow_unvalidated=True)
    rec(ref[:batch], tar[:batch])  # warm-up
    times, stages = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        rec(ref, tar)
        times.append(time.perf_counter() - start)
        stages.append(dict(rec.timings))
    best = stages[times.index(statistics.median_low(times))]
    return {"median_s": statistics.median(times), "times_s": times, "stages_s": best,
            "torch_imported": "torch" in sys.modules}


def worker_torch(checkpoint: str, batch: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(2)
    from sgf_deploy.model import load_checkpoint
    from sgf_deploy.model.infer import reconstruct

    ref, tar = phantom(STACK)
    model, _ = load_checkpoint(checkpoint)
    reconstruct(model, ref[:batch], tar[:batch], batch=batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        reconstruct(model, ref, tar, batch=batch)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "times_s": times, "threads": torch.get_num_threads()}


def in_fresh_process(kind: str, *args) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=_env())
    if proc.returncode:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_child(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MB, exit code, output) of one run of ``cmd``.

    The peak RSS comes from ``/usr/bin/time -f %M`` (GNU time forks the command from its own
    small process). Taking ``ru_maxrss`` of a child forked directly from this benchmark would be
    wrong: Linux carries the parent's RSS high-water mark into the child across fork + exec, and
    this process holds torch and the exported model (~1 GB).
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        wrapped = ["/usr/bin/time", "-o", str(rss_file), "-f", "%M", *cmd]
        start = time.perf_counter()
        proc = subprocess.run(wrapped, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - start
        lines = rss_file.read_text().strip().splitlines() if rss_file.is_file() else []
        rss_kb = float(lines[-1]) if lines and lines[-1].strip().isdigit() else float("nan")
    return wall, rss_kb / 1024.0, proc.returncode, proc.stdout.decode(errors="replace")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating ORT/torch throughput rounds")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtime.json"))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, target, batch, repeats = args.worker
        fn = worker_ort if kind == "ort" else worker_torch
        print(json.dumps(fn(target, int(batch), int(repeats))))
        return

    import numpy as np

    from sgf_deploy.bench.machine import loadavg, machine_info
    from sgf_deploy.model.locate import DEFAULT_CHECKPOINT

    load_at_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="sgf-runtime-bench-"))
    env = _env()
    env["SGF_DEPLOY_CACHE"] = str(work / "cache")
    script = Path(sys.executable).with_name("sgf-deploy")  # the console script users run
    sgf = [str(script)] if script.is_file() else [sys.executable, "-m", "sgf_deploy.cli"]

    # Checkpoint and an ORT FP32 engine built from it.
    if DEFAULT_CHECKPOINT.is_file():
        checkpoint, weights = DEFAULT_CHECKPOINT, "embedded default checkpoint (sgf_deploy/assets/default)"
    else:
        import torch

        from sgf_deploy.model import build_model, save_checkpoint

        torch.manual_seed(0)
        checkpoint = work / "lite-untrained.pt"
        save_checkpoint(checkpoint, build_model("lite"), {"note": "untrained; runtime benchmark only"})
        weights = "untrained build_model('lite') (embedded default checkpoint not present; speed does not depend on weights)"
    from sgf_deploy.engines import build_engine
    from sgf_deploy.export import export_onnx

    start = time.perf_counter()
    exported = export_onnx(checkpoint, out=work / "export" / "model.onnx")
    built = build_engine(exported.path, backend="onnxruntime", precision="fp32", out_dir=work / "engines")
    build_s = time.perf_counter() - start
    engine = Path(built.engine_path)
    print(f"engine built in {build_s:.1f} s: {engine}")

    # 1 + 2: the CLI on one slice, cached engine.
    ref, tar = phantom(1)
    np.save(work / "ref.npy", ref[0])
    np.save(work / "target.npy", tar[0])
    if DEFAULT_CHECKPOINT.is_file():
        mode = "engine auto -> cached embedded default (ORT CPU FP32)"
        run_cmd = sgf + ["run", "--ref", "ref.npy", "--target", "target.npy", "--overwrite"]
    else:
        mode = "--engine <ORT FP32 engine> --allow-unvalidated (no embedded default to cache)"
        run_cmd = sgf + ["run", "--ref", "ref.npy", "--target", "target.npy", "--overwrite",
                         "--engine", str(engine), "--allow-unvalidated"]
    if not Path("/usr/bin/time").is_file():
        raise SystemExit("this benchmark needs GNU time (/usr/bin/time) for the peak RSS: apt-get install time")
    wall, rss, rc, text = run_child(run_cmd, work, env)  # warm-up (first use builds the cache)
    if rc:
        raise SystemExit(f"sgf-deploy run failed:\n{text}")
    first = {"wall_s": round(wall, 3), "peak_rss_mb": round(rss, 1),
             "what": ("first use: exports + builds + caches the default engine (imports torch); not part of the targets"
                      if DEFAULT_CHECKPOINT.is_file() else "warm-up run (engine already built)")}
    walls, rsss = [], []
    for _ in range(args.repeats):
        wall, rss, rc, text = run_child(run_cmd, work, env)
        if rc:
            raise SystemExit(f"sgf-deploy run failed:\n{text}")
        walls.append(wall)
        rsss.append(rss)
    last_output = text.strip().splitlines()
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from sgf_deploy.cli import main; rc = main(" + repr(run_cmd[len(sgf):]) + ");"
         "print('TORCH', 'torch' in sys.modules); sys.exit(rc)"],
        cwd=work, env=env, capture_output=True, text=True)
    torch_in_run = "TORCH True" in probe.stdout

    # 3: throughput, each backend in a fresh process.
    # 3: throughput. ORT and torch alternate round by round, each in a fresh process, so that
    # both see the same background load; the speedup is the median of the per-round ratios.
    rounds = []
    for _ in range(args.rounds):
        o = in_fresh_process("ort", engine, args.batch, 1)
        p = in_fresh_process("torch", checkpoint, args.batch, 1)
        rounds.append({"ort_s": o["median_s"], "torch_s": p["median_s"], "ort_stages_s": o["stages_s"]})
        print(f"  round {len(rounds)}: ORT {o['median_s']:.2f} s, torch {p['median_s']:.2f} s")
    ort = {"median_s": statistics.median(r["ort_s"] for r in rounds),
           "stages_s": min(rounds, key=lambda r: r["ort_s"])["ort_stages_s"]}
    pt = {"median_s": statistics.median(r["torch_s"] for r in rounds)}
    speedup = statistics.median(r["torch_s"] / r["ort_s"] for r in rounds)

    result = {
        "benchmark": "runtime (issue 6)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "loadavg_start": load_at_start,
        "loadavg_end": loadavg(),
        "contention_note": ("the 2 cores are shared with other jobs; a load average above 2 means the figures are "
                            "pessimistic (every process got a fraction of the CPU)"),
        "model": {"preset": "lite", "weights": weights, "checkpoint": str(checkpoint)},
        "engine": {"backend": built.manifest.backend, "precision": built.manifest.precision,
                   "build_seconds_incl_export": round(build_s, 2)},
        "cli_one_slice": {
            "mode": mode, "size": f"{H}x{W}", "repeats": args.repeats,
            "median_wall_s": round(statistics.median(walls), 3), "wall_s": [round(x, 3) for x in walls],
            "first_run": first, "torch_imported": torch_in_run, "last_summary": last_output[-4:],
        },
        "peak_rss_mb": round(max(rsss), 1),
        "throughput_32_slices": {
            "size": f"{STACK}x{H}x{W}", "batch": args.batch, "threads": 2,
            "ort_fp32_median_s": round(ort["median_s"], 3),
            "ort_fp32_slices_per_s": round(STACK / ort["median_s"], 2),
            "ort_stage_s": {k: round(v, 4) for k, v in ort["stages_s"].items()},
            "torch_eager_median_s": round(pt["median_s"], 3),
            "torch_eager_slices_per_s": round(STACK / pt["median_s"], 2),
            "speedup": round(speedup, 2),
            "rounds": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "ort_stages_s"}
                       for r in rounds],
            "note": ("both include the same numpy pre/post-processing; torch.set_num_threads(2), ORT intra-op threads 2; "
                     "ORT and torch alternate in fresh processes; speedup = median of per-round torch/ORT ratios"),
        },
        "targets": {
            "cli_one_slice_s": {"limit": TARGETS["cli_one_slice_s"], "value": round(statistics.median(walls), 3),
                                "pass": statistics.median(walls) <= TARGETS["cli_one_slice_s"]},
            "peak_rss_mb": {"limit": TARGETS["peak_rss_mb"], "value": round(max(rsss), 1),
                            "pass": max(rsss) <= TARGETS["peak_rss_mb"]},
            "speedup_vs_torch": {"limit": TARGETS["speedup_vs_torch"], "value": round(speedup, 2),
                                 "pass": speedup >= TARGETS["speedup_vs_torch"]},
            "run_does_not_import_torch": {"pass": not torch_in_run},
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    t = result["targets"]
    print(f"sgf-deploy run, 1 slice {H}x{W}: median {t['cli_one_slice_s']['value']:.3f} s "
          f"(limit {TARGETS['cli_one_slice_s']} s) {'PASS' if t['cli_one_slice_s']['pass'] else 'FAIL'}")
    print(f"peak RSS: {t['peak_rss_mb']['value']:.1f} MB (limit {TARGETS['peak_rss_mb']:.0f}) "
          f"{'PASS' if t['peak_rss_mb']['pass'] else 'FAIL'}")
    print(f"32x{H}x{W}, batch {args.batch}: ORT FP32 {ort['median_s']:.3f} s vs torch eager {pt['median_s']:.3f} s "
          f"-> {speedup:.2f}x (target >= {TARGETS['speedup_vs_torch']}) {'PASS' if t['speedup_vs_torch']['pass'] else 'FAIL'}")
    print(f"torch imported by run: {torch_in_run}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
