"""Package a checkpoint as a shipped default: export it to a self-checked ONNX file inside
``sgf_deploy/assets/default/`` and record it in the registry (:mod:`sgf_deploy.model.registry`).

A runtime-only install (numpy + ONNX Runtime) runs the shipped ONNX file directly, so the export
and its self-check (ONNX Runtime vs PyTorch) happen here, once, by the maintainer::

    python -m sgf_deploy.export.package_default --ckpt sgf_deploy/assets/default/X.pt \\
        --name X --tasks recon4x --contrasts "T1w->T2w (simulator)" [--default-for recon4x]

The ONNX file is exported with the export stage's own self-check; a failed check writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from ..artifacts import sha256_file
from ..errors import ValidationFailed
from ..model.locate import DEFAULTS_DIR
from ..model.registry import read_registry, write_registry


def package_default(checkpoint: str | Path, name: str, tasks: list[str], contrasts: str, *,
                    training: str = "", default_for: list[str] | None = None, folder: Path | None = None,
                    echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Export ``checkpoint`` to ``<folder>/<name>.onnx`` (self-checked) and register it; returns
    the registry entry. ``default_for`` makes it ``run``'s default for those tasks."""
    from .onnx_export import export_onnx

    folder = folder or DEFAULTS_DIR
    checkpoint = Path(checkpoint)
    if checkpoint.parent.resolve() != folder.resolve():
        checkpoint = _ship_checkpoint(checkpoint, folder / f"{name}.pt", echo)
    out = folder / f"{name}.onnx"
    result = export_onnx(checkpoint, out=out, overwrite=True, echo=echo)
    selfcheck = dict(result.selfcheck or {})
    if selfcheck.get("passed") is not True:
        raise ValidationFailed(f"{checkpoint}: export self-check did not pass; nothing registered")
    sidecar = Path(result.sidecar)
    if sidecar.exists():
        sidecar.unlink()  # its facts (metadata, self-check) are in the ONNX file and the registry
    data = read_registry(folder)
    previous = data["models"].get(name, {})
    entry = {
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": sha256_file(checkpoint),
        "onnx": out.name,
        "onnx_sha256": sha256_file(out),
        "selfcheck": {k: selfcheck.get(k) for k in ("passed", "max_abs_error", "psnr_db", "shape")},
        "tasks": list(tasks),
        "contrasts": contrasts,
        "training": training or previous.get("training", ""),
        "fidelity": previous.get("fidelity", {}),
    }
    data["models"][name] = entry
    for task in default_for or []:
        data["tasks"][task] = name
    write_registry(data, folder)
    if echo:
        echo(f"registered {name}: {out.name} (sha256 {entry['onnx_sha256'][:12]}...)"
             + (f", default for {', '.join(default_for)}" if default_for else ""))
    return entry


def _ship_checkpoint(src: Path, dst: Path, echo: Callable[[str], None] | None) -> Path:
    """Copy ``src`` into the package without its optimiser state (weights, config, provenance
    unchanged; the trained file's SHA-256 is recorded as ``trained_checkpoint_sha256``)."""
    from ..model import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(src)
    prov = dict(meta.get("provenance", {}), trained_checkpoint_sha256=meta["sha256"])
    saved = save_checkpoint(dst, model, prov, overwrite=True)
    if echo:
        echo(f"{dst}: sha256 {saved['sha256']} (from {src}, sha256 {meta['sha256']}, optimiser state dropped)")
    return dst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--tasks", required=True, help="comma-separated tasks the model was trained for")
    p.add_argument("--contrasts", required=True, help="the contrast range it was trained on, in words")
    p.add_argument("--training", default="", help="the training command / log file, in words")
    p.add_argument("--default-for", default="", help="comma-separated tasks it becomes run's default for")
    a = p.parse_args(argv)
    package_default(a.ckpt, a.name, a.tasks.split(","), a.contrasts, training=a.training,
                    default_for=[t for t in a.default_for.split(",") if t])


if __name__ == "__main__":  # pragma: no cover - maintainer's tool
    main()
