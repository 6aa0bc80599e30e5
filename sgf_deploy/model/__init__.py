"""The SGF-MRI network in PyTorch, the ``sgf::mcns`` op, presets and checkpoints.

Importing this package is cheap and torch-free: the torch-using names (:func:`build_model`,
:func:`load_checkpoint`, :class:`SGFMRI`, ...) are imported on first use (PEP 562), so that
torch-free code (the runtime, validate's checkpoint resolution) can use :mod:`.locate`.
"""

from __future__ import annotations

import importlib
from typing import Any

from .locate import DEFAULT_CHECKPOINT, default_checkpoint, resolve_checkpoint

# name -> submodule, imported lazily (each of these imports torch)
_LAZY = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "SGFConfig": "config",
    "mcns_reference": "mcns",
    "SGFMRI": "network",
    "count_parameters": "network",
    "PRESETS": "presets",
    "get_preset": "presets",
    "build_model": "presets",
}

__all__ = ["DEFAULT_CHECKPOINT", "default_checkpoint", "resolve_checkpoint", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
