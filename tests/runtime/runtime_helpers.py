"""Helpers shared by the runtime tests (imported as a plain module: tests/ has no packages)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

_SIM: dict[int, dict[str, np.ndarray]] = {}


def phantom_pair(n: int, h: int, w: int, seed: int = 0, scale: float = 1000.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference, 4x-undersampled target, ground truth) float32 (n, h, w) from the project's
    simulator (T1w -> T2w, test split), cropped around the brain and scaled by ``scale``."""
    from sgf_deploy.data.simulator import SHAPE, simulate

    if seed not in _SIM:
        _SIM[seed] = simulate("t1-t2", "recon4x", "test", 8, seed=seed)
    sim = _SIM[seed]
    y0, x0 = (SHAPE[0] - h) // 2, (SHAPE[1] - w) // 2
    idx = [i % 8 for i in range(n)]
    crop = (idx, slice(y0, y0 + h), slice(x0, x0 + w))
    return tuple(np.ascontiguousarray(sim[k][crop] * np.float32(scale))  # type: ignore[return-value]
                 for k in ("reference", "target", "ground_truth"))


def copy_engine(engine: Path, dest_dir: Path, name: str | None = None) -> Path:
    """Copy an engine and its manifest (``<engine>.json``) into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / (name or engine.name)
    shutil.copy2(engine, target)
    shutil.copy2(engine.with_name(engine.name + ".json"), target.with_name(target.name + ".json"))
    return target


def mark_validated(engine: Path, verdict: str = "pass", when: str = "2026-11-24T12:00:00") -> None:
    from sgf_deploy.engines import update_manifest

    update_manifest(engine, validation={"verdict": verdict, "report_sha256": "0" * 64,
                                        "report_path": "reports/test.json", "validated_at": when})
