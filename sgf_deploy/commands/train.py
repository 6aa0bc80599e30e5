from __future__ import annotations

import click

from .. import defaults as D

from ..data.degrade import TASKS
from ..data.simulator import PAIR_CHOICES
from .options import batch_option, data_option, force_option, n_option, seed_option, threads_option

PAIR_NAMES = sorted(PAIR_CHOICES)


@click.command("train")
@click.option("--preset", default=D.PRESET, show_default=True, type=click.Choice(["lite", "paper"]))
@click.option("--task", default=D.TASK, show_default=True, type=click.Choice(sorted(TASKS)))
@click.option("--pair", default=D.PAIR, show_default=True, type=click.Choice(PAIR_NAMES),
              help="reference-target contrast pair of the simulator ('random': both contrasts drawn per subject)")
@click.option("--mix", default=None, metavar="PAIR=FRACTION,...",
              help="simulator only: mix named pairs into --pair, e.g. 't1-t2=0.25,pd-t2=0.05' (the rest is --pair)")
@click.option("--fluid-pairs", default=0.0, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="random pair only: fraction of its subjects drawn as a fluid-inverted pair (FLAIR-like and T2-like, either order)")
@click.option("--steps", default=D.TRAIN_STEPS, show_default=True, type=click.IntRange(min=1))
@batch_option("training examples per step", default=D.TRAIN_BATCH)
@click.option("--crop", default=D.TRAIN_CROP, show_default=True, type=click.IntRange(min=0),
              help="random square crop for training (0 = whole slices)")
@click.option("--lr", default=D.TRAIN_LR, show_default=True, type=float)
@click.option("--decay-every", default=None, type=click.IntRange(min=1), help="steps between /10 decays [40% of --steps]")
@click.option("--val-every", default=D.TRAIN_VAL_EVERY, show_default=True, type=click.IntRange(min=1))
@n_option(D.TRAIN_VAL_N, "held-out validation slices scored every --val-every steps", legacy=("--val-n",))
@seed_option()
@click.option("--no-reference", is_flag=True, help="single-contrast control: the reference is replaced by zeros")
@data_option()
@click.option("--ref-tag", default=None, help="contrast tag of reference files in --data [role names, then T1]")
@click.option("--tar-tag", default=None, help="contrast tag of target files in --data [role names, then T2]")
@click.option("--pool", default=D.TRAIN_POOL, show_default=True, type=click.IntRange(min=0),
              help="simulated slices generated once and cropped from (0 = simulate every example)")
@threads_option("torch CPU threads")
@click.option("--resume", default=None, type=click.Path(dir_okay=False), help="continue a .pt checkpoint written by train")
@click.option("--snapshot", is_flag=True, help="at every validation also write <out stem>.snapshot.pt (resumable)")
@click.option("--init", "init", default=None, type=click.Path(exists=True, dir_okay=False),
              help="start from this checkpoint's weights with a fresh optimiser (its SHA-256 is recorded)")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="checkpoint to write (.pt or .safetensors)")
@force_option("overwrite --out if it exists")
@click.option("--quiet", is_flag=True, help="no progress bar")
def command(preset, task, pair, mix, fluid_pairs, steps, batch, crop, lr, decay_every, val_every, n, seed,
            no_reference, data, ref_tag, tar_tag, pool, threads, resume, snapshot, init, out, force, quiet) -> None:
    """Train SGF-MRI (L1 loss, Adam with step decay, periodic validation)."""
    from ..model.train import TrainSettings, train

    settings = TrainSettings(
        preset=preset, task=task, pair=pair, steps=steps, batch=batch, crop=crop or None, lr=lr,
        decay_every=decay_every, val_every=val_every, val_n=n, seed=seed,
        no_reference=no_reference, data=data, ref_tag=ref_tag, tar_tag=tar_tag, pool=pool, threads=threads,
        init=init, snapshot=snapshot, mix=mix, fluid_pairs=fluid_pairs,
    )
    train(settings, out, resume=resume, overwrite=force, progress=not quiet)
