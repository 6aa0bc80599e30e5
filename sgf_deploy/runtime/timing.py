"""Per-stage wall-clock timings (seconds) for the runtime and ``sgf-deploy run``."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

STAGES = ("read", "pair", "build", "load", "preprocess", "inference", "postprocess", "write")


class Timings(dict):
    """``{stage: seconds}``; :meth:`stage` accumulates, so batches add up to one figure per stage."""

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + (time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + float(seconds)

    def format(self, order: tuple[str, ...] = STAGES) -> str:
        """``"read 12 ms, load 80 ms, ..."`` in the order of the pipeline, then anything else."""
        names = [s for s in order if s in self] + [s for s in self if s not in order]
        return ", ".join(f"{name} {_fmt(self[name])}" for name in names)


def _fmt(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"
