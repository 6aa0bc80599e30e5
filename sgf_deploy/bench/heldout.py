"""Held-out real anatomy evaluation (``sgf-deploy evaluate --anatomy colin27``).

For every task and contrast pair of :data:`PAIRS` (named pairs the models trained on, and pairs
none of them trained on), ``n`` Colin27 slices (:mod:`sgf_deploy.data.colin27`, never used in
training) are scored: zero-filled and every shipped model trained for the task (its shipped ONNX
file in ONNX Runtime, the engine ``run`` uses), PSNR per slice against the ground truth, each
model paired with zero-filled on the same slices (mean difference, Student-t 95 % CI, worst slice)
and checked against the bar (beat zero-filled by 2 dB at 4x / 1 dB at 8x on average, and never be
worse on any slice).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..compare.stats import paired_comparison
from ..data.random_contrast import Contrast

#: pair name -> (reference contrast, target contrast). ``gre-*``: a spoiled gradient echo
#: (TR 197 ms, TE 13 ms, flip 6 deg: PD-like), a target no named pair has.
PAIRS: dict[str, tuple[Any, Any]] = {
    "t1-t2": ("T1w", "T2w"),
    "t1-flair": ("T1w", "FLAIR"),
    "pd-t2": ("PD", "T2w"),
    "t1-pd": ("T1w", "PD"),
    "t2-flair": ("T2w", "FLAIR"),
    "flair-t2": ("FLAIR", "T2w"),
    "t1-gre": ("T1w", Contrast("GRE", {"TR": 197.0, "TE": 13.0, "flip": 6.0})),
}
BAR_DB = {"recon4x": 2.0, "recon8x": 1.0, "sr2x": 2.0, "sr4x": 1.0}


def _reconstructors(tasks: list[str], threads: int | None, echo: Callable[[str], None] | None):
    from ..model.registry import shipped_models
    from ..runtime.embedded import default_engine
    from ..runtime.reconstructor import Reconstructor

    out: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for name, model in shipped_models().items():
        wanted = [t for t in tasks if t in model.tasks]
        if not wanted:
            continue
        engine, _ = default_engine(checkpoint=model.checkpoint_path, echo=echo)
        rec = Reconstructor.load(engine, threads=threads)
        for t in wanted:
            out[t][name] = rec
    return out


def evaluate_heldout(tasks: list[str], n: int = 48, seed: int = 0, pairs: list[str] | None = None,
                     threads: int | None = None, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The table's rows: one per (task, pair), zero-filled and each shipped model of the task."""
    from ..data.colin27 import find_colin27, make_set
    from ..metrics import psnr_per_slice

    folder = find_colin27()
    recs = _reconstructors(tasks, threads, echo)
    rows = []
    for task in tasks:
        for pair in pairs or list(PAIRS):
            ref_c, tar_c = PAIRS[pair]
            data = make_set(ref_c, tar_c, task, n=n, seed=seed, folder=folder)
            zf = psnr_per_slice(data.ground_truth, data.target)
            row: dict[str, Any] = {"task": task, "pair": pair, "n": int(n), "zero_filled": _ci(zf), "models": {}}
            for name, rec in recs[task].items():
                pred = rec(data.reference, data.target)
                model_psnr = psnr_per_slice(data.ground_truth, pred)
                cmp = paired_comparison(zf, model_psnr)
                diff = model_psnr - zf
                row["models"][name] = {
                    "psnr": _ci(model_psnr), "gain_db": cmp.mean_diff, "gain_ci95": [cmp.ci95_low, cmp.ci95_high],
                    "worst_gain_db": float(diff.min()), "worst_slice": int(data.slice_index[int(np.argmin(diff))]),
                    "slices_worse": int((diff < 0).sum()),
                    "meets_bar": bool(cmp.mean_diff >= BAR_DB[task] and diff.min() >= 0.0),
                }
            rows.append(row)
            if echo:
                echo(format_row(row))
    return {"anatomy": f"Colin27 ({folder})", "n": int(n), "seed": int(seed), "bar_db": BAR_DB, "rows": rows}


def _ci(values: np.ndarray) -> dict[str, float]:
    from scipy import stats

    values = np.asarray(values, float)
    half = float(stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size))
    return {"mean": float(values.mean()), "ci95": [float(values.mean() - half), float(values.mean() + half)]}


def format_row(row: dict[str, Any]) -> str:
    zf = row["zero_filled"]
    parts = [f"{row['task']:8s} {row['pair']:9s} zero-filled {zf['mean']:6.2f} dB"]
    for name, m in row["models"].items():
        lo, hi = m["gain_ci95"]
        parts.append(f"{name} {m['psnr']['mean']:6.2f} dB ({m['gain_db']:+.2f} [{lo:+.2f}, {hi:+.2f}], "
                     f"worst slice {m['worst_gain_db']:+.2f}; {'meets' if m['meets_bar'] else 'MISSES'} the bar)")
    return "; ".join(parts)


def format_markdown(result: dict[str, Any]) -> str:
    """The table for the README: one row per task x pair, one column group per model."""
    names = sorted({name for row in result["rows"] for name in row["models"]})
    head = "| task | pair | zero-filled dB [95 % CI] | " + " | ".join(
        f"{n}: dB, gain vs zero-filled [95 % CI], worst slice" for n in names) + " |"
    lines = [f"Held-out anatomy: {result['anatomy']}, {result['n']} axial slices per row, seed {result['seed']}.",
             "", head, "|" + "---|" * (3 + len(names))]
    for row in result["rows"]:
        zf = row["zero_filled"]
        cells = [row["task"], row["pair"], f"{zf['mean']:.2f} [{zf['ci95'][0]:.2f}, {zf['ci95'][1]:.2f}]"]
        for n in names:
            m = row["models"].get(n)
            cells.append("not trained for this task" if m is None else
                         f"{m['psnr']['mean']:.2f}, {m['gain_db']:+.2f} [{m['gain_ci95'][0]:+.2f}, "
                         f"{m['gain_ci95'][1]:+.2f}], {m['worst_gain_db']:+.2f}{'' if m['meets_bar'] else ' (misses)'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def simulator_t1_t2(n: int = 64, seed: int = 0, task: str = "recon4x", threads: int | None = None,
                    echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The simulator's T1->T2 test split (the slices ``sgf-deploy evaluate --n 64`` scores):
    zero-filled and every shipped model of ``task``, each paired with the old T1->T2 default."""
    from ..data.simulator import simulate
    from ..metrics import psnr_per_slice

    recs = _reconstructors([task], threads, echo)[task]
    data = simulate("t1-t2", task, "test", n, seed=seed)
    scores = {"zero-filled": psnr_per_slice(data["ground_truth"], data["target"])}
    for name, rec in recs.items():
        scores[name] = psnr_per_slice(data["ground_truth"], rec(data["reference"], data["target"]))
    out: dict[str, Any] = {"what": f"simulator t1-t2 {task} test split, {n} slices, seed {seed}",
                           "psnr": {k: _ci(v) for k, v in scores.items()}}
    base = scores.get("lite-recon4x-t1-t2")
    if base is not None:
        out["vs_old_default"] = {k: paired_comparison(base, v).to_dict() for k, v in scores.items()
                                 if k not in ("zero-filled", "lite-recon4x-t1-t2")}
    if echo:
        for k, v in out["psnr"].items():
            echo(f"simulator t1-t2 {task}: {k} {v['mean']:.2f} dB [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    return out
