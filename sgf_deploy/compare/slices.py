"""Per-slice comparison of an engine's and the PyTorch reference's outputs against the ground
truth: the table and summary that ``validate`` gates on and ``bench`` reports.

For every slice: PSNR/SSIM/NMSE of each output against the ground truth (fastMRI conventions,
:mod:`sgf_deploy.metrics`); PSNR(engine, PyTorch) and the max abs error between the two outputs
(:func:`sgf_deploy.compare.images.image_parity`, data range ``ground_truth_max``: the ground-truth
maximum of the slice's volume, the same range as the PSNRs beside it). Aggregates: means, the
worst slice, and paired per-slice differences engine - PyTorch with a 95 % t CI and a Wilcoxon
signed-rank p-value (:mod:`.stats`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .images import image_parity
from .stats import paired_comparison

__all__ = ["compare_outputs"]


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def compare_outputs(gts: list[np.ndarray], pytorch: list[np.ndarray], engine: list[np.ndarray],
                    names: list[str] | None = None) -> dict[str, Any]:
    """Per-slice and aggregate figures for volumes ``gts[i]`` (n_i, H, W) and the two outputs.

    Returns ``{"per_slice": [...], "summary": {...}, "nonfinite": {...}, "worst_index": int}``.
    Non-finite outputs are counted; the metrics are then computed on the slices where both outputs
    are finite (the verdict fails anyway). Infinite PSNRs (identical images) are written as
    ``null`` with the count in ``identical_slices``.
    """
    from ..metrics import psnr_per_slice, ssim_per_slice

    names = names or [f"volume-{i}" for i in range(len(gts))]
    rows: list[dict[str, Any]] = []
    cols: dict[str, list[float]] = {k: [] for k in (
        "psnr_pt", "psnr_eng", "ssim_pt", "ssim_eng", "nmse_pt", "nmse_eng", "parity", "maxabs", "maxabs_rel")}
    nonfinite_eng = nonfinite_pt = 0
    for v, (gt, pt, eng) in enumerate(zip(gts, pytorch, engine)):
        gt = np.asarray(gt, np.float64)
        pt = np.asarray(pt, np.float64)
        eng = np.asarray(eng, np.float64)
        data_range = float(gt.max())
        for s in range(gt.shape[0]):
            bad_e = int(eng[s].size - np.count_nonzero(np.isfinite(eng[s])))
            bad_p = int(pt[s].size - np.count_nonzero(np.isfinite(pt[s])))
            nonfinite_eng += bad_e
            nonfinite_pt += bad_p
            row: dict[str, Any] = {"index": len(rows), "volume": names[v], "slice": s, "data_range": data_range,
                                   "nonfinite_engine": bad_e, "nonfinite_pytorch": bad_p}
            if bad_e or bad_p:
                rows.append(row)
                continue
            g, p, e = gt[s : s + 1], pt[s : s + 1], eng[s : s + 1]
            vals = {
                "psnr_pt": float(psnr_per_slice(g, p, data_range)[0]),
                "psnr_eng": float(psnr_per_slice(g, e, data_range)[0]),
                "ssim_pt": float(ssim_per_slice(g, p, data_range)[0]),
                "ssim_eng": float(ssim_per_slice(g, e, data_range)[0]),
                "nmse_pt": float(np.sum((g - p) ** 2) / np.sum(g**2)),
                "nmse_eng": float(np.sum((g - e) ** 2) / np.sum(g**2)),
            }
            pair = image_parity(p, e, rule="ground_truth_max", range_override=data_range)
            vals["parity"], vals["maxabs"] = pair.psnr_db, pair.max_abs_error
            vals["maxabs_rel"] = vals["maxabs"] / data_range
            for k, x in vals.items():
                cols[k].append(x)
            row.update({
                "psnr_pytorch": vals["psnr_pt"], "psnr_engine": vals["psnr_eng"],
                "delta_psnr": vals["psnr_eng"] - vals["psnr_pt"],
                "ssim_pytorch": vals["ssim_pt"], "ssim_engine": vals["ssim_eng"],
                "delta_ssim": vals["ssim_eng"] - vals["ssim_pt"],
                "nmse_pytorch": vals["nmse_pt"], "nmse_engine": vals["nmse_eng"],
                "psnr_engine_vs_pytorch": _finite_or_none(vals["parity"]),
                "max_abs_error": vals["maxabs"], "max_abs_error_rel": vals["maxabs_rel"],
            })
            rows.append(row)
    ok = [r for r in rows if not (r["nonfinite_engine"] or r["nonfinite_pytorch"])]
    nonfinite = {"engine": nonfinite_eng, "pytorch": nonfinite_pt,
                 "slices": [r["index"] for r in rows if r["nonfinite_engine"] or r["nonfinite_pytorch"]]}
    summary: dict[str, Any] = {"n_slices": len(rows), "n_scored": len(ok)}
    worst_index = nonfinite["slices"][0] if nonfinite["slices"] else 0
    if ok:
        a = lambda k: np.asarray(cols[k], np.float64)  # noqa: E731
        parity = a("parity")
        finite_parity = parity[np.isfinite(parity)]
        summary["pytorch"] = {"psnr": float(a("psnr_pt").mean()), "ssim": float(a("ssim_pt").mean()),
                              "nmse": float(a("nmse_pt").mean())}
        summary["engine"] = {"psnr": float(a("psnr_eng").mean()), "ssim": float(a("ssim_eng").mean()),
                             "nmse": float(a("nmse_eng").mean())}
        imin = int(np.argmin(parity))
        summary["parity_psnr"] = {
            "min": _finite_or_none(parity.min()),
            "mean": _finite_or_none(finite_parity.mean()) if finite_parity.size else None,
            "median": _finite_or_none(np.median(parity)),
            "worst_slice": ok[imin]["index"],
            "identical_slices": int(np.count_nonzero(~np.isfinite(parity))),
            "data_range": "ground-truth maximum of the slice's volume",
        }
        maxabs = a("maxabs")
        summary["max_abs_error"] = {"max": float(maxabs.max()), "mean": float(maxabs.mean()),
                                    "max_relative_to_data_range": float(a("maxabs_rel").max()),
                                    "worst_slice": ok[int(np.argmax(maxabs))]["index"]}
        dp = paired_comparison(a("psnr_pt"), a("psnr_eng"))
        ds = paired_comparison(a("ssim_pt"), a("ssim_eng"))
        summary["delta_psnr"] = dp.to_dict() | {"worst_slice": ok[dp.worst_index]["index"]}
        summary["delta_ssim"] = ds.to_dict() | {"worst_slice": ok[ds.worst_index]["index"]}
        if not nonfinite["slices"]:
            worst_index = ok[dp.worst_index]["index"]
    summary["worst_slice"] = worst_index
    return {"per_slice": rows, "summary": summary, "nonfinite": nonfinite, "worst_index": worst_index}
