"""The manifest beside every engine: ``<engine file>.json`` (keys in ARCHITECTURE.md, "Engines").

The manifest is what makes an engine file trustworthy: it names the model (ONNX and checkpoint
sha256), the backend and its version, the device the engine is tied to, the profile and the build
options, and the engine's own sha256. An engine without a readable manifest, or whose bytes no
longer match it, is refused (:class:`~sgf_deploy.errors.EngineMismatchError`), never guessed at.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..artifacts import sha256_file, write_json_atomic
from ..errors import EngineMismatchError, SgfError

FORMAT = "sgf-deploy-engine"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
REQUIRED_KEYS: tuple[str, ...] = (
    "engine_sha256", "onnx_sha256", "checkpoint_sha256", "backend", "backend_version", "precision",
    "device", "profile", "build_options", "built_at", "toolkit_version", "model", "build_parity",
)
# What identifies the engine: update_manifest refuses to change these.
IDENTITY_KEYS: frozenset[str] = frozenset({
    "format", "format_version", "engine_file", "engine_sha256", "onnx_sha256", "checkpoint_sha256",
    "backend", "backend_version", "precision", "device", "profile", "build_options", "model",
})


def manifest_path(engine_path: str | os.PathLike) -> Path:
    """``engines/x.onnx`` -> ``engines/x.onnx.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + MANIFEST_SUFFIX)


def read_manifest(engine_path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``engine_path`` as a dict; :class:`EngineMismatchError` if it is missing,
    unreadable, not an sgf-deploy engine manifest or lacks required keys."""
    engine_path = Path(engine_path)
    path = manifest_path(engine_path)
    if not path.is_file():
        raise EngineMismatchError(
            f"{engine_path}: its manifest {path.name} is missing; an engine without a manifest cannot be "
            "trusted; rebuild it with sgf-deploy build"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EngineMismatchError(f"{path}: corrupt engine manifest ({str(exc)[:120]}); rebuild the engine with sgf-deploy build") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise EngineMismatchError(f"{path}: not an sgf-deploy engine manifest (no format {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise EngineMismatchError(f"{path}: engine manifest lacks {', '.join(missing)}; rebuild the engine with sgf-deploy build")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise EngineMismatchError(
            f"{path}: engine manifest format {data.get('format_version')} is newer than this toolkit reads ({FORMAT_VERSION})"
        )
    return data


def write_manifest(engine_path: str | os.PathLike, manifest: dict[str, Any], overwrite: bool = False) -> Path:
    path = manifest_path(engine_path)
    write_json_atomic(path, json_safe(manifest), overwrite=overwrite)
    return path


def update_manifest(engine_path: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the manifest (top-level keys replaced) and write it atomically
    (temporary file + rename: a reader sees the old or the new manifest, never half of one).

    Identity keys (engine/ONNX/checkpoint sha256, backend, version, precision, device, profile,
    build options, model) cannot be changed: that would make the manifest lie about the file."""
    frozen = sorted(set(fields) & IDENTITY_KEYS)
    if frozen:
        raise SgfError(f"{manifest_path(engine_path)}: refusing to change identity field(s) {', '.join(frozen)} of a built engine")
    manifest = read_manifest(engine_path)
    manifest.update(fields)
    write_manifest(engine_path, manifest, overwrite=True)
    return manifest


def verify_engine_file(engine_path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """The engine's bytes are the ones the manifest describes (sha256), else EngineMismatchError."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineMismatchError(f"{engine_path}: engine file not found")
    actual = sha256_file(engine_path)
    expected = str(manifest.get("engine_sha256", ""))
    if actual != expected:
        raise EngineMismatchError(
            f"{engine_path}: engine sha256 {actual[:16]}... does not match its manifest's {expected[:16] or '(none)'}...: "
            "the file was modified or the manifest belongs to another engine; rebuild it with sgf-deploy build"
        )


def json_safe(obj: Any) -> Any:
    """Non-finite floats -> strings ("inf", "nan") so that the manifest is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return json_safe(obj.item())
    except ImportError:  # pragma: no cover
        pass
    return obj
