"""The embedded sample through the PyTorch reference: the first step of ``make demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import atomic_path
from ..metrics import psnr, ssim

SAMPLE_FILES = {"reference": "t1.npy", "target": "t2_us.npy", "ground_truth": "t2_gt.npy"}


def write_sample_files(directory: str | Path, overwrite: bool = False) -> dict[str, Path]:
    """Write the embedded sample as ``t1.npy``, ``t2_us.npy``, ``t2_gt.npy`` in ``directory``."""
    from ..data import sample

    arrays = sample()
    out = {}
    for key, name in SAMPLE_FILES.items():
        path = Path(directory) / name
        with atomic_path(path, overwrite, flag="--force") as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, arrays[key].astype(np.float32), allow_pickle=False)
        out[key] = path
    return out


def score_reference_on_sample(checkpoint: str | Path | None = None) -> dict[str, Any]:
    """PSNR/SSIM of zero-filled and of the PyTorch reconstruction against ground truth."""
    from ..data import sample
    from . import default_checkpoint, load_checkpoint
    from .infer import reconstruct

    arrays = sample()
    model, meta = load_checkpoint(checkpoint or default_checkpoint())
    pred = reconstruct(model, arrays["reference"], arrays["target"])
    gt = arrays["ground_truth"]
    return {
        "checkpoint": meta["path"],
        "checkpoint_sha256": meta["sha256"],
        "zero_filled": {"psnr": psnr(gt, arrays["target"]), "ssim": ssim(gt, arrays["target"])},
        "pytorch": {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred)},
        "shape": list(gt.shape),
    }
