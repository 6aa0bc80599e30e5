"""What ``validate_engine`` is asked to do: one settings object, defaults in :mod:`sgf_deploy.defaults`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from .. import defaults as D


@dataclass(frozen=True)
class ValidateSettings:
    """Options of one validation (``sgf-deploy validate``).

    ``data``: "sim" (the simulator's held-out test split for the engine's pair/task) or a folder
    of the user's pairs; ``n``: slices (``None``: 32 for sim, all of a folder). ``report``: the
    report folder (``reports/<engine stem>/`` when ``None``). ``min_parity_psnr`` /
    ``max_delta_psnr`` override the precision's gate. ``update``: record the verdict in the
    engine's manifest."""

    ckpt: str | os.PathLike | None = None
    data: str = D.DATA
    n: int | None = None
    seed: int = D.SEED
    min_parity_psnr: float | None = None
    max_delta_psnr: float | None = None
    report: str | os.PathLike | None = None
    overwrite: bool = False
    layerwise: bool = False
    batch: int | None = None
    threads: int | None = None
    update: bool = True

    def replace(self, **changes: Any) -> "ValidateSettings":
        return dataclasses.replace(self, **changes)
