"""The PNG of the scaling study (matplotlib, Agg backend; imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _series(rows: list[dict[str, Any]], key: str = "time_s") -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, dict):
            v = v.get("median")
        if v is not None and v > 0:
            xs.append(r["pixels"] if "pixels" in r else r["size"] ** 2)
            ys.append(v)
    return xs, ys


def plot_scaling(record: dict[str, Any], out: str | Path) -> Path:
    """Four panels: MCNS time (power-law fits), memory (MCNS measured, cross-attention analytic
    and measured), whole network vs its attention, attention share of the forward."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..artifacts import atomic_path

    mach = record.get("machine", {})
    fig, axes = plt.subplots(2, 2, figsize=(12, 9.5))
    _mcns_time_panel(axes[0, 0], record["results"])
    _memory_panel(axes[0, 1], record)
    _network_panel(axes[1, 0], record["results"])
    _share_panel(axes[1, 1], record)
    libs = mach.get("libraries", {})
    fig.suptitle(f"SGF-MRI scaling on {mach.get('cpu')} ({mach.get('logical_cores')} cores, 2 threads); "
                 f"torch {libs.get('torch')}, onnxruntime {libs.get('onnxruntime')}; load avg "
                 f"{record.get('loadavg_start')} -> {record.get('loadavg_end')}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out


def _mcns_time_panel(ax: Any, res: dict[str, Any]) -> None:
    items, fits = res["items"], res["fits"]
    for item, style, color in (("mcns/torch", "o", "tab:blue"), ("mcns/torch-reuse", "D", "tab:green"),
                               ("mcns/ort", "s", "tab:orange")):
        for key, fkey, ls, what in (("time_s", "time", "-", "wall"), ("cpu_s", "cpu", "--", "CPU")):
            xs, ys = _series(items.get(item, []), key)
            if not xs:
                continue
            f = (fits.get(item) or {}).get(fkey)
            label = f"{item} {what}" + (f"  ~P^{f['exponent']:.2f}" if f else "")
            ax.loglog(xs, np.array(ys) * 1e3, style + ls, color=color, label=label, mfc="none" if what == "CPU" else None)
            if f:
                px = np.array([min(xs), max(xs)], float)
                ax.loglog(px, f["coefficient"] * px ** f["exponent"] * 1e3, "k:", lw=0.8)
    xs, _ = _series(items.get("mcns/torch", []))
    if xs:  # a slope-1 guide
        px = np.array([min(xs), max(xs)], float)
        y0 = _series(items["mcns/torch"])[1][0] * 1e3
        ax.loglog(px, y0 * px / px[0], color="grey", lw=0.6, ls="--", label="slope 1 (linear)")
    ax.set(title="MCNS alone (C=64, G=8, batch 1): wall and CPU time\n(torch-reuse: malloc keeps freed memory, no page faults)",
           xlabel="pixels P", ylabel="median ms")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)


def _memory_panel(ax: Any, record: dict[str, Any]) -> None:
    res = record["results"]
    for item, style in (("mcns/torch", "o-"), ("mcns/torch-reuse", "D-"), ("mcns/ort", "s-"), ("net/lite", "^-"),
                        ("net/paper", "v-")):
        xs, ys = _series(res["items"].get(item, []), "memory_delta_mb")
        if xs:
            ax.loglog(xs, ys, style, label=f"{item} (measured, working memory)")
    budget = record["settings"].get("mem_budget_gb")
    for level, color in (("full", "tab:red"), ("half", "tab:purple")):
        rows = res["xattn"][level]["rows"]
        px = [r["size"] ** 2 for r in rows]
        ax.loglog(px, [r["matrix_gb"] * 1024 for r in rows], "--", color=color,
                  label=f"cross-attn {level}-res: one N×N matrix (analytic)")
        mx = [(r["size"] ** 2, r["memory_delta_mb"]) for r in rows if r.get("memory_delta_mb")]
        if mx:
            ax.loglog(*zip(*mx), "x", color=color, ms=9, label=f"cross-attn {level}-res, math SDPA (measured)")
    if budget:
        ax.axhline(budget * 1024, color="k", lw=0.8, ls=":", label=f"run budget {budget:g} GB")
    ax.set(title="Memory vs pixels", xlabel="pixels P", ylabel="MB")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def _network_panel(ax: Any, res: dict[str, Any]) -> None:
    for preset, color in (("lite", "tab:blue"), ("paper", "tab:orange")):
        a = res["attention"].get(preset)
        if not a or not a["per_size"]:
            continue
        px = [r["pixels"] for r in a["per_size"]]
        ax.loglog(px, [r["net_s"] * 1e3 for r in a["per_size"]], "o-", color=color, label=f"{preset}: whole network")
        ax.loglog(px, [max(r["attention_s"], 1e-9) * 1e3 for r in a["per_size"]], "x--", color=color,
                  label=f"{preset}: SFA attention alone")
        rest = [(r["pixels"], r["rest_s"] * 1e3) for r in a["per_size"] if r["rest_s"] > 0]
        if rest:
            ax.loglog(*zip(*rest), ".:", color=color, label=f"{preset}: rest (net - attention; > 0 only)")
        if any(r.get("attention_contiguous_s") for r in a["per_size"]):
            ax.loglog(px, [max(r.get("attention_contiguous_s") or 0, 1e-9) * 1e3 for r in a["per_size"]], "+-.", color=color,
                      label=f"{preset}: same attention, contiguous Q/K/V (flash)")
    for level, color in (("full", "tab:red"), ("half", "tab:purple")):
        pts = [(r["size"] ** 2, r["time_s"]["median"] * 1e3) for r in res["xattn"][level]["rows"]
               if r.get("time_s", {}).get("median")]
        if pts:
            ax.loglog(*zip(*pts), "s-", color=color, label=f"MTrans-style cross-attn {level}-res (math)")
    ax.set(title="Whole network vs its SFA attention (torch eager, batch 1, wall)", xlabel="pixels P", ylabel="median ms")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)


def _share_panel(ax: Any, record: dict[str, Any]) -> None:
    top = 100.0
    for preset, color in (("lite", "tab:blue"), ("paper", "tab:orange")):
        a = record["results"]["attention"].get(preset)
        if not a or not a["per_size"]:
            continue
        largest = max(r["size"] for r in a["per_size"])
        capped = largest < max(record["settings"]["sizes"])
        px = [r["pixels"] for r in a["per_size"]]
        wall = [100 * r["attention_share"] for r in a["per_size"]]
        top = max(top, *wall)
        ax.semilogx(px, wall, "o-", color=color,
                    label=f"{preset} wall" + (f" (run up to {largest}², see 'skipped')" if capped else ""))
        cpu = [(p, 100 * r["attention_share_cpu"]) for p, r in zip(px, a["per_size"]) if r.get("attention_share_cpu") is not None]
        if cpu:
            ax.semilogx(*zip(*cpu), "o--", color=color, mfc="none", label=f"{preset} CPU time")
    ax.axhline(50, color="k", lw=0.8, ls=":", label="attention = rest")
    ax.set(title="SFA attention (measured alone) / whole forward", xlabel="pixels P", ylabel="% of forward time",
           ylim=(0, top * 1.05))
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
