from __future__ import annotations

import click

from .options import ckpt_option, force_option


@click.command("sample")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder for t1.npy (reference), t2_us.npy (undersampled target), t2_gt.npy (ground truth)")
@ckpt_option()
@force_option("overwrite existing sample files")
def command(out_dir, ckpt, force) -> None:
    """Write the embedded sample and reconstruct it with the PyTorch reference (without PyTorch:
    with the embedded default engine in ONNX Runtime)."""
    from ..errors import MissingDependencyError
    from ..model.sample_check import write_sample_files

    paths = write_sample_files(out_dir, overwrite=force)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    if not _has_torch():
        if ckpt:
            raise MissingDependencyError("sample --ckpt scores a checkpoint with PyTorch, which is not installed; "
                                         "install the extra: pip install 'sgf-deploy[torch]'")
        from ..runtime.sample_check import score_default_on_sample

        r = score_default_on_sample(echo=lambda msg: click.echo(f"sgf-deploy: note: {msg}", err=True))
        click.echo(f"embedded sample {r['shape'][0]}x{r['shape'][1]}, default engine (ONNX Runtime; PyTorch not installed), "
                   f"checkpoint {r['checkpoint_sha256'][:12]}")
        click.echo(f"  zero-filled      PSNR {r['zero_filled']['psnr']:6.2f} dB  SSIM {r['zero_filled']['ssim']:.4f}")
        click.echo(f"  ONNX Runtime     PSNR {r['engine_scores']['psnr']:6.2f} dB  SSIM {r['engine_scores']['ssim']:.4f}")
        return
    from ..model.sample_check import score_reference_on_sample

    r = score_reference_on_sample(ckpt)
    click.echo(f"embedded sample {r['shape'][0]}x{r['shape'][1]}, checkpoint {r['checkpoint_sha256'][:12]}")
    click.echo(f"  zero-filled      PSNR {r['zero_filled']['psnr']:6.2f} dB  SSIM {r['zero_filled']['ssim']:.4f}")
    click.echo(f"  PyTorch SGF-MRI  PSNR {r['pytorch']['psnr']:6.2f} dB  SSIM {r['pytorch']['ssim']:.4f}")


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
