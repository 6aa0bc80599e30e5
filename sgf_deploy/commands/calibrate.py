"""``sgf-deploy calibrate``: write an INT8 calibration set (parse and call)."""
from __future__ import annotations

import click

from .. import defaults as D
from ..data.degrade import TASKS
from ..data.simulator import PAIRS
from .options import data_option, force_option, n_option, seed_option


@click.command("calibrate")
@data_option("'sim' (the simulator's train split) or a folder of your paired files (see README, 'Your own data')",
             legacy=("--from",))
@n_option(D.CALIBRATION_N, "number of (reference, target) pairs")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="folder to write [calibration/<pair>-<task>-sim-n<N>, or calibration/<folder>-n<N>]")
@click.option("--pair", default=D.PAIR, show_default=True, type=click.Choice(sorted(PAIRS)), help="contrast pair (--data sim)")
@click.option("--task", default=D.TASK, show_default=True, type=click.Choice(sorted(TASKS)), help="degradation")
@seed_option()
@force_option("replace --out if it exists")
def command(data, n, out, pair, task, seed, force) -> None:
    """Write normalised, padded (reference, target) pairs + manifest.json for INT8 calibration."""
    from ..calibration.dataset import write_calibration_set

    write_calibration_set(data, n, out, pair=pair, task=task, seed=seed, overwrite=force, echo=click.echo)
