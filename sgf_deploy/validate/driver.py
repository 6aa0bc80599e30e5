"""PSNR parity of a built engine against the PyTorch reference, with a pass/fail verdict.

The driver, :func:`validate_engine`, is a short list of named steps (Polygraphy-style: loader,
runners and comparator kept apart): :func:`load_subject` (engine, runner, the FP32 ONNX and the
checkpoint it was built from) -> :func:`run_both` -> :func:`sgf_deploy.compare.compare_outputs`
-> :func:`judge_figures` -> :func:`make_report` / :func:`sgf_deploy.validate.report.write_report`
-> :func:`record_verdict`. What is compared (DESIGN.md sections 5-6; the report states it too):

1. The inputs are prepared **once** by the input contract (:mod:`sgf_deploy.contract`: per-slice
   instance normalisation, edge padding to the model's size multiple). The very same
   ``(N, 1, Hp, Wp)`` float32 arrays go to the PyTorch model (float32, eval mode,
   ``torch.no_grad``) and to the engine (``Runner.infer``), and both outputs are cropped and
   de-normalised by the same function (``contract.restore``).
2. Per slice: PSNR/SSIM/NMSE of each output against the ground truth (fastMRI conventions);
   PSNR(engine, PyTorch) and the max abs error between the two outputs (data_range = the
   ground-truth maximum of the slice's volume); aggregates with paired statistics
   (:mod:`sgf_deploy.compare`).
3. Verdict: :func:`sgf_deploy.validate.thresholds.judge`.

The checkpoint is the one the engine was built from (:func:`sgf_deploy.model.locate.resolve_checkpoint`):
``--ckpt`` must have the SHA-256 recorded in the engine manifest; without ``--ckpt`` the path
recorded at export time is used if its SHA-256 matches, else an embedded default if *its*
SHA-256 matches, else an error asks for ``--ckpt``.
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

from .. import __version__, contract
from .. import defaults as D
from ..artifacts import check_writable, sha256_file
from ..compare import compare_outputs
from ..engines.manifest import EngineManifest
from ..errors import EngineMismatchError, InputError, MissingDependencyError, SgfError
from .data import ValidationData, load_data
from .settings import ValidateSettings
from .sources import engine_origin, find_engines, has_verdict
from .thresholds import DEFAULT_THRESHOLDS, Thresholds, judge, thresholds_for

__all__ = ["EngineNotRunnable", "ValidationOutcome", "validate_all", "validate_engine"]

REPORT_FORMAT = "sgf-deploy-validation"
REPORT_FORMAT_VERSION = 1


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


def _load_runner(engine: Path, threads: int | None) -> Any:
    """``load_engine`` or :class:`EngineNotRunnable` with the reason."""
    from ..engines import load_engine

    try:
        return load_engine(engine, threads=threads)
    except (EngineMismatchError, MissingDependencyError) as exc:
        raise EngineNotRunnable(str(exc)) from None


@dataclass
class Subject:
    """What is validated: the engine and its runner, the model it was built from, the gate."""

    engine: Path
    manifest: EngineManifest
    runner: Any
    thresholds: Thresholds
    report_dir: Path
    onnx_path: Path | None
    onnx_meta: dict[str, Any] | None
    ckpt: tuple[Path, str, str]  # path, sha256, how it was found

    @property
    def pair(self) -> str | None:
        return self.manifest.model.pair or (self.onnx_meta or {}).get("sgf.pair")

    @property
    def task(self) -> str | None:
        return self.manifest.model.task or (self.onnx_meta or {}).get("sgf.task")


@dataclass
class Outputs:
    """Both sides' outputs per case (target scale), the inputs they were made from, timings."""

    pytorch: list[np.ndarray]
    engine: list[np.ndarray]
    prepared: list[contract.Prepared]
    batch: int
    seconds: dict[str, float]


def load_subject(engine: str | os.PathLike, settings: ValidateSettings) -> Subject:
    """Engine, runner (or :class:`EngineNotRunnable`: nothing is written then), the FP32 ONNX
    and the checkpoint it was built from (:func:`.sources.engine_origin`)."""
    engine = Path(engine)
    if not engine.is_file():
        raise InputError(f"{engine}: engine file not found")
    manifest = EngineManifest.load(engine)
    thresholds = thresholds_for(manifest.precision.lower(), settings.min_parity_psnr, settings.max_delta_psnr)
    report_dir = Path(settings.report) if settings.report is not None else Path(D.REPORTS_DIR) / engine.stem
    check_writable(report_dir, settings.overwrite, "--force")
    runner = _load_runner(engine, settings.threads)  # first: if it cannot run here, say so before anything else
    origin = engine_origin(engine, manifest, settings.ckpt)
    return Subject(engine, manifest, runner, thresholds, report_dir, origin.onnx_path, origin.onnx_meta,
                   origin.checkpoint)


