"""``sgf-deploy evaluate``: checkpoints vs zero-filled on the same held-out slices (parse and call)."""

from __future__ import annotations

import click

from .. import defaults as D
from ..data.simulator import PAIR_CHOICES
from .options import ckpt_option, data_option, force_option, n_option, seed_option


@click.command("evaluate")
@ckpt_option("checkpoint(s) to score; repeat for several [the embedded default]", multiple=True, name="checkpoints")
@data_option("'sim' (the simulator's held-out split) or a folder of your pairs: its test split, the one recorded "
             "with the checkpoint when it was trained there (see README, 'Your own data')")
@click.option("--pair", default=None, type=click.Choice(sorted(PAIR_CHOICES)),
              help="simulator pair to score on [the first checkpoint's]; a model trained on 'random' scores on any")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]),
              help="simulator split (--data sim); a folder is always scored on its test split")
@n_option(None, f"held-out slices [{D.EVALUATE_N} simulated; every test slice of DIR]")
@seed_option("seed of the simulated slices / the degradation masks of DIR")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the result as JSON")
@force_option("overwrite --json")
@click.option("--anatomy", default=None, type=click.Choice(["colin27"]),
              help="held-out real anatomy instead: the shipped defaults vs zero-filled on Colin27 (Debian "
                   "mricron-data), task x contrast pair table (sgf_deploy.bench.heldout)")
def command(checkpoints, data, pair, split, n, seed, json_out, force, anatomy) -> None:
    """Score checkpoints and zero-filled on the same held-out slices, with 95 % CIs."""
    from ..artifacts import write_json_atomic

    if anatomy:
        from ..bench.heldout import evaluate_heldout, format_markdown
        from ..model.registry import shipped_models

        tasks = sorted({t for m in shipped_models().values() for t in m.tasks})
        result = evaluate_heldout(tasks, n=48 if n is None else n, seed=seed, echo=click.echo)
        click.echo(format_markdown(result))
        if json_out:
            write_json_atomic(json_out, result, overwrite=force)
        return
    from ..model.evaluate import evaluate, format_table
    from ..model.locate import default_checkpoint

    ckpts = list(checkpoints) or [default_checkpoint()]
    if str(data) == "sim":
        result = evaluate(ckpts, pair=pair, split=split, n=D.EVALUATE_N if n is None else n, seed=seed)
    else:
        result = evaluate(ckpts, data=data, n=n, seed=seed)
    click.echo(format_table(result))
    if json_out:
        write_json_atomic(json_out, result, overwrite=force)
