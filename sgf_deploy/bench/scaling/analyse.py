"""From the scaling study's timings and memory probes to its figures: per-item rows, power-law
fits against the pixel count, the share of SFA attention in the forward and where it overtakes
the rest, and the cross-attention rows (measured, or marked over budget)."""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np

from .. import machine as M
from .plan import (
    MATH_MATRICES,
    MCNS_ITEMS,
    XATTN_LEVELS,
    xattn_fits,
    xattn_matrix_bytes,
    xattn_tokens,
)

#: item -> size -> one value per repeat
Table = dict[str, dict[int, list[float]]]
#: item -> size -> the memory probe's reply
MemTable = dict[str, dict[int, dict[str, Any]]]


def _median(table: Table, item: str, size: int) -> float | None:
    vals = table.get(item, {}).get(size)
    return float(np.median(vals)) if vals else None


def _fit(table: Table, item: str, sizes: Sequence[int], stat: str = "median") -> dict[str, Any] | None:
    """Power law of ``stat`` ("median" or "min") of the repeats against the pixel count."""
    pts = [(s * s, float(np.median(v)) if stat == "median" else float(np.min(v)))
           for s in sizes if (v := table.get(item, {}).get(s))]
    return M.power_law([p for p, _ in pts], [t for _, t in pts])


def _delta_mb(mem: MemTable, item: str, size: int) -> float | None:
    return mem.get(item, {}).get(size, {}).get("delta_mb")


def analyse(sizes: Sequence[int], times: Table, mem: MemTable, presets: Sequence[str], paper_max: int,
            mem_budget_gb: float, cpu: Table | None = None, extra: dict[str, Table] | None = None) -> dict[str, Any]:
    """The study's results from the wall ``times`` and process ``cpu`` times, ``extra`` per-call
    tables (``user_s``, ``sys_s``, ``minor_faults``) and the memory probes ``mem``."""
    cpu = cpu or {}
    extra = extra or {}
    return {
        "items": {item: _item_rows(item, sizes, times, cpu, extra, mem) for item in times},
        "fits": {item: _mcns_fits(item, sizes, times, cpu, extra, mem) for item in MCNS_ITEMS if item in times},
        "attention": {preset: _attention(preset, sizes, times, cpu, mem, paper_max) for preset in presets},
        "xattn": {level: _xattn(level, sizes, times, cpu, mem, mem_budget_gb) for level in XATTN_LEVELS},
    }


def _item_rows(item: str, sizes: Sequence[int], times: Table, cpu: Table, extra: dict[str, Table],
               mem: MemTable) -> list[dict[str, Any]]:
    rows = []
    for s in sizes:
        if s not in times[item]:
            continue
        m = mem.get(item, {}).get(s, {})
        rows.append({"size": s, "pixels": s * s, "time_s": M.summarize(times[item][s]),
                     "cpu_s": M.summarize(cpu.get(item, {}).get(s, [])),
                     **{k: M.summarize(tab[item][s]) for k, tab in extra.items() if tab.get(item, {}).get(s)},
                     "memory_delta_mb": m.get("delta_mb"), "peak_rss_mb": m.get("peak_rss_mb"),
                     "memory_error": m.get("error")})
    return rows


def _mcns_fits(item: str, sizes: Sequence[int], times: Table, cpu: Table, extra: dict[str, Table],
               mem: MemTable) -> dict[str, Any]:
    fits = {"time": _fit(times, item, sizes), "time_min": _fit(times, item, sizes, "min"), "cpu": _fit(cpu, item, sizes)}
    if extra.get("user_s", {}).get(item):
        fits["cpu_user"] = _fit(extra["user_s"], item, sizes)
    fits["memory"] = M.power_law([s * s for s in sizes], [_delta_mb(mem, item, s) for s in sizes])
    return fits


def _attention_row(preset: str, scales: Sequence[int], s: int, net: float, times: Table, cpu: Table,
                   mem: MemTable) -> dict[str, Any]:
    """The whole forward against its SFA attention (summed over the MCSD scales) at one size."""
    att = {sc: _median(times, f"attn/{preset}/{sc}", s) for sc in scales}
    attc = {sc: _median(times, f"attnc/{preset}/{sc}", s) for sc in scales}
    net_cpu = _median(cpu, f"net/{preset}", s)
    total = sum(v for v in att.values() if v is not None)
    total_cpu = sum(v for sc in scales if (v := _median(cpu, f"attn/{preset}/{sc}", s)) is not None)
    return {
        "size": s, "pixels": s * s, "net_s": net, "attention_s": total, "rest_s": net - total,
        "attention_share": total / net if net else None,
        "net_cpu_s": net_cpu, "attention_cpu_s": total_cpu,
        "attention_share_cpu": total_cpu / net_cpu if net_cpu else None,
        "attention_contiguous_s": sum(v for v in attc.values() if v is not None),
        "tokens": {str(sc): (s >> sc) ** 2 for sc in scales},
        "attention_by_scale_s": {str(sc): v for sc, v in att.items()},
        "attention_contiguous_by_scale_s": {str(sc): v for sc, v in attc.items()},
        "attention_memory_delta_mb": {str(sc): _delta_mb(mem, f"attn/{preset}/{sc}", s) for sc in scales},
        "attention_contiguous_memory_delta_mb": {str(sc): _delta_mb(mem, f"attnc/{preset}/{sc}", s) for sc in scales},
        "net_memory_delta_mb": _delta_mb(mem, f"net/{preset}", s),
    }


