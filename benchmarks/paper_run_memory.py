"""Peak memory of ``sgf-deploy run`` on CPU, and the memory per slice each preset needs.

Usage:
    python benchmarks/paper_run_memory.py [--sizes 256,320,384] [--presets lite,paper]
                                          [--json benchmarks/results/paper_run_memory.json]

What it does (scratch under /tmp, nothing in the repository but the JSON):

1. For each preset, a freshly initialised model (seeded; weights do not change memory) is saved
   with ``save_checkpoint``, exported with dynamic N, H, W and built into an ONNX Runtime FP32
   engine (``build --n 0``: no parity, the weights are random).
2. **The bar** (issue 19): ``sgf-deploy run`` with the ``paper`` engine on a 4-slice 320x320 stack
   and no ``--batch``, in a fresh process, twice: the first run measures the memory of one slice
   and records it in the manifest; the second chooses its batch from the record at once. Then
   the same with ``--batch 1``. Peak RSS of each process (``ru_maxrss``), the batch it printed.
3. **The table**: for each preset and size, a fresh ``run`` on a 2-slice stack; the memory per
   slice the runtime measured (``memory_per_slice`` in the manifest: the peak-RSS growth while one
   slice ran) and the process's peak RSS.

Larger batches than the runtime chooses are not run: on a shared 24 GB machine they are what
the issue reports as "one step from being killed".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DRIVER = """
import json, resource, sys
from sgf_deploy.cli import cli
code = 0
try:
    cli.main(args=sys.argv[2:], prog_name="sgf-deploy", standalone_mode=False)
except SystemExit as exc:
    code = exc.code or 0
except Exception as exc:
    code = 1
    print(f"error: {exc}", file=sys.stderr)
open(sys.argv[1], "w").write(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                         "code": code}))
"""


def run_cli(args: list[str], cwd: Path, threads: int | None) -> dict:
    """``sgf-deploy ARGS`` in a fresh process; its peak RSS, exit code, output and wall time."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        stats = Path(handle.name)
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(stats), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    out = json.loads(stats.read_text()) if stats.stat().st_size else {"peak_rss_mb": None, "code": proc.returncode}
    stats.unlink()
    out.update(wall_s=round(time.perf_counter() - start, 2), output=(proc.stdout + proc.stderr).strip().splitlines()[-12:])
    return out


def engine_for(preset: str, work: Path, threads: int | None) -> Path:
    """A freshly initialised ``preset`` model -> dynamic ONNX -> ONNX Runtime FP32 engine."""
    import torch

    from sgf_deploy.model import build_model, save_checkpoint

    torch.manual_seed(0)
    folder = work / preset
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / f"{preset}-init.pt"
    if not ckpt.exists():
        save_checkpoint(ckpt, build_model(preset).eval(), {"task": "recon4x", "pair": "t1-t2",
                                                          "note": "freshly initialised, memory benchmark"})
    engines = sorted((folder / "engines").glob("*.onnx"))
    if not engines:
        for args in (["export", "--ckpt", str(ckpt)],
                     ["build", "--fp32", "--backend", "onnxruntime", "--n", "0"] + (["--threads", str(threads)] if threads else [])):
            res = run_cli(args, folder, threads)
            if res["code"] != 0:
                raise SystemExit(f"{' '.join(args)} failed: {res['output']}")
        engines = sorted((folder / "engines").glob("*.onnx"))
    return engines[0]


def stack(folder: Path, n: int, size: int) -> tuple[Path, Path]:
    from sgf_deploy.export.selfcheck import phantom_slices

    ref, tar = phantom_slices(n, "recon4x", seed=0, shape=(size, size))
    paths = folder / f"ref-{n}x{size}.npy", folder / f"tar-{n}x{size}.npy"
    np.save(paths[0], np.asarray(ref, np.float32))
    np.save(paths[1], np.asarray(tar, np.float32))
    return paths


def run_stack(engine: Path, n: int, size: int, batch: int | None, threads: int | None) -> dict:
    folder = engine.parent.parent
    ref, tar = stack(folder, n, size)
    args = ["run", "--ref", str(ref), "--target", str(tar), "--engine", str(engine), "--allow-unvalidated",
            "--out", str(folder / f"out-{n}x{size}.npy"), "--force"]
    args += ["--batch", str(batch)] if batch else []
    args += ["--threads", str(threads)] if threads else []
    res = run_cli(args, folder, threads)
    line = next((l for l in res["output"] if l.startswith("input:")), "")
    res["batch_used"] = int(line.rsplit("batch", 1)[1]) if "batch" in line else None
    res["batch_note"] = next((l.split("note: ", 1)[1] for l in res["output"] if "per slice measured" in l), None)
    return res


