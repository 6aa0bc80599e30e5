"""``sgf-deploy bench``: speed, memory, start-up and parity of every backend (parse and call).

Every default comes from :mod:`sgf_deploy.bench.settings`; the options are named after the
settings' fields, so the study's settings are built from them directly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import click

from ..bench.settings import BackendsBenchSettings, ScalingBenchSettings
from ..errors import InputError
from .options import n_option

_B = BackendsBenchSettings()
_S = ScalingBenchSettings()


def _csv(values: Sequence[Any]) -> str:
    return ",".join(map(str, values))


def _defaults(backends: Any, scaling: Any) -> str:
    """The help text's ``[default]`` of an option both studies share."""
    return f"[default: {backends}]" if backends == scaling else f"[default: {backends}; --scaling: {scaling}]"


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers, e.g. 256,320") from None
    if not values or min(values) < 1:
        raise InputError(f"{flag} {text!r}: expected positive integers")
    return values


def _settings(cls: type, options: dict[str, Any]) -> Any:
    """``cls`` from the options named after its fields; options not given keep its defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in names and v is not None})


@click.command("bench")
@click.option("--engine", "engines", multiple=True, type=click.Path(dir_okay=False, exists=True), metavar="PATH",
              help="engine to compare with PyTorch (repeatable)")
@click.option("--all", "all_backends", is_flag=True,
              help="export, calibrate and build every backend/precision this machine can run (the default without --engine)")
@click.option("--ckpt", default=None, type=click.Path(dir_okay=False, exists=True),
              help="checkpoint [the embedded default; else an untrained lite network, said so in the output]")
@click.option("--sizes", default=None, metavar="S,S,...",
              help=f"square slice sizes {_defaults(_csv(_B.sizes), _csv(_S.sizes))}")
@click.option("--batch", "batches", default=_csv(_B.batches), show_default=True, metavar="B,B,...", help="batch sizes")
@click.option("--repeat", default=None, type=click.IntRange(min=1),
              help=f"interleaved repeats (medians) {_defaults(_B.repeat, _S.repeat)}")
@click.option("--stack", default=_B.stack, show_default=True, type=click.IntRange(min=1), help="slices per throughput stack")
@n_option(_B.parity_n, "held-out simulated slices for parity", legacy=("--parity-n",))
@click.option("--startup-repeat", default=_B.startup_repeat, show_default=True, type=click.IntRange(min=1),
              help="fresh-process start-up runs at 320x320 batch 1")
@click.option("--no-memory", is_flag=True, help="skip the fresh-process memory/start-up probes")
@click.option("--calib-n", default=_B.calib_n, show_default=True, type=click.IntRange(min=1),
              help="--all: INT8 calibration pairs (simulator, train split)")
@click.option("--precisions", default=_csv(_B.precisions), show_default=True, metavar="P,P,...",
              help="--all: precisions to build (fp32, fp16, int8)")
@click.option("--compile/--no-compile", "torch_compile", default=None,
              help="torch.compile (inductor) as a peer [on with --all]")
@click.option("--roofline/--no-roofline", default=None,
              help="GFLOP per slice, the measured FP32/INT8 peak and each engine's fraction [on with --all]")
@click.option("--workdir", default=str(_B.workdir), show_default=True, type=click.Path(file_okay=False),
              help="exported model, calibration set, engines and inputs built by --all (reused when present)")
@click.option("--scaling", is_flag=True, help="run the scaling study (MCNS, attention, network, cross-attention) instead")
@click.option("--paper-max", default=_S.paper_max, show_default=True, type=click.IntRange(min=8),
              help="--scaling: largest size for the paper preset (the memory budget caps it too)")
@click.option("--mem-budget-gb", default=_S.mem_budget_gb, show_default=True, type=float,
              help="--scaling: cross-attention sizes whose estimated N x N peak exceeds this are marked, not run")
@click.option("--plot", default=None, type=click.Path(dir_okay=False), help="--scaling: write the PNG here")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="write the full record as JSON")
@click.option("--markdown", default=None, type=click.Path(dir_okay=False, exists=True), metavar="JSON",
              help="measure nothing: print the README tables of a recorded JSON (either study; "
                   "with --plot, redraw a scaling record's PNG)")
def command(scaling: bool, plot: str | None, json_out: str | None, markdown: str | None, **options: Any) -> None:
    """Compare PyTorch eager FP32 with every engine: latency p50/p95 per slice, throughput on a
    32-slice stack (ratio to PyTorch, measured interleaved in one run), peak memory and start-up in
    fresh processes, PSNR parity on simulated held-out slices. Threads: torch 2, ONNX Runtime 2."""
    if markdown:
        _render(markdown, plot)
        return
    options["memory"] = not options.pop("no_memory")
    options["precisions"] = tuple(p.strip() for p in str(options["precisions"]).split(",") if p.strip())
    options["parity_n"] = options.pop("n")
    options["sizes"] = _ints(options["sizes"], "--sizes") if options["sizes"] else None
    if scaling:
        from ..bench.scaling.render import summary_lines
        from ..bench.scaling.run import run_scaling

        record = run_scaling(_settings(ScalingBenchSettings, options), echo=click.echo)
        if plot:
            from ..bench.plot import plot_scaling

            plot_scaling(record, plot)
    else:
        from ..bench.backends.render import summary_lines
        from ..bench.backends.run import run_backends

        options["batches"] = _ints(options["batches"], "--batch")
        record = run_backends(_settings(BackendsBenchSettings, options), echo=click.echo)
    for line in summary_lines(record):
        click.echo(line)
    if json_out:
        from ..artifacts import write_json_atomic

        write_json_atomic(json_out, record, overwrite=True)
        click.echo(f"wrote {json_out}")


def _render(path: str, plot: str | None) -> None:
    """README tables of a recorded JSON; a scaling record's PNG redrawn into ``plot``."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("study") == "scaling":
        from ..bench.scaling.render import markdown

        if plot:
            from ..bench.plot import plot_scaling

            plot_scaling(record, plot)
    else:
        from ..bench.backends.render import markdown
    click.echo(markdown(record))