def run_both(subject: Subject, model: Any, vdata: ValidationData, settings: ValidateSettings) -> Outputs:
    """The same contract-prepared inputs through PyTorch and through the engine, per case."""
    from ..model.infer import torch_infer

    profile = subject.manifest.profile
    batch = profile.choose_batch(settings.batch, D.RUN_BATCH)
    multiple = contract.size_multiple(subject.manifest, subject.onnx_meta, model.config)
    pt_infer = torch_infer(model)
    out = Outputs([], [], [], batch, {"pytorch": 0.0, "engine": 0.0})
    for case in vdata.cases:
        ref, tar, _ = contract.check_pair(case.reference, case.target, what="validation data")
        prepared = contract.prepare(ref, tar, multiple)
        problem = profile.spatial_problem(prepared.padded_shape, (prepared.h, prepared.w))
        if problem:
            raise InputError(f"{subject.engine}: {problem}")
        t0 = time.perf_counter()
        raw_pt = contract.run_batched(pt_infer, prepared.reference, prepared.target, batch)
        t1 = time.perf_counter()
        raw_eng = contract.run_batched(subject.runner.infer, prepared.reference, prepared.target, batch,
                                       profile.static_batch)
        out.seconds["pytorch"] += t1 - t0
        out.seconds["engine"] += time.perf_counter() - t1
        out.pytorch.append(contract.restore(raw_pt, prepared))
        out.engine.append(contract.restore(raw_eng, prepared))
        out.prepared.append(prepared)
    return out


def judge_figures(subject: Subject, figures: dict[str, Any]) -> tuple[str, list[str]]:
    """The verdict on the figures (:func:`.thresholds.judge`), failed too when the engine file
    no longer matches its manifest."""
    summary = figures["summary"]
    parity = summary.get("parity_psnr", {})
    verdict, reasons = judge(
        nonfinite=figures["nonfinite"]["engine"] + figures["nonfinite"]["pytorch"],
        parity_psnr_min=math.inf if parity.get("min") is None and parity.get("identical_slices") else parity.get("min"),
        delta_psnr_mean=(summary.get("delta_psnr") or {}).get("mean_diff"),
        thresholds=subject.thresholds,
    )
    engine_sha = sha256_file(subject.engine)
    if subject.manifest.engine_sha256 != engine_sha:
        reasons.append(f"engine file SHA-256 {engine_sha[:12]}... differs from its manifest "
                       f"({subject.manifest.engine_sha256[:12]}...): the file was changed after the build")
        verdict = "fail"
    return verdict, reasons


def worst_case(figures: dict[str, Any], vdata: ValidationData) -> tuple[int, int]:
    """(case index, slice index) of the worst slice (for the panel and the layer-wise run)."""
    worst = figures["per_slice"][figures["worst_index"]]
    return next(i for i, c in enumerate(vdata.cases) if c.name == worst["volume"]), int(worst["slice"])


def panel_images(vdata: ValidationData, outputs: Outputs, where: tuple[int, int], index: int) -> dict[str, Any]:
    v, s = where
    case = vdata.cases[v]
    return {"reference": case.reference[s], "target": case.target[s], "ground_truth": case.ground_truth[s],
            "pytorch": outputs.pytorch[v][s], "engine": outputs.engine[v][s],
            "data_range": float(np.max(case.ground_truth)), "volume": case.name, "slice": s, "index": index}


def layerwise_record(subject: Subject, model: Any, outputs: Outputs, where: tuple[int, int], verdict: str,
                     settings: ValidateSettings, echo: Callable[[str], None]) -> dict[str, Any] | None:
    """``--layerwise`` on a failing verdict: where the engine's error first jumps."""
    if not settings.layerwise:
        return None
    if verdict == "pass":
        return {"run": False, "reason": "the verdict passed; --layerwise only runs on a failing engine"}
    from .layerwise import layerwise_compare

    v, s = where
    prepared = outputs.prepared[v]
    echo(f"{subject.engine.name}: layer-wise comparison on case {v}, slice {s}")
    try:
        return layerwise_compare(subject.engine, subject.manifest, subject.onnx_path,
                                 prepared.reference[s : s + 1], prepared.target[s : s + 1],
                                 model=model, onnx_meta=subject.onnx_meta, threads=settings.threads)
    except SgfError as exc:
        return {"run": False, "reason": str(exc)}


