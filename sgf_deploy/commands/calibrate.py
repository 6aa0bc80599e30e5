"""``sgf-deploy calibrate``: write an INT8 calibration set (parse and call)."""
from __future__ import annotations

import click

from ..data.degrade import TASKS
from ..data.simulator import PAIRS


@click.command("calibrate")
@click.option("--from", "source", default="sim", show_default=True,
              help="'sim' (the simulator's train split) or a folder of paired volumes "
                   "(pairs.csv with header reference,target, or <stem>_ref.<ext> + <stem>_target.<ext>)")
@click.option("--n", default=64, show_default=True, type=click.IntRange(min=1), help="number of (reference, target) pairs")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="folder to write [calibration/<pair>-<task>-sim-n<N>, or calibration/<folder>-n<N>]")
@click.option("--pair", default="t1-t2", show_default=True, type=click.Choice(sorted(PAIRS)), help="contrast pair (--from sim)")
@click.option("--task", default="recon4x", show_default=True, type=click.Choice(sorted(TASKS)), help="degradation (--from sim)")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--force", is_flag=True, help="replace --out if it exists")
def command(source, n, out, pair, task, seed, force) -> None:
    """Write normalised, padded (reference, target) pairs + manifest.json for INT8 calibration."""
    from ..calibration.dataset import write_calibration_set

    write_calibration_set(source, n, out, pair=pair, task=task, seed=seed, overwrite=force, echo=click.echo)
