"""Checkpoints: state dict + config + toolkit version + training provenance in one file.

``.pt`` files are written with ``torch.save`` and always read with ``weights_only=True`` (a file
carrying arbitrary pickled objects is refused without executing it). ``.safetensors`` files carry
the same metadata as JSON strings in the header.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..artifacts import atomic_path, sha256_file
from ..errors import CheckpointError
from .config import SGFConfig
from .network import SGFMRI, count_parameters

FORMAT = "sgf-deploy-checkpoint"
FORMAT_VERSION = 1
SUFFIXES = (".pt", ".safetensors")


def save_checkpoint(
    path: str | Path,
    model: SGFMRI,
    provenance: dict[str, Any],
    *,
    training_state: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``model`` with its config and provenance; returns the metadata (with ``sha256``)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CheckpointError(f"{path}: checkpoint must end in .pt or .safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Only JSON-plain values may enter the file, or weights_only=True loading would refuse it
    # (numpy scalars, torch.__version__'s TorchVersion, paths ...).
    provenance = json.loads(json.dumps(provenance, default=_plain))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "toolkit_version": __version__,
        "config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "provenance": provenance,
    }
    with atomic_path(path, overwrite) as tmp:
        if path.suffix == ".pt":
            blob = dict(meta, state_dict=state)
            if training_state is not None:
                blob["training_state"] = training_state
            torch.save(blob, tmp)
        else:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"sgf_deploy": json.dumps(meta, sort_keys=True)})
    meta["sha256"] = sha256_file(path)
    meta["path"] = str(path)
    return meta


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """(state dict, metadata, training state or None) without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        blob_state, meta = _read_safetensors(path)
        training_state = None
    else:
        blob = _torch_load(path)
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an sgf-deploy checkpoint (no '{FORMAT}' format marker)")
        blob_state = blob.get("state_dict")
        training_state = blob.get("training_state")
        meta = {k: v for k, v in blob.items() if k not in ("state_dict", "training_state")}
    if not isinstance(blob_state, dict) or not all(isinstance(v, torch.Tensor) for v in blob_state.values()):
        raise CheckpointError(f"{path}: checkpoint has no tensor state dict")
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.get('format_version')} is newer than this toolkit reads ({FORMAT_VERSION})"
        )
    meta["sha256"] = sha256_file(path)
    meta["path"] = str(path)
    return blob_state, meta, training_state


def load_checkpoint(path: str | Path) -> tuple[SGFMRI, dict[str, Any]]:
    """Build the network from the checkpoint's config, load its weights; model in eval mode."""
    state, meta, _ = read_checkpoint(path)
    model = model_from_state(state, meta, str(path))
    return model.eval(), meta


def model_from_state(state: dict[str, torch.Tensor], meta: dict[str, Any], source: str) -> SGFMRI:
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{source}: checkpoint carries no model config")
    config = SGFConfig.from_dict(meta["config"], source)
    model = SGFMRI(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatch(es), e.g. {k}: file {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
            )
        raise CheckpointError(f"{source}: weights do not match the checkpoint's config: " + "; ".join(parts))
    model.load_state_dict(state)
    return model


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    return str(obj)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text and "Unsupported" not in text:
            first = text.strip().splitlines()[0] if text.strip() else "not a torch checkpoint"
            raise CheckpointError(f"{path}: corrupt or not a torch checkpoint ({first[:160]})") from None
        first = next((l.strip() for l in text.splitlines() if "Unsupported" in l), text.strip().splitlines()[0])
        raise CheckpointError(
            f"{path}: refused: contains pickled Python objects that are not plain tensors/containers "
            f"(loaded with weights_only=True; nothing was executed): {first[:160]}"
        ) from None
    except Exception as exc:  # garbage bytes surface as IndexError, KeyError, EOFError, BadZipFile ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({msg[:160]})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        raise CheckpointError(f"{path}: reading .safetensors needs the 'safetensors' package") from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({str(exc)[:160]})") from None
    if "sgf_deploy" not in header:
        raise CheckpointError(f"{path}: not an sgf-deploy checkpoint (no 'sgf_deploy' metadata)")
    try:
        meta = json.loads(header["sgf_deploy"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt sgf-deploy metadata in the safetensors header") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an sgf-deploy checkpoint (format {meta.get('format')!r})")
    return state, meta
