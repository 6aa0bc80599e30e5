"""Validation data: the simulator's held-out test split, or a folder of the user's own pairs.

``--data DIR`` follows the one folder convention of :mod:`sgf_deploy.data.pairs` (``pairs.csv``,
or files paired by contrast tag / role name). A degraded target is validated as given against its
ground truth; a fully sampled target is degraded for the engine's task with a seeded mask. Each pair is one volume: PSNR's data range is the ground-truth maximum of that
volume (fastMRI). Each simulated slice is its own volume (its own subject and slice draw), as in
``sgf_deploy.model.evaluate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import defaults as D
from ..errors import InputError

__all__ = ["Case", "ValidationData", "load_sim", "load_dir", "load_data"]


@dataclass
class Case:
    """One volume: float32 (n, H, W) reference, degraded target and ground truth."""

    name: str
    reference: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    ground_truth: np.ndarray = field(repr=False)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.target.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.target.shape[-2:])  # type: ignore[return-value]


@dataclass
class ValidationData:
    cases: list[Case]
    description: dict[str, Any]

    @property
    def n_slices(self) -> int:
        return sum(c.n for c in self.cases)


def load_sim(pair: str, task: str, n: int = D.VALIDATE_SIM_N, seed: int = 0) -> ValidationData:
    """``n`` slices of the simulator's held-out ``test`` split for ``pair``/``task``."""
    from ..data.simulator import simulate

    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    sim = simulate(pair, task, "test", int(n), seed=int(seed))
    cases = []
    for i in range(int(n)):
        subject = int(sim["subject"][i]) if "subject" in sim else None
        z = int(sim["slice_index"][i]) if "slice_index" in sim else None
        cases.append(Case(
            name=f"sim-{i:03d}" + (f"-s{subject}-z{z}" if subject is not None else ""),
            reference=sim["reference"][i : i + 1],
            target=sim["target"][i : i + 1],
            ground_truth=sim["ground_truth"][i : i + 1],
            sources={"subject": str(subject), "slice_index": str(z)},
        ))
    desc = {
        "source": "sim",
        "what": "sgf_deploy.data.simulator, held-out 'test' split (MNI152 2009 anatomy)",
        "pair": pair,
        "task": task,
        "split": "test",
        "seed": int(seed),
        "n_slices": int(n),
        "n_volumes": int(n),
        "slice_shape": list(cases[0].shape),
        "volume_convention": "each simulated slice is its own volume (own subject/slice draw)",
    }
    return ValidationData(cases, desc)


def load_dir(directory: str | Path, n: int | None = None, *, task: str | None = None, seed: int = 0,
             ref_tag: str | None = None, tar_tag: str | None = None, split: Any = None) -> ValidationData:
    """The test pairs of ``directory`` (:func:`sgf_deploy.data.splits.pairs_for`: every pair, or
    under a model's recorded ``split`` only subjects it was neither trained nor validated on),
    sorted by subject; at most ``n`` slices in all when given."""
    from ..data.pairs import load_pair
    from ..data.splits import pairs_for

    if n is not None and n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    cases: list[Case] = []
    total = 0
    pairs, how = pairs_for(directory, "test", split, seed=seed, ref_tag=ref_tag, tar_tag=tar_tag)
    for files in pairs:
        pair = load_pair(files, task, seed, None if n is None else n - total)
        if pair.ground_truth is None:
            raise InputError(f"{files.target}: pair '{files.name}' has no ground_truth image; validation scores "
                             "against it (add <case>_gt / a ground_truth column)")
        if not float(np.max(pair.ground_truth)) > 0:
            raise InputError(f"ground truth of {files.name} ({files.ground_truth or files.target}): maximum is "
                             f"{float(np.max(pair.ground_truth)):g}; PSNR is undefined")
        sources = {"reference": str(files.reference), "target": str(files.target),
                   "ground_truth": str(files.ground_truth or files.target), "subject": files.subject,
                   "format": pair.fmt, "degradation": pair.degradation}
        cases.append(Case(files.name, np.ascontiguousarray(pair.reference, np.float32),
                          np.ascontiguousarray(pair.target, np.float32),
                          np.ascontiguousarray(pair.ground_truth, np.float32), sources))
        total += cases[-1].n
        if n is not None and total >= n:
            break
    desc = {
        "source": "dir",
        "what": f"user pairs in {Path(directory)} (test subjects: {', '.join(sorted({c.sources['subject'] for c in cases}))})",
        "directory": str(Path(directory)),
        "task": task,
        "n_slices": total,
        "n_volumes": len(cases),
        "cases": [{"name": c.name, "slices": c.n, "shape": list(c.shape), **c.sources} for c in cases],
        "selection": how,
        "subjects": sorted({c.sources["subject"] for c in cases}),
        "volume_convention": "each pair is one volume (PSNR data range = its ground-truth maximum)",
        "limit_n": n,
    }
    return ValidationData(cases, desc)


def load_data(data: str, *, pair: str | None, task: str | None, n: int | None, seed: int = 0,
              checkpoint: str | Path | None = None, checkpoint_sha256: str | None = None) -> ValidationData:
    """``data`` = ``"sim"`` (needs the engine's pair/task), a folder, or ``"auto"``.

    With the ``checkpoint`` the engine was built from: a model trained on a folder
    (``<checkpoint>.split.json``) is validated on that folder's test subjects for ``"auto"``, and for
    ``"sim"`` when the simulator has no such pair; a folder given explicitly is validated on its
    pairs minus every subject the model was trained or validated on."""
    from ..data.simulator import PAIRS
    from ..data.splits import recorded_split

    split = recorded_split(checkpoint, checkpoint_sha256)
    if split is not None and (str(data).lower() == "auto" or (str(data).lower() == "sim" and pair not in PAIRS)):
        if not Path(split.folder).is_dir():
            raise InputError(f"{checkpoint}: was trained on {split.folder}, which is gone; pass --data DIR "
                             "(its test subjects are used)")
        data = split.folder
    elif str(data).lower() == "auto":
        data = "sim"
    if str(data).lower() != "sim":
        return load_dir(data, n, task=task, seed=seed, split=split)
    if not pair or not task:
        raise InputError("--data sim needs the engine's contrast pair and task, but its manifest records no 'model' "
                         "pair/task; pass --data DIR")
    return load_sim(pair, task, D.VALIDATE_SIM_N if n is None else n, seed)
