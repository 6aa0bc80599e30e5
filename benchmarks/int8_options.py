"""INT8 options on both CPU backends: the float list, NNCF's overflow fix, calibration size.

Each variant is built from the same exported ONNX and calibration set and validated as
``sgf-deploy validate`` does (``--n`` held-out simulated slices, mean delta PSNR vs ground truth
with its 95 % CI, worst-slice PSNR vs PyTorch). Work goes to the git-ignored ``build/`` folder;
the table goes to ``benchmarks/results/int8_options.json`` (and ``.md``).

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
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="checkpoint (named explicitly: the default may change)")
    ap.add_argument("--calib-n", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work", default=str(ROOT / "build" / "int8-options"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "int8_options.json"))
    args = ap.parse_args()

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
              "checkpoint_sha256": sha256_file(args.ckpt), "calib_n": args.calib_n, "n": args.n, "rows": rows}
    for name in args.variants.split(","):
        opts = VARIANTS[name]
        t0 = time.perf_counter()
        built = build_engine(onnx_path, precision="int8", calib=calib, out_dir=work / "engines" / name,
                             threads=args.threads, parity_n=0, overwrite=True, **opts)
        build_s = time.perf_counter() - t0
        out = validate_engine(built.engine_path, n=args.n, threads=args.threads, report=work / "reports" / name,
                              overwrite=True, update=False)
        s = (out.report or {}).get("summary", {})
        rows[name] = {"options": opts, "verdict": out.verdict, "build_s": round(build_s, 1), "summary": s,
                      "loadavg": loadavg()}
        print(f"{name}: {out.line()}  (build {build_s:.0f} s, load {loadavg()})", flush=True)
        write_json_atomic(args.json, record, overwrite=True)
    record["loadavg_end"] = loadavg()
    write_json_atomic(args.json, record, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
