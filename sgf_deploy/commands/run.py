"""``sgf-deploy run``: reconstruct a target contrast from files, scanner-side (no torch).

Only the first use of the embedded default model (no validated engine in ``engines/`` and no
cached default engine) imports torch, to export and build it once.
"""

from __future__ import annotations

import click

from .. import defaults as D
from .options import batch_option, force_option, threads_option


@click.command("run")
@click.option("--ref", "reference", required=True, metavar="PATH",
              help="reference contrast (fully sampled): .npy, NIfTI, DICOM folder or fastMRI/M4Raw .h5")
@click.option("--target", required=True, metavar="PATH",
              help="degraded target contrast, same formats; the reference is resampled onto its grid")
@click.option("--engine", default="auto", show_default=True, metavar="PATH|auto",
              help="engine file, or the name of a shipped model (e.g. lite-recon4x-random); 'auto' = best "
                   "validated engine in engines/, else the task's embedded default")
@click.option("--out", default=None, metavar="PATH",
              help="output file/folder [beside the target, in the target's format]")
@force_option("replace an existing output (never an input)")
@click.option("--gt", default=None, metavar="PATH", help="ground truth: print PSNR/SSIM of the output and of the target")
@batch_option("slices per engine call [engine's optimum, else 4]")
@click.option("--allow-unvalidated", is_flag=True, help="run an engine with no passing validation (warns)")
@threads_option("CPU threads for the backend [the engine's measured optimum on this CPU (tune), else all cores]")
@click.option("--server", default=None, metavar="HOST:PORT",
              help="send the slices to a Triton server (sgf-deploy triton serve) instead of a local engine")
@click.option("--register", type=click.Choice(["auto", "rigid", "off"]), default=D.REGISTER, show_default=True,
              help="rigid registration of the reference to the target (mutual information, per slice): auto = "
                   "estimate always, correct above a calibrated threshold; rigid = always correct; off = trust geometry")
@click.option("--strict", is_flag=True,
              help="refuse instead of warning when the result is in doubt (registration not converged or misaligned, "
                   "output contrast differs from the measured data)")
@click.option("--task", type=click.Choice(["recon4x", "recon8x", "sr2x", "sr4x"]), default=None,
              help="which embedded default to use [recon4x; k-space input with a mask: the mask's task]; "
                   "an --engine's own task wins")
def command(reference, target, engine, out, force, gt, batch, allow_unvalidated, threads, server, register,
            strict, task) -> None:
    """Reconstruct TARGET guided by REF and write the result beside the target."""
    from ..runtime.pipeline import RunSettings, run_files

    settings = RunSettings(engine=engine, out=out, overwrite=force, gt=gt, batch=batch,
                           allow_unvalidated=allow_unvalidated, threads=threads, server=server,
                           register=register, strict=strict, task=task)
    result = run_files(reference, target, settings,
                       notice=lambda msg: click.echo(f"sgf-deploy: note: {msg}", err=True),
                       warn=lambda msg: click.echo(f"sgf-deploy: warning: {msg}", err=True))
    for line in summary_lines(result, target, gt):
        click.echo(line)


def summary_lines(result, target, gt) -> list[str]:  # noqa: ANN001 - RunResult, paths as given
    """The run's summary on stdout: engine, input, timings, quality, output."""
    sel = result.selection
    rec = sel.reconstructor
    n, h, w = result.shape
    if sel.source == "default":
        built = " (built now and cached)" if sel.built_default else " (cached)"
        engine_line = f"{rec.trust.label}{built}: {rec.engine_path} [{rec.backend} {rec.precision.upper()}, {rec.device}]"
    else:
        engine_line = rec.describe()
    lines = [f"engine:  {engine_line}"]
    manifest = getattr(rec, "manifest", None)
    if manifest is not None and getattr(manifest, "model", None) is not None:
        from ..runtime.fidelity import model_line

        lines.append(f"model:   {model_line(manifest)}")
    lines += [f"input:   {target} ({result.fmt}) {n} slice{'s' if n != 1 else ''} of {h}x{w}, batch {rec.batch}",
             f"time:    {result.timings.format()}; total {result.total_seconds:.2f} s"]
    provenance = getattr(result, "provenance", None) or {}
    if provenance.get("resampling"):
        lines.append(f"grid:    {provenance['resampling']}")
    if provenance.get("registration"):
        lines.append(f"register: {provenance['registration']}")
    fidelity = getattr(result, "fidelity", None)
    if fidelity is not None:
        lines.append(f"fidelity: {fidelity.line()}")
    if result.metrics:
        m = result.metrics
        lines += [f"quality vs {gt}:",
                  f"  zero-filled (target)  PSNR {m['zero_filled']['psnr']:6.2f} dB  SSIM {m['zero_filled']['ssim']:.4f}",
                  f"  SGF-MRI (this run)    PSNR {m['reconstruction']['psnr']:6.2f} dB  SSIM {m['reconstruction']['ssim']:.4f}"]
    lines.append(f"wrote:   {result.output}")
    return lines
