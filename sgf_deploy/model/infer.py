"""PyTorch reference inference on numpy arrays, through the same input contract as every engine
(:mod:`sgf_deploy.contract`): normalise, edge-pad, ``forward_core`` in batches, crop, de-normalise."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .. import contract
from .network import SGFMRI


def torch_infer(model: SGFMRI) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``model.forward_core`` (float32, ``torch.no_grad``) on padded, normalised ``(N, 1, Hp, Wp)``
    numpy arrays: the PyTorch side of every parity comparison."""

    def infer(reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model.forward_core(torch.from_numpy(np.ascontiguousarray(reference)),
                                     torch.from_numpy(np.ascontiguousarray(target)))
        return out.float().numpy()

    return infer


def reconstruct(model: SGFMRI, reference: np.ndarray, target: np.ndarray, batch: int = 4) -> np.ndarray:
    """(N,H,W) or (H,W) arrays in the target's intensity scale -> reconstruction, same shape."""
    return contract.reconstruct(torch_infer(model), reference, target, model.config.size_multiple, batch)
