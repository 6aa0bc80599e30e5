"""Reconstruct a paired job with the code ``sgf-deploy run`` uses, and write its derived series.

Reading (:func:`sgf_deploy.data.readers.read_volume` on the series folder in the spool),
pairing/registration, engine selection and reconstruction
(:func:`sgf_deploy.runtime.pipeline.reconstruct_volumes`) and writing
(:func:`sgf_deploy.data.writers.write_volume` with the same derivation text and result key as
``run``) are the runtime's own functions: for the same two series the node's pixels equal
``run``'s. A job that cannot be done (unreadable pixels, mismatched geometry that cannot be
resampled, a non-finite result) fails with the one-line reason; the node goes on.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from ..errors import SgfError
from .journal import Journal
from .settings import NodeSettings
from .spool import Spool

Echo = Callable[[str], None]


class Worker:
    def __init__(self, settings: NodeSettings, spool: Spool, journal: Journal, echo: Echo) -> None:
        self.settings, self.spool, self.journal, self.echo = settings, spool, journal, echo

    def step(self) -> bool:
        """Reconstruct the oldest paired job; False when there was none."""
        job = self.journal.next_job("paired")
        if job is None:
            return False
        try:
            self.process(job)
        except SgfError as exc:
            self.journal.fail_job(job["id"], str(exc))
            self.echo(f"job {job['id']} failed: {exc}")
        except Exception as exc:  # anything else: recorded, and the node goes on
            self.journal.fail_job(job["id"], f"{type(exc).__name__}: {exc}")
            self.echo(f"job {job['id']} failed: {type(exc).__name__}: {exc}")
        return True

    def series_folder(self, series_uid: str) -> Path:
        files = self.journal.series_files(series_uid)
        if not files:
            raise SgfError(f"series {series_uid}: no instances in the journal")
        return Path(files[0]).parent

    def process(self, job) -> None:  # noqa: ANN001 - a journal row
        from ..data.readers import read_volume
        from ..data.writers import write_volume
        from ..runtime.pipeline import derivation_description, reconstruct_volumes, result_key

        start = time.perf_counter()
        notes: list[str] = []
        reference = read_volume(self.series_folder(job["ref_series"]), role="reference")
        target = read_volume(self.series_folder(job["tar_series"]), role="target")
        notes += reference.notices + target.notices
        result = reconstruct_volumes(reference, target, self.settings.run, notice=notes.append,
                                     warn=lambda msg: notes.append(f"warning: {msg}"))
        out = self.spool.result_dir(job["id"])
        write_volume(out, result.image, like=target, overwrite=True, description=derivation_description(result),
                     reference=reference, result_key=result_key(result))
        seconds = time.perf_counter() - start
        self.journal.reconstructed(job["id"], str(out), target.shape[0], seconds, notes,
                                   [str(d) for d in self.settings.forward])
        self.echo(f"job {job['id']}: reconstructed {target.shape[0]} slice(s) of study {job['study_uid']} "
                  f"in {seconds:.2f} s -> {out}")
