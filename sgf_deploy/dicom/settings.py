"""Settings of the DICOM node; defaults in :mod:`sgf_deploy.defaults`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .. import defaults as D
from ..errors import InputError
from ..runtime.pipeline import RunSettings

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars, no backslash


@dataclass(frozen=True)
class Destination:
    """A C-STORE destination ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def check_ae_title(value: str, what: str) -> str:
    value = value.strip()
    if not _AE_TITLE.match(value):
        raise InputError(f"{what} '{value}': not a DICOM AE title (1-16 printable characters, no backslash)")
    return value


def parse_destination(text: str) -> Destination:
    """``PACS@10.0.0.5:104`` -> :class:`Destination`; one clear line for anything else."""
    m = re.match(r"^([^@]+)@(\[[^\]]+\]|[^:@]+):(\d+)$", text.strip())
    if not m:
        raise InputError(f"--forward '{text}': expected AET@HOST:PORT, e.g. PACS@192.0.2.10:104")
    port = int(m.group(3))
    if not 0 < port < 65536:
        raise InputError(f"--forward '{text}': port {port} is not 1-65535")
    return Destination(check_ae_title(m.group(1), "--forward"), m.group(2).strip("[]"), port)


@dataclass(frozen=True)
class Allowed:
    """One ``--allow-ae`` entry: ``AET``, ``AET@HOST`` or ``@HOST`` (``*`` matches any)."""

    ae_title: str = "*"
    host: str = "*"

    @classmethod
    def parse(cls, text: str) -> "Allowed":
        aet, _, host = text.strip().partition("@")
        aet = aet.strip() or "*"
        if aet != "*":
            check_ae_title(aet, "--allow-ae")
        return cls(aet, host.strip() or "*")

    def admits(self, ae_title: str, host: str) -> bool:
        return self.ae_title in ("*", ae_title.strip()) and self.host in ("*", host)


@dataclass(frozen=True)
class NodeSettings:
    """Everything ``sgf-deploy dicom serve`` needs; ``run`` is passed to ``reconstruct_volumes``."""

    spool: Path = D.DICOM_SPOOL
    port: int = D.DICOM_PORT
    host: str = "0.0.0.0"
    ae_title: str = D.DICOM_AE_TITLE
    forward: tuple[Destination, ...] = ()
    allow: tuple[Allowed, ...] = ()  # empty: any calling AE from any host
    ref_match: str = D.DICOM_REF_MATCH
    target_match: str = D.DICOM_TARGET_MATCH
    rules_file: str | os.PathLike | None = None
    settle: float = D.DICOM_SETTLE_S
    pair_timeout: float = D.DICOM_PAIR_TIMEOUT_S
    retry_min: float = D.DICOM_RETRY_MIN_S
    retry_max: float = D.DICOM_RETRY_MAX_S
    poll: float = D.DICOM_POLL_S
    run: RunSettings = field(default_factory=RunSettings)
