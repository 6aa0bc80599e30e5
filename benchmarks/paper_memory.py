"""Peak memory of the ``paper`` preset (SFA attention at the 1/4 and 1/2 scales) on the CPU.

Each figure is the peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across exec) of a fresh process that loads one backend and runs one
call on a (1, 1, S, S) slice, 2 threads: ONNX Runtime on the exported file (query-chunked
attention, the default export) and PyTorch eager (SDPA with contiguous Q/K/V). With
``--compare-unchunked``, ONNX Runtime also runs the same file with the chunking undone (the plain
MatMul -> Softmax -> MatMul the exporter writes), at those sizes. Memory does not depend on the
weights: the network is an untrained, seeded ``paper`` model. Work goes to ``build/``.

    python benchmarks/paper_memory.py --sizes 256,320,384 --compare-unchunked 320
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(kind: str, path: str, size: int) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import numpy as np

    from sgf_deploy.bench.machine import current_rss_mb, peak_rss_mb

    x = np.random.default_rng(0).standard_normal((1, 1, size, size)).astype(np.float32)
    if kind == "torch":
        import torch

        from sgf_deploy.model import load_checkpoint

        torch.set_num_threads(2)
        model, _ = load_checkpoint(path)
        loaded = current_rss_mb()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.forward_core(torch.from_numpy(x), torch.from_numpy(x.copy()))
    else:
        import onnxruntime as ort

        from sgf_deploy.engines.onnxruntime.builder import LOAD_LEVEL, session_options

        session = ort.InferenceSession(path, session_options(LOAD_LEVEL, 2), providers=["CPUExecutionProvider"])
        loaded = current_rss_mb()
        t0 = time.perf_counter()
        session.run(None, {"reference": x, "target": x.copy()})
    seconds = time.perf_counter() - t0
    # VmHWM of this process (ru_maxrss would carry the parent's peak across fork + exec)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(),
                      "rss_after_load_mb": loaded, "seconds": seconds}))


def measure(kind: str, path: Path, size: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(size)], capture_output=True,
                          text=True, env=env, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]}
    return json.loads(lines[-1])


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,320,384")
    ap.add_argument("--compare-unchunked", default="", help="sizes at which the unchunked graph is measured too")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--work", default=str(ROOT / "build" / "paper-memory"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "paper_memory.json"))
    args = ap.parse_args()

    import onnx
    import torch

    from sgf_deploy.artifacts import write_json_atomic
    from sgf_deploy.bench.machine import loadavg, machine_info
    from sgf_deploy.export import export_onnx
    from sgf_deploy.export.attention import CHUNK, unchunk_attention
    from sgf_deploy.model import build_model, save_checkpoint

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, chunked, full = work / "paper-untrained.pt", work / "paper.onnx", work / "paper-unchunked.onnx"
    if not chunked.is_file():
        torch.manual_seed(0)
        save_checkpoint(ckpt, build_model("paper").eval(), {"task": "recon4x", "pair": "t1-t2", "steps": 0,
                                                            "note": "untrained: memory only"}, overwrite=True)
        export_onnx(ckpt, chunked, overwrite=True)
        model = onnx.load(str(chunked))
        unchunk_attention(model)
        onnx.save(model, str(full))
    sizes = [int(s) for s in args.sizes.split(",") if s]
    unchunked = [int(s) for s in args.compare_unchunked.split(",") if s]
    rows = []
    record = {"machine": machine_info(), "loadavg_start": loadavg(), "chunk_rows": CHUNK, "batch": 1, "threads": 2,
              "method": "peak RSS (VmHWM) of a fresh process: load one backend, one call on (1,1,S,S); rss_after_load_mb is VmRSS after loading", "rows": rows}
    plan = [("onnxruntime (chunked attention)", "ort", chunked, s) for s in sizes]
    plan += [("onnxruntime (unchunked, as exported before)", "ort", full, s) for s in unchunked]
    if not args.no_torch:
        plan += [("pytorch eager (SDPA, contiguous Q/K/V)", "torch", ckpt, s) for s in sizes]
    for label, kind, path, size in plan:
        result = measure(kind, path, size) | {"backend": label, "size": size, "loadavg": loadavg()}
        rows.append(result)
        print(json.dumps(result), flush=True)
        write_json_atomic(args.json, record, overwrite=True)
    record["loadavg_end"] = loadavg()
    write_json_atomic(args.json, record, overwrite=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
