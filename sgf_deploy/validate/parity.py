"""PSNR parity of a built engine against the PyTorch reference, with a pass/fail verdict.

What is compared (DESIGN.md sections 5-6; the report states it too):

1. The inputs are prepared **once**, in numpy, with the runtime's own pre-processing
   (:mod:`sgf_deploy.runtime.preprocess`: per-slice instance normalisation, edge padding to the
   model's size multiple). The very same ``(N, 1, Hp, Wp)`` float32 arrays go to the PyTorch
   model (float32, eval mode, ``torch.no_grad``) and to the engine (``Runner.infer``), and both
   outputs are cropped and de-normalised by the same function (``preprocess.restore``).
2. Per slice: PSNR/SSIM/NMSE of each output against the ground truth (fastMRI conventions,
   :mod:`sgf_deploy.metrics`); PSNR(engine, PyTorch) with the PyTorch output as the reference
   image; the max abs error between the two outputs. **data_range = the ground-truth maximum of
   the slice's volume** for every PSNR/SSIM here, PSNR(engine, PyTorch) included (each simulated
   slice is its own volume).
3. Aggregates: means, the worst slice (most negative delta PSNR), and the paired per-slice
   differences engine - PyTorch of PSNR and SSIM vs ground truth with a 95 % t CI and the
   two-sided Wilcoxon signed-rank p-value (:func:`sgf_deploy.validate.stats.paired_comparison`).
4. Verdict: :func:`sgf_deploy.validate.thresholds.judge`.

The checkpoint is the one the engine was built from: ``--ckpt`` must have the SHA-256 recorded in
the engine manifest; without ``--ckpt`` the path recorded at export time is used if its SHA-256
matches, else the embedded default if *its* SHA-256 matches, else an error asks for ``--ckpt``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..artifacts import check_writable, sha256_file
from ..errors import CheckpointError, EngineMismatchError, InputError, MissingDependencyError, SgfError
from .data import ValidationData, load_data
from .stats import paired_comparison
from .thresholds import Thresholds, judge, thresholds_for

__all__ = [
    "EngineNotRunnable", "ValidationOutcome", "compare_outputs", "find_engines", "find_onnx",
    "resolve_checkpoint", "validate_engine", "validate_all",
]

REPORT_FORMAT = "sgf-deploy-validation"
REPORT_FORMAT_VERSION = 1
DEFAULT_REPORTS_DIR = "reports"
DEFAULT_ENGINES_DIR = "engines"


class EngineNotRunnable(SgfError):
    """The engine cannot run on this machine (no GPU, backend not installed, built elsewhere)."""


@dataclass
class ValidationOutcome:
    engine: Path
    verdict: str  # "pass" | "fail" | "not run" | "error" (could not be validated; see reasons)
    reasons: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    report: dict[str, Any] | None = None
    report_sha256: str | None = None

    def line(self) -> str:
        """One line for the terminal."""
        if self.verdict in ("not run", "error"):
            return f"{self.engine}: {self.verdict}: {'; '.join(self.reasons)}"
        s = (self.report or {}).get("summary", {})
        prec = (self.report or {}).get("engine", {}).get("precision", "?")
        parity = s.get("parity_psnr", {}).get("min")
        delta = (s.get("delta_psnr") or {}).get("mean_diff")
        nums = []
        if parity is not None or s.get("parity_psnr", {}).get("identical_slices"):
            nums.append("PSNR(engine, PyTorch) worst " + ("inf" if parity is None else f"{parity:.1f}") + " dB")
        if delta is not None:
            nums.append(f"delta PSNR vs GT {delta:+.4f} dB" if abs(delta) >= 1e-3 or delta == 0
                        else f"delta PSNR vs GT {delta:+.1e} dB")
        text = f"{self.engine} [{str(prec).upper()}]: {self.verdict.upper()}"
        if nums:
            text += " (" + ", ".join(nums) + ")"
        if self.reasons:
            text += ": " + "; ".join(self.reasons)
        if self.report_dir is not None:
            text += f"; report {self.report_dir}"
        return text


# ---------------------------------------------------------------------------------------------
# engine, ONNX and checkpoint resolution
# ---------------------------------------------------------------------------------------------
def _manifest(engine: Path) -> dict[str, Any]:
    from ..engines import read_manifest

    manifest = read_manifest(engine)
    if not isinstance(manifest, dict):
        raise InputError(f"{engine}: its manifest is not a JSON object")
    return manifest


def _candidates(value: Any, bases: list[Path]) -> list[Path]:
    if not value or not isinstance(value, (str, os.PathLike)):
        return []
    p = Path(value)
    if p.is_absolute():
        return [p]
    seen, out = set(), []
    for base in [Path.cwd(), *bases]:
        q = (base / p).resolve()
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def _is_onnx(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        return True
    return False


def find_onnx(engine: Path, manifest: dict[str, Any]) -> Path | None:
    """The exported FP32 ONNX file the engine was built from (SHA-256 = manifest ``onnx_sha256``).

    Looked for at the paths the manifest records (``onnx_path``, ``onnx``, ``source_onnx``,
    ``build_options.onnx``), then in ``export/`` beside the workspace, then next to the engine.
    """
    want = manifest.get("onnx_sha256")
    bases = [engine.parent, engine.parent.parent]
    recorded: list[Any] = [manifest.get(k) for k in ("onnx_path", "onnx", "source_onnx")]
    opts = manifest.get("build_options") or {}
    if isinstance(opts, dict):
        recorded += [opts.get(k) for k in ("onnx", "onnx_path", "source_onnx")]
    paths: list[Path] = []
    for value in recorded:
        paths += _candidates(value, bases)
    for folder in (Path.cwd() / "export", engine.parent.parent / "export", engine.parent):
        if folder.is_dir():
            paths += sorted(folder.glob("*.onnx"))
    seen = set()
    for p in paths:
        rp = p.resolve() if p.exists() else p
        if rp in seen or not p.is_file() or rp == engine.resolve():
            continue
        seen.add(rp)
        if want and sha256_file(p) == want:
            return p
    return None


def resolve_checkpoint(engine: Path, manifest: dict[str, Any], ckpt: str | os.PathLike | None,
                       onnx_meta: dict[str, Any] | None) -> tuple[Path, str, str]:
    """(checkpoint path, sha256, how it was found); see the module docstring for the rule."""
    want = manifest.get("checkpoint_sha256") or (onnx_meta or {}).get("sgf.checkpoint_sha256")
    if ckpt is not None:
        p = Path(ckpt)
        if not p.is_file():
            raise CheckpointError(f"{p}: checkpoint not found")
        sha = sha256_file(p)
        if want and sha != want:
            raise CheckpointError(
                f"{p}: SHA-256 {sha[:12]}... is not the checkpoint {engine.name} was built from ({want[:12]}...); "
                "validating against another model proves nothing: pass the checkpoint it was exported from"
            )
        return p, sha, "--ckpt"
    if not want:
        raise CheckpointError(f"{engine}: its manifest records no checkpoint SHA-256; pass --ckpt")
    recorded = [manifest.get("checkpoint_path"), (onnx_meta or {}).get("sgf.checkpoint_path")]
    bases = [engine.parent, engine.parent.parent]
    tried = []
    for value in recorded:
        for p in _candidates(value, bases):
            if p.is_file():
                tried.append(str(p))
                if sha256_file(p) == want:
                    return p, want, "recorded path (SHA-256 matches)"
    try:
        from ..model import DEFAULT_CHECKPOINT

        if DEFAULT_CHECKPOINT.is_file() and sha256_file(DEFAULT_CHECKPOINT) == want:
            return DEFAULT_CHECKPOINT, want, "embedded default (SHA-256 matches)"
    except ImportError:  # pragma: no cover
        pass
    where = f" (found {', '.join(tried)} with another SHA-256)" if tried else ""
    shown = next((str(v) for v in recorded if v), "no path recorded")
    raise CheckpointError(
        f"{engine}: the checkpoint it was built from ({shown}, SHA-256 {want[:12]}...) was not found{where}; "
        "pass --ckpt PATH"
    )


def find_engines(engines_dir: str | os.PathLike = DEFAULT_ENGINES_DIR) -> list[Path]:
    """Engine files in ``engines_dir``: every ``<engine>.json`` manifest with its engine beside it."""
    folder = Path(engines_dir)
    if not folder.is_dir():
        return []
    out = []
    for manifest in sorted(folder.glob("*.json")):
        engine = manifest.with_name(manifest.name[: -len(".json")])
        if engine.is_file():
            out.append(engine)
    return out


def has_verdict(engine: Path) -> bool:
    try:
        validation = _manifest(engine).get("validation")
    except SgfError:
        return False
    return isinstance(validation, dict) and validation.get("verdict") in ("pass", "fail")


# ---------------------------------------------------------------------------------------------
# running both sides
# ---------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    ref: np.ndarray  # (n, 1, Hp, Wp) float32, normalised and padded
    tar: np.ndarray
    means: list
    stds: list
    h: int
    w: int


def _prepare(reference: np.ndarray, target: np.ndarray, multiple: int) -> _Prepared:
    from ..runtime import preprocess

    ref, tar, _ = preprocess.check_pair(reference, target, what="validation data")
    _, h, w = tar.shape
    ref_p, tar_p, means, stds = preprocess.normalize_slices(ref, tar, multiple)
    return _Prepared(ref_p, tar_p, means, stds, h, w)


def _restore(pred: np.ndarray, prep: _Prepared) -> np.ndarray:
    """Crop + de-normalise; NaN/Inf pass through unchanged (counted by the caller)."""
    from ..runtime import preprocess

    with np.errstate(all="ignore"):
        return preprocess.restore(pred, prep.ref.shape[0], prep.h, prep.w, prep.means, prep.stds)


def _run_engine(runner: Any, prep: _Prepared, batch: int, static: int | None) -> np.ndarray:
    n = prep.ref.shape[0]
    out = np.empty_like(prep.tar)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        ref, tar = prep.ref[start:stop], prep.tar[start:stop]
        if static and static > stop - start:  # static batch: fill with the last slice, discard
            extra = static - (stop - start)
            ref = np.concatenate([ref, np.repeat(ref[-1:], extra, axis=0)])
            tar = np.concatenate([tar, np.repeat(tar[-1:], extra, axis=0)])
        pred = np.asarray(runner.infer(np.ascontiguousarray(ref), np.ascontiguousarray(tar)))
        if pred.ndim != 4 or pred.shape[0] < stop - start or pred.shape[-2:] != prep.tar.shape[-2:]:
            raise SgfError(f"engine returned shape {pred.shape} for input {ref.shape}")
        out[start:stop] = pred[: stop - start].astype(np.float32, copy=False)
    return out


def _run_torch(model: Any, prep: _Prepared, batch: int) -> np.ndarray:
    import torch

    n = prep.ref.shape[0]
    out = np.empty_like(prep.tar)
    with torch.no_grad():
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            pred = model(torch.from_numpy(np.ascontiguousarray(prep.ref[start:stop])),
                         torch.from_numpy(np.ascontiguousarray(prep.tar[start:stop])))
            out[start:stop] = pred.float().numpy()
    return out


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
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
                "parity": float(psnr_per_slice(p, e, data_range)[0]),
                "maxabs": float(np.max(np.abs(e - p))),
            }
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


# ---------------------------------------------------------------------------------------------
# the whole validation of one engine
# ---------------------------------------------------------------------------------------------
def _versions() -> dict[str, Any]:
    out: dict[str, Any] = {"sgf_deploy": __version__, "python": sys.version.split()[0], "numpy": np.__version__,
                           "platform": platform.platform(), "machine": platform.machine(),
                           "processor": platform.processor() or None, "cpu_count": os.cpu_count()}
    for mod in ("torch", "onnxruntime", "onnx", "scipy", "matplotlib"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except Exception:  # noqa: BLE001 - informational only
                m = None
        out[mod] = getattr(m, "__version__", None) if m is not None else None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _size_multiple(manifest: dict[str, Any], onnx_meta: dict[str, Any] | None, model: Any) -> int:
    for src in ((manifest.get("model") or {}), manifest, onnx_meta or {}):
        for key in ("size_multiple", "sgf.size_multiple"):
            if isinstance(src, dict) and key in src:
                try:
                    return max(1, int(src[key]))
                except (TypeError, ValueError):
                    pass
    return int(model.config.size_multiple)


def _load_runner(engine: Path, threads: int | None) -> Any:
    """``load_engine`` or :class:`EngineNotRunnable` with the reason."""
    from ..engines import load_engine

    try:
        return load_engine(engine, threads=threads)
    except (EngineMismatchError, MissingDependencyError) as exc:
        raise EngineNotRunnable(str(exc)) from None
    except SgfError as exc:
        if type(exc).__name__ in ("NoGPUError", "DeviceUnavailable", "EngineNotRunnable") or "GPU" in str(exc):
            raise EngineNotRunnable(str(exc)) from None
        raise


def validate_engine(
    engine: str | os.PathLike,
    *,
    ckpt: str | os.PathLike | None = None,
    data: str = "sim",
    n: int | None = None,
    seed: int = 0,
    min_parity_psnr: float | None = None,
    max_delta_psnr: float | None = None,
    report: str | os.PathLike | None = None,
    overwrite: bool = False,
    layerwise: bool = False,
    batch: int | None = None,
    threads: int | None = None,
    update: bool = True,
    echo: Callable[[str], None] | None = None,
) -> ValidationOutcome:
    """Validate one engine; writes the report and records the verdict in the engine manifest.

    Returns the outcome (verdict "pass" or "fail"); raises :class:`EngineNotRunnable` when the
    engine cannot run here (nothing is written then) and :class:`SgfError` for bad inputs. The
    caller decides the exit code (:class:`~sgf_deploy.errors.ValidationFailed` on "fail").
    """
    from .report import write_report

    echo = echo or (lambda msg: None)
    engine = Path(engine)
    if not engine.is_file():
        raise InputError(f"{engine}: engine file not found")
    manifest = _manifest(engine)
    precision = str(manifest.get("precision") or "fp32").lower()
    thresholds = thresholds_for(precision, min_parity_psnr, max_delta_psnr)
    report_dir = Path(report) if report is not None else Path(DEFAULT_REPORTS_DIR) / engine.stem
    check_writable(report_dir, overwrite, "--force")

    # The engine first: if it cannot run here, say so before anything else (and write nothing).
    runner = _load_runner(engine, threads)

    onnx_path = find_onnx(engine, manifest)
    onnx_meta = None
    meta_source = onnx_path if onnx_path is not None else (engine if _is_onnx(engine) else None)
    if meta_source is not None:
        try:
            from ..export.metadata import read_onnx_metadata

            onnx_meta = read_onnx_metadata(meta_source)
        except (SgfError, ImportError):
            onnx_meta = None
    ckpt_path, ckpt_sha, ckpt_how = resolve_checkpoint(engine, manifest, ckpt, onnx_meta)

    model_info = manifest.get("model") or {}
    pair = model_info.get("pair") or (onnx_meta or {}).get("sgf.pair")
    task = model_info.get("task") or (onnx_meta or {}).get("sgf.task")

    vdata: ValidationData = load_data(data, pair=pair, task=task, n=n, seed=seed)
    echo(f"{engine.name}: {vdata.n_slices} slice(s) of {vdata.description['what']}")

    from ..model import load_checkpoint

    model, ckpt_meta = load_checkpoint(ckpt_path)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    multiple = _size_multiple(manifest, onnx_meta, model)

    from ..runtime.reconstructor import EngineProfile

    profile = EngineProfile.from_manifest(manifest)
    eng_batch = profile.choose_batch(batch)
    static = profile.static_batch

    outputs_pt, outputs_eng, inputs = [], [], []
    t_pt = t_eng = 0.0
    for case in vdata.cases:
        prep = _prepare(case.reference, case.target, multiple)
        hp, wp = prep.tar.shape[-2:]
        profile.check_spatial(hp, wp, prep.h, prep.w, engine)
        t0 = time.perf_counter()
        raw_pt = _run_torch(model, prep, eng_batch)
        t1 = time.perf_counter()
        raw_eng = _run_engine(runner, prep, eng_batch, static)
        t2 = time.perf_counter()
        t_pt += t1 - t0
        t_eng += t2 - t1
        outputs_pt.append(_restore(raw_pt, prep))
        outputs_eng.append(_restore(raw_eng, prep))
        inputs.append(prep)

    figures = compare_outputs([c.ground_truth for c in vdata.cases], outputs_pt, outputs_eng,
                              [c.name for c in vdata.cases])
    summary = figures["summary"]
    nonfinite = figures["nonfinite"]
    verdict, reasons = judge(
        nonfinite=nonfinite["engine"] + nonfinite["pytorch"],
        parity_psnr_min=(math.inf if summary.get("parity_psnr", {}).get("min") is None
                         and summary.get("parity_psnr", {}).get("identical_slices") else
                         summary.get("parity_psnr", {}).get("min")),
        delta_psnr_mean=(summary.get("delta_psnr") or {}).get("mean_diff"),
        thresholds=thresholds,
    )

    # Locate the worst slice (for the panel and the layer-wise run).
    worst = figures["per_slice"][figures["worst_index"]]
    v_idx = next(i for i, c in enumerate(vdata.cases) if c.name == worst["volume"])
    s_idx = int(worst["slice"])
    case = vdata.cases[v_idx]
    panel_images = {
        "reference": case.reference[s_idx], "target": case.target[s_idx], "ground_truth": case.ground_truth[s_idx],
        "pytorch": outputs_pt[v_idx][s_idx], "engine": outputs_eng[v_idx][s_idx],
        "data_range": float(np.max(case.ground_truth)), "volume": case.name, "slice": s_idx,
        "index": int(worst["index"]),
    }

    layer = None
    if layerwise:
        if verdict == "pass":
            layer = {"run": False, "reason": "the verdict passed; --layerwise only runs on a failing engine"}
        else:
            from .layerwise import layerwise_compare

            prep = inputs[v_idx]
            echo(f"{engine.name}: layer-wise comparison on slice {worst['index']} ({case.name})")
            try:
                layer = layerwise_compare(engine, manifest, onnx_path,
                                          prep.ref[s_idx : s_idx + 1], prep.tar[s_idx : s_idx + 1],
                                          model=model, onnx_meta=onnx_meta, threads=threads)
            except SgfError as exc:
                layer = {"run": False, "reason": str(exc)}

    engine_sha = sha256_file(engine)
    if manifest.get("engine_sha256") and manifest["engine_sha256"] != engine_sha:
        reasons.append(f"engine file SHA-256 {engine_sha[:12]}... differs from its manifest "
                       f"({str(manifest['engine_sha256'])[:12]}...): the file was changed after the build")
        verdict = "fail"

    report_obj: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "verdict": verdict,
        "reasons": reasons,
        "validated_at": _now(),
        "engine": {
            "path": str(engine), "sha256": engine_sha, "manifest_sha256": manifest.get("engine_sha256"),
            "backend": manifest.get("backend"), "backend_version": manifest.get("backend_version"),
            "precision": precision, "device": manifest.get("device"), "profile": manifest.get("profile"),
            "build_options": manifest.get("build_options"), "built_at": manifest.get("built_at"),
            "batch_used": eng_batch,
        },
        "onnx": {"path": str(onnx_path) if onnx_path else None,
                 "sha256": manifest.get("onnx_sha256"),
                 "found": onnx_path is not None},
        "checkpoint": {"path": str(ckpt_path), "sha256": ckpt_sha, "resolved_by": ckpt_how,
                       "preset": model_info.get("preset") or (onnx_meta or {}).get("sgf.preset"),
                       "parameters": ckpt_meta.get("parameters"),
                       "steps": (ckpt_meta.get("provenance") or {}).get("steps")},
        "model": {"pair": pair, "task": task, "size_multiple": multiple},
        "thresholds": thresholds.to_dict() | {"defaults": {k: v.to_dict() for k, v in _defaults().items()}},
        "definitions": {
            "psnr_vs_gt": "per slice, fastMRI convention, data_range = ground-truth maximum of the slice's volume",
            "ssim_vs_gt": "per slice, 7x7 uniform window (scikit-image defaults), same data_range",
            "nmse": "per slice ||gt - x||^2 / ||gt||^2",
            "psnr_engine_vs_pytorch": "per slice, PyTorch output as reference image, data_range = ground-truth "
                                      "maximum of the slice's volume; gate on the worst slice",
            "delta": "engine - PyTorch, per slice, against ground truth; mean with 95 % t CI, two-sided "
                     "Wilcoxon signed-rank (zero differences dropped)",
            "null": "a null PSNR means infinite (identical images); see identical_slices",
            "reference_path": "PyTorch float32 eval, torch.no_grad, on the same normalised padded arrays as the engine",
        },
        "data": vdata.description,
        "summary": summary,
        "nonfinite": nonfinite,
        "per_slice": figures["per_slice"],
        "panel_slice": {"index": panel_images["index"], "volume": panel_images["volume"], "slice": s_idx,
                        "why": "first slice with non-finite output" if nonfinite["slices"] else
                               "worst slice by delta PSNR (engine - PyTorch vs ground truth)"},
        "layerwise": layer,
        "timing_seconds": {"pytorch": round(t_pt, 3), "engine": round(t_eng, 3)},
        "environment": _versions(),
    }

    report_sha, written = write_report(report_dir, report_obj, panel_images, overwrite=overwrite)
    outcome = ValidationOutcome(engine, verdict, reasons, report_dir, report_obj, report_sha)
    if update:
        from ..engines import update_manifest

        update_manifest(engine, validation={
            "verdict": verdict,
            "report_sha256": report_sha,
            "report_path": str(written["json"]),
            "validated_at": report_obj["validated_at"],
            "reasons": reasons,
            "thresholds": {"min_parity_psnr": thresholds.min_parity_psnr,
                           "max_delta_psnr": thresholds.max_delta_psnr, "source": thresholds.source},
            "parity_psnr_min": summary.get("parity_psnr", {}).get("min"),
            "delta_psnr_mean": (summary.get("delta_psnr") or {}).get("mean_diff"),
            "checkpoint_sha256": ckpt_sha,
            "data": {k: vdata.description.get(k) for k in ("source", "pair", "task", "split", "seed", "n_slices",
                                                           "directory") if vdata.description.get(k) is not None},
            "toolkit_version": __version__,
        })
    return outcome


def _defaults() -> dict[str, Thresholds]:
    from .thresholds import DEFAULT_THRESHOLDS

    return DEFAULT_THRESHOLDS


def validate_all(engines_dir: str | os.PathLike = DEFAULT_ENGINES_DIR, *, report: str | os.PathLike | None = None,
                 echo: Callable[[str], None] | None = None, **kwargs: Any
                 ) -> tuple[list[ValidationOutcome], list[str]]:
    """Validate every engine in ``engines_dir`` without a verdict yet.

    Returns (outcomes, notices). Engines that cannot run here are skipped with a notice (an
    outcome with verdict "not run"); an engine that cannot be validated for another reason (its
    checkpoint not found, a report folder in the way) gets verdict "error" and the others still
    run. ``report`` is then a parent folder (``<report>/<stem>/``).
    """
    echo = echo or (lambda msg: None)
    notices: list[str] = []
    outcomes: list[ValidationOutcome] = []
    engines = find_engines(engines_dir)
    if not engines:
        raise InputError(f"{engines_dir}: no engines found (build one with 'sgf-deploy build', or pass --engine)")
    todo = []
    for engine in engines:
        if has_verdict(engine):
            notices.append(f"{engine}: already validated ({_manifest(engine)['validation']['verdict']}); "
                           "pass --engine to validate it again")
        else:
            todo.append(engine)
    for engine in todo:
        rep = Path(report) / engine.stem if report is not None else None
        try:
            outcomes.append(validate_engine(engine, report=rep, echo=echo, **kwargs))
        except EngineNotRunnable as exc:
            notices.append(f"{engine}: skipped, not run: {exc}")
            outcomes.append(ValidationOutcome(engine, "not run", [str(exc)]))
        except SgfError as exc:  # one engine's problem must not hide the others' verdicts
            outcomes.append(ValidationOutcome(engine, "error", [str(exc)]))
    return outcomes, notices
