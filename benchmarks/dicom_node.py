"""DICOM node under load and faults (issue 16): one node process, three phases, one JSON.

    python benchmarks/dicom_node.py [--size 192] [--slices 16] [--out benchmarks/results/dicom_node.json]

1. **load**: ``--studies`` studies (a T1 reference and a degraded T2 target series of ``--slices``
   slices each, from the simulator) pushed by ``--senders`` concurrent DCMTK ``storescu``
   processes; every result must arrive at a DCMTK ``storescp`` destination (``--unique-filenames``,
   so a duplicate send is a second file): results, duplicates, lost, throughput (input slices per
   second from the first C-STORE to the last result forwarded) and per-study latency (first
   instance received -> result acknowledged by the destination; reconstruction time alone).
2. **destination down**: the destination is stopped, ``--down-studies`` studies are sent, the
   destination stays down ``--down-seconds`` and comes back on the same port: everything must
   arrive, once; how long after its return the queue drained.
3. **memory**: after phases 1-2 (the node warm), at least ``--rss-slices`` more input slices;
   the node's peak RSS (VmHWM) before and after them (growth in %), and VmRSS sampled throughout.

Loopback only, free ports, every process stopped at the end. Uses the embedded default engine
from ``$SGF_DEPLOY_CACHE`` (built on first use). Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.bench.machine import loadavg, machine_info  # noqa: E402
from sgf_deploy.dicom.status import collect  # noqa: E402
from sgf_deploy.dicom.synthetic import write_study  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, step: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


def proc_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Storescp:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.proc = folder, port, None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(["storescp", "--unique-filenames", "--output-directory", str(self.folder),
                                      "-aet", "PACS", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 10, "storescp")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def files(self) -> list[Path]:
        return [p for p in self.folder.iterdir() if p.is_file()]


def make_studies(root: Path, first: int, count: int, slices: int, size: int) -> list[list[Path]]:
    out = []
    for seed in range(first, first + count):
        ref, tar = write_study(root / f"study{seed:03d}", slices=slices, size=size, seed=1000 + seed)
        out.append(sorted(ref.glob("*.dcm")) + sorted(tar.glob("*.dcm")))
    return out


def push(studies: list[list[Path]], port: int, senders: int) -> dict:
    """Each study in one storescu association, ``senders`` at a time; returns timing and failures."""
    queue = list(enumerate(studies))
    lock = threading.Lock()
    failures: list[str] = []

    def sender(k: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                i, files = queue.pop(0)
            proc = subprocess.run(["storescu", "-aet", f"SCANNER{k}", "-aec", "SGF_DEPLOY", "127.0.0.1", str(port),
                                   *map(str, files)], capture_output=True, text=True)
            if proc.returncode != 0:
                with lock:
                    failures.append(f"study {i}: {proc.stderr.strip()[-300:]}")

    start = time.time()
    threads = [threading.Thread(target=sender, args=(k,)) for k in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"started": start, "seconds": time.time() - start, "failures": failures}


def dest_summary(dest: Storescp, expected: int) -> dict:
    import pydicom

    files = dest.files()
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    unique = len(set(uids))
    return {"files": len(files), "unique_instances": unique, "expected": expected,
            "duplicates": len(files) - unique, "lost": expected - unique}


def jobs_forwarded(spool: Path) -> int:
    return collect(spool, recent=0)["jobs"].get("forwarded", 0)


def latencies(spool: Path, ids: set[int] | None = None) -> dict:
    import sqlite3

    db = sqlite3.connect(f"file:{spool / 'journal.sqlite'}?mode=ro", uri=True)
    rows = db.execute("SELECT j.id, j.received_at, j.forwarded_at, j.recon_seconds, j.paired_at, "
                      "(SELECT MAX(received_at) FROM instances i WHERE i.series_uid IN (j.ref_series, j.tar_series)) "
                      "FROM jobs j WHERE j.state='forwarded'").fetchall()
    db.close()
    rows = [r for r in rows if ids is None or r[0] in ids]
    total = [r[2] - r[1] for r in rows]
    after_last = [r[2] - r[5] for r in rows]
    recon = [r[3] for r in rows]

    def stats(v: list[float]) -> dict:
        return {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)} if v else {}

    return {"n": len(rows), "first_instance_to_forwarded_s": stats(total),
            "last_instance_to_forwarded_s": stats(after_last), "reconstruction_s": stats(recon),
            "first_received": min(r[1] for r in rows) if rows else None,
            "last_forwarded": max(r[2] for r in rows) if rows else None}


def phase_load(args, studies, port: int, spool: Path, dest: Storescp) -> dict:  # noqa: ANN001 - argparse
    sent = push(studies, port, args.senders)
    wait_for(lambda: jobs_forwarded(spool) >= len(studies), 1800, "the load phase to be forwarded")
    lat = latencies(spool)
    span = lat["last_forwarded"] - sent["started"]
    return {
        "studies": len(studies), "senders": args.senders, "send": {k: v for k, v in sent.items() if k != "started"},
        "results": dest_summary(dest, len(studies) * args.slices), "latency": lat,
        "seconds_first_send_to_last_forwarded": round(span, 2),
        "throughput_input_slices_per_s": round(len(studies) * 2 * args.slices / span, 2),
        "throughput_studies_per_min": round(len(studies) / span * 60, 2),
    }


def phase_down(args, studies, done: int, port: int, spool: Path, dest: Storescp) -> dict:  # noqa: ANN001
    """Destination stopped, ``studies`` sent, destination back after ``--down-seconds``."""
    dest.stop()
    down_start = time.time()
    sent = push(studies, port, args.senders)
    time.sleep(max(0.0, args.down_seconds - (time.time() - down_start)))
    pending = collect(spool, recent=0)["pending_forwards"]
    dest.start()
    back = time.time()
    total = done + len(studies)
    wait_for(lambda: jobs_forwarded(spool) >= total, 600, "the queue to drain")
    return {
        "studies": len(studies), "down_seconds": round(back - down_start, 1),
        "send": {k: v for k, v in sent.items() if k != "started"},
        "queued_while_down": len(pending), "max_attempts_while_down": max((p["attempts"] for p in pending), default=0),
        "drained_seconds_after_back": round(time.time() - back, 2),
        "results": dest_summary(dest, total * args.slices),
    }


def phase_memory(args, studies, done: int, port: int, spool: Path, dest: Storescp, pid: int,  # noqa: ANN001
                 samples: list[tuple[float, int]]) -> dict:
    """Peak RSS before and after ``studies`` more went through the (warm) node."""
    hwm_warm = proc_kb(pid, "VmHWM")
    push(studies, port, args.senders)
    total = done + len(studies)
    wait_for(lambda: jobs_forwarded(spool) >= total, 1800, "the memory phase")
    hwm_end = proc_kb(pid, "VmHWM")
    return {
        "input_slices_before": done * 2 * args.slices, "input_slices_measured": len(studies) * 2 * args.slices,
        "peak_rss_mb_before": round(hwm_warm / 1024, 1),
        "peak_rss_mb_end": round(hwm_end / 1024, 1),
        "peak_rss_growth_percent": round(100.0 * (hwm_end - hwm_warm) / hwm_warm, 2),
        "rss_mb_samples": [round(kb / 1024, 1) for _, kb in samples[:: max(1, len(samples) // 60)]],
        "results": dest_summary(dest, total * args.slices),
    }


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--down-studies", type=int, default=5)
    ap.add_argument("--down-seconds", type=float, default=60.0)
    ap.add_argument("--rss-slices", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dicom_node.json"))
    return ap.parse_args()


def versions() -> dict:
    import pydicom
    import pynetdicom

    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout.splitlines()
    return {"pynetdicom": pynetdicom.__version__, "pydicom": pydicom.__version__, "dcmtk": dcmtk[0] if dcmtk else None}


def main() -> None:
    args = parse_args()
    for tool in ("storescu", "storescp"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: install DCMTK (apt-get install dcmtk)")
    work = Path(tempfile.mkdtemp(prefix="sgf-dicom-bench-"))
    extra = -(-args.rss_slices // (2 * args.slices))
    record = {"benchmark": "dicom_node", "machine": machine_info(), "load_start": loadavg(), "args": vars(args),
              "versions": versions(),
              "image": f"{args.slices} slices of {args.size}x{args.size} per series, 2 series per study"}
    n_load, n_down = args.studies, args.down_studies
    print(f"writing {n_load + n_down + extra} studies under {work} ...", flush=True)
    studies = make_studies(work / "in", 0, n_load + n_down + extra, args.slices, args.size)
    dest = Storescp(work / "pacs", free_port())
    dest.start()
    spool, port = work / "spool", free_port()
    cmd = [sys.executable, "-m", "sgf_deploy.cli", "dicom", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--spool", str(spool), "--forward", f"PACS@127.0.0.1:{dest.port}", "--settle", str(args.settle),
           "--retry-min", "1", "--retry-max", "10"] + (["--threads", str(args.threads)] if args.threads else [])
    log = open(work / "node.log", "w")
    node = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            kb = proc_kb(node.pid, "VmRSS")
            if kb:
                samples.append((time.time(), kb))

    try:
        wait_for(lambda: "listening as" in (work / "node.log").read_text(), 300, "the node to listen")
        threading.Thread(target=sample, daemon=True).start()
        record["load"] = phase_load(args, studies[:n_load], port, spool, dest)
        print("load:", json.dumps(record["load"]["results"]), f"{record['load']['throughput_input_slices_per_s']} "
              "input slices/s", flush=True)
        record["destination_down"] = phase_down(args, studies[n_load:n_load + n_down], n_load, port, spool, dest)
        print("destination down:", json.dumps(record["destination_down"]), flush=True)
        record["memory"] = phase_memory(args, studies[n_load + n_down:], n_load + n_down, port, spool, dest,
                                        node.pid, samples)
        record["latency_all"] = latencies(spool)
        print("memory:", json.dumps({k: v for k, v in record["memory"].items() if k != "rss_mb_samples"}), flush=True)
    finally:
        stop_sampling.set()
        if node.poll() is None:
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
        dest.stop()
        log.close()
    record["load_end"] = loadavg()
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
