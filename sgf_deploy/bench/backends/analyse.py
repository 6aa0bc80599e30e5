"""From the raw measurements to the figures: per-slice latency, throughput and its ratio to
PyTorch, memory and start-up per backend and configuration; parity against PyTorch and the
ground truth with the precision's gate; the issue-8 bar."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import machine as M
from .inputs import ParitySet

# The issue-8 bar (2-core CPU, lite at 320x320): throughput ratios to PyTorch eager FP32 and INT8 parity.
BAR = {"preset": "lite", "size": 320, "fp32_ratio": 1.5, "int8_ratio": 2.5, "int8_min_parity_db": 40.0,
       "int8_max_abs_delta_psnr_db": 0.1}

Runs = list[dict[str, Any]]


def _median(runs: Runs, key: str) -> float | None:
    return float(np.median([r[key] for r in runs])) if runs else None


def _row(spec: dict[str, Any], runs: Runs, ref_runs: Runs, probes: Runs, batch: int, stack: int) -> dict[str, Any]:
    """One backend at one (size, batch): latency, throughput, ratios to PyTorch, memory, start-up."""
    ref_med, ref_cpu = _median(ref_runs, "stack_s"), _median(ref_runs, "stack_cpu_s")
    per_slice = [c / batch for r in runs for c in r["calls"]]
    med, cpu_med = _median(runs, "stack_s"), _median(runs, "stack_cpu_s")
    paired = [rr["stack_s"] / r["stack_s"] for r, rr in zip(runs, ref_runs)]
    ok = [p for p in probes if "error" not in p]
    return {
        "latency_ms_per_slice": {"p50": M.percentile(per_slice, 50) * 1e3, "p95": M.percentile(per_slice, 95) * 1e3,
                                 "calls": len(per_slice)},
        "stack_s": M.summarize([r["stack_s"] for r in runs]),
        "throughput_slices_per_s": stack / med,
        "ratio_vs_pytorch": (ref_med / med) if ref_med else None,
        "ratio_vs_pytorch_paired_median": float(np.median(paired)) if paired else None,
        "ratio_vs_pytorch_paired_range": [float(min(paired)), float(max(paired))] if paired else None,
        "stack_cpu_s_median": cpu_med,
        "ratio_vs_pytorch_cpu_time": (ref_cpu / cpu_med) if ref_cpu and cpu_med else None,
        "peak_rss_mb": max((p["peak_rss_mb"] for p in ok), default=None),
        "rss_after_load_mb": max((p["rss_after_load_mb"] for p in ok if p.get("rss_after_load_mb")), default=None),
        "startup_s": M.summarize([p["startup_s"] for p in ok]) if ok else None,
        "device_memory": "n/a (CPU)" if (spec.get("device") or {}).get("kind", "cpu") == "cpu" else None,
        "probe_errors": [p["error"] for p in probes if "error" in p] or None,
    }


def analyse(specs: list[dict[str, Any]], configs: Sequence[tuple[int, int]], times: dict[str, dict[str, Runs]],
            probes: dict[str, dict[str, Runs]], stack: int) -> dict[str, Any]:
    """``{"SxB": {"size", "batch", "backends": {name: row}}}`` from the stack timings (backend ->
    "SxB" -> one reply per repeat) and the fresh-process probes (same layout)."""
    out: dict[str, Any] = {}
    for s, b in configs:
        key = f"{s}x{b}"
        ref_runs = times.get("pytorch-fp32", {}).get(key, [])
        rows = {}
        for spec in specs:
            runs = times.get(spec["name"], {}).get(key, [])
            if not runs:
                rows[spec["name"]] = {"skipped": "outside the engine's profile"}
                continue
            rows[spec["name"]] = _row(spec, runs, ref_runs, probes.get(spec["name"], {}).get(key, []), b, stack)
        out[key] = {"size": s, "batch": b, "backends": rows}
    return out


def parity_figures(parity: ParitySet, outputs: dict[str, str], specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each engine's parity outputs against PyTorch's and the ground truth, as ``sgf-deploy
    validate`` computes them, with the verdict of the engine's precision gate."""
    from ...contract import restore

    n = parity.prepared.n

    def load(name: str) -> list[np.ndarray]:
        out = restore(np.load(outputs[name], allow_pickle=False), parity.prepared)
        return [out[i : i + 1] for i in range(n)]

    pytorch = load("pytorch-fp32")
    gts = [parity.ground_truth[i : i + 1] for i in range(n)]
    return {spec["name"]: _parity_row(spec, gts, pytorch, load(spec["name"])) for spec in specs
            if spec["kind"] != "torch" and spec["name"] in outputs}


