"""Finding checkpoints without torch: the embedded defaults, and the one resolver that finds the
checkpoint an artefact was made from by its SHA-256.

Every stage that needs "the checkpoint this engine / ONNX file came from" (validate, bench,
build-time parity, the runtime's cached default) calls :func:`resolve_checkpoint`, so the rule is
the same everywhere: an explicit path must have the recorded SHA-256; otherwise the recorded
paths are tried, then the embedded default; a match is by SHA-256, never by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from ..artifacts import sha256_file
from ..errors import CheckpointError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULTS_DIR = ASSETS / "default"
DEFAULT_CHECKPOINT = DEFAULTS_DIR / "lite-recon4x-t1-t2.pt"


def default_checkpoint() -> Path:
    """The embedded ``lite`` recon4x T1->T2 checkpoint shipped inside the package."""
    if not DEFAULT_CHECKPOINT.is_file():
        raise CheckpointError(f"{DEFAULT_CHECKPOINT}: the embedded default checkpoint is missing from this install")
    return DEFAULT_CHECKPOINT


def embedded_checkpoints() -> list[Path]:
    """Every checkpoint shipped inside the package (the defaults), the default one first."""
    found = [DEFAULT_CHECKPOINT, *sorted(DEFAULTS_DIR.glob("*.pt"))]
    return [p for p in dict.fromkeys(found) if p.is_file()]


def candidate_paths(recorded: Iterable[object], bases: Iterable[Path] = ()) -> list[Path]:
    """Recorded path values as existing-or-not paths: absolute ones as they are, relative ones
    against the working directory and each of ``bases`` (e.g. the engine's folder and its parent)."""
    out: list[Path] = []
    seen: set[Path] = set()
    for value in recorded:
        if not value or not isinstance(value, (str, os.PathLike)):
            continue
        p = Path(value)
        for q in ([p] if p.is_absolute() else [(base / p).resolve() for base in (Path.cwd(), *bases)]):
            if q not in seen:
                seen.add(q)
                out.append(q)
    return out


def resolve_checkpoint(want_sha256: str | None, *, explicit: str | os.PathLike | None = None,
                       recorded: Iterable[object] = (), bases: Iterable[Path] = (),
                       what: str = "this artefact") -> tuple[Path, str, str]:
    """(checkpoint path, sha256, how it was found) for an artefact that records ``want_sha256``.

    ``explicit`` (``--ckpt``) must match the recorded SHA-256 when one is recorded (validating
    against another model proves nothing). Without it: the ``recorded`` paths, then the embedded
    defaults, by SHA-256. Errors are one line naming what was tried."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        sha = sha256_file(path)
        if want_sha256 and sha != want_sha256:
            raise CheckpointError(
                f"{path}: SHA-256 {sha[:12]}... is not the checkpoint {what} was built from ({want_sha256[:12]}...); "
                "validating against another model proves nothing: pass the checkpoint it was exported from"
            )
        return path, sha, "--ckpt"
    if not want_sha256:
        raise CheckpointError(f"{what}: records no checkpoint SHA-256; pass --ckpt")
    recorded = list(recorded)
    tried = []
    for path in candidate_paths(recorded, bases):
        if path.is_file():
            tried.append(str(path))
            if sha256_file(path) == want_sha256:
                return path, want_sha256, "recorded path (SHA-256 matches)"
    for path in embedded_checkpoints():
        if sha256_file(path) == want_sha256:
            return path, want_sha256, "embedded default (SHA-256 matches)"
    where = f" (found {', '.join(tried)} with another SHA-256)" if tried else ""
    shown = next((str(v) for v in recorded if v), "no path recorded")
    raise CheckpointError(
        f"{what}: the checkpoint it was built from ({shown}, SHA-256 {want_sha256[:12]}...) was not found{where}; "
        "pass --ckpt PATH"
    )
