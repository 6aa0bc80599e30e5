"""``sgf-deploy calibrate``: write an INT8 calibration set (parse and call)."""
from __future__ import annotations

import click

from .. import defaults as D
from ..data.degrade import TASKS
from ..data.simulator import PAIRS
from .options import ckpt_option, data_option, force_option, n_option, seed_option


@click.command("calibrate")
@data_option("'sim' (the simulator's train split) or a folder of your paired files, its train subjects only "
             "(see README, 'Your own data')", legacy=("--from",))
@n_option(D.CALIBRATION_N, "number of (reference, target) pairs")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="folder to write [calibration/<pair>-<task>-sim-n<N>, or calibration/<folder>-train-n<N>]")
@ckpt_option("checkpoint trained on --data DIR: its recorded subject split (<ckpt>.split.json) picks the train "
             "subjects, and its task and contrast tags apply [the checkpoint of the model in export/ when it was "
             "trained on DIR, else a split drawn with --seed]")
@click.option("--pair", default=D.PAIR, show_default=True, type=click.Choice(sorted(PAIRS)), help="contrast pair (--data sim)")
@click.option("--task", default=None, type=click.Choice(sorted(TASKS)),
              help=f"degradation [the --ckpt's task, else {D.TASK}]")
@click.option("--ref-tag", default=None, help="contrast tag of reference files in --data [recorded, else role names, then T1]")
@click.option("--tar-tag", default=None, help="contrast tag of target files in --data [recorded, else role names, then T2]")
@seed_option()
@force_option("replace --out if it exists")
def command(data, n, out, ckpt, pair, task, ref_tag, tar_tag, seed, force) -> None:
    """Write normalised, padded (reference, target) pairs + manifest.json for INT8 calibration."""
    from ..calibration.dataset import write_calibration_set
    from ..data.splits import sidecar_task

    if ckpt is None and str(data) != "sim":
        ckpt = _exported_checkpoint(data)
        if ckpt:
            click.echo(f"using the subject split recorded with {ckpt} (the checkpoint of the model in {D.EXPORT_DIR}/)")
    task = task or (sidecar_task(ckpt) if ckpt else None) or D.TASK
    write_calibration_set(data, n, out, pair=pair, task=task, seed=seed, overwrite=force, echo=click.echo,
                          checkpoint=ckpt, tags=(ref_tag, tar_tag))


def _exported_checkpoint(folder: str) -> str | None:
    """The checkpoint of the single ONNX file in ``export/`` when it was trained on ``folder``
    (its ``<ckpt>.split.json`` names that folder): the workspace's model, whose split applies."""
    from pathlib import Path

    from ..data.splits import read_sidecar
    from ..errors import SgfError
    from ..export.metadata import read_onnx_metadata

    found = sorted(Path(D.EXPORT_DIR).glob("*.onnx"))
    if len(found) != 1:
        return None
    try:
        meta = read_onnx_metadata(found[0])
        ckpt = meta.get("sgf.checkpoint_path")
        split = read_sidecar(ckpt, meta.get("sgf.checkpoint_sha256")) if ckpt else None
    except (SgfError, OSError):
        return None
    return str(ckpt) if split is not None and Path(split.folder) == Path(folder).resolve() else None
