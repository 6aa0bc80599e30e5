from __future__ import annotations

import click

from .options import ckpt_option, force_option


@click.command("sample")
@click.option("--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="folder for t1.npy (reference), t2_us.npy (undersampled target), t2_gt.npy (ground truth)")
@ckpt_option()
@force_option("overwrite existing sample files")
def command(out_dir, ckpt, force) -> None:
    """Write the embedded sample and reconstruct it with the PyTorch reference."""
    from ..model.sample_check import score_reference_on_sample, write_sample_files

    paths = write_sample_files(out_dir, overwrite=force)
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    r = score_reference_on_sample(ckpt)
    click.echo(f"embedded sample {r['shape'][0]}x{r['shape'][1]}, checkpoint {r['checkpoint_sha256'][:12]}")
    click.echo(f"  zero-filled      PSNR {r['zero_filled']['psnr']:6.2f} dB  SSIM {r['zero_filled']['ssim']:.4f}")
    click.echo(f"  PyTorch SGF-MRI  PSNR {r['pytorch']['psnr']:6.2f} dB  SSIM {r['pytorch']['ssim']:.4f}")
