"""Data: k-space helpers, masks, degradations, the multi-contrast simulator, HDF5 pairs, the sample.

Importing this package is cheap (numpy only): the simulator (scipy, nilearn) and the HDF5 reader
(h5py) are imported on first use of their names. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Any

from .degrade import TASKS, degrade, denormalize, low_resolution, normalize_instance, undersample
from .kspace import fft2c, ifft2c, rss
from .masks import ACCELERATIONS, acceleration_of, column_mask
from .sample import sample

# name -> submodule, imported lazily (PEP 562)
_LAZY = {
    "PAIRS": "simulator",
    "SEQUENCES": "simulator",
    "TISSUES": "simulator",
    "SPLITS": "simulator",
    "Example": "simulator",
    "ExampleStream": "simulator",
    "make_example": "simulator",
    "simulate": "simulator",
    "split_slices": "simulator",
    "split_subjects": "simulator",
    "read_h5_image": "fastmri_pairs",
    "find_pairs": "pairs",
    "load_pair": "pairs",
    "PairFiles": "pairs",
    "PairSource": "pairs",
    "H5PairSource": "fastmri_pairs",
}

__all__ = [
    "ACCELERATIONS", "TASKS", "acceleration_of", "column_mask", "degrade", "denormalize", "fft2c",
    "ifft2c", "low_resolution", "normalize_instance", "rss", "sample", "undersample", *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
