"""PyTorch reference inference on numpy arrays, with the same pre/post-processing as the runtime."""

from __future__ import annotations

import numpy as np
import torch

from ..data.degrade import denormalize, normalize_instance
from .network import SGFMRI


def normalize_pair(reference: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-instance normalisation: each contrast by its own mean/std; the target's are kept to
    de-normalise the output."""
    ref_n, _, _ = normalize_instance(reference)
    tar_n, mean, std = normalize_instance(target)
    return ref_n, tar_n, mean, std


@torch.no_grad()
def reconstruct(model: SGFMRI, reference: np.ndarray, target: np.ndarray, batch: int = 4) -> np.ndarray:
    """(N,H,W) or (H,W) arrays in the target's intensity scale -> reconstruction, same shape."""
    squeeze = target.ndim == 2
    ref = np.asarray(reference, np.float32).reshape((-1,) + target.shape[-2:])
    tar = np.asarray(target, np.float32).reshape((-1,) + target.shape[-2:])
    out = np.empty_like(tar)
    for start in range(0, len(tar), batch):
        stop = min(start + batch, len(tar))
        refs, tars, stats = [], [], []
        for i in range(start, stop):
            r, t, mean, std = normalize_pair(ref[i], tar[i])
            refs.append(r)
            tars.append(t)
            stats.append((mean, std))
        pred = model(torch.from_numpy(np.stack(refs)[:, None]), torch.from_numpy(np.stack(tars)[:, None]))
        pred = pred[:, 0].numpy()
        for j, (mean, std) in enumerate(stats):
            out[start + j] = denormalize(pred[j], mean, std)
    return out[0] if squeeze else out
