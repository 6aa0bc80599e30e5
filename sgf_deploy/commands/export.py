"""``sgf-deploy export``: checkpoint -> ONNX with sgf::MCNS nodes, metadata, sidecar, self-check."""

from __future__ import annotations

import click

from .options import ckpt_option, force_option


@click.command("export")
@ckpt_option()
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="ONNX file to write [export/sgf_mri-<preset>-<task>-<pair>-<sha8>.onnx]; the sidecar <name>.json goes beside it")
@click.option("--opset", default=None, type=int,
              help="ONNX opset, 18..23 [21: the highest at which TensorRT parses the attention; 23 emits the Attention op]")
@click.option("--static", "static", default=None, metavar="HxW",
              help="fix the input size (multiples of 8) instead of dynamic H, W")
@click.option("--batch", default=None, type=click.IntRange(min=1), help="fix the batch size instead of a dynamic N")
@force_option("overwrite --out and its sidecar if they exist")
def command(ckpt, out, opset, static, batch, force) -> None:
    """Export a checkpoint to ONNX (one sgf.MCNS node + function per MCSD block).

    The file is checked with onnx.checker and run with ONNX Runtime against PyTorch on simulated
    slices before it is written; a failed self-check leaves no file.
    """
    from ..export.onnx_export import DEFAULT_OPSET, export_onnx, parse_static

    result = export_onnx(
        ckpt, out, opset=DEFAULT_OPSET if opset is None else opset, static=parse_static(static),
        batch=batch, overwrite=force, echo=lambda line: click.echo(line, err=True),
    )
    click.echo(str(result.path))
