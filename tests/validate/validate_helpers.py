"""Helpers shared by the validate tests (imported by name: the test folders have no __init__.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

N_SLICES = "4"  # slices per validation in these tests (--n)


def copy_engine(engine: Path, dest_dir: Path) -> Path:
    """Copy an engine and its manifest (``<engine>.json``) into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / engine.name
    shutil.copy2(engine, target)
    shutil.copy2(engine.with_name(engine.name + ".json"), target.with_name(target.name + ".json"))
    return target


def invoke(args: list[str]):
    """Run ``sgf-deploy`` in-process; returns click's Result (``exit_code``, ``output``)."""
    from click.testing import CliRunner

    from sgf_deploy.cli import cli

    return CliRunner().invoke(cli, args, catch_exceptions=False)
