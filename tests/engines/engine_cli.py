"""Shared helper for the engines tests (a uniquely named module: `from conftest import` is
ambiguous when several test folders have a conftest.py)."""

from __future__ import annotations

from pathlib import Path


def run_cli(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run ``sgf-deploy ARGS`` in-process in ``cwd``; (exit code, stdout + stderr)."""
    import os

    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output
