"""The ``sgf-deploy`` command group.

Commands are loaded lazily from ``sgf_deploy.commands.<name>`` so that a command imports only
what it needs: ``sgf-deploy run`` must start fast and never import torch. Each command is a thin
parse-and-call into one library function. This is the one error boundary: user errors
(:class:`~sgf_deploy.errors.SgfError`) and operating-system errors on a user's path
(``OSError``: permissions, a read-only or full file system) print one line on stderr and exit
non-zero, without a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from . import __version__
from .errors import SgfError, missing_extra_line

COMMANDS: dict[str, str] = {
    "train": "Train SGF-MRI on simulated or user HDF5 data.",
    "evaluate": "Score checkpoints against zero-filled on held-out slices.",
    "export": "Export a checkpoint to ONNX with sgf::MCNS nodes.",
    "calibrate": "Write an INT8 calibration set.",
    "build": "Build an FP32/FP16/INT8 engine from the exported ONNX file.",
    "validate": "PSNR parity of engines against the PyTorch reference.",
    "run": "Reconstruct a target contrast guided by a reference contrast.",
    "tune": "Measure a CPU engine's fastest batch x threads here; record it as its optimum.",
    "bench": "Measure speed, memory and parity of every backend.",
    "sample": "Write the embedded sample and score the PyTorch reference on it.",
    "triton": "Serve validated engines on Triton Inference Server (export, serve).",
    "dicom": "Run as a DICOM node: receive, reconstruct, forward (serve, status).",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if _available(name)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _available(name):
            return None
        module = importlib.import_module(f"sgf_deploy.commands.{name}")
        return module.command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SgfError as exc:
            click.echo(f"sgf-deploy: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # an unwritable, read-only or full file system on a user's path
            click.echo(f"sgf-deploy: error: {os_error_line(exc)}", err=True)
            ctx.exit(SgfError.exit_code)
        except ModuleNotFoundError as exc:  # an optional dependency this command needs is not installed
            click.echo(f"sgf-deploy: error: {missing_extra_line(exc)}", err=True)
            ctx.exit(SgfError.exit_code)
        except KeyboardInterrupt:
            click.echo("sgf-deploy: interrupted; no partial output was kept", err=True)
            ctx.exit(130)


def os_error_line(exc: OSError) -> str:
    """``<path>: <what the OS said>`` (both paths for a rename); nothing was written (outputs are
    written to a temporary beside the target and renamed only when complete)."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "file system"
    return f"{where}: {exc.strerror or exc}; nothing was written"


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"sgf_deploy.commands.{name}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sgf-deploy")
def cli() -> None:
    """sgf-deploy: SGF-MRI from PyTorch to a validated, fast engine.

    \b
    train -> export -> build -> validate -> run
    The working directory is the workspace: export/ engines/ calibration/ reports/.
    """


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="sgf-deploy", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
