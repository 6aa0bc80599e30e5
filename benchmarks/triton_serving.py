"""Serving on Triton vs the local runtime (issue 17): throughput, latency, dynamic batching, parity.

    python benchmarks/triton_serving.py [--size 128] [--slices 64] [--request 4] [--clients 1,4,8]
                                        [--engine PATH] [--out benchmarks/results/triton.json]

One tritonserver (the one bundled in nvidia-pytriton, started by ``sgf_deploy.serving``) on
loopback serves two exports of the same engine (the embedded default unless ``--engine``):
``sgf_mri`` with the dynamic batcher ``triton export`` configures, ``sgf_mri_nobatch`` without.

1. **local vs served, interleaved** (``--rounds``): the torch-free runtime (``Reconstructor``,
   batch ``--request``) on ``--slices`` simulator slices (T1 -> T2, recon4x, test split, centre
   ``--size`` crop), then one client process sending the same slices to the server in requests
   of ``--request``: slices per second, request latency p50/p95, and their ratio per round (the
   two run back to back, so background load hits both).
2. **clients**: for each client count, that many client *processes* (``serving.client.connect``)
   start together, each sending all ``--slices`` slices: aggregate slices per second, request
   latency p50/p95, and each client's result against the local one (max relative difference;
   the bar is 1e-5).
3. **dynamic batching**: the largest client count sending ``--batching-slices`` slices each in
   1-slice requests to ``sgf_mri`` and to ``sgf_mri_nobatch``, alternated twice.

Clients and server share this machine's cores, as a scanner-side box would; the JSON records the
machine and the load average before and after. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.bench.machine import loadavg, machine_info  # noqa: E402


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def slices(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sgf_deploy.data.simulator import SHAPE, simulate

    sim = simulate("t1-t2", "recon4x", "test", n, seed=seed)
    y0, x0 = (SHAPE[0] - size) // 2, (SHAPE[1] - size) // 2
    crop = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    return (np.ascontiguousarray(sim["reference"][crop] * 1000, dtype=np.float32),
            np.ascontiguousarray(sim["target"][crop] * 1000, dtype=np.float32))


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(round(p * (len(ordered) - 1)))))]

    return {"p50_ms": round(1000 * q(0.5), 2), "p95_ms": round(1000 * q(0.95), 2), "n": len(values)}


def local_run(engine: Path, ref: np.ndarray, tar: np.ndarray, request: int) -> tuple[dict, np.ndarray]:
    from sgf_deploy.runtime.reconstructor import Reconstructor

    rec = Reconstructor.load(engine, batch=request)
    rec(ref[:request], tar[:request])  # warm-up
    latencies, out = [], np.empty_like(tar)
    start = time.perf_counter()
    for first in range(0, len(tar), request):
        t0 = time.perf_counter()
        out[first:first + request] = rec(ref[first:first + request], tar[first:first + request])
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    rec.runner.close()
    return {"slices": len(tar), "request_slices": request, "wall_s": round(wall, 3),
            "slices_per_s": round(len(tar) / wall, 2), **percentiles(latencies)}, out


def client_worker(url: str, model: str, request: int, data: str, barrier, queue) -> None:  # noqa: ANN001
    """One client process: connect, wait for the others, send every slice, report."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from sgf_deploy.serving.client import connect

    arrays = np.load(data)
    ref, tar = arrays["reference"], arrays["target"]
    rec = connect(url, model=model, batch=request, retries=1)
    out = np.empty_like(tar)
    barrier.wait(timeout=120)
    latencies = []
    start = time.perf_counter()
    for first in range(0, len(tar), request):
        t0 = time.perf_counter()
        out[first:first + request] = rec.infer(ref[first:first + request], tar[first:first + request])
        latencies.append(time.perf_counter() - t0)
    end = time.perf_counter()
    rec.close()
    queue.put({"start": start, "end": end, "latencies": latencies, "out": out})


