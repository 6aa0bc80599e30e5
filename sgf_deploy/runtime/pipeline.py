"""Files in, files out: what ``sgf-deploy run`` does, as one library call (no torch)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import check_writable
from ..errors import InputError, OutputExistsError
from .select import Selection, select_engine
from .timing import Timings


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


def run_files(reference: str | os.PathLike, target: str | os.PathLike, *, engine: str | None = None,
              out: str | os.PathLike | None = None, overwrite: bool = False, gt: str | os.PathLike | None = None,
              batch: int | None = None, allow_unvalidated: bool = False, threads: int | None = None,
              engines_dir: str | os.PathLike = "engines", notice: Callable[[str], None] | None = None,
              warn: Callable[[str], None] | None = None) -> RunResult:
    """Read reference and target, reconstruct, optionally score against ``gt``, write the output.

    The output has the target's format and geometry (``write_volume(..., like=target)``); by default
    it goes beside the target (``default_output_path``). Every check that can fail on the inputs runs
    before the engine is loaded, and nothing is written unless the reconstruction is finite.
    """
    from ..data.readers import check_same_grid, read_volume
    from ..data.writers import default_output_path, write_volume

    start = time.perf_counter()
    notice = notice or (lambda msg: None)
    warn = warn or (lambda msg: None)
    timings = Timings()

    out_path = Path(out) if out is not None else Path(default_output_path(target))
    inputs = [Path(p) for p in (reference, target, gt) if p is not None]
    for p in inputs:
        if _same_file(out_path, p):
            raise OutputExistsError(f"{out_path}: is one of the inputs; refusing to write over an input (use --out)")
    check_writable(out_path, overwrite, "--overwrite")

    with timings.stage("read"):
        ref_vol = read_volume(reference, role="reference")
        tar_vol = read_volume(target, role="target")
        check_same_grid(ref_vol, tar_vol)
        gt_vol = None
        if gt is not None:
            gt_vol = read_volume(gt, role="ground truth")
            if gt_vol.shape != tar_vol.shape:
                raise InputError(
                    f"ground truth {gt} is {gt_vol.shape_str()} but target {target} is {tar_vol.shape_str()}; "
                    "they must have the same shape"
                )
            if not float(gt_vol.data.max()) > 0:
                raise InputError(
                    f"ground truth {gt}: maximum is {float(gt_vol.data.max()):g}; PSNR/SSIM (data range = max) undefined"
                )
    notices = [msg for vol in (ref_vol, tar_vol, gt_vol) if vol is not None for msg in vol.notices]
    for msg in notices:
        notice(msg)

    selecting = time.perf_counter()
    selection = select_engine(engine, engines_dir=engines_dir, batch=batch, threads=threads,
                              allow_unvalidated=allow_unvalidated, echo=notice)
    rec = selection.reconstructor
    if selection.built_default:  # first use of the embedded default: export + build, once
        timings.add("build", time.perf_counter() - selecting - rec.load_seconds)
    if not rec.validation.ok:
        warn(f"running an engine without a passing validation ({rec.validation.label}): {rec.engine_path}; "
             "its output has not been shown to match the PyTorch reference")
    for msg in selection.skipped:
        notice(f"skipped {msg}")

    pred = rec(ref_vol.data, tar_vol.data)
    for msg in rec.notices:
        notice(msg)
    timings.update({k: v for k, v in rec.timings.items()})

    metrics = None
    if gt_vol is not None:
        from ..metrics import psnr, ssim

        with timings.stage("metrics"):
            metrics = {
                "reconstruction": {"psnr": psnr(gt_vol.data, pred), "ssim": ssim(gt_vol.data, pred)},
                "zero_filled": {"psnr": psnr(gt_vol.data, tar_vol.data), "ssim": ssim(gt_vol.data, tar_vol.data)},
            }

    if not np.isfinite(pred).all():  # never write NaN (Reconstructor checks too)
        raise InputError(f"{target}: the reconstruction is not finite; nothing was written")
    with timings.stage("write"):
        written = write_volume(out_path, pred, like=tar_vol, overwrite=overwrite)
    return RunResult(
        output=Path(written) if written is not None else out_path,
        selection=selection,
        slices=int(tar_vol.shape[0]),
        shape=tar_vol.shape,
        fmt=tar_vol.fmt,
        timings=timings,
        total_seconds=time.perf_counter() - start,
        metrics=metrics,
        notices=notices + list(rec.notices),
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except OSError:
        return False