def per_slice_mb(engine: Path, size: int, multiple: int = 8) -> float | None:
    padded = -(-size // multiple) * multiple
    table = json.loads(engine.with_name(engine.name + ".json").read_text()).get("memory_per_slice", {})
    entry = table.get(f"{padded}x{padded}")
    return round(entry["bytes"] / 1e6, 1) if entry else None


def reset_memory_record(engine: Path) -> None:
    path = engine.with_name(engine.name + ".json")
    data = json.loads(path.read_text())
    data.pop("memory_per_slice", None)
    path.write_text(json.dumps(data, indent=2))


def attention_state(engine: Path) -> str:
    """Which attention the engine's graph has: query-chunked (issue 18: ``Loop`` nodes over query
    blocks) or plain (``Softmax`` over the whole N x N scores), read from the engine file itself."""
    import onnx

    graph = onnx.load(str(engine), load_external_data=False).graph
    ops = [n.op_type for n in graph.node]
    kind = "query-chunked" if ops.count("Loop") else "plain (N x N scores)"
    return f"{kind}: {ops.count('Loop')} Loop, {ops.count('Softmax')} top-level Softmax node(s)"


def git_state() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    diff = subprocess.run(["git", "diff", "--stat", "HEAD", "--", "sgf_deploy"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    return f"HEAD {head}; uncommitted: {diff.splitlines()[-1].strip() if diff else 'none'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,320,384")
    ap.add_argument("--presets", default="lite,paper")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="scratch folder [a new one under /tmp]")
    ap.add_argument("--min-free-gb", type=float, default=12.0,
                    help="skip a table cell when less memory than this is available (shared machine)")
    ap.add_argument("--skip", default="", metavar="PRESET:SIZE,...",
                    help="table cells not to run (recorded as skipped), e.g. paper:384 without chunked attention")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "paper_run_memory.json"))
    opts = ap.parse_args()
    from sgf_deploy.bench.machine import machine_info
    from sgf_deploy.runtime.memory import available_bytes

    work = Path(opts.work or tempfile.mkdtemp(prefix="sgf-paper-mem-"))
    sizes = [int(s) for s in opts.sizes.split(",") if s.strip()]
    result: dict = {"machine": machine_info(), "source": git_state(), "threads": opts.threads,
                    "command": "python benchmarks/paper_run_memory.py " + " ".join(sys.argv[1:]), "bar": {}, "table": []}
    engines = {p: engine_for(p, work, opts.threads) for p in opts.presets.split(",")}
    result["attention"] = {p: attention_state(e) for p, e in engines.items()}
    print(f"attention: {result['attention']}")
    if "paper" in engines:
        eng = engines["paper"]
        reset_memory_record(eng)
        for label, batch in (("first run, no --batch", None), ("second run, no --batch", None), ("--batch 1", 1)):
            res = run_stack(eng, 4, 320, batch, opts.threads)
            result["bar"][label] = {k: res[k] for k in ("peak_rss_mb", "code", "wall_s", "batch_used", "batch_note")}
            print(f"paper 4x320x320 {label}: peak RSS {res['peak_rss_mb']:.0f} MB, batch {res['batch_used']}, "
                  f"exit {res['code']}, {res['wall_s']} s; {res['batch_note']}")
        result["bar"]["paper_per_slice_mb_320"] = per_slice_mb(eng, 320)
    for preset, eng in engines.items():
        for size in sizes:
            free = (available_bytes() or 0) / 1e9
            if f"{preset}:{size}" in opts.skip.split(","):
                result["table"].append({"preset": preset, "size": size, "skipped": "--skip (not run)"})
                continue
            if free < opts.min_free_gb:
                result["table"].append({"preset": preset, "size": size, "skipped": f"only {free:.1f} GB available"})
                continue
            reset_memory_record(eng)
            res = run_stack(eng, 2, size, None, opts.threads)
            row = {"preset": preset, "size": size, "per_slice_mb": per_slice_mb(eng, size),
                   "peak_rss_mb": round(res["peak_rss_mb"], 1) if res["peak_rss_mb"] else None, "code": res["code"],
                   "batch_used": res["batch_used"], "wall_s": res["wall_s"], "available_gb_before": round(free, 1)}
            result["table"].append(row)
            print(f"{preset} {size}x{size}: {row['per_slice_mb']} MB per slice, peak RSS {row['peak_rss_mb']} MB "
                  f"(2 slices, batch {row['batch_used']}, exit {row['code']})")
    Path(opts.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()