def _attention(preset: str, sizes: Sequence[int], times: Table, cpu: Table, mem: MemTable,
               paper_max: int) -> dict[str, Any]:
    """Per-size rows, power-law fits of attention and the rest, and where attention >= rest."""
    from ...model.presets import get_preset

    scales = get_preset(preset).mcsd_scales
    per_size = [_attention_row(preset, scales, s, net, times, cpu, mem) for s in sizes
                if (net := _median(times, f"net/{preset}", s)) is not None]
    px = [r["pixels"] for r in per_size]
    fit_att = M.power_law(px, [r["attention_s"] for r in per_size])
    fit_rest = M.power_law(px, [r["rest_s"] for r in per_size]) if all(r["rest_s"] > 0 for r in per_size) else None
    fit_att_cpu = M.power_law(px, [r["attention_cpu_s"] for r in per_size])
    fit_rest_cpu = M.power_law(px, [r["net_cpu_s"] - r["attention_cpu_s"] for r in per_size]) \
        if all(r["net_cpu_s"] and r["net_cpu_s"] > r["attention_cpu_s"] for r in per_size) else None
    cross = M.crossover(fit_att, fit_rest)
    cross_cpu = M.crossover(fit_att_cpu, fit_rest_cpu)
    return {
        "mcsd_scales": list(scales),
        "per_size": per_size,
        "fit_attention": fit_att, "fit_rest": fit_rest, "fit_net": M.power_law(px, [r["net_s"] for r in per_size]),
        "fit_attention_cpu": fit_att_cpu, "fit_rest_cpu": fit_rest_cpu,
        "crossover_measured_size": next((r["size"] for r in per_size if r["attention_s"] >= r["rest_s"]), None),
        "crossover_fit_pixels": cross,
        "crossover_fit_side": math.sqrt(cross) if cross else None,
        "crossover_fit_side_cpu": math.sqrt(cross_cpu) if cross_cpu else None,
        "capped_at": paper_max if preset == "paper" else None,
    }


def _xattn(level: str, sizes: Sequence[int], times: Table, cpu: Table, mem: MemTable,
           mem_budget_gb: float) -> dict[str, Any]:
    """Cross-attention rows at every size (analytic matrix size; measured where it fits the budget)
    and power-law fits of time and memory against the token count."""
    item = f"xattn/{level}"
    rows = []
    for s in sizes:
        row: dict[str, Any] = {"size": s, "tokens": xattn_tokens(level, s), "matrix_gb": xattn_matrix_bytes(level, s) / 1024**3,
                               "estimated_peak_gb": MATH_MATRICES * xattn_matrix_bytes(level, s) / 1024**3}
        if xattn_fits(level, s, mem_budget_gb):
            m = mem.get(item, {}).get(s, {})
            row |= {"time_s": M.summarize(times.get(item, {}).get(s, [])), "cpu_s": M.summarize(cpu.get(item, {}).get(s, [])),
                    "memory_delta_mb": m.get("delta_mb"), "memory_error": m.get("error")}
        else:
            row |= {"exceeds_budget": True,
                    "note": f"not run: estimated peak {row['estimated_peak_gb']:.1f} GB > budget {mem_budget_gb:g} GB"}
        rows.append(row)
    ran = [r for r in rows if (r.get("time_s") or {}).get("median")]
    return {"rows": rows,
            "fit_time_vs_tokens": M.power_law([r["tokens"] for r in ran], [r["time_s"]["median"] for r in ran]),
            "fit_memory_vs_tokens": M.power_law([r["tokens"] for r in ran], [r.get("memory_delta_mb") for r in ran])}


def local_exponents(rows: list[dict[str, Any]], key: str = "cpu_s") -> list[dict[str, Any]]:
    """Exponent between consecutive sizes, ln(t2/t1) / ln(P2/P1), from the recorded medians: shows
    where a fit over the whole range hides a change of regime (e.g. leaving the caches)."""
    pts = [(r["pixels"], (r.get(key) or {}).get("median")) for r in rows]
    pts = [(p, t) for p, t in pts if t]
    return [{"from": round(math.sqrt(p1)), "to": round(math.sqrt(p2)), "exponent": math.log(t2 / t1) / math.log(p2 / p1)}
            for (p1, t1), (p2, t2) in itertools.pairwise(pts)]
