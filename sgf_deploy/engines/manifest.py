"""The manifest beside every engine (``<engine file>.json``) as a typed object, and the trust rule.

The manifest is what makes an engine file trustworthy: it names the model (ONNX and checkpoint
sha256), the backend and its version, the device the engine is tied to, the profile and the build
options, and the engine's own sha256. An engine without a readable manifest, or whose bytes no
longer match it, is refused (:class:`~sgf_deploy.errors.EngineMismatchError`), never guessed at.

* :class:`EngineManifest` -- ``load`` / ``save`` / ``update`` (atomic; identity fields frozen),
  ``to_dict`` for the JSON on disk (keys in ARCHITECTURE.md, "Engines"; unknown keys are kept).
* :meth:`EngineManifest.trust` -- **the trust rule**: an engine may run unasked only when its
  manifest records a passing validation, or when it is the cached embedded default whose export
  self-check passed (the cache marker beside it describes exactly this engine).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import sha256_file, write_json_atomic
from ..errors import EngineMismatchError, SgfError
from .identity import Profile

FORMAT = "sgf-deploy-engine"
FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
REQUIRED_KEYS: tuple[str, ...] = (
    "engine_sha256", "onnx_sha256", "checkpoint_sha256", "backend", "backend_version", "precision",
    "device", "profile", "build_options", "built_at", "toolkit_version", "model", "build_parity",
)
# What identifies the engine: update refuses to change these.
IDENTITY_KEYS: frozenset[str] = frozenset({
    "format", "format_version", "engine_file", "engine_sha256", "onnx_sha256", "checkpoint_sha256",
    "backend", "backend_version", "precision", "device", "profile", "build_options", "model",
})
# The cached embedded default (sgf_deploy.runtime.default_engine) writes this beside its engine.
CACHE_MARKER = "default-engine.json"
DEFAULT_LABEL = "embedded default (FP32, export self-check passed)"


def manifest_path(engine_path: str | os.PathLike) -> Path:
    """``engines/x.onnx`` -> ``engines/x.onnx.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + MANIFEST_SUFFIX)


@dataclass
class ModelInfo:
    """What the engine's network is: preset, task, contrast pair, config and its input contract."""

    preset: str | None = None
    task: str | None = None
    pair: str | None = None
    config: dict[str, Any] | None = None
    size_multiple: int = 8
    normalization: Any = None
    opset: Any = None
    dynamic: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> "ModelInfo":
        data = dict(data) if isinstance(data, dict) else {}
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        from ..contract import size_multiple

        values = {k: data.pop(k) for k in list(data) if k in known}
        values["size_multiple"] = size_multiple(dict(values, config=values.get("config")))
        return cls(**values, extra=data)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def label(self) -> str:
        return "-".join(str(v) for v in (self.preset, self.task, self.pair) if v)


@dataclass(frozen=True)
class TrustStatus:
    """Whether an engine may run without ``--allow-unvalidated``, and the words that say why."""

    ok: bool
    label: str


