"""Files in, files out: what ``sgf-deploy run`` does, as library calls (no torch).

Two layers, so that every front end (``run``, the DICOM node, scripts) reconstructs with the same
code:

* :func:`reconstruct_volumes` -- two read :class:`~sgf_deploy.data.volume.Volume` objects in, the
  reconstruction on the target's grid out: :func:`pair_inputs` (the reference brought onto the
  target's grid, or refused), :func:`select_engine`, the reconstructor, in that order (a short
  stack with ``register auto`` registers beside a first inference: :func:`_registers_beside`,
  :func:`_infer`);
* :func:`run_files` -- paths in, a written output out: :func:`plan_output` (never over an input),
  :func:`read_inputs`, :func:`reconstruct_volumes`, :func:`score` against a ground truth, write.

Every check that can fail on the inputs runs before an engine is loaded, and nothing is written
unless the reconstruction is finite.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import defaults as D
from ..artifacts import check_writable
from ..errors import InputError, OutputExistsError
from .select import Selection, select_engine
from .timing import Timings

Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunSettings:
    """Options of one run (``sgf-deploy run``); defaults in :mod:`sgf_deploy.defaults`."""

    engine: str | None = "auto"
    out: str | os.PathLike | None = None
    overwrite: bool = False
    gt: str | os.PathLike | None = None
    batch: int | None = None
    threads: int | None = None
    allow_unvalidated: bool = False
    engines_dir: str | os.PathLike = D.ENGINES_DIR
    register: str = D.REGISTER  # "auto" | "rigid" | "off" (sgf_deploy.geometry.pair)
    strict: bool = False  # warnings that put the image in doubt refuse the run instead
    server: str | None = None  # HOST:PORT of a Triton server serving the model (sgf_deploy.serving); None: local engine
    task: str | None = None  # recon4x|recon8x|sr2x|sr4x: picks the embedded default (None: a k-space mask's, else recon4x)


@dataclass
class Reconstruction:
    """What :func:`reconstruct_volumes` produced: the image on the target's grid and how."""

    image: np.ndarray  # float32 (N, H, W), the target's intensity scale
    selection: Selection
    timings: Timings
    notices: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # e.g. {"registration": "<one line>"}
    fidelity: Any = None  # runtime.fidelity.Fidelity: the contrast-fidelity guard's verdict


@dataclass
class RunResult:
    output: Path
    selection: Selection
    slices: int
    shape: tuple[int, int, int]
    fmt: str
    timings: Timings
    total_seconds: float
    metrics: dict | None = None  # {"reconstruction": {psnr, ssim}, "zero_filled": {psnr, ssim}}
    notices: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # Reconstruction.provenance (registration, resampling)
    fidelity: Any = None  # Reconstruction.fidelity


@dataclass
class Inputs:
    reference: Any  # sgf_deploy.data.volume.Volume
    target: Any
    ground_truth: Any | None

    @property
    def notices(self) -> list[str]:
        return [msg for vol in (self.reference, self.target, self.ground_truth) if vol is not None for msg in vol.notices]


# ------------------------------------------------------------------------------------ the steps
def plan_output(target: str | os.PathLike, settings: RunSettings, inputs: list[Path]) -> Path:
    """The output path: ``settings.out`` or beside the target; refused if it is an input or exists."""
    from ..data.writers import default_output_path

    out_path = Path(settings.out) if settings.out is not None else Path(default_output_path(target))
    for p in inputs:
        if _same_file(out_path, p):
            raise OutputExistsError(f"{out_path}: is one of the inputs; refusing to write over an input (use --out)")
    check_writable(out_path, settings.overwrite, "--overwrite")
    return out_path


def read_inputs(reference: str | os.PathLike, target: str | os.PathLike, gt: str | os.PathLike | None) -> Inputs:
    """Read the files (each checked by its reader); a ground truth must have the target's shape
    and a positive maximum."""
    from ..data.readers import read_volume

    ref_vol = read_volume(reference, role="reference")
    tar_vol = read_volume(target, role="target")
    gt_vol = None
    if gt is not None:
        gt_vol = read_volume(gt, role="ground truth")
        if gt_vol.shape != tar_vol.shape:
            raise InputError(f"ground truth {gt} is {gt_vol.shape_str()} but target {target} is {tar_vol.shape_str()}; "
                             "they must have the same shape")
        if not float(gt_vol.data.max()) > 0:
            raise InputError(f"ground truth {gt}: maximum is {float(gt_vol.data.max()):g}; "
                             "PSNR/SSIM (data range = max) undefined")
    return Inputs(ref_vol, tar_vol, gt_vol)


