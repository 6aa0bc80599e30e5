"""Score checkpoints against zero-filled on held-out simulated slices.

Each simulated slice comes from its own (subject, slice) draw, so each is scored as its own
volume (PSNR data range = that slice's ground-truth maximum, fastMRI convention).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import psnr, ssim, nmse
from .checkpoint import load_checkpoint
from .infer import reconstruct


def _scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    per = [(psnr(g, p), ssim(g, p), nmse(g, p)) for g, p in zip(gt, pred)]
    arr = np.asarray(per)
    return {"psnr": float(arr[:, 0].mean()), "ssim": float(arr[:, 1].mean()), "nmse": float(arr[:, 2].mean()),
            "psnr_per_slice": arr[:, 0].tolist()}


def evaluate(
    checkpoints: list[str | Path], *, pair: str | None = None, task: str | None = None,
    split: str = "test", n: int = 64, seed: int = 0, batch: int = 4,
) -> dict[str, Any]:
    """Rows for zero-filled and each checkpoint on the same ``n`` slices of ``split``."""
    from ..data.simulator import simulate

    models = [load_checkpoint(p) for p in checkpoints]
    prov = models[0][1].get("provenance", {}) if models else {}
    pair = pair or prov.get("pair", "t1-t2")
    task = task or prov.get("task", "recon4x")
    data = simulate(pair, task, split, n, seed=seed)
    rows = [{"name": "zero-filled" if task.startswith("recon") else "degraded input", **_scores(data["ground_truth"], data["target"])}]
    for path, (model, meta) in zip(checkpoints, models):
        p = meta.get("provenance", {})
        if (p.get("pair"), p.get("task")) != (pair, task):
            raise ValueError(f"{path}: trained for {p.get('pair')} {p.get('task')}, evaluating {pair} {task}")
        pred = reconstruct(model, data["reference"], data["target"], batch=batch)
        label = "single-contrast control" if not model.config.use_reference else "SGF-MRI"
        rows.append({"name": f"{label} ({Path(path).name})", "checkpoint_sha256": meta["sha256"], **_scores(data["ground_truth"], pred)})
    base = rows[0]["psnr_per_slice"]
    for row in rows:
        row["delta_psnr_vs_first"] = float(np.mean(np.subtract(row["psnr_per_slice"], base)))
    return {"pair": pair, "task": task, "split": split, "n": n, "seed": seed, "rows": rows}


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['pair']} {result['task']}, {result['n']} held-out '{result['split']}' slices (seed {result['seed']})",
        "",
        "| method | PSNR (dB) | SSIM | NMSE |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['name']} | {row['psnr']:.2f} | {row['ssim']:.4f} | {row['nmse']:.5f} |")
    return "\n".join(lines)
