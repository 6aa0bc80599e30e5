"""``sgf-deploy dicom status``: the queue, recent results with timings, and failures (read-only)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from .journal import JOURNAL_NAME, Journal


def _when(t: float | None) -> str:
    return _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def collect(spool: str | Path, recent: int = 10) -> dict[str, Any]:
    """Everything the status command prints, as a dict (also what the benchmark reads)."""
    spool = Path(spool)
    if not (spool / JOURNAL_NAME).is_file():
        raise InputError(f"{spool}: no DICOM node journal here ({JOURNAL_NAME} missing); is this the --spool of a node?")
    journal = Journal(spool, readonly=True)
    try:
        series = {r["state"]: r["n"] for r in journal.query("SELECT state, COUNT(*) AS n FROM series GROUP BY state")}
        jobs = {r["state"]: r["n"] for r in journal.query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
        instances = journal.query("SELECT COUNT(*) AS n FROM instances")[0]["n"]
        pending = [dict(r) for r in journal.query(
            "SELECT job_id, destination, attempts, next_at, last_error FROM forwards WHERE state='pending' "
            "ORDER BY job_id")]
        done = [dict(r) for r in journal.query(
            "SELECT * FROM jobs WHERE state IN ('forwarded', 'done', 'reconstructed') "
            "ORDER BY COALESCE(forwarded_at, reconstructed_at) DESC LIMIT ?", (recent,))]
        failed_jobs = [dict(r) for r in journal.query("SELECT id, study_uid, tar_series, reason FROM jobs "
                                                      "WHERE state='failed' ORDER BY id DESC")]
        failed_series = [dict(r) for r in journal.query("SELECT series_uid, study_uid, description, reason FROM series "
                                                        "WHERE state='failed' ORDER BY last_at DESC")]
        quarantined = [dict(r) for r in journal.query("SELECT path, reason, calling_ae, at FROM quarantine "
                                                      "ORDER BY id DESC")]
    finally:
        journal.close()
    return {"spool": str(spool), "instances": instances, "series": series, "jobs": jobs, "pending_forwards": pending,
            "recent": done, "failed_jobs": failed_jobs, "failed_series": failed_series, "quarantine": quarantined}


def render(info: dict[str, Any]) -> list[str]:
    s, j = info["series"], info["jobs"]
    lines = [f"spool:      {info['spool']}",
             f"received:   {info['instances']} instance(s); series receiving {s.get('receiving', 0)}, "
             f"complete {s.get('complete', 0)}, reference {s.get('reference', 0)}, paired {s.get('paired', 0)}, "
             f"ignored {s.get('ignored', 0)}, failed {s.get('failed', 0)}",
             f"jobs:       paired (queued) {j.get('paired', 0)}, reconstructed (to forward) {j.get('reconstructed', 0)}, "
             f"forwarded {j.get('forwarded', 0)}, done (no destination) {j.get('done', 0)}, failed {j.get('failed', 0)}"]
    if info["pending_forwards"]:
        lines.append("forwarding:")
        for f in info["pending_forwards"]:
            err = f" -- last error: {f['last_error']}" if f["last_error"] else ""
            lines.append(f"  job {f['job_id']} -> {f['destination']}: {f['attempts']} attempt(s), next {_when(f['next_at'])}{err}")
    if info["recent"]:
        lines.append("recent results:")
        for r in info["recent"]:
            end = r["forwarded_at"] or r["reconstructed_at"]
            latency = f", {end - r['received_at']:.1f} s after the first instance" if end and r["received_at"] else ""
            lines.append(f"  job {r['id']} {r['state']} {_when(end)}: study {r['study_uid']}, {r['slices']} slice(s), "
                         f"reconstruction {r['recon_seconds'] or 0:.2f} s{latency} -> {r['output']}")
            warnings = [n for n in json.loads(r["notes"] or "[]") if n.startswith("warning:")]
            lines += [f"    {w}" for w in warnings]
    for title, rows, key in (("failed jobs:", info["failed_jobs"], "tar_series"),
                             ("failed series:", info["failed_series"], "series_uid")):
        if rows:
            lines.append(title)
            lines += [f"  {r[key]} (study {r['study_uid']}): {r['reason']}" for r in rows]
    if info["quarantine"]:
        lines.append("quarantined:")
        lines += [f"  {_when(q['at'])} from {q['calling_ae'] or '?'}: {q['reason']} [{q['path'] or 'not kept'}]"
                  for q in info["quarantine"]]
    return lines
