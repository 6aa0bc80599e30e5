"""``sgf-deploy tune``: time a CPU engine at each batch x threads and record its optimum."""

from __future__ import annotations

import click

from .. import defaults as D


@click.command("tune")
@click.argument("engine", metavar="ENGINE")
@click.option("--shape", default=None, metavar="HxW",
              help=f"slice size to time [the engine's fixed H x W, else {D.TUNE_SHAPE[0]}x{D.TUNE_SHAPE[1]}]")
@click.option("--batches", default=",".join(map(str, D.TUNE_BATCHES)), show_default=True, metavar="LIST",
              help="batches to time (comma-separated)")
@click.option("--threads", default=None, metavar="LIST",
              help="CPU threads to time (comma-separated) [1, 2, 4, ... up to the core count]")
@click.option("--repeats", default=D.TUNE_REPEATS, show_default=True, type=int,
              help="timed calls per batch x threads (after one warm-up); the median counts")
@click.option("--no-record", is_flag=True, help="print the table only; leave the engine's manifest as it is")
def command(engine, shape, batches, threads, repeats, no_record) -> None:
    """Measure ENGINE's fastest batch and thread count on this machine (CPU engines: ONNX Runtime,
    OpenVINO) and record it in the engine's manifest; `run` uses it here when --batch / --threads
    are not given."""
    from ..bench.tuning import TuneSettings, summary_lines, tune_engine

    settings = TuneSettings(shape=shape, batches=batches, threads=threads, repeats=repeats, record=not no_record)
    result = tune_engine(engine, settings, echo=lambda msg: click.echo(f"sgf-deploy: note: {msg}", err=True))
    for line in summary_lines(result):
        click.echo(line)
