"""INT8 vs FP32 ONNX Runtime engines of one model on this CPU: speed per slice, parity, and where
the time goes.

    python benchmarks/int8_vs_fp32.py [--checkpoint PT] [--size 320] [--threads 2] [--rounds 30]
                                      [--calib-n 64] [--json benchmarks/results/int8_vs_fp32.json]

What it does, in one process:

1. export the checkpoint (default: the embedded default ``lite`` model) with the real exporter;
2. write a 64-pair calibration set (simulator, train split) and build the FP32 and INT8 ONNX
   Runtime engines with ``sgf_deploy.engines.build_engine`` (build-time parity printed);
3. time both engines on the same ``1x1xSxS`` normalised input (a simulated test slice, edge-padded
   to SxS): warm-up, then ``--rounds`` rounds alternating FP32 and INT8 so that background load
   hits both alike; reports min and median ms per slice and the speed-up of each;
4. profile both with ONNX Runtime's profiler (per op type and the top nodes);
5. ``--widths`` also times untrained models of the same architecture at other channel widths
   (INT8 vs FP32 speed-up only), to show which widths make int8 kernels pay off.

The machine (``sgf_deploy.bench.machine.machine_info``) and the load average before/after go into the JSON.
Not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed_input(size: int) -> tuple[np.ndarray, np.ndarray]:
    """One simulated test slice, normalised by the model's input contract and brought to size x size."""
    from sgf_deploy.contract import fit, prepare
    from sgf_deploy.data.simulator import simulate

    sim = simulate("t1-t2", "recon4x", "test", 1, 7)
    prepared = prepare(sim["reference"], sim["target"], 1)
    return fit(prepared.reference, (size, size)), fit(prepared.target, (size, size))


def time_engines(runners: dict, ref: np.ndarray, tar: np.ndarray, rounds: int, warmup: int = 3) -> dict:
    for runner in runners.values():
        for _ in range(warmup):
            runner.infer(ref, tar)
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            runner.infer(ref, tar)
            times[key].append(time.perf_counter() - start)
    return {k: {"min_ms": round(1000 * min(v), 2), "median_ms": round(1000 * float(np.median(v)), 2),
                "mean_ms": round(1000 * float(np.mean(v)), 2), "runs": len(v)} for k, v in times.items()}


