"""The node: one process with the SCP (pynetdicom's threads) and three polling loops (scheduler,
worker, forwarder) over the journal.

Start-up resumes whatever was in flight: stale temporaries are removed, instances that reached
the spool but not the journal (a ``kill -9`` between the two; the sender was never told success)
are recorded, paired jobs are reconstructed, reconstructed ones forwarded. Stopping (SIGTERM,
SIGINT) closes the listening socket first; everything already answered is on disk, so a stop at
any moment -- or a crash -- loses nothing.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
import time
from typing import Callable

from ..errors import SgfError
from .forwarder import Forwarder
from .journal import Journal
from .rules import make_rules
from .scheduler import schedule
from .scp import StoreHandler, describe_instance, start_scp
from .settings import NodeSettings
from .spool import Spool
from .worker import Worker

Echo = Callable[[str], None]


def stderr_echo(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} sgf-deploy dicom: {msg}", file=sys.stderr, flush=True)


class PollingLoop(threading.Thread):
    """Call ``step`` until stopped; sleep ``interval`` when it had nothing to do. An exception is
    reported and the loop goes on (one bad job must not stop the node)."""

    def __init__(self, name: str, step: Callable[[], bool], interval: float, stop: threading.Event, echo: Echo) -> None:
        super().__init__(name=name, daemon=True)
        self.step, self.interval, self.stop_event, self.echo = step, interval, stop, echo

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # the journal is locked or a disk error: report, wait, retry
                self.echo(f"{self.name}: {type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                self.stop_event.wait(self.interval)


def recover(spool: Spool, journal: Journal, rules, echo: Echo) -> int:  # noqa: ANN001 - Rules
    """Record instances that are in the spool but not in the journal; remove stale temporaries."""
    import pydicom

    for tmp in spool.tmp.glob("*.tmp"):  # writes cut short by a stop: their C-STORE was never answered
        tmp.unlink(missing_ok=True)
    known = journal.known_paths()
    added = 0
    for path in spool.stored_instances():
        if str(path) in known:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            info = describe_instance(ds, need_pixels=False)
        except Exception as exc:  # noqa: BLE001 - a damaged file: quarantine it, keep going
            journal.quarantine(str(path), f"found in the spool at start-up but unreadable: {exc}")
            continue
        info["path"] = str(path)
        journal.add_instance(info, rules.role(ds), "(recovered)")
        added += 1
    if added:
        echo(f"recovered {added} instance(s) stored before a stop but not yet in the journal")
    return added


class Node:
    def __init__(self, settings: NodeSettings, echo: Echo = stderr_echo) -> None:
        self.settings, self.echo = settings, echo
        self.rules = make_rules(settings.ref_match, settings.target_match, settings.rules_file)
        self.spool = Spool(settings.spool).create()
        self._lock = self._lock_spool()
        self.journal = Journal(self.spool.root)
        self.stop_event = threading.Event()
        self.server = None
        self.loops: list[PollingLoop] = []

    def _lock_spool(self) -> int:
        """One node per spool: an exclusive lock the kernel releases when the process dies (kill -9 too)."""
        fd = os.open(self.spool.root / "node.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SgfError(f"{self.spool.root}: spool in use by another node (pid {holder}); "
                           "one node per --spool") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def check_engine(self) -> str:
        """Load the engine ``run`` would use now (builds the embedded default once): a node that
        cannot reconstruct refuses to start instead of accepting studies it would fail."""
        from ..runtime.pipeline import choose_engine

        run = self.settings.run
        sel = choose_engine(run, self.echo, getattr(run, "task", None))  # what reconstruct_volumes will pick
        rec = sel.reconstructor
        if not rec.trust.ok:
            raise SgfError(f"{rec.engine_path}: {rec.trust.label}; the DICOM node runs validated engines only")
        return f"{rec.trust.label}: {rec.engine_path} [{rec.backend} {rec.precision.upper()}, {rec.device}]"

    def start(self) -> None:
        s = self.settings
        self.echo(f"engine {self.check_engine()}")
        recover(self.spool, self.journal, self.rules, self.echo)
        self.server = start_scp(s, StoreHandler(self.spool, self.journal, self.rules, self.echo), self.echo)
        steps = [("scheduler", lambda: schedule(self.journal, s.settle, s.pair_timeout)),
                 ("worker", Worker(s, self.spool, self.journal, self.echo).step),
                 ("forwarder", Forwarder(s, self.journal, self.echo).step)]
        self.loops = [PollingLoop(name, step, s.poll, self.stop_event, self.echo) for name, step in steps]
        for loop in self.loops:
            loop.start()
        forward = ", ".join(str(d) for d in s.forward) or "none (results stay in the spool)"
        self.echo(f"listening as {s.ae_title} on {s.host}:{s.port}; spool {self.spool.root}; "
                  f"rules {self.rules.describe()}; settle {s.settle:g} s; forward to {forward}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.stop_event.set()
        for loop in self.loops:
            loop.join(timeout=30)
        self.journal.close()
        os.close(self._lock)

    def serve_forever(self) -> None:
        """Start, then run until SIGTERM/SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        self.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.echo("stopping: no new associations; the spool and journal are consistent")
            self.stop()
