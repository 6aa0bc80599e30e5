from __future__ import annotations

import click


@click.command("evaluate")
@click.option("--ckpt", "checkpoints", multiple=True, type=click.Path(dir_okay=False),
              help="checkpoint(s) to score; repeat for several [the embedded default]")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option("--n", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the result as JSON")
@click.option("--force", is_flag=True, help="overwrite --json")
def command(checkpoints, split, n, seed, json_out, force) -> None:
    """Score checkpoints and zero-filled on the same held-out simulated slices."""
    from ..artifacts import write_json_atomic
    from ..model import default_checkpoint
    from ..model.evaluate import evaluate, format_table

    result = evaluate(list(checkpoints) or [default_checkpoint()], split=split, n=n, seed=seed)
    click.echo(format_table(result))
    if json_out:
        write_json_atomic(json_out, result, overwrite=force)
