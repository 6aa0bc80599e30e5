"""INT8 options on both CPU backends: the float list, NNCF's overflow fix, calibration size.

Each variant is built from the same exported ONNX and calibration set and validated as
``sgf-deploy validate`` does (``--n`` held-out simulated slices, mean delta PSNR vs ground truth
with its 95 % CI, worst-slice PSNR vs PyTorch). Work goes to the git-ignored ``build/`` folder;
the table goes to ``benchmarks/results/int8_options.json``.

Speed: after all variants are built, each engine's ms/slice at 320x320, batch 4, ``--threads``
(random inputs; median of ``--speed-repeats`` calls after one warm-up, the engines taken in
turn so that they share the machine's load). ``--time-existing`` adds engines an earlier run
left under ``--work`` (e.g. ``ov-default``) to that timing, without rebuilding them.

``ov-accuracy-*``: NNCF accuracy control (``build --int8-max-drop DB``), which reverts layers to
float until the mean PSNR vs ground truth on the simulator's val split drops by at most DB.

    python benchmarks/int8_options.py --ckpt sgf_deploy/assets/default/lite-recon4x-t1-t2.pt --calib-n 64 --n 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "ov-default": {"backend": "openvino"},
    "ov+head": {"backend": "openvino", "keep_fp32": "@default,@head"},
    "ov-overflow-first_layer": {"backend": "openvino", "overflow_fix": "first_layer"},
    "ov-overflow-disable": {"backend": "openvino", "overflow_fix": "disable"},
    "ort-default": {"backend": "onnxruntime"},
    "ort+head": {"backend": "onnxruntime", "keep_fp32": "@default,@head"},
    "ov-accuracy-0.02": {"backend": "openvino", "int8_max_drop": 0.02},
    "ov-accuracy-0.01": {"backend": "openvino", "int8_max_drop": 0.01},
    "ov-overflow-disable-accuracy-0.02": {"backend": "openvino", "overflow_fix": "disable", "int8_max_drop": 0.02},
    "ov-overflow-disable-accuracy-0.01": {"backend": "openvino", "overflow_fix": "disable", "int8_max_drop": 0.01},
}
SPEED_SHAPE = (4, 1, 320, 320)


def time_engines(paths: dict, threads: int, repeats: int) -> dict:
    """ms/slice of each engine at :data:`SPEED_SHAPE`: one warm-up call each, then ``repeats``
    rounds taking the engines in turn; the median per engine."""
    import numpy as np

    from sgf_deploy.engines import load_engine

    rng = np.random.default_rng(0)
    ref, tar = (rng.standard_normal(SPEED_SHAPE).astype(np.float32) for _ in range(2))
    runners = {name: load_engine(path, threads=threads) for name, path in paths.items()}
    times: dict = {name: [] for name in runners}
    try:
        for runner in runners.values():
            runner.infer(ref, tar)
        for _ in range(repeats):
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner.infer(ref, tar)
                times[name].append((time.perf_counter() - t0) * 1000 / SPEED_SHAPE[0])
    finally:
        for runner in runners.values():
            runner.close()
    return {name: {"ms_per_slice_median": round(float(np.median(t)), 1), "ms_per_slice": [round(x, 1) for x in t],
                   "shape": "x".join(map(str, SPEED_SHAPE[2:])), "batch": SPEED_SHAPE[0], "threads": threads}
            for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint (named explicitly: the default may change)")
    ap.add_argument("--calib-n", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default=str(ROOT / "build" / "int8-options"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "int8_options.json"))
    ap.add_argument("--speed-repeats", type=int, default=5, help="timed calls per engine (0: no timing)")
    ap.add_argument("--time-existing", default="", metavar="VARIANTS",
                    help="also time these variants' engines left under --work by an earlier run (not rebuilt)")
    args = ap.parse_args()
    variants = [v for v in args.variants.split(",") if v]  # "" with --time-existing: timing only
    unknown = [v for v in variants + [v for v in args.time_existing.split(",") if v] if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    from sgf_deploy.artifacts import sha256_file, write_json_atomic
    from sgf_deploy.bench.machine import loadavg, machine_info
    from sgf_deploy.calibration.dataset import write_calibration_set
    from sgf_deploy.engines import build_engine
    from sgf_deploy.export import export_onnx
    from sgf_deploy.validate import validate_engine

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path = work / "export" / f"model-{sha256_file(args.ckpt)[:12]}.onnx"
    if not onnx_path.is_file():
        export_onnx(args.ckpt, onnx_path, overwrite=True)
    calib = work / "calibration" / f"sim-n{args.calib_n}"
    if not (calib / "manifest.json").is_file():
        write_calibration_set("sim", n=args.calib_n, out=calib, overwrite=True)
    rows = {}
    record = {"machine": machine_info(), "loadavg_start": loadavg(), "checkpoint": str(args.ckpt),
              "checkpoint_sha256": sha256_file(args.ckpt), "calib_n": args.calib_n, "n": args.n,
              "threads": args.threads, "rows": rows}
    engines = {}
    for name in variants:
        opts = VARIANTS[name]
        t0 = time.perf_counter()
        built = build_engine(onnx_path, precision="int8", calib=calib, out_dir=work / "engines" / name,
                             threads=args.threads, parity_n=0, overwrite=True, **opts)
        build_s = time.perf_counter() - t0
        out = validate_engine(built.engine_path, n=args.n, threads=args.threads, report=work / "reports" / name,
                              overwrite=True, update=False)
        s = (out.report or {}).get("summary", {})
        acc = built.manifest.precision_conversion.get("accuracy_control")
        rows[name] = {"options": opts, "engine": built.engine_path.name, "verdict": out.verdict,
                      "build_s": round(build_s, 1), "summary": s, "loadavg": loadavg()}
        if acc is not None:
            rows[name]["accuracy_control"] = acc
        engines[name] = built.engine_path
        reverted = f", {acc['reverted_count']} layer(s) reverted to float" if acc is not None else ""
        print(f"{name}: {out.line()}  (build {build_s:.0f} s{reverted}, load {loadavg()})", flush=True)
        write_json_atomic(args.json, record, overwrite=True)
    for name in (v for v in args.time_existing.split(",") if v):
        found = sorted((work / "engines" / name).glob("*.xml")) + sorted((work / "engines" / name).glob("*.onnx"))
        if name not in engines and len(found) == 1:
            engines[name] = found[0]
            record.setdefault("timed_existing", {})[name] = found[0].name
        elif name not in engines:
            print(f"{name}: no single engine under {work / 'engines' / name}; not timed", flush=True)
    if args.speed_repeats > 0 and engines:
        record["loadavg_speed_start"] = loadavg()
        record["speed"] = time_engines(engines, args.threads, args.speed_repeats)
        for name, sp in record["speed"].items():
            print(f"{name}: {sp['ms_per_slice_median']} ms/slice (320x320, batch 4, {args.threads} thread(s))", flush=True)
    record["loadavg_end"] = loadavg()
    write_json_atomic(args.json, record, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
