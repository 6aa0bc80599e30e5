"""A scaling-study record as text: the key figures (what ``sgf-deploy bench --scaling`` prints) and
the README tables (rendered from the recorded JSON)."""

from __future__ import annotations

from typing import Any

from .analyse import local_exponents
from .plan import MCNS_ITEMS

NET_ITEMS = ("net/lite", "net/paper")


def _fit_text(f: dict[str, Any] | None) -> str:
    return f"P^{f['exponent']:.3f} (r2 {f['r2']:.3f})" if f else "-"


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _row_at(items: dict[str, list[dict[str, Any]]], item: str, size: int) -> dict[str, Any] | None:
    return next((r for r in items.get(item, []) if r["size"] == size), None)


def _median(row: dict[str, Any] | None, key: str) -> float | None:
    return (row.get(key) or {}).get("median") if row else None


def _local_exponent_text(rows: list[dict[str, Any]]) -> str | None:
    """The CPU-time exponents as text ("128->192: 1.02, ..."); None with fewer than two sizes."""
    loc = local_exponents(rows)
    return ", ".join(f"{e['from']}->{e['to']}: {e['exponent']:.2f}" for e in loc) if loc else None


def _net_skips(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(size, item, why) of every network left out."""
    return [(s, item, why) for s, left in (record.get("skipped") or {}).items() for item, why in left.items()
            if item.startswith("net/")]


def _memory_total(values: dict[str, float | None]) -> float | None:
    vals = [v for v in values.values() if v]
    return sum(vals) if vals else None


# ----------------------------------------------------------------------------- summary lines
def summary_lines(record: dict[str, Any]) -> list[str]:
    """Human-readable lines of the key figures (what the CLI prints)."""
    res = record["results"]
    out = [f"load average start {record.get('loadavg_start')} end {record.get('loadavg_end')}"]
    for item in (i for i in MCNS_ITEMS if i in res["fits"]):
        out += _mcns_lines(item, res)
    out += _time_table_lines(record)
    for preset, a in res["attention"].items():
        out += _attention_lines(preset, a)
    out += [f"{item} at {s}: {why}" for s, item, why in _net_skips(record)]
    for level, x in res["xattn"].items():
        for r in x["rows"]:
            if r.get("exceeds_budget"):
                out.append(f"xattn/{level} {r['size']}: N={r['tokens']} matrix {r['matrix_gb']:.2f} GB -- {r['note']}")
            else:
                t = r.get("time_s", {}).get("median")
                out.append(f"xattn/{level} {r['size']}: N={r['tokens']} matrix {r['matrix_gb']:.3f} GB, "
                           f"measured +{r.get('memory_delta_mb') or float('nan'):.0f} MB, {t * 1e3 if t else float('nan'):.0f} ms")
    return out


def _mcns_lines(item: str, res: dict[str, Any]) -> list[str]:
    f = res["fits"].get(item, {})
    rows = res["items"].get(item, [])
    out = [f"{item}: wall median ~ {_fit_text(f.get('time'))}, wall min ~ {_fit_text(f.get('time_min'))}, "
           f"CPU time ~ {_fit_text(f.get('cpu'))}, user CPU ~ {_fit_text(f.get('cpu_user'))}, "
           f"memory ~ {_fit_text(f.get('memory'))}"]
    loc = _local_exponent_text(rows)
    if loc:
        out.append(f"{item}: CPU-time exponent between consecutive sizes: {loc}")
    faults = [(r["size"], _median(r, "sys_s"), _median(r, "minor_faults")) for r in rows]
    if any(sy is not None for _, sy, _ in faults):
        out.append(f"{item}: system CPU ms / minor page faults per call: "
                   + ", ".join(f"{sz}: {sy * 1e3:.0f} / {mf:.0f}" for sz, sy, mf in faults if sy is not None and mf is not None))
    return out


def _time_table_lines(record: dict[str, Any]) -> list[str]:
    cols = MCNS_ITEMS + NET_ITEMS
    items = record["results"]["items"]
    out = ["size  " + "  ".join(f"{k:>12}" for k in cols) + "   (median wall ms; CPU ms in brackets)"]
    for s in record["settings"]["sizes"]:
        vals = []
        for k in cols:
            row = _row_at(items, k, s)
            if row and row["time_s"].get("median"):
                vals.append(f"{row['time_s']['median'] * 1e3:7.0f} [{(row['cpu_s'].get('median') or 0) * 1e3:5.0f}]")
            else:
                vals.append(f"{'-':>13}")
        out.append(f"{s:4d}  " + " ".join(vals))
    return out


def _attention_lines(preset: str, a: dict[str, Any]) -> list[str]:
    def total_mb(d: dict[str, Any]) -> str:
        vals = [v for v in d.values() if v is not None]
        return f"+{sum(vals):.0f} MB" if vals else "memory not probed"

    shares = ", ".join(f"{r['size']}: {r['attention_share'] * 100:.0f}% (CPU {r['attention_share_cpu'] * 100:.0f}%)"
                       for r in a["per_size"] if r["attention_share"] is not None and r["attention_share_cpu"] is not None)
    out = [f"{preset}: SFA attention share of the forward [{shares}]; attention ~ {_fit_text(a.get('fit_attention'))}, "
           f"rest ~ {_fit_text(a.get('fit_rest'))}"]
    for r in a["per_size"]:
        out.append(f"  {preset} {r['size']}: attention as SFA lays it out {r['attention_s'] * 1e3:.1f} ms "
                   f"({total_mb(r['attention_memory_delta_mb'])}), contiguous {r['attention_contiguous_s'] * 1e3:.1f} ms "
                   f"({total_mb(r['attention_contiguous_memory_delta_mb'])})")
    if a["crossover_measured_size"]:
        out.append(f"{preset}: attention >= rest of the network from {a['crossover_measured_size']}^2 (measured)")
    if a["crossover_fit_side"]:
        out.append(f"{preset}: power-law crossover attention = rest at ~{a['crossover_fit_side']:.0f}^2 pixels (wall fit)"
                   + (f", ~{a['crossover_fit_side_cpu']:.0f}^2 (CPU-time fit)" if a.get("crossover_fit_side_cpu") else ""))
    return out


# ---------------------------------------------------------------------------------- markdown
def markdown(record: dict[str, Any]) -> str:
    """README tables rendered from a recorded JSON."""
    res = record["results"]
    m = record["machine"]
    out = [f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m.get('memory_gb')} GB; "
           + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
           + f"; threads 2 (child env {m.get('child_environment')}); load average start {record.get('loadavg_start')}, "
           f"end {record.get('loadavg_end')}; recorded {m.get('recorded_at')}.", ""]
    out += _items_table(record)
    mcns_items = [c for c in MCNS_ITEMS if c in res["fits"]]
    out += _fits_table(res, mcns_items)
    out += _faults_table(record, mcns_items)
    for preset, a in res["attention"].items():
        out += _attention_table(preset, a)
    out += [f"- {item} at {s}x{s}: {why}" for s, item, why in _net_skips(record)]
    out.append("")
    out += _xattn_table(res["xattn"])
    return "\n".join(out)


def _items_table(record: dict[str, Any]) -> list[str]:
    items = record["results"]["items"]
    cols = [c for c in MCNS_ITEMS if c in items] + list(NET_ITEMS)
    out = ["| size | pixels | " + " | ".join(f"{c} wall ms [CPU ms]" for c in cols) + " | "
           + " | ".join(f"{c} +MB" for c in cols) + " |",
           "|---:|---:|" + "---:|" * (2 * len(cols))]
    for s in record["settings"]["sizes"]:
        t, mm = [], []
        for c in cols:
            row = _row_at(items, c, s)
            wall, cpu = _median(row, "time_s"), _median(row, "cpu_s")
            t.append(f"{wall * 1e3:.0f} [{cpu * 1e3:.0f}]" if wall and cpu else "-")
            mm.append(_fmt(row.get("memory_delta_mb") if row else None, ".0f"))
        out.append(f"| {s} | {s * s} | " + " | ".join(t) + " | " + " | ".join(mm) + " |")
    out.append("")
    return out


def _fits_table(res: dict[str, Any], mcns_items: list[str]) -> list[str]:
    out = ["| MCNS power-law fit, y ~ P^k | wall median | wall min | CPU time | user CPU time | memory |",
           "|---|---:|---:|---:|---:|---:|"]
    for item in mcns_items:
        f = res["fits"].get(item, {})
        out.append(f"| {item} | " + " | ".join(_fit_text(f.get(k)) for k in ("time", "time_min", "cpu", "cpu_user", "memory")) + " |")
    out.append("")
    for item in mcns_items:
        loc = _local_exponent_text(res["items"].get(item, []))
        if loc:
            out.append(f"- {item}, CPU-time exponent between consecutive sizes: {loc}")
    out.append("")
    return out


def _faults_table(record: dict[str, Any], mcns_items: list[str]) -> list[str]:
    items = record["results"]["items"]
    if not any(r.get("sys_s") for c in mcns_items for r in items.get(c, [])):
        return []
    out = ["| size | " + " | ".join(f"{c} user / system CPU ms, minor faults" for c in mcns_items) + " |",
           "|---:|" + "---:|" * len(mcns_items)]
    for s in record["settings"]["sizes"]:
        cells = []
        for c in mcns_items:
            row = _row_at(items, c, s)
            u, sy, mf = (_median(row, k) for k in ("user_s", "sys_s", "minor_faults"))
            cells.append(f"{u * 1e3:.0f} / {sy * 1e3:.0f}, {mf:.0f}" if None not in (u, sy, mf) else "-")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    out.append("")
    return out


def _attention_table(preset: str, a: dict[str, Any]) -> list[str]:
    out = [f"**{preset}** (MCSD at scales {a['mcsd_scales']}; scale s has P/4^s tokens)", "",
           "| size | tokens per MCSD scale | whole net wall ms | SFA attention ms (as laid out by SFA: math kernel) | +MB | "
           "same attention contiguous (flash) ms | +MB | rest ms | attention share wall / CPU | net +MB |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in a["per_size"]:
        mem = _memory_total(r["attention_memory_delta_mb"])
        memc = _memory_total(r["attention_contiguous_memory_delta_mb"])
        out.append(f"| {r['size']} | {r['tokens']} | {r['net_s'] * 1e3:.0f} | {r['attention_s'] * 1e3:.1f} | {_fmt(mem, '.0f')} | "
                   f"{r['attention_contiguous_s'] * 1e3:.1f} | {_fmt(memc, '.0f')} | {r['rest_s'] * 1e3:.0f} | "
                   f"{r['attention_share'] * 100:.1f}% / {_fmt(r['attention_share_cpu'] and r['attention_share_cpu'] * 100)}% | "
                   f"{_fmt(r['net_memory_delta_mb'], '.0f')} |")
    out.append("")
    line = f"Fits (wall): attention ~ {_fit_text(a.get('fit_attention'))}, rest ~ {_fit_text(a.get('fit_rest'))}"
    line += (f"; attention >= rest from {a['crossover_measured_size']}x{a['crossover_measured_size']} (measured)"
             if a["crossover_measured_size"] else "; attention < rest at every measured size")
    if a.get("crossover_fit_side"):
        line += f"; fitted crossover at ~{a['crossover_fit_side']:.0f}x{a['crossover_fit_side']:.0f}"
    if a.get("crossover_fit_side_cpu"):
        line += f" (CPU-time fits: ~{a['crossover_fit_side_cpu']:.0f}x{a['crossover_fit_side_cpu']:.0f})"
    return out + [line + ".", ""]


def _xattn_table(xattn: dict[str, Any]) -> list[str]:
    out = ["| size | cross-attention level | tokens N | one NxN fp32 matrix GB | measured math-SDPA +MB | wall ms (median) |",
           "|---:|---|---:|---:|---:|---:|"]
    for level, x in xattn.items():
        for r in x["rows"]:
            if r.get("exceeds_budget"):
                out.append(f"| {r['size']} | {level} | {r['tokens']} | {r['matrix_gb']:.2f} | {r['note']} | - |")
            else:
                t = _median(r, "time_s")
                out.append(f"| {r['size']} | {level} | {r['tokens']} | {r['matrix_gb']:.3f} | "
                           f"{_fmt(r.get('memory_delta_mb'), '.0f')} | {_fmt(t and t * 1e3)} |")
    return out
