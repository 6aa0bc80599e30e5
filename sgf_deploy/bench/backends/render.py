"""A backend-comparison record as text: the key figures (what ``sgf-deploy bench`` prints) and the
README tables (rendered from the recorded JSON, so the README carries exactly the recorded numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import machine as M


def _backend_order(record: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    """The backends of one configuration in the record's order (PyTorch first), then any others."""
    order = [b["name"] for b in record.get("backends", []) if b["name"] in rows]
    return order + [n for n in rows if n not in order]


def _checkpoint_text(ck: dict[str, Any], sep: str) -> str:
    return f"trained{sep} {ck.get('steps')} steps" if ck.get("trained") else "UNTRAINED"


# ----------------------------------------------------------------------------- summary lines
def summary_lines(record: dict[str, Any]) -> list[str]:
    """Human-readable lines of the key figures."""
    ck = record.get("checkpoint", {})
    lines = [
        f"machine: {record['machine']['cpu']} ({record['machine']['logical_cores']} cores), threads {M.THREADS}; "
        f"load average start {record.get('loadavg_start')} end {record.get('loadavg_end')}",
        f"checkpoint: {ck.get('path')} ({ck.get('source')}; {_checkpoint_text(ck, '')}; sha256 {str(ck.get('sha256'))[:12]})",
        "not measured here: " + "; ".join(f"{k}: {v.get('reason')}" for k, v in record.get("detected", {}).items()
                                          if isinstance(v, dict) and not v.get("runnable") and v.get("reason")),
    ]
    for res in record.get("results", {}).values():
        lines += _result_lines(record, res)
    lines += roofline_lines(record.get("roofline"))
    lines += _parity_lines(record.get("parity") or {})
    lines += _bar_lines(record.get("bar", {}))
    for name, prof in (record.get("profiles") or {}).items():
        top = ", ".join(f"{r['op']} {r['share'] * 100:.0f}%" for r in prof.get("by_op_type", [])[:5])
        if top:
            lines.append(f"profile {name} ({prof.get('size')}x{prof.get('size')}): {top}")
    return lines


def _result_lines(record: dict[str, Any], res: dict[str, Any]) -> list[str]:
    lines = [f"-- {res['size']}x{res['size']} batch {res['batch']} --  backend: p50/p95 ms/slice, slices/s, x pytorch "
             "(paired median) [CPU-time ratio], peak RSS MB, start-up s"]
    for name in _backend_order(record, res["backends"]):
        row = res["backends"][name]
        if "skipped" in row:
            lines.append(f"  {name:14s} skipped: {row['skipped']}")
            continue
        lat = row["latency_ms_per_slice"]
        st = row.get("startup_s") or {}
        lines.append(
            f"  {name:14s} {lat['p50']:8.1f} / {lat['p95']:8.1f}  {row['throughput_slices_per_s']:7.2f}  "
            f"x{row['ratio_vs_pytorch']:.2f} ({row['ratio_vs_pytorch_paired_median']:.2f}) [{row['ratio_vs_pytorch_cpu_time']:.2f}]  "
            f"{row['peak_rss_mb'] or float('nan'):7.0f}  {st.get('median', float('nan')):6.2f}")
    return lines


def roofline_lines(roof: dict[str, Any] | None) -> list[str]:
    """GFLOP per slice, the measured peaks, and each backend's achieved GFLOP/s and fraction of peak."""
    if not roof:
        return []
    pk = roof["peaks"]
    int8 = pk.get("int8_gops")
    lines = ["roofline: " + ", ".join(f"{s}x{s} {g:.2f} GFLOP/slice" for s, g in roof["gflop_per_slice"].items())
             + f"; measured peak FP32 {pk['fp32_gflops']:.1f} GFLOP/s, INT8 "
             + (f"{int8:.1f} GOP/s" if int8 else "n/a") + f" ({pk['threads']} threads; 8-bit dot product: "
             + f"{pk['int8_dot_product']}; load {pk.get('loadavg')})"]
    for key, rows in roof["fractions"].items():
        lines.append(f"  {key}: " + ", ".join(f"{n} {r['gflops']:.1f} GFLOP/s = {r['fraction_of_peak'] * 100:.0f}% of "
                                               f"the {r['peak'].upper()} peak" for n, r in rows.items()
                                               if r.get("fraction_of_peak") is not None))
    return lines


def _parity_lines(parity: dict[str, Any]) -> list[str]:
    lines = []
    for name, par in parity.items():
        pe = par["psnr_engine_vs_pytorch_db"]
        d = par["delta_psnr_vs_gt_db"]["mean"]
        lines.append(f"parity {name}: PSNR(engine, PyTorch) min {pe['min']:.2f} dB mean {pe['mean']:.2f} dB; "
                     f"mean dPSNR vs GT {d:+.4f} dB; gate {par['gate']['precision']}: {par['gate']['verdict']}"
                     if pe.get("min") is not None and d is not None else f"parity {name}: {par}")
    return lines


def _bar_lines(bar: dict[str, Any]) -> list[str]:
    lines = [f"bar: {c['what']}: {c['value']:.3f} (need {c['need']}) {'PASS' if c['pass'] else 'FAIL'}"
             + (f" short by {c['shortfall']:.3f}" if c.get("shortfall") else "") for c in bar.get("checks", [])]
    if bar:
        lines.append(f"bar met: {bar.get('met')}" + (f" ({bar['parity_note']})" if bar.get("parity_note") else ""))
    return lines