def make_report(subject: Subject, ckpt_meta: dict[str, Any], vdata: ValidationData, outputs: Outputs,
                figures: dict[str, Any], judged: tuple[str, list[str]], extra: dict[str, Any]) -> dict[str, Any]:
    """The report object (``report.json``): every figure, the gate, hashes, data, environment."""
    verdict, reasons = judged
    m = subject.manifest
    ckpt_path, ckpt_sha, ckpt_how = subject.ckpt
    return {
        "format": REPORT_FORMAT, "format_version": REPORT_FORMAT_VERSION, "verdict": verdict, "reasons": reasons,
        "validated_at": _now(),
        "engine": {"path": str(subject.engine), "sha256": sha256_file(subject.engine), "manifest_sha256": m.engine_sha256,
                   "backend": m.backend, "backend_version": m.backend_version, "precision": m.precision.lower(),
                   "device": m.device, "profile": m.profile.to_manifest(), "build_options": m.build_options,
                   "built_at": m.built_at, "batch_used": outputs.batch},
        "onnx": {"path": str(subject.onnx_path) if subject.onnx_path else None, "sha256": m.onnx_sha256,
                 "found": subject.onnx_path is not None},
        "checkpoint": {"path": str(ckpt_path), "sha256": ckpt_sha, "resolved_by": ckpt_how,
                       "preset": m.model.preset or (subject.onnx_meta or {}).get("sgf.preset"),
                       "parameters": ckpt_meta.get("parameters"), "steps": (ckpt_meta.get("provenance") or {}).get("steps")},
        "model": {"pair": subject.pair, "task": subject.task,
                  "size_multiple": contract.size_multiple(m, subject.onnx_meta)},
        "thresholds": subject.thresholds.to_dict() | {"defaults": {k: v.to_dict() for k, v in DEFAULT_THRESHOLDS.items()}},
        "definitions": DEFINITIONS,
        "data": vdata.description,
        "summary": figures["summary"],
        "nonfinite": figures["nonfinite"],
        "per_slice": figures["per_slice"],
        "timing_seconds": {k: round(v, 3) for k, v in outputs.seconds.items()},
        "environment": _versions(),
        **extra,
    }


def record_verdict(subject: Subject, report: dict[str, Any], report_sha: str, written: dict[str, Any],
                   vdata: ValidationData) -> None:
    """The verdict into the engine's manifest (atomic; the manifest's identity is untouched)."""
    summary, th = report["summary"], subject.thresholds
    EngineManifest.update(subject.engine, validation={
        "verdict": report["verdict"], "report_sha256": report_sha, "report_path": str(written["json"]),
        "validated_at": report["validated_at"], "reasons": report["reasons"],
        "thresholds": {"min_parity_psnr": th.min_parity_psnr, "max_delta_psnr": th.max_delta_psnr, "source": th.source},
        "parity_psnr_min": summary.get("parity_psnr", {}).get("min"),
        "delta_psnr_mean": (summary.get("delta_psnr") or {}).get("mean_diff"),
        "checkpoint_sha256": subject.ckpt[1],
        "data": {k: vdata.description.get(k) for k in ("source", "pair", "task", "split", "seed", "n_slices",
                                                       "directory") if vdata.description.get(k) is not None},
        "toolkit_version": __version__,
    })


