"""The SGF-MRI network in PyTorch, the ``sgf::mcns`` op, presets and checkpoints."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_checkpoint, save_checkpoint
from .config import SGFConfig
from .mcns import maybe_register_fused_kernel, mcns_reference
from .network import SGFMRI, count_parameters
from .presets import PRESETS, get_preset

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "default" / "lite-recon4x-t1-t2.pt"


def build_model(preset: str | SGFConfig = "lite") -> SGFMRI:
    """A freshly initialised network from a preset name or a config."""
    config = preset if isinstance(preset, SGFConfig) else get_preset(preset)
    return SGFMRI(config)


def default_checkpoint() -> Path:
    """The embedded ``lite`` recon4x T1->T2 checkpoint shipped inside the package."""
    if not DEFAULT_CHECKPOINT.is_file():
        from ..errors import CheckpointError

        raise CheckpointError(f"{DEFAULT_CHECKPOINT}: the embedded default checkpoint is missing from this install")
    return DEFAULT_CHECKPOINT


maybe_register_fused_kernel()

__all__ = [
    "SGFConfig", "SGFMRI", "PRESETS", "build_model", "count_parameters", "default_checkpoint",
    "get_preset", "load_checkpoint", "save_checkpoint", "mcns_reference",
]
