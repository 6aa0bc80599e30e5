"""The node's journal (SQLite, WAL, ``synchronous=FULL``): what was received and where each
study stands.

Tables:

* ``instances`` -- one row per received SOP instance (its file in the spool);
* ``series`` -- ``receiving`` -> ``complete`` (settled) -> ``paired`` (a target in a job) /
  ``reference`` (a reference, usable by every target of its study) / ``ignored`` (matches no
  rule) / ``failed`` (with ``reason``; an instance of it received again starts a new try);
* ``jobs`` -- one per target series (``tar_series`` is unique, so a target is reconstructed and
  forwarded once): ``paired`` -> ``reconstructed`` -> ``forwarded``, or ``failed`` with ``reason``;
* ``forwards`` -- per job and destination: ``pending`` (with attempts, next try, last error) ->
  ``done``;
* ``quarantine`` -- received data that could not be used, with the reason.

Every change is one transaction, committed (and synced) before the caller goes on; a restart
resumes from whatever the journal says (see :meth:`Journal.recover`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances(
    sop_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, series_uid TEXT NOT NULL, sop_class TEXT,
    path TEXT NOT NULL, calling_ae TEXT, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE TABLE IF NOT EXISTS series(
    series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, description TEXT, protocol TEXT,
    frame_of_reference TEXT, role TEXT, first_at REAL NOT NULL, last_at REAL NOT NULL,
    state TEXT NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY AUTOINCREMENT, study_uid TEXT NOT NULL, ref_series TEXT NOT NULL,
    tar_series TEXT NOT NULL UNIQUE, state TEXT NOT NULL, reason TEXT, received_at REAL,
    paired_at REAL, reconstructed_at REAL, forwarded_at REAL, output TEXT, slices INTEGER,
    recon_seconds REAL, notes TEXT);
CREATE TABLE IF NOT EXISTS forwards(
    job_id INTEGER NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,
    next_at REAL NOT NULL, last_error TEXT, done_at REAL, PRIMARY KEY(job_id, destination));
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT, reason TEXT NOT NULL, calling_ae TEXT, at REAL NOT NULL);
"""

JOURNAL_NAME = "journal.sqlite"


