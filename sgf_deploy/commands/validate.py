"""``sgf-deploy validate``: PSNR parity of engines against the PyTorch reference, pass/fail."""

from __future__ import annotations

import click

from .. import defaults as D
from .options import batch_option, ckpt_option, data_option, force_option, n_option, seed_option, threads_option


@click.command("validate")
@click.option("--engine", "engines", multiple=True, type=click.Path(dir_okay=False), metavar="PATH",
              help="engine file (repeatable) [every engine in --engines-dir without a verdict yet]")
@click.option("--engines-dir", default=str(D.ENGINES_DIR), show_default=True, type=click.Path(file_okay=False),
              help="where engines are looked for when no --engine is given")
@ckpt_option("the checkpoint the engine was built from (its SHA-256 must match the manifest) "
             "[the recorded path, else the embedded default, when the SHA-256 matches]")
@data_option("'sim': the simulator's held-out test split for the engine's pair/task; or a folder of your pairs, "
             "minus every subject the model was trained or validated on (see README, 'Your own data') "
             "[a model trained with 'train --data DIR': that folder's test subjects]")
@n_option(None, f"slices to validate on [{D.VALIDATE_SIM_N} for sim; all slices of DIR]")
@seed_option("simulator seed (--data sim)")
@click.option("--report", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="report folder [reports/<engine stem>/]; with several engines, a parent folder")
@click.option("--min-parity-psnr", default=None, type=float, metavar="DB",
              help="minimum worst-slice PSNR(engine, PyTorch) [80 FP32 / 50 FP16 / 40 INT8]")
@click.option("--max-delta-psnr", default=None, type=float, metavar="DB",
              help="maximum |mean delta PSNR vs ground truth| [0.001 FP32 / 0.01 FP16 / 0.1 INT8]")
@click.option("--layerwise", is_flag=True,
              help="on a failing verdict, compare intermediate tensors with the FP32 ONNX and name the first layer "
                   "whose error jumps (ONNX Runtime engines)")
@batch_option()
@threads_option("CPU threads for torch and the backend")
@force_option("replace an existing report folder")
def command(engines, engines_dir, ckpt, data, n, seed, report, min_parity_psnr, max_delta_psnr, layerwise,
            batch, threads, force) -> None:
    """Validate engines against the PyTorch reference; exit 3 when a verdict fails.

    \b
    Pass = every output finite, worst-slice PSNR(engine, PyTorch) >= --min-parity-psnr and
    |mean delta PSNR (engine - PyTorch, vs ground truth)| <= --max-delta-psnr.
    The report (report.json, panel.png, summary.md) is written, and the verdict recorded in the
    engine manifest, before the exit code says fail.
    """
    from pathlib import Path

    from ..errors import SgfError, ValidationFailed
    from ..validate import EngineNotRunnable, ValidateSettings, ValidationOutcome, validate_all, validate_engine

    if click.get_current_context().get_parameter_source("data") == click.core.ParameterSource.DEFAULT:
        data = "auto"  # a model trained on a folder: that folder's test subjects; else the simulator
    echo = lambda msg: click.echo(f"sgf-deploy: {msg}", err=True)  # noqa: E731
    settings = ValidateSettings(ckpt=ckpt, data=data, n=n, seed=seed, min_parity_psnr=min_parity_psnr,
                                max_delta_psnr=max_delta_psnr, overwrite=force, layerwise=layerwise, batch=batch,
                                threads=threads)
    outcomes: list[ValidationOutcome] = []
    not_run: list[str] = []
    errors: list[str] = []
    if engines:
        for engine in engines:
            rep = report if len(engines) == 1 or report is None else str(Path(report) / Path(engine).stem)
            try:
                outcomes.append(validate_engine(engine, settings.replace(report=rep), echo=echo))
            except EngineNotRunnable as exc:
                not_run.append(f"{engine}: not run: {exc}")
            except SgfError as exc:
                if len(engines) == 1:
                    raise
                errors.append(f"{engine}: {exc}")
    else:
        found, notices = validate_all(engines_dir, settings.replace(report=report), echo=echo)
        for msg in notices:
            click.echo(f"sgf-deploy: note: {msg}", err=True)
        outcomes = [o for o in found if o.verdict in ("pass", "fail")]
        errors = [f"{o.engine}: {'; '.join(o.reasons)}" for o in found if o.verdict == "error"]
        if not found:
            click.echo(f"nothing to validate in {engines_dir}/ (every engine has a verdict; pass --engine to redo one)")

    for o in outcomes:
        click.echo(o.line())
        for line in layerwise_lines(o):
            click.echo(line)
    for msg in not_run:
        click.echo(msg, err=True)
    for msg in errors:
        click.echo(f"sgf-deploy: error: {msg}", err=True)

    failed = [o for o in outcomes if o.verdict == "fail"]
    if failed:
        raise ValidationFailed(
            f"{len(failed)} engine(s) failed validation: " + ", ".join(str(o.engine) for o in failed)
            + "; see " + ", ".join(str(o.report_dir) for o in failed)
        )
    if not_run:
        raise EngineNotRunnable(f"{len(not_run)} engine(s) could not run on this machine: "
                                + "; ".join(m.split(': not run: ', 1)[-1] for m in not_run))
    if errors:
        raise SgfError(f"{len(errors)} engine(s) could not be validated (see above)")


def layerwise_lines(o) -> list[str]:  # noqa: ANN001 - a ValidationOutcome
    """The ``--layerwise`` findings of a failing engine, for the terminal."""
    lines: list[str] = []
    lw = (o.report or {}).get("layerwise")
    if not isinstance(lw, dict):
        return lines
    if not lw.get("run"):
        if o.verdict == "fail":
            lines.append(f"  layer-wise: not run: {lw.get('reason')}")
        return lines
    fj = lw.get("first_jump")
    if fj:
        fused = "".join(f"; its input from {f['node']} ({f['op']}" + (f", {f['module']}" if f.get("module") else "")
                        + ") was fused into it in the engine" for f in fj.get("fused_inputs_from", []))
        lines.append(f"  layer-wise: error first jumps at node {fj['node']} ({fj['op']}"
                     + (f", {fj['module']}" if fj.get("module") else "") + fused
                     + f"): relative error {fj['rel_error']:.3g} vs median {fj['median_before']:.3g} before")
    for row in lw.get("top_added", [])[:5]:
        lines.append(f"    adds error: {row['node']} ({row['op']}): relative error {row['input_rel_error']:.3g} "
                     f"in -> {row['rel_error']:.3g} out{_float_note(row)}")
    for note in lw.get("notes", [])[:-1]:  # the last one is the method note
        lines.append(f"  layer-wise note: {note}")
    if lw.get("suggestion"):
        lines.append(f"  try: {lw['suggestion']}")
    return lines


def _float_note(row: dict) -> str:
    if row.get("float_node") and row.get("rel_error_before_output_quantization") is not None:
        return (f" (runs in float: {row['rel_error_before_output_quantization']:.3g} before its output "
                f"is quantized for {', '.join(row.get('consumers', [])) or 'its consumers'})")
    if row.get("float_node") and row.get("consumers"):
        return f" (left in float by the build; its output is quantized for {', '.join(row['consumers'])})"
    if row.get("float_node"):
        return " (left in float by the build, as are its consumers: the error comes from its inputs)"
    return ""
