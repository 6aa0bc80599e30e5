"""``sgf-deploy evaluate``: checkpoints vs zero-filled on the same held-out slices (parse and call)."""

from __future__ import annotations

import click

from .. import defaults as D
from .options import ckpt_option, force_option, n_option, seed_option


@click.command("evaluate")
@ckpt_option("checkpoint(s) to score; repeat for several [the embedded default]", multiple=True, name="checkpoints")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]))
@n_option(D.EVALUATE_N, "held-out slices")
@seed_option()
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the result as JSON")
@force_option("overwrite --json")
def command(checkpoints, split, n, seed, json_out, force) -> None:
    """Score checkpoints and zero-filled on the same held-out simulated slices."""
    from ..artifacts import write_json_atomic
    from ..model.evaluate import evaluate, format_table
    from ..model.locate import default_checkpoint

    result = evaluate(list(checkpoints) or [default_checkpoint()], split=split, n=n, seed=seed)
    click.echo(format_table(result))
    if json_out:
        write_json_atomic(json_out, result, overwrite=force)
