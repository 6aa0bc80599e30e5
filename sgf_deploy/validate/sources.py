"""Where validation finds its engines and the FP32 ONNX file an engine was built from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import defaults as D
from ..artifacts import sha256_file
from ..engines.manifest import EngineManifest
from ..errors import SgfError
from ..model.locate import candidate_paths


def find_engines(engines_dir: str | os.PathLike = D.ENGINES_DIR) -> list[Path]:
    """Engine files in ``engines_dir``: every ``<engine>.json`` manifest with its engine beside it."""
    folder = Path(engines_dir)
    if not folder.is_dir():
        return []
    out = []
    for manifest in sorted(folder.glob("*.json")):
        engine = manifest.with_name(manifest.name[: -len(".json")])
        if engine.is_file():
            out.append(engine)
    return out


def has_verdict(engine: Path) -> bool:
    try:
        return EngineManifest.load(engine).verdict in ("pass", "fail")
    except SgfError:
        return False


@dataclass(frozen=True)
class Origin:
    """What an engine was built from: the FP32 ONNX file (if found), its metadata, and the
    checkpoint (path, sha256, how it was found)."""

    onnx_path: Path | None
    onnx_meta: dict[str, Any] | None
    checkpoint: tuple[Path, str, str]


def engine_origin(engine: Path, manifest: EngineManifest, explicit: str | os.PathLike | None = None) -> Origin:
    """The ONNX file and checkpoint ``engine`` was built from, by SHA-256
    (:func:`sgf_deploy.model.locate.resolve_checkpoint`: ``explicit`` must match; else the path
    recorded in the ONNX metadata, then the embedded defaults)."""
    from ..model.locate import resolve_checkpoint

    onnx_path = find_onnx(engine, manifest)
    meta = _onnx_metadata(onnx_path or (engine if engine.suffix.lower() == ".onnx" else None))
    ckpt = resolve_checkpoint(manifest.checkpoint_sha256 or (meta or {}).get("sgf.checkpoint_sha256"),
                              explicit=explicit, recorded=[(meta or {}).get("sgf.checkpoint_path")],
                              bases=[engine.parent, engine.parent.parent], what=engine.name)
    return Origin(onnx_path, meta, ckpt)


def _onnx_metadata(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    from ..export.metadata import read_onnx_metadata

    try:
        return read_onnx_metadata(path)
    except SgfError:
        return None


def find_onnx(engine: Path, manifest: EngineManifest) -> Path | None:
    """The exported FP32 ONNX file the engine was built from (SHA-256 = manifest ``onnx_sha256``):
    looked for at the path the manifest records, then in ``export/`` of the workspace and beside
    the engine's folder, then next to the engine."""
    want = manifest.onnx_sha256
    if not want:
        return None
    paths = candidate_paths([manifest.onnx_path], [engine.parent, engine.parent.parent])
    for folder in (Path.cwd() / "export", engine.parent.parent / "export", engine.parent):
        if folder.is_dir():
            paths += sorted(folder.glob("*.onnx"))
    seen: set[Path] = set()
    for p in paths:
        rp = p.resolve() if p.exists() else p
        if rp in seen or not p.is_file() or rp == engine.resolve():
            continue
        seen.add(rp)
        if sha256_file(p) == want:
            return p
    return None