# ---------------------------------------------------------------------------------- markdown
def markdown(record: dict[str, Any]) -> str:
    """README tables rendered from a recorded JSON."""
    out = _header_markdown(record)
    for res in record.get("results", {}).values():
        out += _result_table(record, res)
    if record.get("roofline"):
        out += _roofline_table(record["roofline"])
    if record.get("parity"):
        out += _parity_table(record["parity"])
    out += _bar_table(record.get("bar") or {})
    for name, prof in (record.get("profiles") or {}).items():
        rows = prof.get("by_op_type") or []
        if rows:
            out.append(f"Profile {name} at {prof.get('size')}x{prof.get('size')} batch {prof.get('batch')} ({prof.get('tool')}): "
                       + ", ".join(f"{r['op']} {r['ms_per_run']:.1f} ms ({r['share'] * 100:.0f}%)" for r in rows[:8]))
            out.append("")
    return "\n".join(out)


def _header_markdown(record: dict[str, Any]) -> list[str]:
    ck = record.get("checkpoint", {})
    m = record["machine"]
    return [
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({', '.join(m.get('cpu_flags', []))}), "
        f"{m.get('memory_gb')} GB; {m['os']}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v) + ". Threads: torch 2, ORT intra-op 2 / inter-op 1; "
        f"child env {m.get('child_environment')}. Load average at start {record.get('loadavg_start')}, "
        f"at end {record.get('loadavg_end')}. Recorded {m.get('recorded_at')}.",
        "",
        f"Checkpoint: `{Path(str(ck.get('path'))).name}` ({ck.get('source')}; {_checkpoint_text(ck, ',')}; "
        f"sha256 `{str(ck.get('sha256'))[:12]}`).",
        "",
    ]


def _result_table(record: dict[str, Any], res: dict[str, Any]) -> list[str]:
    out = [f"**{res['size']}x{res['size']}, batch {res['batch']}**", "",
           "| backend | p50 ms/slice | p95 ms/slice | slices/s (32-stack) | x PyTorch (ratio of medians) | paired median [min, max] | "
           "x PyTorch in CPU time | peak RSS MB | start-up s (median) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in _backend_order(record, res["backends"]):
        row = res["backends"][name]
        if "skipped" in row:
            out.append(f"| {name} | skipped: {row['skipped']} ||||||||")
            continue
        lat = row["latency_ms_per_slice"]
        rng = row.get("ratio_vs_pytorch_paired_range") or [float("nan")] * 2
        st = (row.get("startup_s") or {}).get("median")
        out.append(f"| {name} | {lat['p50']:.1f} | {lat['p95']:.1f} | {row['throughput_slices_per_s']:.2f} | "
                   f"{row['ratio_vs_pytorch']:.2f} | {row['ratio_vs_pytorch_paired_median']:.2f} [{rng[0]:.2f}, {rng[1]:.2f}] | "
                   f"{row['ratio_vs_pytorch_cpu_time']:.2f} | "
                   f"{_fmt(row['peak_rss_mb'], '.0f')} | {_fmt(st)} |")
    out.append("")
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _roofline_table(roof: dict[str, Any]) -> list[str]:
    pk = roof["peaks"]
    out = [f"Roofline: measured peak FP32 {pk['fp32_gflops']:.1f} GFLOP/s, INT8 {_fmt(pk.get('int8_gops'), '.1f')} GOP/s "
           f"({pk['method']}; {pk['threads']} threads; 8-bit dot product: {pk['int8_dot_product']}); work per slice: "
           + ", ".join(f"{s}x{s} {g:.2f} GFLOP" for s, g in roof["gflop_per_slice"].items()) + ".", "",
           "| size x batch | backend | achieved GFLOP/s (p50) | fraction of peak |", "|---|---|---:|---:|"]
    for key, rows in roof["fractions"].items():
        for name, r in rows.items():
            frac = r.get("fraction_of_peak")
            out.append(f"| {key} | {name} | {r['gflops']:.1f} | "
                       f"{'n/a' if frac is None else format(frac * 100, '.0f') + '% of ' + r['peak'].upper()} |")
    out.append("")
    return out


def _parity_table(parity: dict[str, Any]) -> list[str]:
    out = ["| engine | worst-slice PSNR(engine, PyTorch) dB | mean | mean dPSNR vs GT dB [95% CI] | gate (min dB / max abs dPSNR) | verdict |",
           "|---|---:|---:|---:|---|---|"]
    for name, par in parity.items():
        pe, d, g = par["psnr_engine_vs_pytorch_db"], par["delta_psnr_vs_gt_db"], par["gate"]
        ci = d.get("ci95") or [None, None]
        out.append(f"| {name} | {_fmt(pe['min'])} | {_fmt(pe['mean'])} | {_fmt(d['mean'], '+.4f')} "
                   f"[{_fmt(ci[0], '+.4f')}, {_fmt(ci[1], '+.4f')}] | "
                   f"{g['precision']}: {g['min_parity_psnr_db']:g} / {g['max_abs_delta_psnr_db']:g} | {g['verdict']} |")
    out.append("")
    return out


def _bar_table(bar: dict[str, Any]) -> list[str]:
    if not bar.get("checks"):
        return []
    out = ["| bar check | value | need | result |", "|---|---:|---:|---|"]
    for c in bar["checks"]:
        verdict = "pass" if c["pass"] else (f"FAIL (short by {c['shortfall']:.3f})" if c.get("shortfall") else "FAIL")
        out.append(f"| {c['what']} | {c['value']:.3f} | {c['need']} | {verdict} |")
    out.append("")
    return out
