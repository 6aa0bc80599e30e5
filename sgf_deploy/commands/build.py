"""``sgf-deploy build``: exported ONNX -> FP32/FP16/INT8 engine + manifest (parse and call)."""
from __future__ import annotations

import click

from .. import defaults as D
from ..engines.identity import BACKEND_CHOICES
from .options import data_option, force_option, n_option, threads_option


@click.command("build")
@click.option("--onnx", "onnx_path", default=None, type=click.Path(dir_okay=False),
              help="exported model [the single .onnx in export/]")
@click.option("--backend", default=D.BACKEND, show_default=True, type=click.Choice(BACKEND_CHOICES),
              help="auto: TensorRT if installed and a GPU is present, else ONNX Runtime, or OpenVINO where it is installed and measured faster on this CPU")
@click.option("--fp32", "precision", flag_value="fp32", help="FP32 engine")
@click.option("--fp16", "precision", flag_value="fp16", help="FP16 engine (MCNS, normalisation, attention, output head kept FP32)")
@click.option("--int8", "precision", flag_value="int8", help="INT8 engine (explicit Q/DQ; needs a calibration set)")
@click.option("--calib", default=None, type=click.Path(file_okay=False),
              help="calibration set for --int8 [the only set in calibration/]")
@click.option("--calib-method", default=D.CALIB_METHOD, show_default=True, type=click.Choice(["entropy", "max", "percentile"]))
@click.option("--quantizer", default=D.QUANTIZER, show_default=True, type=click.Choice(["ort", "modelopt"]),
              help="INT8 quantizer: ONNX Runtime quantize_static, or NVIDIA ModelOpt if installed")
@click.option("--int8-activations", default=D.INT8_ACTIVATIONS, show_default=True,
              type=click.Choice(["auto", "int8", "uint8", "uint8-asym"]),
              help="INT8 activation type; auto: uint8 asymmetric for ONNX Runtime, int8 symmetric for TensorRT")
@click.option("--shapes", default=None, metavar="MIN:OPT:MAX",
              help="optimisation profile, e.g. 1x1x64x64:1x1x320x320:4x1x512x512, or one shape (static)")
@click.option("--keep-fp32", default=None, metavar="PATTERNS",
              help="nodes kept in FP32: @mcns,@norm,@attention,@head,@output,@input,@default or globs on node names "
                   "[FP16: @mcns,@norm,@attention,@head; INT8: @mcns,@attention,@input,@output]")
@click.option("--exclude", default=None, metavar="PATTERNS", help="more nodes left unquantized (INT8), same syntax")
@click.option("--int8-max-drop", "int8_max_drop", default=None, metavar="DB",  # checked by BuildSettings: one line
              help="OpenVINO INT8: NNCF accuracy control; revert layers to float until the mean PSNR vs ground truth "
                   "on the simulator's val split drops by at most DB dB (e.g. 0.02) [off]")
@threads_option("ONNX Runtime CPU threads (build, parity, and the engine's default)")
@click.option("--mcns", default=D.MCNS, show_default=True, type=click.Choice(["function", "plugin"]),
              help="how MCNS runs: the ONNX function (standard ops) or a registered fused plugin")
@click.option("--targets", default=None, metavar="SMS", help="TensorRT-RTX compute capabilities, e.g. sm86,sm89 [library default]")
@n_option(D.BUILD_PARITY_N, "held-out slices for the build-time PSNR vs PyTorch (0: skip)", minimum=0, legacy=("--parity",))
@data_option("where the parity slices come from: 'sim' (the simulator's test split) or a folder of your pairs")
@click.option("--out", "out_dir", default=str(D.ENGINES_DIR), show_default=True, type=click.Path(file_okay=False))
@force_option("overwrite an existing engine of the same name")
def command(onnx_path, backend, precision, calib, calib_method, quantizer, int8_activations, shapes, keep_fp32, exclude,
            int8_max_drop, threads, mcns, targets, n, data, out_dir, force) -> None:
    """Build an engine from the exported ONNX file and print its build-time parity."""
    if precision is None:
        raise click.UsageError("choose a precision: --fp32, --fp16 or --int8")
    from ..engines import BuildSettings, build_engine

    settings = BuildSettings(backend=backend, precision=precision, calib=calib, calib_method=calib_method,
                             quantizer=quantizer, int8_activations=int8_activations, shapes=shapes, keep_fp32=keep_fp32,
                             exclude=exclude, int8_max_drop=int8_max_drop, mcns=mcns, threads=threads, targets=targets,
                             parity_n=n, parity_data=data, out_dir=out_dir, overwrite=force)
    build_engine(onnx_path, settings, echo=click.echo)
