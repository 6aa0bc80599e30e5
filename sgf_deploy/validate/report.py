"""The validation report: ``report.json`` + ``panel.png`` + ``summary.md`` in one folder.

Layout (default ``reports/<engine stem>/``)::

    report.json   every figure, thresholds, verdict, SHA-256 of checkpoint/ONNX/engine, backend,
                  device, versions, data description, per-slice table, layer-wise result
    panel.png     the worst slice (by delta PSNR): reference, degraded input, ground truth,
                  PyTorch output, engine output, |PyTorch - GT| and |engine - GT| on one colour
                  scale, |engine - PyTorch| on its own scale (colour bars in intensity units)
    summary.md    a short human summary (verdict, key numbers, files, hashes)

The folder is written as a unit: everything goes into a hidden temporary folder beside it, which
is renamed into place only when complete (an existing report is replaced only with
``overwrite``). ``report.json`` is strict JSON (non-finite floats are written as ``null``); its
SHA-256 is what the engine manifest records.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import check_writable, sha256_file, temp_beside

__all__ = ["write_report", "strict_json", "render_panel", "render_summary", "REPORT_FILES"]

REPORT_FILES = {"json": "report.json", "panel": "panel.png", "summary": "summary.md"}


def strict_json(obj: Any) -> Any:
    """Recursively: numpy scalars/arrays -> Python, non-finite floats -> None, Paths -> str."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _fmt(x: Any, spec: str = ".2f", none: str = "n/a") -> str:
    if x is None:
        return none
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def render_panel(path: Path, images: dict[str, Any], report: dict[str, Any]) -> None:
    """The PNG a person looks at (matplotlib, Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    gt = np.asarray(images["ground_truth"], np.float64)
    pt = np.asarray(images["pytorch"], np.float64)
    eng = np.asarray(images["engine"], np.float64)
    tar = np.asarray(images["target"], np.float64)
    ref = np.asarray(images["reference"], np.float64)
    vmax = float(images.get("data_range") or np.nanmax(gt))
    ref_max = float(np.nanpercentile(ref, 99.9)) or 1.0
    err_pt_gt = np.abs(pt - gt)
    err_eng_gt = np.abs(eng - gt)
    err_eng_pt = np.abs(eng - pt)
    finite = lambda a: a[np.isfinite(a)]  # noqa: E731
    gt_scale = max(float(np.max(finite(err_pt_gt), initial=0.0)), float(np.max(finite(err_eng_gt), initial=0.0))) or 1.0
    ep_scale = float(np.max(finite(err_eng_pt), initial=0.0)) or 1e-12

    fig, axes = plt.subplots(3, 3, figsize=(12, 13.5))
    eng_info = report.get("engine", {})
    summary = report.get("summary", {})
    row = next((r for r in report.get("per_slice", []) if r.get("index") == images.get("index")), {})

    def show(ax, img, title, vmax_, cmap="gray", bar=False, label=None):
        im = ax.imshow(np.ma.masked_invalid(img), cmap=cmap, vmin=0, vmax=vmax_, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if bar:
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            if label:
                cb.set_label(label, fontsize=8)
            cb.ax.tick_params(labelsize=7)

    show(axes[0, 0], ref, "reference contrast", ref_max)
    show(axes[0, 1], tar, f"degraded input (PSNR {_fmt(_psnr(gt, tar, vmax))} dB)", vmax)
    show(axes[0, 2], gt, "ground truth", vmax, bar=True, label="intensity")
    show(axes[1, 0], pt, f"PyTorch FP32 ({_fmt(row.get('psnr_pytorch'))} dB)", vmax)
    show(axes[1, 1], eng, f"engine {str(eng_info.get('precision', '')).upper()} ({_fmt(row.get('psnr_engine'))} dB)", vmax)
    ax = axes[1, 2]
    ax.axis("off")
    verdict = str(report.get("verdict", "?")).upper()
    th = report.get("thresholds", {})
    dp = summary.get("delta_psnr") or {}
    par = summary.get("parity_psnr") or {}
    lines = [
        f"verdict: {verdict}",
        f"{eng_info.get('backend')} {str(eng_info.get('precision')).upper()} on "
        f"{(eng_info.get('device') or {}).get('name', '?') if isinstance(eng_info.get('device'), dict) else eng_info.get('device')}",
        f"{summary.get('n_slices', '?')} slices ({report.get('data', {}).get('source', '?')})",
        "",
        f"PSNR(engine, PyTorch) worst {_fmt(par.get('min'), '.1f', 'inf')} dB",
        f"   gate >= {_fmt(th.get('min_parity_psnr'), 'g')} dB",
        f"mean delta PSNR vs GT {_fmt(dp.get('mean_diff'), '+.4f')} dB",
        f"   95% CI [{_fmt(dp.get('ci95_low'), '+.4f')}, {_fmt(dp.get('ci95_high'), '+.4f')}]",
        f"   Wilcoxon p = {_fmt(dp.get('wilcoxon_p'), '.3g')}",
        f"   gate |mean| <= {_fmt(th.get('max_delta_psnr'), 'g')} dB",
        f"max |engine - PyTorch| {_fmt((summary.get('max_abs_error') or {}).get('max'), '.3g')}",
        "",
        f"this slice: #{images.get('index')} {images.get('volume')}[{images.get('slice')}]",
        f"  delta PSNR {_fmt(row.get('delta_psnr'), '+.4f')} dB",
        f"  PSNR(engine, PyTorch) {_fmt(row.get('psnr_engine_vs_pytorch'), '.1f', 'inf')} dB",
    ]
    for reason in report.get("reasons", [])[:3]:
        lines.append("FAIL: " + reason[:60])
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=8.5,
            color="darkgreen" if verdict == "PASS" else "darkred", transform=ax.transAxes)
    show(axes[2, 0], err_pt_gt, "|PyTorch - GT|", gt_scale, cmap="magma", bar=True, label="abs error")
    show(axes[2, 1], err_eng_gt, "|engine - GT| (same scale)", gt_scale, cmap="magma", bar=True, label="abs error")
    show(axes[2, 2], err_eng_pt, f"|engine - PyTorch| (max {ep_scale:.3g})", ep_scale, cmap="inferno", bar=True,
         label="abs difference")
    fig.suptitle(f"sgf-deploy validate: {Path(str(eng_info.get('path', '?'))).name} - {verdict}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _psnr(gt: np.ndarray, x: np.ndarray, data_range: float) -> float | None:
    mse = float(np.mean((gt - x) ** 2))
    if not math.isfinite(mse):
        return None
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def render_summary(report: dict[str, Any], files: dict[str, str]) -> str:
    s = report.get("summary", {})
    th = report.get("thresholds", {})
    e = report.get("engine", {})
    dp, ds = s.get("delta_psnr") or {}, s.get("delta_ssim") or {}
    par = s.get("parity_psnr") or {}
    pt, en = s.get("pytorch") or {}, s.get("engine") or {}
    data = report.get("data", {})
    lines = [
        f"# Validation of `{Path(str(e.get('path'))).name}`: **{str(report.get('verdict')).upper()}**",
        "",
        f"- Engine: {e.get('backend')} {e.get('backend_version') or ''} {str(e.get('precision')).upper()}, "
        f"device {json.dumps(e.get('device'))}",
        f"- Checkpoint: `{report.get('checkpoint', {}).get('path')}` ({report.get('checkpoint', {}).get('resolved_by')})",
        f"- Data: {data.get('what')}; {data.get('n_slices')} slices"
        + (f", pair {data.get('pair')}, task {data.get('task')}, seed {data.get('seed')}" if data.get("source") == "sim" else ""),
        f"- Validated at {report.get('validated_at')}",
        "",
        "| | PSNR (dB) | SSIM | NMSE |",
        "|---|---|---|---|",
        f"| PyTorch FP32 vs GT | {_fmt(pt.get('psnr'), '.3f')} | {_fmt(pt.get('ssim'), '.4f')} | {_fmt(pt.get('nmse'), '.5f')} |",
        f"| engine vs GT | {_fmt(en.get('psnr'), '.3f')} | {_fmt(en.get('ssim'), '.4f')} | {_fmt(en.get('nmse'), '.5f')} |",
        f"| engine - PyTorch (mean, 95 % CI) | {_fmt(dp.get('mean_diff'), '+.5f')} [{_fmt(dp.get('ci95_low'), '+.5f')}, "
        f"{_fmt(dp.get('ci95_high'), '+.5f')}] | {_fmt(ds.get('mean_diff'), '+.6f')} | |",
        f"| Wilcoxon signed-rank p | {_fmt(dp.get('wilcoxon_p'), '.3g')} | {_fmt(ds.get('wilcoxon_p'), '.3g')} | |",
        "",
        f"- PSNR(engine, PyTorch): worst slice {_fmt(par.get('min'), '.2f', 'inf')} dB, mean {_fmt(par.get('mean'), '.2f', 'inf')} dB "
        f"(data range = ground-truth maximum of the slice's volume); identical slices: {par.get('identical_slices', 0)}",
        f"- max |engine - PyTorch|: {_fmt((s.get('max_abs_error') or {}).get('max'), '.4g')} "
        f"({_fmt((s.get('max_abs_error') or {}).get('max_relative_to_data_range'), '.3g')} of the data range)",
        f"- Non-finite values: engine {report.get('nonfinite', {}).get('engine')}, PyTorch {report.get('nonfinite', {}).get('pytorch')}",
        "",
        f"Gate ({th.get('precision')}, {th.get('source')}): PSNR(engine, PyTorch) >= {th.get('min_parity_psnr')} dB on every "
        f"slice, |mean delta PSNR| <= {th.get('max_delta_psnr')} dB, all outputs finite. "
        "Defaults: FP32 80 dB / 0.001 dB, FP16 50 dB / 0.01 dB, INT8 40 dB / 0.1 dB.",
    ]
    if report.get("reasons"):
        lines += ["", "Failed because:"] + [f"- {r}" for r in report["reasons"]]
    lw = report.get("layerwise")
    if isinstance(lw, dict):
        lines += ["", "## Layer-wise comparison"]
        if not lw.get("run"):
            lines.append(f"Not run: {lw.get('reason')}")
        else:
            fj = lw.get("first_jump")
            if fj:
                fused = "".join(f" (its input from `{f['node']}` ({f['op']}) was fused into it in the engine)"
                                for f in fj.get("fused_inputs_from", []))
                lines.append(f"First error jump: tensor `{fj['tensor']}` from node `{fj['node']}` ({fj['op']}){fused}, "
                             f"relative error {fj['rel_error']:.3g} vs median {fj['median_before']:.3g} before it.")
            else:
                lines.append("No tensor's error jumps above the rule; see the top-5 lists in report.json.")
            lines.append("")
            lines.append("Nodes that add the most error (output error minus input error):")
            lines.append("")
            lines.append("| rank | node | op | rel. error out | rel. error in | added |")
            lines.append("|---|---|---|---|---|---|")
            for i, t in enumerate(lw.get("top_added", [])[:5], 1):
                lines.append(f"| {i} | `{t['node']}` | {t['op']} | {_fmt(t.get('rel_error'), '.3g')} | "
                             f"{_fmt(t.get('input_rel_error'), '.3g')} | {_fmt(t.get('added'), '.3g')} |")
            if lw.get("suggestion"):
                lines += ["", f"Try: `{lw['suggestion']}`"]
            lines += [""] + [f"- {note}" for note in lw.get("notes", [])]
            lines.append(f"- FP32 side: {lw.get('fp32_reference')}; {lw.get('tensors_compared')} tensors compared, "
                         f"{lw.get('tensors_unmatched')} not found in the engine graph")
    lines += [
        "",
        "Files: " + ", ".join(f"`{v}`" for v in files.values()),
        "",
        "SHA-256:",
        f"- checkpoint `{report.get('checkpoint', {}).get('sha256')}`",
        f"- ONNX `{report.get('onnx', {}).get('sha256')}`",
        f"- engine `{e.get('sha256')}`",
    ]
    return "\n".join(lines) + "\n"


def write_report(report_dir: str | os.PathLike, report: dict[str, Any], panel_images: dict[str, Any] | None,
                 overwrite: bool = False) -> tuple[str, dict[str, Path]]:
    """Write the three files as one folder, atomically. Returns (report.json SHA-256, final paths)."""
    final = Path(report_dir)
    check_writable(final, overwrite, "--force")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(final, directory=True)
    old: Path | None = None
    try:
        files = dict(REPORT_FILES)
        report = dict(report)
        report["files"] = dict(files)
        if panel_images is not None:
            render_panel(tmp / files["panel"], panel_images, report)
            report["files_sha256"] = {"panel": sha256_file(tmp / files["panel"])}
        else:
            files.pop("panel")
            report["files"] = dict(files)
        text = json.dumps(strict_json(report), indent=2, sort_keys=False, allow_nan=False) + "\n"
        (tmp / files["json"]).write_text(text, encoding="utf-8")
        digest = sha256_file(tmp / files["json"])
        (tmp / files["summary"]).write_text(render_summary(json.loads(text), files), encoding="utf-8")
        if final.exists():
            check_writable(final, overwrite, "--force")  # appeared meanwhile?
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.rmdir(old)
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                os.replace(old, final)  # put the previous report back
                old = None
                raise
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)
    return digest, {k: final / v for k, v in files.items()}
