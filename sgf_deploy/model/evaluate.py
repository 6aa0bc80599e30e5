"""Score checkpoints against zero-filled on held-out slices: the simulator's, or the user's own.

* ``data="sim"``: each simulated slice comes from its own (subject, slice) draw, so each is scored
  as its own volume (PSNR data range = that slice's ground-truth maximum, fastMRI convention).
* ``data=DIR``: the **test split** of the folder (:mod:`sgf_deploy.data.splits`): the split the
  checkpoint recorded when it was trained on that folder (no subject it learned or was validated
  on is scored), else the split ``train --seed`` would draw. Each pair is one volume: per-slice
  PSNR with the volume's ground-truth maximum as data range; SSIM per slice; NMSE per slice.

Every row carries the 95 % confidence interval of its mean PSNR (Student's t over slices) and the
paired difference to the first row (zero-filled) with its 95 % CI
(:func:`sgf_deploy.compare.paired_comparison`). Slices of one subject are correlated, so these
intervals are narrower than intervals over subjects would be; the table says how many subjects.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import nmse, psnr, ssim, ssim_per_slice, psnr_per_slice
from .checkpoint import load_checkpoint
from .infer import reconstruct


def _mean_ci(values: np.ndarray) -> tuple[float | None, float | None]:
    """Student's t 95 % interval of the mean (None for fewer than two values)."""
    values = np.asarray(values, np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        return None, None
    from ..errors import require

    st = require("scipy.stats", "torch", "confidence intervals")
    half = float(st.t.ppf(0.975, values.size - 1)) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def _row(name: str, psnrs: np.ndarray, ssims: np.ndarray, nmses: np.ndarray, **extra: Any) -> dict[str, Any]:
    lo, hi = _mean_ci(psnrs)
    return {"name": name, **extra, "psnr": float(np.mean(psnrs)), "psnr_ci95": [lo, hi], "ssim": float(np.mean(ssims)),
            "nmse": float(np.nanmean(nmses)), "psnr_per_slice": [float(v) for v in psnrs]}


def _scores(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice PSNR/SSIM/NMSE, each slice its own volume (simulated slices)."""
    per = np.asarray([(psnr(g, p), ssim(g, p), nmse(g, p)) for g, p in zip(gt, pred)])
    return per[:, 0], per[:, 1], per[:, 2]


def _volume_scores(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice scores of one volume (data range = the volume's ground-truth maximum)."""
    sq = np.sum(np.square(gt.astype(np.float64)), axis=(1, 2))
    err = np.sum(np.square(gt.astype(np.float64) - pred.astype(np.float64)), axis=(1, 2))
    return psnr_per_slice(gt, pred), ssim_per_slice(gt, pred), err / np.where(sq > 0, sq, np.nan)


def _add_deltas(rows: list[dict[str, Any]]) -> None:
    from ..compare import paired_comparison

    base = rows[0]["psnr_per_slice"]
    for row in rows:
        cmp = paired_comparison(base, row["psnr_per_slice"]).to_dict()
        row["delta_psnr_vs_first"] = cmp["mean_diff"]
        row["delta_psnr_ci95"] = [cmp["ci95_low"], cmp["ci95_high"]]


def _models(checkpoints: list[str | Path]) -> list[tuple[str | Path, Any, dict[str, Any]]]:
    return [(path, *load_checkpoint(path)) for path in checkpoints]


def _label(path: str | Path, model: Any) -> str:
    kind = "single-contrast control" if not model.config.use_reference else "SGF-MRI"
    return f"{kind} ({Path(path).name})"


def evaluate(
    checkpoints: list[str | Path], *, pair: str | None = None, task: str | None = None,
    split: str = "test", n: int = 64, seed: int = 0, batch: int = 4, data: str = "sim",
) -> dict[str, Any]:
    """Rows for zero-filled and each checkpoint on the same slices (see the module docstring)."""
    if str(data) != "sim":
        return evaluate_folder(checkpoints, data, n=n, seed=seed, batch=batch, task=task)
    from ..data.simulator import RANDOM_PAIR, simulate

    models = _models(checkpoints)
    prov = models[0][2].get("provenance", {}) if models else {}
    pair = pair or prov.get("pair", "t1-t2")
    task = task or prov.get("task", "recon4x")
    if prov.get("split"):
        raise InputError(f"{models[0][0]}: trained on the user folder {prov.get('data')}; score it there with "
                         f"--data {prov.get('data')} (the simulator has no '{pair}' pair)")
    data_ = simulate(pair, task, split, n, seed=seed)
    zero = "zero-filled" if task.startswith("recon") else "degraded input"
    rows = [_row(zero, *_scores(data_["ground_truth"], data_["target"]))]
    for path, model, meta in models:
        p = meta.get("provenance", {})
        if p.get("task") != task or p.get("pair") not in (pair, RANDOM_PAIR):  # the random pair covers every pair
            raise InputError(f"{path}: trained for {p.get('pair')} {p.get('task')}, evaluating {pair} {task}")
        pred = reconstruct(model, data_["reference"], data_["target"], batch=batch)
        rows.append(_row(_label(path, model), *_scores(data_["ground_truth"], pred), checkpoint_sha256=meta["sha256"]))
    _add_deltas(rows)
    return {"data": "sim", "pair": pair, "task": task, "split": split, "n": n, "seed": seed, "rows": rows,
            "what": f"{n} held-out '{split}' simulated slices"}


def evaluate_folder(checkpoints: list[str | Path], folder: str | Path, *, n: int | None = None, seed: int = 0,
                    batch: int = 4, task: str | None = None) -> dict[str, Any]:
    """Zero-filled and each checkpoint on the test split of a user folder (at most ``n`` slices)."""
    from ..data.pairs import load_pair
    from ..data.splits import from_provenance, pairs_for

    models = _models(checkpoints)
    first = models[0]
    prov = first[2].get("provenance", {})
    recorded = from_provenance(prov, str(first[0]))
    task = task or prov.get("task") or "recon4x"
    for path, _, meta in models[1:]:
        if meta.get("provenance", {}).get("task") != task:
            raise InputError(f"{path}: trained for {meta.get('provenance', {}).get('task')}, evaluating {task}")
    pairs, how = pairs_for(folder, "test", recorded, seed=seed)
    for path, _, meta in models[1:]:  # held out for every model, not only the first
        other = from_provenance(meta.get("provenance", {}), str(path))
        if other is not None:
            pairs = other.select(pairs, "test")
    if not pairs:
        raise InputError(f"{folder}: no subject is held out from every checkpoint given")
    volumes, total = [], 0
    for files in pairs:
        loaded = load_pair(files, task, seed, None if n is None else n - total)
        if loaded.ground_truth is None:
            raise InputError(f"{files.target}: pair '{files.name}' has no ground truth to score against")
        volumes.append(loaded)
        total += len(loaded.target)
        if n is not None and total >= n:
            break
    gts = [v.ground_truth for v in volumes]
    zero = "zero-filled" if task.startswith("recon") else "degraded input"
    rows = [_row(zero, *(np.concatenate(x) for x in zip(*(_volume_scores(g, v.target) for g, v in zip(gts, volumes)))))]
    for path, model, meta in models:
        preds = [reconstruct(model, v.reference, v.target, batch=batch) for v in volumes]
        scores = [_volume_scores(g, p) for g, p in zip(gts, preds)]
        rows.append(_row(_label(path, model), *(np.concatenate(x) for x in zip(*scores)),
                         checkpoint_sha256=meta["sha256"]))
    _add_deltas(rows)
    subjects = sorted({v.files.subject for v in volumes})
    return {"data": str(folder), "pair": str(prov.get("pair") or "user"), "task": task, "split": "test", "n": total,
            "seed": seed, "rows": rows, "subjects": subjects, "selection": how,
            "what": f"{total} slices of {len(subjects)} test subject(s) ({', '.join(subjects)}) of {folder}"}


def _ci(pair: list[float | None] | None) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "n/a"
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def format_table(result: dict[str, Any]) -> str:
    """The result as a Markdown table (PSNR with 95 % CI, paired difference to the first row)."""
    lines = [f"{result['pair']} {result['task']}: {result['what']} (seed {result['seed']})"]
    if result.get("selection"):
        lines.append(f"slices: {result['selection']}")
    lines += [
        "",
        "| method | PSNR (dB) | 95% CI | SSIM | NMSE | delta PSNR vs first | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        delta = row.get("delta_psnr_vs_first")
        lines.append(f"| {row['name']} | {row['psnr']:.2f} | {_ci(row.get('psnr_ci95'))} | {row['ssim']:.4f} | "
                     f"{row['nmse']:.5f} | {'' if delta is None else f'{delta:+.2f}'} | {_ci(row.get('delta_psnr_ci95'))} |")
    return "\n".join(lines)
