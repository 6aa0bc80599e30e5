"""Metadata carried by an exported SGF-MRI ONNX file (``metadata_props``) and its sidecar JSON.

Imports ``onnx`` and the standard library only (never torch), so engines, validation and the
runtime can read an exported file's provenance cheaply.

Keys (all stored as strings in ``metadata_props``; ARCHITECTURE.md, "Exported ONNX"):
``sgf.toolkit_version``, ``sgf.preset``, ``sgf.config`` (JSON), ``sgf.task``, ``sgf.pair``,
``sgf.checkpoint_sha256``, ``sgf.checkpoint_path``, ``sgf.normalization`` (JSON),
``sgf.size_multiple``, ``sgf.opset``, ``sgf.exported_at``, ``sgf.dynamic`` ("N,H,W", a subset
such as "N" or "H,W", or "static").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import InputError

METADATA_KEYS: tuple[str, ...] = (
    "sgf.toolkit_version",
    "sgf.preset",
    "sgf.config",
    "sgf.task",
    "sgf.pair",
    "sgf.checkpoint_sha256",
    "sgf.checkpoint_path",
    "sgf.normalization",
    "sgf.size_multiple",
    "sgf.opset",
    "sgf.exported_at",
    "sgf.dynamic",
)
JSON_KEYS = ("sgf.config", "sgf.normalization")
INT_KEYS = ("sgf.size_multiple", "sgf.opset")
ONNX_SUFFIX = ".onnx"


def normalization_spec(size_multiple: int) -> dict[str, Any]:
    """The pre/post-processing convention every consumer of the file must apply (ARCHITECTURE.md)."""
    return {
        "kind": "per-instance",
        "formula": "(x - mean) / (std + eps)",
        "eps": 1e-11,
        "std": "unbiased (ddof=1), statistics accumulated in float64",
        "per": "slice; reference and target each by their own mean/std",
        "denormalize": "reconstruction * (std_target + eps) + mean_target",
        "pad": {"mode": "edge", "sides": "bottom,right", "multiple": int(size_multiple)},
        "crop": "back to the unpadded (H, W) after inference",
        "inputs": ["reference", "target"],
        "output": "reconstruction",
        "layout": "N,1,H,W",
        "dtype": "float32",
    }


def encode_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """Decoded metadata -> the string values stored in ``metadata_props``."""
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise ValueError(f"metadata lacks {missing}")
    out: dict[str, str] = {}
    for key in METADATA_KEYS:
        value = meta[key]
        out[key] = json.dumps(value, sort_keys=True) if key in JSON_KEYS else str(value)
    return out


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """``metadata_props`` strings -> values: JSON keys parsed, integer keys as int; other keys
    (including any non-``sgf.`` ones) are returned unchanged."""
    out: dict[str, Any] = dict(props)
    for key in JSON_KEYS:
        if key in out:
            try:
                out[key] = json.loads(out[key])
            except json.JSONDecodeError:
                pass  # left as the raw string; the caller sees it is not a dict
    for key in INT_KEYS:
        if key in out:
            try:
                out[key] = int(out[key])
            except ValueError:
                pass
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded ``metadata_props`` of an ONNX file (keys as stored, e.g. ``sgf.preset``;
    ``sgf.config``/``sgf.normalization`` as dicts; ``sgf.size_multiple``/``sgf.opset`` as int).

    Raises :class:`~sgf_deploy.errors.InputError` for a missing or unreadable file, or a file that
    is not an sgf-deploy export (no ``sgf.`` metadata).
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, onnx its own errors
        raise InputError(f"{path}: not a readable ONNX file ({str(exc).strip()[:160] or type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if not any(k.startswith("sgf.") for k in props):
        raise InputError(f"{path}: no sgf-deploy metadata (not exported by sgf-deploy export)")
    return decode_metadata(props)


def sidecar_path(onnx_path: str | Path) -> Path:
    """``<name>.json`` beside ``<name>.onnx``."""
    return Path(onnx_path).with_suffix(".json")


def json_safe(obj: Any) -> Any:
    """Non-finite floats -> strings ("inf", "nan"), so the sidecar is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
