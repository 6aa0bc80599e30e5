"""``sgf-deploy validate``: PSNR parity of engines against the PyTorch reference, pass/fail."""

from __future__ import annotations

import click


@click.command("validate")
@click.option("--engine", "engines", multiple=True, type=click.Path(dir_okay=False), metavar="PATH",
              help="engine file (repeatable) [every engine in --engines-dir without a verdict yet]")
@click.option("--engines-dir", default="engines", show_default=True, type=click.Path(file_okay=False),
              help="where engines are looked for when no --engine is given")
@click.option("--ckpt", default=None, type=click.Path(dir_okay=False),
              help="the checkpoint the engine was built from (its SHA-256 must match the manifest) "
                   "[the recorded path, else the embedded default, when the SHA-256 matches]")
@click.option("--data", default="sim", show_default=True, metavar="sim|DIR",
              help="'sim': the simulator's held-out test split for the engine's pair/task; or a folder of cases "
                   "DIR/<case>/{reference,target,ground_truth}.<ext> or DIR/<case>_{ref,target,gt}.<ext> "
                   "(.npy, NIfTI, DICOM folder, .h5)")
@click.option("--n", default=None, type=click.IntRange(min=1),
              help="slices to validate on [32 for sim; all slices of DIR]")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="simulator seed (--data sim)")
@click.option("--report", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="report folder [reports/<engine stem>/]; with several engines, a parent folder")
@click.option("--min-parity-psnr", default=None, type=float, metavar="DB",
              help="minimum worst-slice PSNR(engine, PyTorch) [80 FP32 / 50 FP16 / 40 INT8]")
@click.option("--max-delta-psnr", default=None, type=float, metavar="DB",
              help="maximum |mean delta PSNR vs ground truth| [0.001 FP32 / 0.01 FP16 / 0.1 INT8]")
@click.option("--layerwise", is_flag=True,
              help="on a failing verdict, compare intermediate tensors with the FP32 ONNX and name the first layer "
                   "whose error jumps (ONNX Runtime engines)")
@click.option("--batch", default=None, type=click.IntRange(min=1), help="slices per engine call [engine's optimum]")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="CPU threads for torch and the backend")
@click.option("--force", is_flag=True, help="replace an existing report folder")
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
    from ..validate.parity import EngineNotRunnable, ValidationOutcome, validate_all, validate_engine

    echo = lambda msg: click.echo(f"sgf-deploy: {msg}", err=True)  # noqa: E731
    kwargs = dict(ckpt=ckpt, data=data, n=n, seed=seed, min_parity_psnr=min_parity_psnr,
                  max_delta_psnr=max_delta_psnr, overwrite=force, layerwise=layerwise, batch=batch,
                  threads=threads, echo=echo)
    outcomes: list[ValidationOutcome] = []
    not_run: list[str] = []
    errors: list[str] = []
    if engines:
        for engine in engines:
            rep = report if len(engines) == 1 or report is None else str(Path(report) / Path(engine).stem)
            try:
                outcomes.append(validate_engine(engine, report=rep, **kwargs))
            except EngineNotRunnable as exc:
                not_run.append(f"{engine}: not run: {exc}")
            except SgfError as exc:
                if len(engines) == 1:
                    raise
                errors.append(f"{engine}: {exc}")
    else:
        found, notices = validate_all(engines_dir, report=report, **kwargs)
        for msg in notices:
            click.echo(f"sgf-deploy: note: {msg}", err=True)
        outcomes = [o for o in found if o.verdict in ("pass", "fail")]
        errors = [f"{o.engine}: {'; '.join(o.reasons)}" for o in found if o.verdict == "error"]
        if not found:
            click.echo(f"nothing to validate in {engines_dir}/ (every engine has a verdict; pass --engine to redo one)")

    for o in outcomes:
        click.echo(o.line())
        if o.report and isinstance(o.report.get("layerwise"), dict):
            lw = o.report["layerwise"]
            if lw.get("run"):
                fj = lw.get("first_jump")
                if fj:
                    fused = "".join(f"; its input from {f['node']} ({f['op']}" + (f", {f['module']}" if f.get("module") else "")
                                    + ") was fused into it in the engine" for f in fj.get("fused_inputs_from", []))
                    click.echo(f"  layer-wise: error first jumps at node {fj['node']} ({fj['op']}"
                               + (f", {fj['module']}" if fj.get("module") else "") + fused
                               + f"): relative error {fj['rel_error']:.3g} vs median {fj['median_before']:.3g} before")
                for row in lw.get("top_added", [])[:5]:
                    extra = ""
                    if row.get("float_node") and row.get("rel_error_before_output_quantization") is not None:
                        extra = (f" (runs in float: {row['rel_error_before_output_quantization']:.3g} before its output "
                                 f"is quantized for {', '.join(row.get('consumers', [])) or 'its consumers'})")
                    elif row.get("float_node") and row.get("consumers"):
                        extra = (" (left in float by the build; its output is quantized for "
                                 f"{', '.join(row['consumers'])})")
                    elif row.get("float_node"):
                        extra = " (left in float by the build, as are its consumers: the error comes from its inputs)"
                    click.echo(f"    adds error: {row['node']} ({row['op']}): relative error {row['input_rel_error']:.3g} "
                               f"in -> {row['rel_error']:.3g} out{extra}")
                for note in lw.get("notes", [])[:-1]:  # the last one is the method note
                    click.echo(f"  layer-wise note: {note}")
                if lw.get("suggestion"):
                    click.echo(f"  try: {lw['suggestion']}")
            elif o.verdict == "fail":
                click.echo(f"  layer-wise: not run: {lw.get('reason')}")
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
