"""When a series is complete, and which reference a target is reconstructed with.

* A series is *complete* after ``settle`` seconds without a new instance (DICOM has no
  end-of-series message; scanners and PACS send series in one or more associations).
* A complete reference becomes available to every target of its study. A complete target is
  paired with a complete reference of the same study, preferring one with the same
  FrameOfReferenceUID, then the most recent; while a reference of the study is still arriving it
  waits. A target with no reference after ``pair_timeout`` seconds fails with the reason.
* One job per target series (the journal's ``tar_series`` is unique): a target re-sent later
  does not make a second result.
"""

from __future__ import annotations

import time

from .journal import Journal


def schedule(journal: Journal, settle: float, pair_timeout: float, now: float | None = None) -> bool:
    """One pass; True when something changed."""
    now = time.time() if now is None else now
    changed = False
    with journal.transaction() as db:
        cur = db.execute("UPDATE series SET state='complete' WHERE state='receiving' AND last_at<=?", (now - settle,))
        changed |= cur.rowcount > 0
        cur = db.execute("UPDATE series SET state='reference' WHERE state='complete' AND role='reference'")
        changed |= cur.rowcount > 0
        targets = db.execute("SELECT * FROM series WHERE state='complete' AND role='target' ORDER BY first_at").fetchall()
        for tar in targets:
            changed |= _pair(db, tar, pair_timeout, now)
    return changed


def _pair(db, tar, pair_timeout: float, now: float) -> bool:  # noqa: ANN001 - sqlite3 connection / row
    refs = db.execute("SELECT * FROM series WHERE study_uid=? AND role='reference' AND state IN ('reference', "
                      "'receiving', 'complete')", (tar["study_uid"],)).fetchall()
    ready = [r for r in refs if r["state"] == "reference"]
    if not ready:
        if refs:  # a reference of this study is still arriving
            return False
        if now - tar["last_at"] > pair_timeout:
            db.execute("UPDATE series SET state='failed', reason=? WHERE series_uid=?",
                       (f"no reference series in study {tar['study_uid']} within {pair_timeout:g} s "
                        f"(target '{tar['description'] or tar['protocol']}')", tar["series_uid"]))
            return True
        return False
    ready.sort(key=lambda r: (r["frame_of_reference"] == tar["frame_of_reference"] and bool(r["frame_of_reference"]),
                              r["last_at"]), reverse=True)
    ref = ready[0]
    received = db.execute("SELECT MIN(received_at) FROM instances WHERE series_uid IN (?, ?)",
                          (ref["series_uid"], tar["series_uid"])).fetchone()[0]
    db.execute("INSERT OR IGNORE INTO jobs(study_uid, ref_series, tar_series, state, received_at, paired_at) "
               "VALUES (?,?,?,?,?,?)", (tar["study_uid"], ref["series_uid"], tar["series_uid"], "paired", received, now))
    db.execute("UPDATE series SET state='paired' WHERE series_uid=?", (tar["series_uid"],))
    return True
