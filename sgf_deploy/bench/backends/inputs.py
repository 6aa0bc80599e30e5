"""The inputs every backend sees: simulated held-out slices, prepared by the model's input contract
(:mod:`sgf_deploy.contract`), as one stack file per size and one parity set at the native size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...contract import Prepared

INPUT_SLICES = 8  # distinct simulated slices cycled to fill a stack
PARITY_SEED = 0


@dataclass
class ParitySet:
    """The parity slices: their engine inputs (saved at ``path``), their ground truth and where
    they come from."""

    path: str
    prepared: Prepared
    ground_truth: np.ndarray
    pair: str
    task: str
    subjects: list[int]
    slices: list[int]

    def record(self) -> dict[str, Any]:
        """What the JSON record says about the set."""
        return {"n": self.prepared.n, "pair": self.pair, "task": self.task, "seed": PARITY_SEED,
                "subjects": self.subjects, "slices": self.slices, "shape": [self.prepared.h, self.prepared.w]}


def prepare_inputs(pair: str, task: str, sizes: Sequence[int], stack: int, parity_n: int, multiple: int,
                   workdir: Path) -> tuple[dict[int, str], ParitySet]:
    """``simulate(pair, task, "test", ...)`` slices, normalised and padded to ``multiple``: for each
    size S a ``stack``-slice file of :data:`INPUT_SLICES` slices cycled, centre-cropped/edge-padded
    to S x S; and the first ``parity_n`` slices at their native size as the parity set."""
    from ...contract import fit, prepare
    from ...data.simulator import simulate

    n_in = min(INPUT_SLICES, stack)
    sim = simulate(pair, task, "test", max(parity_n, n_in), seed=PARITY_SEED)
    prepared = prepare(sim["reference"], sim["target"], multiple)
    inputs_dir = workdir / "inputs"
    inputs_dir.mkdir(parents=True, exist_ok=True)
    cycle = [i % n_in for i in range(stack)]
    files = {}
    for s in sizes:
        path = inputs_dir / f"stack-{stack}x{s}x{s}.npz"
        np.savez(path, reference=fit(prepared.reference[cycle], (s, s)), target=fit(prepared.target[cycle], (s, s)))
        files[s] = str(path)
    held_out = prepared.select(0, parity_n)
    ppath = inputs_dir / f"parity-{parity_n}.npz"
    np.savez(ppath, reference=held_out.reference, target=held_out.target)
    parity = ParitySet(path=str(ppath), prepared=held_out, ground_truth=sim["ground_truth"][:parity_n], pair=pair,
                       task=task, subjects=sim["subject"][:parity_n].tolist(), slices=sim["slice_index"][:parity_n].tolist())
    return files, parity