def validate_engine(engine: str | os.PathLike, settings: ValidateSettings | None = None, *,
                    echo: Callable[[str], None] | None = None, **options: Any) -> ValidationOutcome:
    """Validate one engine: run -> compare -> judge -> report -> record.

    Returns the outcome (verdict "pass" or "fail"); raises :class:`EngineNotRunnable` when the
    engine cannot run here (nothing is written then) and :class:`SgfError` for bad inputs. The
    caller decides the exit code (:class:`~sgf_deploy.errors.ValidationFailed` on "fail").
    ``settings`` (:class:`ValidateSettings`) or its fields as keyword ``options``."""
    from ..model import load_checkpoint
    from .report import write_report

    echo = echo or (lambda msg: None)
    settings = (settings or ValidateSettings()).replace(**options)
    subject = load_subject(engine, settings)
    vdata = load_data(settings.data, pair=subject.pair, task=subject.task, n=settings.n, seed=settings.seed,
                      checkpoint=subject.ckpt[0], checkpoint_sha256=subject.ckpt[1])
    echo(f"{subject.engine.name}: {vdata.n_slices} slice(s) of {vdata.description['what']}")
    model, ckpt_meta = load_checkpoint(subject.ckpt[0])
    if settings.threads:
        import torch

        torch.set_num_threads(int(settings.threads))
    outputs = run_both(subject, model, vdata, settings)
    figures = compare_outputs([c.ground_truth for c in vdata.cases], outputs.pytorch, outputs.engine,
                              [c.name for c in vdata.cases])
    verdict, reasons = judge_figures(subject, figures)
    where = worst_case(figures, vdata)
    index = int(figures["per_slice"][figures["worst_index"]]["index"])
    extra = {
        "panel_slice": {"index": index, "volume": vdata.cases[where[0]].name, "slice": where[1],
                        "why": "first slice with non-finite output" if figures["nonfinite"]["slices"] else
                               "worst slice by delta PSNR (engine - PyTorch vs ground truth)"},
        "layerwise": layerwise_record(subject, model, outputs, where, verdict, settings, echo),
    }
    report = make_report(subject, ckpt_meta, vdata, outputs, figures, (verdict, reasons), extra)
    report_sha, written = write_report(subject.report_dir, report, panel_images(vdata, outputs, where, index),
                                       overwrite=settings.overwrite)
    if settings.update:
        record_verdict(subject, report, report_sha, written, vdata)
    return ValidationOutcome(subject.engine, verdict, reasons, subject.report_dir, report, report_sha)


def validate_all(engines_dir: str | os.PathLike = D.ENGINES_DIR, settings: ValidateSettings | None = None, *,
                 echo: Callable[[str], None] | None = None) -> tuple[list[ValidationOutcome], list[str]]:
    """Validate every engine in ``engines_dir`` without a verdict yet.

    Returns (outcomes, notices). Engines that cannot run here are skipped with a notice (an
    outcome with verdict "not run"); an engine that cannot be validated for another reason (its
    checkpoint not found, a report folder in the way) gets verdict "error" and the others still
    run. ``settings.report`` is then a parent folder (``<report>/<stem>/``).
    """
    settings = settings or ValidateSettings()
    notices: list[str] = []
    outcomes: list[ValidationOutcome] = []
    engines = find_engines(engines_dir)
    if not engines:
        raise InputError(f"{engines_dir}: no engines found (build one with 'sgf-deploy build', or pass --engine)")
    for engine in engines:
        if has_verdict(engine):
            notices.append(f"{engine}: already validated ({EngineManifest.load(engine).verdict}); "
                           "pass --engine to validate it again")
            continue
        rep = Path(settings.report) / engine.stem if settings.report is not None else None
        try:
            outcomes.append(validate_engine(engine, settings.replace(report=rep), echo=echo))
        except EngineNotRunnable as exc:
            notices.append(f"{engine}: skipped, not run: {exc}")
            outcomes.append(ValidationOutcome(engine, "not run", [str(exc)]))
        except SgfError as exc:  # one engine's problem must not hide the others' verdicts
            outcomes.append(ValidationOutcome(engine, "error", [str(exc)]))
    return outcomes, notices


DEFINITIONS = {
    "psnr_vs_gt": "per slice, fastMRI convention, data_range = ground-truth maximum of the slice's volume",
    "ssim_vs_gt": "per slice, 7x7 uniform window (scikit-image defaults), same data_range",
    "nmse": "per slice ||gt - x||^2 / ||gt||^2",
    "psnr_engine_vs_pytorch": "per slice, PyTorch output as reference image, data_range = ground-truth "
                              "maximum of the slice's volume; gate on the worst slice",
    "delta": "engine - PyTorch, per slice, against ground truth; mean with 95 % t CI, two-sided "
             "Wilcoxon signed-rank (zero differences dropped)",
    "null": "a null PSNR means infinite (identical images); see identical_slices",
    "reference_path": "PyTorch float32 eval, torch.no_grad, on the same normalised padded arrays as the engine",
}
