"""``sgf-deploy bench``: speed, memory, start-up and parity of every backend (parse and call)."""

from __future__ import annotations

import click

from ..errors import InputError


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers, e.g. 256,320") from None
    if not values or min(values) < 1:
        raise InputError(f"{flag} {text!r}: expected positive integers")
    return values


@click.command("bench")
@click.option("--engine", "engines", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="PATH",
              help="engine to compare with PyTorch (repeatable)")
@click.option("--all", "all_backends", is_flag=True,
              help="export, calibrate and build every backend/precision this machine can run (the default without --engine)")
@click.option("--ckpt", default=None, type=click.Path(dir_okay=False, exists=True),
              help="checkpoint [the embedded default; else an untrained lite network, said so in the output]")
@click.option("--sizes", default=None, metavar="S,S,...", help="square slice sizes [256,320,384,512; --scaling: 128..512]")
@click.option("--batch", "batches", default="1,4", show_default=True, metavar="B,B,...", help="batch sizes")
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(min=1), help="interleaved repeats (medians)")
@click.option("--stack", default=32, show_default=True, type=click.IntRange(min=1), help="slices per throughput stack")
@click.option("--parity-n", default=16, show_default=True, type=click.IntRange(min=1), help="held-out simulated slices for parity")
@click.option("--startup-repeat", default=3, show_default=True, type=click.IntRange(min=1),
              help="fresh-process start-up runs at 320x320 batch 1")
@click.option("--no-memory", is_flag=True, help="skip the fresh-process memory/start-up probes")
@click.option("--workdir", default="bench-work", show_default=True, type=click.Path(file_okay=False),
              help="exported model, calibration set, engines and inputs built by --all (reused when present)")
@click.option("--scaling", is_flag=True, help="run the scaling study (MCNS, attention, network, cross-attention) instead")
@click.option("--paper-max", default=512, show_default=True, type=click.IntRange(min=8),
              help="--scaling: largest size for the paper preset (the memory budget caps it too)")
@click.option("--mem-budget-gb", default=6.0, show_default=True, type=float,
              help="--scaling: cross-attention sizes whose estimated N x N peak exceeds this are marked, not run")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="--scaling: write the PNG here")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="write the full record as JSON")
def command(engines, all_backends, ckpt, sizes, batches, repeat, stack, parity_n, startup_repeat, no_memory, workdir,
            scaling, paper_max, mem_budget_gb, plot, json_out) -> None:
    """Compare PyTorch eager FP32 with every engine: latency p50/p95 per slice, throughput on a
    32-slice stack (ratio to PyTorch, measured interleaved in one run), peak memory and start-up in
    fresh processes, PSNR parity on simulated held-out slices. Threads: torch 2, ONNX Runtime 2."""
    from ..artifacts import write_json_atomic

    if scaling:
        from ..bench.scaling import DEFAULT_SIZES, run_scaling, summary_lines

        record = run_scaling(_ints(sizes, "--sizes") if sizes else DEFAULT_SIZES, repeat, paper_max=paper_max,
                             mem_budget_gb=mem_budget_gb, memory=not no_memory, echo=click.echo)
        if plot:
            from ..bench.plot import plot_scaling

            plot_scaling(record, plot)
    else:
        from ..bench.backends import DEFAULT_SIZES as BSIZES
        from ..bench.backends import run_backends, summary_lines

        record = run_backends(list(engines), all_backends=all_backends, ckpt=ckpt,
                              sizes=_ints(sizes, "--sizes") if sizes else BSIZES, batches=_ints(batches, "--batch"),
                              repeat=repeat, stack=stack, parity_n=parity_n, startup_repeat=startup_repeat,
                              memory=not no_memory, workdir=workdir, echo=click.echo)
    for line in summary_lines(record):
        click.echo(line)
    if json_out:
        write_json_atomic(json_out, record, overwrite=True)
        click.echo(f"wrote {json_out}")
