from __future__ import annotations

import click

from ..data.degrade import TASKS
from ..data.simulator import PAIRS

PAIR_NAMES = sorted(PAIRS)


@click.command("train")
@click.option("--preset", default="lite", show_default=True, type=click.Choice(["lite", "paper"]))
@click.option("--task", default="recon4x", show_default=True, type=click.Choice(sorted(TASKS)))
@click.option("--pair", default="t1-t2", show_default=True, type=click.Choice(PAIR_NAMES),
              help="reference-target contrast pair of the simulator")
@click.option("--steps", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=128, show_default=True, type=click.IntRange(min=0),
              help="random square crop for training (0 = whole slices)")
@click.option("--lr", default=2e-4, show_default=True, type=float)
@click.option("--decay-every", default=None, type=click.IntRange(min=1), help="steps between /10 decays [40% of --steps]")
@click.option("--val-every", default=250, show_default=True, type=click.IntRange(min=1))
@click.option("--val-n", default=16, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-reference", is_flag=True, help="single-contrast control: the reference is replaced by zeros")
@click.option("--data", default="sim", show_default=True, help="'sim' or a folder of fastMRI/M4Raw HDF5 pairs")
@click.option("--ref-tag", default="T1", show_default=True, help="contrast tag of reference files in --data")
@click.option("--tar-tag", default="T2", show_default=True, help="contrast tag of target files in --data")
@click.option("--pool", default=512, show_default=True, type=click.IntRange(min=0),
              help="simulated slices generated once and cropped from (0 = simulate every example)")
@click.option("--threads", default=None, type=click.IntRange(min=1), help="torch CPU threads")
@click.option("--resume", default=None, type=click.Path(dir_okay=False), help="continue a .pt checkpoint written by train")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="checkpoint to write (.pt or .safetensors)")
@click.option("--force", is_flag=True, help="overwrite --out if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar")
def command(preset, task, pair, steps, batch, crop, lr, decay_every, val_every, val_n, seed,
            no_reference, data, ref_tag, tar_tag, pool, threads, resume, out, force, quiet) -> None:
    """Train SGF-MRI (L1 loss, Adam with step decay, periodic validation)."""
    from ..model.train import TrainSettings, train

    settings = TrainSettings(
        preset=preset, task=task, pair=pair, steps=steps, batch=batch, crop=crop or None, lr=lr,
        decay_every=decay_every, val_every=val_every, val_n=val_n, seed=seed,
        no_reference=no_reference, data=data, ref_tag=ref_tag, tar_tag=tar_tag, pool=pool, threads=threads,
    )
    train(settings, out, resume=resume, overwrite=force, progress=not quiet)
