"""What each study measures and how: the settings of ``run_backends`` and ``run_scaling``.

The defaults here are the only place the studies' defaults are written: ``sgf-deploy bench``
reads its option defaults from these classes. Imports only the standard library (the CLI loads
this module to print its help).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

from ..errors import InputError

#: Engine input sizes must be multiples of this (the engines see padded slices).
SIZE_STEP = 8


@dataclass(frozen=True)
class BackendsBenchSettings:
    """The backend comparison (:func:`sgf_deploy.bench.backends.run.run_backends`).

    ``engines``: engine files to compare with PyTorch eager FP32; with none, or with
    ``all_backends``, the checkpoint is exported, calibrated and built for every backend/precision
    this machine can run, into ``workdir``. ``ckpt``: the checkpoint (``None``: the embedded
    default, else an untrained ``lite`` network; with ``engines`` alone, the one they were built
    from)."""

    engines: Sequence[str | os.PathLike] = ()
    all_backends: bool = False
    ckpt: str | os.PathLike | None = None
    sizes: Sequence[int] = (256, 320, 384, 512)
    batches: Sequence[int] = (1, 4)
    repeat: int = 5
    stack: int = 32
    parity_n: int = 16
    startup_repeat: int = 3
    memory: bool = True
    profile: bool = True
    workdir: str | os.PathLike = "bench-work"
    precisions: Sequence[str] = ("fp32", "fp16", "int8")
    calib_n: int = 64
    torch_compile: bool | None = None  # torch.compile (inductor) as a peer; None: with all_backends
    roofline: bool | None = None  # GFLOP per slice, measured peak, fractions; None: with all_backends

    def checked(self) -> BackendsBenchSettings:
        """These settings with sizes and batches sorted and deduplicated; :class:`InputError`
        for a size that is not a multiple of 8 or a batch that does not divide the stack."""
        sizes = tuple(sorted({int(s) for s in self.sizes}))
        batches = tuple(sorted({int(b) for b in self.batches}))
        for s in sizes:
            if s % SIZE_STEP:
                raise InputError(f"--sizes {s}: sizes must be multiples of {SIZE_STEP} (the engines see padded slices)")
        for b in batches:
            if b < 1 or self.stack % b:
                raise InputError(f"--batch {b}: must divide the {self.stack}-slice stack")
        return replace(self, sizes=sizes, batches=batches, engines=tuple(self.engines),
                       precisions=tuple(self.precisions))


@dataclass(frozen=True)
class ScalingBenchSettings:
    """The scaling study (:func:`sgf_deploy.bench.scaling.run.run_scaling`).

    ``paper_max`` caps the ``paper`` preset's size; ``mem_budget_gb`` keeps out every item whose
    estimated N x N attention matrices exceed it (they are recorded as skipped, with the reason).
    ``memory``: run the fresh-process memory probes; ``xattn``: include the MTrans-style full
    cross-attention."""

    sizes: Sequence[int] = (128, 192, 256, 320, 384, 448, 512)
    repeat: int = 5
    paper_max: int = 512  # no extra cap by default: the memory budget decides
    mem_budget_gb: float = 6.0
    presets: Sequence[str] = ("lite", "paper")
    memory: bool = True
    xattn: bool = True

    def checked(self) -> ScalingBenchSettings:
        """These settings with the sizes sorted and deduplicated."""
        return replace(self, sizes=tuple(sorted({int(s) for s in self.sizes})), presets=tuple(self.presets))