class Journal:
    """Thread-safe access to the journal of one spool (one connection, one lock)."""

    def __init__(self, spool: Path, *, readonly: bool = False) -> None:
        self.path = Path(spool) / JOURNAL_NAME
        if readonly:
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False,
                                       isolation_level=None, timeout=30)
        else:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------------------- receiving
    def add_instance(self, info: dict[str, Any], role: str | None, calling_ae: str, now: float | None = None) -> None:
        """Record a stored instance and touch its series (a new series gets its ``role``)."""
        now = time.time() if now is None else now
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO instances VALUES (?,?,?,?,?,?,?)",
                       (info["sop_uid"], info["study_uid"], info["series_uid"], info["sop_class"], info["path"],
                        calling_ae, now))
            row = db.execute("SELECT state, role FROM series WHERE series_uid=?", (info["series_uid"],)).fetchone()
            if row is None:
                state, reason = {
                    None: ("ignored", "matches no reference or target rule"),
                    "ambiguous": ("failed", "matches both the reference and the target rules"),
                }.get(role, ("receiving", None))
                db.execute("INSERT INTO series VALUES (?,?,?,?,?,?,?,?,?,?)",
                           (info["series_uid"], info["study_uid"], info.get("description", ""),
                            info.get("protocol", ""), info.get("frame_of_reference", ""), role, now, now, state, reason))
            elif self._retry(db, row, info["series_uid"]):  # a failed series or job sent again: a new try
                db.execute("UPDATE series SET last_at=?, state='receiving', reason=NULL WHERE series_uid=?",
                           (now, info["series_uid"]))
                db.execute("DELETE FROM jobs WHERE tar_series=? AND state='failed'", (info["series_uid"],))
            elif row["state"] == "complete":  # a late instance before pairing: wait for it to settle again
                db.execute("UPDATE series SET last_at=?, state='receiving' WHERE series_uid=?", (now, info["series_uid"]))
            elif row["state"] in ("paired", "reference"):
                db.execute("UPDATE series SET last_at=?, reason=? WHERE series_uid=?",
                           (now, "instance(s) arrived after the series was used; not in the result", info["series_uid"]))
            else:
                db.execute("UPDATE series SET last_at=? WHERE series_uid=?", (now, info["series_uid"]))

    @staticmethod
    def _retry(db: sqlite3.Connection, row: sqlite3.Row, series_uid: str) -> bool:
        if row["state"] == "failed":
            return row["role"] in ("reference", "target")
        failed_job = db.execute("SELECT 1 FROM jobs WHERE tar_series=? AND state='failed'", (series_uid,)).fetchone()
        return row["state"] == "paired" and failed_job is not None

    def quarantine(self, path: str | None, reason: str, calling_ae: str = "") -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO quarantine(path, reason, calling_ae, at) VALUES (?,?,?,?)",
                       (path, reason, calling_ae, time.time()))

    def known_paths(self) -> set[str]:
        return {r["path"] for r in self.query("SELECT path FROM instances")}

    # -------------------------------------------------------------------------------- queries
    def series_files(self, series_uid: str) -> list[str]:
        return [r["path"] for r in self.query("SELECT path FROM instances WHERE series_uid=? ORDER BY path",
                                              (series_uid,))]

    def job(self, job_id: int) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM jobs WHERE id=?", (job_id,))
        return rows[0] if rows else None

    def next_job(self, state: str) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM jobs WHERE state=? ORDER BY id LIMIT 1", (state,))
        return rows[0] if rows else None

    def set_job(self, job_id: int, **values: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in values)
        with self.transaction() as db:
            db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*values.values(), job_id))

    def fail_job(self, job_id: int, reason: str) -> None:
        self.set_job(job_id, state="failed", reason=reason)

    def reconstructed(self, job_id: int, output: str, slices: int, seconds: float, notes: list[str],
                      destinations: list[str]) -> None:
        """The result is on disk: record it and queue it for every destination, in one transaction."""
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE jobs SET state=?, output=?, slices=?, recon_seconds=?, reconstructed_at=?, notes=? "
                       "WHERE id=?", ("reconstructed" if destinations else "done", output, slices, seconds, now,
                                      json.dumps(notes), job_id))
            for dest in destinations:
                db.execute("INSERT OR IGNORE INTO forwards VALUES (?,?,?,?,?,?,?)",
                           (job_id, dest, "pending", 0, now, None, None))

    def due_forwards(self, now: float) -> list[sqlite3.Row]:
        return self.query("SELECT f.*, j.output FROM forwards f JOIN jobs j ON j.id=f.job_id "
                          "WHERE f.state='pending' AND f.next_at<=? ORDER BY f.next_at, f.job_id", (now,))

    def forward_done(self, job_id: int, destination: str) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("UPDATE forwards SET state='done', done_at=?, attempts=attempts+1, last_error=NULL "
                       "WHERE job_id=? AND destination=?", (now, job_id, destination))
            left = db.execute("SELECT COUNT(*) FROM forwards WHERE job_id=? AND state!='done'", (job_id,)).fetchone()[0]
            if left == 0:
                db.execute("UPDATE jobs SET state='forwarded', forwarded_at=? WHERE id=?", (now, job_id))

    def forward_failed(self, job_id: int, destination: str, error: str, next_at: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE forwards SET attempts=attempts+1, last_error=?, next_at=? WHERE job_id=? AND destination=?",
                       (error, next_at, job_id, destination))

    def attempts(self, job_id: int, destination: str) -> int:
        rows = self.query("SELECT attempts FROM forwards WHERE job_id=? AND destination=?", (job_id, destination))
        return int(rows[0]["attempts"]) if rows else 0