@dataclass
class EngineManifest:
    """The typed manifest. ``device``, ``build_options``, ``precision_conversion``,
    ``calibration``, ``build_parity`` and ``validation`` stay plain dicts: they are records whose
    keys vary by backend and are written, not branched on."""

    engine_file: str
    engine_sha256: str
    onnx_sha256: str | None
    checkpoint_sha256: str | None
    backend: str
    backend_version: str
    precision: str
    device: dict[str, Any]
    profile: Profile
    build_options: dict[str, Any]
    built_at: str
    toolkit_version: str
    model: ModelInfo
    build_parity: dict[str, Any]
    onnx_path: str | None = None
    precision_conversion: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    precision_onnx: str | None = None
    validation: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading and writing ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | os.PathLike = "manifest") -> "EngineManifest":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EngineMismatchError(f"{source}: not an sgf-deploy engine manifest (no format {FORMAT!r})")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise EngineMismatchError(f"{source}: engine manifest lacks {', '.join(missing)}; rebuild the engine with sgf-deploy build")
        try:
            version = int(data.get("format_version", 0))
        except (TypeError, ValueError):
            raise EngineMismatchError(f"{source}: engine manifest has an unreadable format_version") from None
        if version > FORMAT_VERSION:
            raise EngineMismatchError(
                f"{source}: engine manifest format {version} is newer than this toolkit reads ({FORMAT_VERSION})"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "format"}
        values["format_version"] = version
        values["engine_file"] = str(data.get("engine_file") or "")
        values["profile"] = Profile.from_manifest(data.get("profile"))
        values["model"] = ModelInfo.from_dict(data.get("model"))
        for key in ("device", "build_options", "build_parity"):
            values[key] = data.get(key) if isinstance(data.get(key), dict) else {}
        if not isinstance(values.get("validation"), dict):
            values["validation"] = None
        return cls(**values, extra=extra)

    @classmethod
    def load(cls, engine_path: str | os.PathLike) -> "EngineManifest":
        """The manifest of ``engine_path``; :class:`EngineMismatchError` if it is missing,
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
        return cls.from_dict(data, path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name == "profile":
                value = value.to_manifest()
            elif f.name == "model":
                value = value.to_dict()
            elif value is None and f.name in ("precision_onnx", "validation"):
                continue
            out[f.name] = value
        out.update(self.extra)
        return json_safe(out)

    def save(self, engine_path: str | os.PathLike, overwrite: bool = False) -> Path:
        path = manifest_path(engine_path)
        write_json_atomic(path, self.to_dict(), overwrite=overwrite)
        return path

    @classmethod
    def update(cls, engine_path: str | os.PathLike, **fields: Any) -> "EngineManifest":
        """Merge ``fields`` (top-level keys replaced) into the manifest on disk and write it
        atomically (temporary file + rename: a reader sees the old or the new manifest, never half).

        Identity keys (engine/ONNX/checkpoint sha256, backend, version, precision, device, profile,
        build options, model) cannot be changed: that would make the manifest lie about the file."""
        frozen = sorted(set(fields) & IDENTITY_KEYS)
        if frozen:
            raise SgfError(f"{manifest_path(engine_path)}: refusing to change identity field(s) {', '.join(frozen)} of a built engine")
        data = cls.load(engine_path).to_dict()
        data.update(fields)
        manifest = cls.from_dict(data, manifest_path(engine_path))
        manifest.save(engine_path, overwrite=True)
        return manifest

    # -- what the engine is ----------------------------------------------------------------------
    @property
    def is_gpu(self) -> bool:
        return str(self.device.get("kind", "")).lower() in ("cuda", "gpu")

    @property
    def device_name(self) -> str:
        return str(self.device.get("name") or self.device.get("kind") or "?")

    @property
    def execution_provider(self) -> str:
        return str(self.build_options.get("execution_provider") or self.device.get("execution_provider")
                   or "CPUExecutionProvider")

    @property
    def verdict(self) -> str | None:
        return (self.validation or {}).get("verdict")

    @property
    def validated_at(self) -> str:
        return str((self.validation or {}).get("validated_at") or "")

    def model_label(self) -> str:
        return "-".join([p for p in (self.model.label(),) if p] + [str(self.checkpoint_sha256 or "?")[:8]])

    def verify_file(self, engine_path: str | os.PathLike) -> None:
        """The engine's bytes are the ones this manifest describes (sha256), else EngineMismatchError."""
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise EngineMismatchError(f"{engine_path}: engine file not found")
        actual = sha256_file(engine_path)
        expected = str(self.engine_sha256 or "")
        if actual != expected:
            raise EngineMismatchError(
                f"{engine_path}: engine sha256 {actual[:16]}... does not match its manifest's {expected[:16] or '(none)'}...: "
                "the file was modified or the manifest belongs to another engine; rebuild it with sgf-deploy build"
            )

    # -- the trust rule ---------------------------------------------------------------------------
    def trust(self, engine_path: str | os.PathLike) -> TrustStatus:
        """``ok`` when the manifest records a passing validation, or the engine is the cached
        embedded default whose export self-check passed; the label says which (or why not)."""
        if self.verdict == "pass":
            when = self.validated_at
            return TrustStatus(True, "validated: pass" + (f" ({when})" if when else ""))
        if self.is_cached_default(engine_path):
            return TrustStatus(True, DEFAULT_LABEL)
        if self.verdict:
            return TrustStatus(False, f"validation verdict '{self.verdict}'")
        return TrustStatus(False, "never validated (no validation in its manifest)")

    def is_cached_default(self, engine_path: str | os.PathLike) -> bool:
        """The cache marker beside the engine describes exactly this engine (its sha256 and
        checkpoint) and records a passed export self-check."""
        info = read_cache_marker(Path(engine_path).parent)
        return bool(
            info is not None
            and info.get("engine") == Path(engine_path).name
            and info.get("selfcheck_passed") is True
            and info.get("engine_sha256")
            and info.get("engine_sha256") == self.engine_sha256
            and info.get("checkpoint_sha256") == self.checkpoint_sha256
        )


def read_cache_marker(folder: Path) -> dict[str, Any] | None:
    """The cached default's marker in ``folder`` as a dict, or None (absent or unreadable)."""
    marker = Path(folder) / CACHE_MARKER
    if not marker.is_file():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


# -- functional API (kept for scripts; the dict is the JSON on disk) ------------------------------
def read_manifest(engine_path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of ``engine_path`` as the plain dict written on disk (checked as in
    :meth:`EngineManifest.load`)."""
    return EngineManifest.load(engine_path).to_dict()


def update_manifest(engine_path: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """:meth:`EngineManifest.update`, returning the plain dict."""
    return EngineManifest.update(engine_path, **fields).to_dict()


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