def served_run(url: str, model: str, clients: int, request: int, data: str, expected: np.ndarray) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(clients), ctx.Queue()
    procs = [ctx.Process(target=client_worker, args=(url, model, request, data, barrier, queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    total = sum(len(r["out"]) for r in reports)
    errors = [float(np.abs(r["out"] - expected).max() / np.abs(expected).max()) for r in reports]
    latencies = [x for r in reports for x in r["latencies"]]
    return {"model": model, "clients": clients, "request_slices": request, "slices": total, "wall_s": round(wall, 3),
            "slices_per_s": round(total / wall, 2), **percentiles(latencies),
            "max_rel_diff_vs_local": max(errors), "all_correct": all(e <= 1e-5 for e in errors),
            "clients_correct": sum(e <= 1e-5 for e in errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=64, help="slices each client sends")
    parser.add_argument("--request", type=int, default=4, help="slices per request")
    parser.add_argument("--clients", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=3, help="local / 1-client rounds, interleaved")
    parser.add_argument("--batching-slices", type=int, default=16, help="slices per client, 1-slice requests")
    parser.add_argument("--engine", default=None, help="engine file [the embedded default]")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "triton.json"))
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    from sgf_deploy.runtime.embedded import default_engine
    from sgf_deploy.serving.repository import TritonExportSettings, export_repository
    from sgf_deploy.serving.server import ServeSettings, TritonServer

    engine = Path(args.engine) if args.engine else default_engine(echo=print)[0]
    record = {"machine": machine_info(), "loadavg_start": loadavg(), "engine": str(engine),
              "command": " ".join(["python", "benchmarks/triton_serving.py"] + sys.argv[1:]),
              "size": args.size, "slices_per_client": args.slices}
    ref, tar = slices(args.slices, args.size)
    work = Path(tempfile.mkdtemp(prefix="sgf-triton-bench-"))
    try:
        data = work / "slices.npz"
        np.savez(data, reference=ref, target=tar)
        few = work / "few.npz"
        np.savez(few, reference=ref[:args.batching_slices], target=tar[:args.batching_slices])
        repo = export_repository(engine, work / "repo").path
        nobatch = export_repository(engine, work / "repo-nb", TritonExportSettings(
            model_name="sgf_mri_nobatch", dynamic_batching=False)).path
        shutil.move(str(nobatch / "sgf_mri_nobatch"), str(repo / "sgf_mri_nobatch"))
        record["serving_plan"] = json.loads((repo / "repository.json").read_text())["serving_plan"]
        ports = free_ports(3)
        settings = ServeSettings(repo=repo, http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2])
        with TritonServer(settings) as server:
            url = server.http_url
            served_run(url, "sgf_mri", 1, args.request, str(data), tar)  # warm-up (result not used)
            record["rounds"] = []
            expected = None
            for r in range(args.rounds):  # local and served back to back: background load hits both
                local, expected = local_run(engine, ref, tar, args.request)
                served = served_run(url, "sgf_mri", 1, args.request, str(data), expected)
                round_record = {"local": local, "served_1_client": served, "loadavg": loadavg(),
                                "served_over_local_throughput": round(served["slices_per_s"] / local["slices_per_s"], 3)}
                print(json.dumps(round_record))
                record["rounds"].append(round_record)
            record["served"] = []
            for clients in counts:
                result = served_run(url, "sgf_mri", clients, args.request, str(data), expected)
                result["loadavg"] = loadavg()
                print(json.dumps(result))
                record["served"].append(result)
            most = max(counts)
            record["dynamic_batching"] = []
            expected_few = expected[:args.batching_slices]
            for model in ("sgf_mri", "sgf_mri_nobatch", "sgf_mri", "sgf_mri_nobatch"):
                result = served_run(url, model, most, 1, str(few), expected_few)
                result["loadavg"] = loadavg()
                print(json.dumps(result))
                record["dynamic_batching"].append(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [r["served_over_local_throughput"] for r in record["rounds"]]
    record["summary"] = {
        "served_over_local_throughput_median": statistics.median(ratios),
        "local_slices_per_s_median": statistics.median(r["local"]["slices_per_s"] for r in record["rounds"]),
        "served_1_client_slices_per_s_median": statistics.median(r["served_1_client"]["slices_per_s"]
                                                                 for r in record["rounds"]),
        "batching_on_slices_per_s": [r["slices_per_s"] for r in record["dynamic_batching"] if r["model"] == "sgf_mri"],
        "batching_off_slices_per_s": [r["slices_per_s"] for r in record["dynamic_batching"]
                                      if r["model"] == "sgf_mri_nobatch"],
    }
    record["loadavg_end"] = loadavg()
    checked = [r["served_1_client"] for r in record["rounds"]] + record["served"] + record["dynamic_batching"]
    record["all_correct"] = all(r["all_correct"] for r in checked)
    record["max_rel_diff_vs_local"] = max(r["max_rel_diff_vs_local"] for r in checked)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["summary"]))
    print(f"wrote {args.out}; every served result within 1e-5 of the local one: {record['all_correct']} "
          f"(max {record['max_rel_diff_vs_local']:.3g})")


if __name__ == "__main__":
    main()