def _parity_row(spec: dict[str, Any], gts: list[np.ndarray], pytorch: list[np.ndarray],
                engine: list[np.ndarray]) -> dict[str, Any]:
    from ...compare import compare_outputs
    from ...validate.thresholds import judge, thresholds_for

    cmp = compare_outputs(gts, pytorch, engine)
    summ = cmp["summary"]
    par = summ.get("parity_psnr") or {}
    dp = summ.get("delta_psnr") or {}
    delta_mean = dp.get("mean_diff")
    th = thresholds_for(spec.get("precision"))
    nonfinite = int(cmp["nonfinite"]["engine"]) + int(cmp["nonfinite"]["pytorch"])
    verdict, reasons = judge(nonfinite=nonfinite, parity_psnr_min=par.get("min"), delta_psnr_mean=delta_mean, thresholds=th)
    return {
        "psnr_engine_vs_pytorch_db": {"min": par.get("min"), "mean": par.get("mean"), "median": par.get("median"),
                                      "identical_slices": par.get("identical_slices")},
        "delta_psnr_vs_gt_db": {"mean": delta_mean, "ci95": [dp.get("ci95_low"), dp.get("ci95_high")],
                                "wilcoxon_p": dp.get("wilcoxon_p")},
        "psnr_vs_gt_db": {"pytorch": (summ.get("pytorch") or {}).get("psnr"), "engine": (summ.get("engine") or {}).get("psnr")},
        "max_abs_error": (summ.get("max_abs_error") or {}).get("max"),
        "nonfinite": nonfinite,
        "gate": {"precision": th.precision, "min_parity_psnr_db": th.min_parity_psnr, "max_abs_delta_psnr_db": th.max_delta_psnr,
                 "verdict": verdict, "reasons": reasons},
    }


def judge_bar(record: dict[str, Any]) -> dict[str, Any]:
    """The issue-8 bar on ``lite`` at 320x320 (every batch measured): ORT INT8 >= 2.5x and ORT FP32
    >= 1.5x PyTorch eager throughput, INT8 parity >= 40 dB and |mean delta PSNR| <= 0.1 dB."""
    from ...model.presets import PRESETS

    cfg = (record.get("checkpoint") or {}).get("config") or {}
    preset = next((n for n, c in PRESETS.items() if c.to_dict() == cfg), "custom")
    bar: dict[str, Any] = {"definition": BAR, "preset": preset, "checks": []}
    if preset != BAR["preset"]:
        bar["note"] = f"the bar is defined for the {BAR['preset']} preset; this run used {preset}"
    bar["checks"] = _throughput_checks(record.get("results", {})) + _parity_checks((record.get("parity") or {}).get("ort-int8"))
    bar["met"] = bool(bar["checks"]) and all(c["pass"] for c in bar["checks"])
    if not (record.get("checkpoint") or {}).get("trained"):
        bar["parity_note"] = "checkpoint is untrained: parity figures do not speak for the trained model"
    return bar


def _throughput_checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for res in results.values():
        if res["size"] != BAR["size"]:
            continue
        for name, need in (("ort-fp32", BAR["fp32_ratio"]), ("ort-int8", BAR["int8_ratio"])):
            row = res["backends"].get(name)
            if not row or row.get("ratio_vs_pytorch") is None:
                continue
            got = row["ratio_vs_pytorch"]
            checks.append({"what": f"{name} throughput / pytorch-fp32 at {res['size']}x{res['size']} batch {res['batch']}",
                           "value": got, "paired_median": row.get("ratio_vs_pytorch_paired_median"),
                           "cpu_time_ratio": row.get("ratio_vs_pytorch_cpu_time"),
                           "need": need, "pass": got >= need, "shortfall": None if got >= need else need - got})
    return checks


def _parity_checks(par: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not par:
        return []
    pmin = par["psnr_engine_vs_pytorch_db"]["min"]
    dmean = par["delta_psnr_vs_gt_db"]["mean"]
    need_db, need_delta = BAR["int8_min_parity_db"], BAR["int8_max_abs_delta_psnr_db"]
    return [
        {"what": "ort-int8 worst-slice PSNR(engine, PyTorch) dB", "value": pmin, "need": need_db,
         "pass": pmin is not None and pmin >= need_db},
        {"what": "ort-int8 |mean delta PSNR vs ground truth| dB", "value": abs(dmean) if dmean is not None else None,
         "need": need_delta, "pass": dmean is not None and abs(dmean) <= need_delta},
    ]
