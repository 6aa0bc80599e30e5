"""Send results to the destinations (C-STORE SCU), retrying with back-off while one is down.

Each (job, destination) is sent in one association; it is marked done only after every instance
was acknowledged (success or a warning status). A failure (refused connection, rejected
association, a failure status) is recorded with the error and retried after a delay that doubles
from ``retry_min`` to ``retry_max`` seconds; while a destination is backing off, its other jobs
wait too instead of each trying a dead host. A ``kill -9`` between the last acknowledgement and
the journal update re-sends the same instances after the restart: their UIDs are deterministic,
so the destination replaces them rather than keeping a copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .journal import Journal
from .scp import ACCEPTED_SOP_CLASSES, pynetdicom_module
from .settings import Destination, NodeSettings

Echo = Callable[[str], None]
#: Warning statuses of C-STORE (coercion, elements discarded, not validated) count as stored.
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class ForwardError(Exception):
    pass


def send_files(files: list[Path], dest: Destination, calling_ae: str, timeout: float = 30.0) -> None:
    """C-STORE ``files`` to ``dest`` in one association; ForwardError says what went wrong."""
    pynetdicom = pynetdicom_module()
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ae = pynetdicom.AE(ae_title=calling_ae)
    for sop in ACCEPTED_SOP_CLASSES:
        ae.add_requested_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no connection"
        raise ForwardError(f"{dest}: association {why}")
    try:
        for f in files:
            status = assoc.send_c_store(f)
            code = int(status.Status) if status is not None and "Status" in status else None
            if code not in _STORED:
                raise ForwardError(f"{dest}: C-STORE of {f.name} answered "
                                   f"{'nothing (connection lost)' if code is None else f'0x{code:04X}'}")
    finally:
        if assoc.is_established:
            assoc.release()


class Forwarder:
    def __init__(self, settings: NodeSettings, journal: Journal, echo: Echo,
                 send: Callable[[list[Path], Destination, str], None] = send_files) -> None:
        self.settings, self.journal, self.echo, self.send = settings, journal, echo, send
        self.destinations = {str(d): d for d in settings.forward}
        self.blocked_until: dict[str, float] = {}

    def backoff(self, attempts: int) -> float:
        return min(self.settings.retry_max, self.settings.retry_min * 2 ** max(attempts - 1, 0))

    def step(self) -> bool:
        """Send every due (job, destination) once; False when nothing was due."""
        now = time.time()
        rows = [r for r in self.journal.due_forwards(now) if self.blocked_until.get(r["destination"], 0) <= now]
        for row in rows:
            name = row["destination"]
            if self.blocked_until.get(name, 0) > time.time():
                continue  # went down earlier in this pass
            dest = self.destinations.get(name)
            if dest is None:  # a destination dropped from --forward since: keep it queued, say so
                self.journal.forward_failed(row["job_id"], name, "not a --forward destination of this run",
                                            time.time() + self.settings.retry_max)
                continue
            files = sorted(Path(row["output"]).glob("*.dcm"))
            try:
                if not files:
                    raise ForwardError(f"result folder {row['output']} holds no DICOM files")
                self.send(files, dest, self.settings.ae_title)
            except Exception as exc:  # ForwardError, socket and pynetdicom errors alike
                delay = self.backoff(row["attempts"] + 1)
                self.blocked_until[name] = time.time() + delay
                self.journal.forward_failed(row["job_id"], name, str(exc), time.time() + delay)
                self.echo(f"job {row['job_id']} -> {name}: {exc}; retry in {delay:.0f} s")
                continue
            self.blocked_until.pop(name, None)
            self.journal.forward_done(row["job_id"], name)
            self.echo(f"job {row['job_id']}: forwarded {len(files)} instance(s) to {name}")
        return bool(rows)