def pair_inputs(reference: Any, target: Any, settings: RunSettings | None = None) -> Any:
    """The reference's pixels on the target's grid, with notes, warnings and provenance
    (:class:`sgf_deploy.geometry.PairedInputs`): resampled from the files' geometry and registered
    per ``settings.register`` (:func:`sgf_deploy.geometry.pair_inputs`), or refused with one line."""
    from ..geometry import pair_inputs as pair

    return pair(reference, target, settings or RunSettings())


def score(ground_truth: np.ndarray, target: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    """PSNR/SSIM (fastMRI) of the reconstruction and of the target itself against the ground truth."""
    from ..metrics import psnr, ssim

    return {
        "reconstruction": {"psnr": psnr(ground_truth, pred), "ssim": ssim(ground_truth, pred)},
        "zero_filled": {"psnr": psnr(ground_truth, target), "ssim": ssim(ground_truth, target)},
    }


# ----------------------------------------------------------------------------------- the layers
def reconstruct_volumes(reference: Any, target: Any, settings: RunSettings | None = None, *,
                        notice: Echo | None = None, warn: Echo | None = None) -> Reconstruction:
    """Reconstruct ``target`` guided by ``reference`` (read volumes) on the target's grid."""
    settings = settings or RunSettings()
    notice = notice or (lambda msg: None)
    warn = warn or (lambda msg: None)
    timings = Timings()
    beside = _registers_beside(settings, target)
    with timings.stage("pair"):
        paired = pair_inputs(reference, target, replace(settings, register="off") if beside else settings)
    if not beside:
        _say(paired, notice, warn)
    from .fidelity import guard, resolve_task

    task, kspace_mask = resolve_task(settings.task, target, notice)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(_timed_pair, reference, target, settings) if beside else None
        image, selection, paired = _infer(paired, pending, target, settings, task, timings, notice, warn)
    rec = selection.reconstructor
    with timings.stage("fidelity"):
        fidelity = guard(image, target.data, rec, task, kspace_mask, settings.strict, warn, notice)
    return Reconstruction(image, selection, timings, list(paired.notes) + paired.warnings + list(rec.notices),
                          provenance=dict(paired.provenance), fidelity=fidelity)


def _registers_beside(settings: RunSettings, target: Any) -> bool:
    """``register auto`` on a stack of at most :data:`~sgf_deploy.defaults.REGISTER_BESIDE_MAX_SLICES`
    slices: register in a thread while the engine loads and runs on the unregistered reference."""
    return settings.register == "auto" and target.shape[0] <= D.REGISTER_BESIDE_MAX_SLICES


def _timed_pair(reference: Any, target: Any, settings: RunSettings) -> tuple[Any, float]:
    start = time.perf_counter()
    return pair_inputs(reference, target, settings), time.perf_counter() - start


def _infer(paired: Any, pending: "Future | None", target: Any, settings: RunSettings, task: str,
           timings: Timings, notice: Echo, warn: Echo) -> tuple[np.ndarray, Selection, Any]:
    """Select the engine and reconstruct with ``paired``'s reference; with a registration
    ``pending`` beside it, take its pairing and reconstruct again only if it moved the reference.
    Returns (image, selection, the pairing used)."""
    selecting = time.perf_counter()
    selection = choose_engine(settings, notice, task)
    rec = selection.reconstructor
    if selection.built_default:  # first use of the embedded default: export + build, once
        timings.add("build", time.perf_counter() - selecting - rec.load_seconds)
    if not rec.trust.ok:
        warn(f"running an engine without a passing validation ({rec.trust.label}): {rec.engine_path}; "
             "its output has not been shown to match the PyTorch reference")
    for msg in selection.skipped:
        notice(f"skipped {msg}")
    image = rec(paired.reference_pixels, target.data)
    if pending is not None:
        first = rec.timings
        paired, seconds = pending.result()  # a refusal (--strict) raises here, before anything is written
        timings.add("register (beside)", seconds)
        _say(paired, notice, warn)
        if paired.registration is not None and paired.registration.applied:
            timings.add("inference, unregistered", sum(first.values()) - first.get("load", 0.0))
            image = rec(paired.reference_pixels, target.data)
    for msg in rec.notices:
        notice(msg)
    timings.update(rec.timings)
    if not np.isfinite(image).all():  # never hand on NaN (Reconstructor checks too)
        raise InputError(f"{target.source}: the reconstruction is not finite; nothing was written")
    return image, selection, paired


def _say(paired: Any, notice: Echo, warn: Echo) -> None:
    for msg in paired.notes:
        notice(msg)
    for msg in paired.warnings:
        warn(msg)


def run_files(reference: str | os.PathLike, target: str | os.PathLike, settings: RunSettings | None = None, *,
              notice: Echo | None = None, warn: Echo | None = None) -> RunResult:
    """Read reference and target, reconstruct, optionally score against ``settings.gt``, write.

    The output has the target's format and geometry (``write_volume(..., like=target)``)."""
    from ..data.writers import write_volume

    settings = settings or RunSettings()
    start = time.perf_counter()
    notice = notice or (lambda msg: None)
    timings = Timings()
    out_path = plan_output(target, settings, [Path(p) for p in (reference, target, settings.gt) if p is not None])
    with timings.stage("read"):
        inputs = read_inputs(reference, target, settings.gt)
    for msg in inputs.notices:
        notice(msg)
    result = reconstruct_volumes(inputs.reference, inputs.target, settings, notice=notice, warn=warn)
    timings.update(result.timings)
    metrics = None
    if inputs.ground_truth is not None:
        with timings.stage("metrics"):
            metrics = score(inputs.ground_truth.data, inputs.target.data, result.image)
    with timings.stage("write"):
        written = write_volume(out_path, result.image, like=inputs.target, overwrite=settings.overwrite,
                               description=derivation_description(result), reference=inputs.reference,
                               result_key=result_key(result))
    return RunResult(
        output=Path(written) if written is not None else out_path, selection=result.selection,
        slices=int(inputs.target.shape[0]), shape=inputs.target.shape, fmt=inputs.target.fmt, timings=timings,
        total_seconds=time.perf_counter() - start, metrics=metrics, notices=inputs.notices + result.notices,
        provenance=dict(result.provenance), fidelity=result.fidelity,
    )


def derivation_description(result: Reconstruction) -> str:
    """One line for the output's provenance (DICOM DerivationDescription, NIfTI descrip, HDF5
    attribute): the engine (file, sha256, precision, validation verdict) and the registration
    applied."""
    from .. import __version__

    rec = result.selection.reconstructor
    manifest = rec.manifest
    sha = str(getattr(manifest, "engine_sha256", "") or "")
    verdict = getattr(manifest, "verdict", None) or rec.trust.label
    parts = [f"SGF-MRI reconstruction by sgf-deploy {__version__}",
             f"engine {rec.engine_path.name} sha256 {sha} ({rec.backend} {rec.precision.upper()}, validation: {verdict})"]
    provenance = getattr(result, "provenance", None) or {}
    parts.append(f"registration: {provenance.get('registration') or 'none (reference on the target grid)'}")
    parts += [f"{key}: {value}" for key, value in provenance.items() if key != "registration"]
    return "; ".join(parts)


def result_key(result: Reconstruction) -> str:
    """What makes a result this result beyond its inputs: the engine's sha256 (the DICOM writer
    derives the output UIDs from the input UIDs and this, so a re-sent result replaces itself)."""
    rec = result.selection.reconstructor
    return f"engine sha256 {getattr(rec.manifest, 'engine_sha256', '') or rec.engine_path.name}"


def choose_engine(settings: RunSettings, notice: Echo, task: str | None = None) -> Selection:
    """The local engine :func:`select_engine` picks, or with ``settings.server`` the model served
    there (:func:`sgf_deploy.serving.client.connect`: same trust rule, same face as a
    Reconstructor; unreachable servers, timeouts and server errors are one line)."""
    if settings.server:
        from ..serving.client import connect

        if settings.engine not in (None, "auto"):
            raise InputError(f"--engine {settings.engine} and --server {settings.server}: the server's model runs, "
                             "not a local engine; give one of them")

        return Selection(connect(settings.server, batch=settings.batch,  # type: ignore[arg-type]
                                 allow_unvalidated=settings.allow_unvalidated), "server")
    return select_engine(settings.engine, engines_dir=settings.engines_dir, batch=settings.batch,
                         threads=settings.threads, allow_unvalidated=settings.allow_unvalidated, echo=notice,
                         task=task)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False