def profile(engine: Path, ref: np.ndarray, tar: np.ndarray, threads: int, runs: int = 10, warmup: int = 3) -> dict:
    import onnxruntime as ort

    from sgf_deploy.engines.onnxruntime.builder import LOAD_LEVEL, session_options

    so = session_options(LOAD_LEVEL, threads)  # what the timed runners use
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"ortprof-{os.getpid()}")
    session = ort.InferenceSession(str(engine), so, providers=["CPUExecutionProvider"])
    for _ in range(warmup + runs):
        session.run(None, {"reference": ref, "target": tar})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    model_runs = [e for e in events if e.get("name") == "model_run"]
    start = model_runs[warmup]["ts"]
    by_op, count, by_node = collections.Counter(), collections.Counter(), collections.Counter()
    shapes = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"]["op_name"]
            by_op[op] += e["dur"]
            count[op] += 1
            node = e["name"][: -len("_kernel_time")]
            by_node[(node, op)] += e["dur"]
            shapes[(node, op)] = e["args"].get("output_type_shape")
    total = sum(by_op.values())
    return {
        "kernel_ms_per_run": round(total / runs / 1000, 2),
        "model_run_ms_median": round(float(np.median([e["dur"] for e in model_runs[warmup:]])) / 1000, 2),
        "by_op_type": [{"op": op, "ms": round(us / runs / 1000, 2), "share": round(us / total, 3), "nodes": count[op] // runs}
                       for op, us in by_op.most_common(12)],
        "top_nodes": [{"node": n, "op": op, "ms": round(us / runs / 1000, 2), "output": shapes[(n, op)]}
                      for (n, op), us in by_node.most_common(10)],
    }


def build_pair(checkpoint: Path, work: Path, calib_n: int, threads: int, parity: int, echo=print) -> dict:
    """Export, calibrate, build FP32 + INT8; a workdir from an earlier run is reused as it is."""
    from sgf_deploy.calibration import write_calibration_set
    from sgf_deploy.engines import BuildResult, build_engine
    from sgf_deploy.engines.manifest import EngineManifest, manifest_path
    from sgf_deploy.export import export_onnx

    onnx_path = work / "export" / "model.onnx"
    if not onnx_path.is_file():
        export_onnx(checkpoint, out=onnx_path)
    calib = work / "calibration" / "set"
    if not calib.is_dir():
        write_calibration_set("sim", calib_n, calib, echo=echo)
    out = {"onnx": onnx_path}
    for precision in ("fp32", "int8"):
        found = sorted((work / "engines").glob(f"model.ort-*.{precision}*.onnx")) if (work / "engines").is_dir() else []
        if found:
            out[precision] = BuildResult(found[0], manifest_path(found[0]), EngineManifest.load(found[0]))
            echo(f"reusing {found[0]}")
        else:
            out[precision] = build_engine(onnx_path, backend="onnxruntime", precision=precision,
                                          calib=calib if precision == "int8" else None, out_dir=work / "engines",
                                          threads=threads, parity_n=parity, echo=echo)
    return out


def width_study(widths: list[str], work: Path, size: int, threads: int, rounds: int, calib: Path) -> list[dict]:
    """Untrained models of the lite architecture at other widths: INT8 vs FP32 speed only."""
    import onnx
    import onnxruntime as ort
    import torch

    from sgf_deploy.calibration import quantize_int8
    from sgf_deploy.engines.onnxruntime.builder import LOAD_LEVEL, session_options
    from sgf_deploy.export.onnx_export import export_model_proto
    from sgf_deploy.model import build_model
    from sgf_deploy.model.presets import PRESETS

    rows = []
    ref, tar = timed_input(size)
    for spec in widths:
        channels = tuple(int(c) for c in spec.split(","))
        config = PRESETS["lite"].__class__(**dict(PRESETS["lite"].to_dict(), channels=channels))
        torch.manual_seed(0)
        model = build_model(config).eval()
        fp32 = work / f"w{'-'.join(map(str, channels))}.onnx"
        onnx.save(export_model_proto(model, 21), str(fp32))
        int8 = fp32.with_suffix(".int8.onnx")
        quantize_int8(fp32, int8, calib, method="max")

        class _Run:
            def __init__(self, path):
                self.s = ort.InferenceSession(str(path), session_options(LOAD_LEVEL, threads), providers=["CPUExecutionProvider"])

            def infer(self, r, t):
                return self.s.run(None, {"reference": r, "target": t})[0]

        t = time_engines({"fp32": _Run(fp32), "int8": _Run(int8)}, ref, tar, rounds)
        rows.append({"channels": list(channels), "parameters": sum(p.numel() for p in model.parameters()),
                     "fp32": t["fp32"], "int8": t["int8"],
                     "speedup_min": round(t["fp32"]["min_ms"] / t["int8"]["min_ms"], 2),
                     "speedup_median": round(t["fp32"]["median_ms"] / t["int8"]["median_ms"], 2)})
        print(f"widths {channels}: fp32 {t['fp32']['median_ms']} ms, int8 {t['int8']['median_ms']} ms, "
              f"x{rows[-1]['speedup_median']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint [the embedded default]")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calib-n", type=int, default=64)
    parser.add_argument("--parity", type=int, default=8)
    parser.add_argument("--widths", nargs="*", default=[], help="extra channel widths, e.g. 64,96,128,192")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "int8_vs_fp32.json"))
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    from sgf_deploy.bench.machine import loadavg, machine_info
    from sgf_deploy.engines import load_engine
    from sgf_deploy.model import default_checkpoint

    load_start = loadavg()
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="int8-vs-fp32-"))
    built = build_pair(checkpoint, work, args.calib_n, args.threads, args.parity)
    ref, tar = timed_input(args.size)
    runners = {k: load_engine(built[k].engine_path, threads=args.threads) for k in ("fp32", "int8")}
    timing = time_engines(runners, ref, tar, args.rounds)
    speedup_median = timing["fp32"]["median_ms"] / timing["int8"]["median_ms"]
    speedup_min = timing["fp32"]["min_ms"] / timing["int8"]["min_ms"]
    print(f"{args.size}x{args.size}, {args.threads} threads: FP32 {timing['fp32']['median_ms']} ms "
          f"(min {timing['fp32']['min_ms']}), INT8 {timing['int8']['median_ms']} ms (min {timing['int8']['min_ms']}): "
          f"x{speedup_median:.2f} median, x{speedup_min:.2f} min", flush=True)
    profiles = {k: profile(built[k].engine_path, ref, tar, args.threads) for k in ("fp32", "int8")}
    widths = []
    if args.widths:
        from sgf_deploy.calibration import write_calibration_set

        small = work / "calibration" / "width-study"
        if not small.is_dir():
            write_calibration_set("sim", 8, small)
        widths = width_study(args.widths, work, args.size, args.threads, max(8, args.rounds // 3), small)
    from sgf_deploy.engines.onnxruntime.builder import spinning_enabled

    parity = {k: {key: built[k].manifest.build_parity.get(key) for key in
                  ("psnr_db", "max_abs_error", "psnr_vs_ground_truth", "reference", "slices")} for k in ("fp32", "int8")}
    result = {
        "what": "INT8 vs FP32 ONNX Runtime CPU engines, one normalised slice per call (batch 1)",
        "machine": machine_info(),
        "loadavg_start": load_start,
        "loadavg_end": loadavg(),
        "model": {"checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
                  "checkpoint_sha256": built["fp32"].manifest.checkpoint_sha256,
                  "preset": built["fp32"].manifest.model.preset,
                  "channels": (built["fp32"].manifest.model.config or {}).get("channels")},
        "input": f"1x1x{args.size}x{args.size}", "threads": args.threads, "rounds": args.rounds,
        "ort_thread_spinning": spinning_enabled(),
        "engines": {k: {"file": built[k].engine_path.name, **timing[k]} for k in ("fp32", "int8")},
        "int8": {key: (built["int8"].manifest.precision_conversion or {}).get(key)
                 for key in ("activations", "weights", "bias", "calibration_method", "float_patterns")},
        "speedup_median": round(speedup_median, 2),
        "speedup_min": round(speedup_min, 2),
        "target_speedup": 2.0,
        "meets_target": bool(speedup_median >= 2.0),
        "parity": parity,
        "profile": profiles,
        "width_study": widths,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    for runner in runners.values():
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
