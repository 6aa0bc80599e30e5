"""The shipped default models, by task (torch-free): ``sgf_deploy/assets/default/defaults.json``.

The registry names, for every task that has a shipped default, the model ``run`` uses, and for
every shipped model its checkpoint, its exported ONNX file (self-checked against PyTorch when it
was packaged, so that a runtime-only install never needs torch or onnx), what it was trained for
(tasks, contrast range) and the contrast-fidelity guard's threshold per task.

Layout::

    {"format": "sgf-deploy-defaults", "format_version": 1,
     "tasks": {"recon4x": "<model name>", ...},
     "models": {"<model name>": {"checkpoint": "<file>.pt", "checkpoint_sha256": "...",
                                 "onnx": "<file>.onnx", "onnx_sha256": "...", "selfcheck": {...},
                                 "tasks": ["recon4x"], "contrasts": "...", "training": "...",
                                 "fidelity": {"recon4x": {"threshold": 0.06, ...}}}}}

The file is written by :mod:`sgf_deploy.export.package_default` (with torch) and read here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, SgfError
from .locate import DEFAULTS_DIR

REGISTRY_NAME = "defaults.json"
FORMAT = "sgf-deploy-defaults"
TASKS = ("recon4x", "recon8x", "sr2x", "sr4x")


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model of the registry (paths resolved inside ``folder``)."""

    name: str
    folder: Path
    checkpoint: str
    checkpoint_sha256: str
    onnx: str | None = None
    onnx_sha256: str | None = None
    selfcheck: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ()
    contrasts: str = ""
    training: str = ""
    fidelity: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / self.checkpoint

    @property
    def onnx_path(self) -> Path | None:
        return self.folder / self.onnx if self.onnx else None

    def threshold(self, task: str, mode: str = "centre") -> float | None:
        """The fidelity guard's calibrated threshold for ``task`` and guard ``mode`` ("centre":
        no mask known; "measured": the mask re-applied), None where not calibrated."""
        entry = self.fidelity.get(task) or {}
        value = entry.get("threshold" if mode == "centre" else f"threshold_{mode}")
        return float(value) if isinstance(value, (int, float)) else None

    def describe(self) -> str:
        """One line for ``run``: name, tasks, contrast range."""
        tasks = "/".join(self.tasks) or "?"
        return f"{self.name} (trained for {tasks}; contrasts: {self.contrasts or 'not recorded'})"

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256, "onnx": self.onnx,
                "onnx_sha256": self.onnx_sha256, "selfcheck": self.selfcheck, "tasks": list(self.tasks),
                "contrasts": self.contrasts, "training": self.training, "fidelity": self.fidelity}


def registry_path(folder: Path | None = None) -> Path:
    return (folder or DEFAULTS_DIR) / REGISTRY_NAME


def read_registry(folder: Path | None = None) -> dict[str, Any]:
    """The registry as a dict (an empty one when the file is absent)."""
    path = registry_path(folder)
    if not path.is_file():
        return {"format": FORMAT, "format_version": 1, "tasks": {}, "models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable registry of shipped defaults ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a registry of shipped defaults (format {FORMAT!r})")
    data.setdefault("tasks", {})
    data.setdefault("models", {})
    return data


def shipped_models(folder: Path | None = None) -> dict[str, ShippedModel]:
    """Every model the registry lists, by name."""
    folder = folder or DEFAULTS_DIR
    out = {}
    for name, entry in read_registry(folder)["models"].items():
        out[name] = ShippedModel(
            name=name, folder=folder, checkpoint=str(entry["checkpoint"]),
            checkpoint_sha256=str(entry["checkpoint_sha256"]), onnx=entry.get("onnx"),
            onnx_sha256=entry.get("onnx_sha256"), selfcheck=dict(entry.get("selfcheck") or {}),
            tasks=tuple(entry.get("tasks") or ()), contrasts=str(entry.get("contrasts") or ""),
            training=str(entry.get("training") or ""), fidelity=dict(entry.get("fidelity") or {}))
    return out


def default_for_task(task: str, folder: Path | None = None) -> ShippedModel:
    """The shipped default of ``task``; one line naming the tasks that have one otherwise."""
    if task not in TASKS:
        raise SgfError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    data = read_registry(folder)
    name = data["tasks"].get(task)
    models = shipped_models(folder)
    if name is None or name not in models:
        have = ", ".join(sorted(t for t, n in data["tasks"].items() if n in models)) or "none"
        others = sorted(n for n, m in models.items() if task in m.tasks)
        hint = (f"shipped for {task} but not its default (see README): --engine {' or --engine '.join(others)}; or "
                if others else "")
        raise SgfError(f"no shipped default model for task {task} (shipped defaults: {have}); "
                       f"{hint}train one and pass --engine PATH to an engine built from it")
    return models[name]


def model_by_checkpoint(sha256: str | None, folder: Path | None = None) -> ShippedModel | None:
    """The shipped model whose checkpoint has this SHA-256, if any."""
    for model in shipped_models(folder).values():
        if sha256 and model.checkpoint_sha256 == sha256:
            return model
    return None


def write_registry(data: dict[str, Any], folder: Path | None = None) -> Path:
    """Write the registry atomically (sorted keys, so diffs stay readable)."""
    from ..artifacts import write_json_atomic

    path = registry_path(folder)
    write_json_atomic(path, dict(data, format=FORMAT, format_version=1), overwrite=True)
    return path
