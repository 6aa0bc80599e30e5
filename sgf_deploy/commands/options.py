"""The command line's one vocabulary: options every command that takes them declares from here.

``--ckpt`` a checkpoint, ``--data`` the data source (``sim`` or a folder of the user's pairs),
``--n`` how many slices (or pairs) to use, ``--seed``, ``--batch`` slices per engine call,
``--threads`` CPU threads, ``--force`` to replace an existing output (``--overwrite`` is the same
flag). Older spellings (``--from``, ``--parity``, ``--parity-n``, ``--val-n``) still work as
hidden aliases so that existing scripts keep running. Defaults come from :mod:`sgf_deploy.defaults`.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from .. import defaults as D

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def ckpt_option(help: str = "checkpoint (.pt or .safetensors) [the embedded default]", *, multiple: bool = False,
                name: str = "ckpt") -> Decorator:
    return click.option("--ckpt", name, multiple=multiple, default=None if not multiple else (),
                        type=click.Path(dir_okay=False), help=help)


def data_option(help: str = "'sim' (the simulator) or a folder of paired files (see README, 'Your own data')",
                *, legacy: tuple[str, ...] = ()) -> Decorator:
    return _with_aliases(click.option("--data", "data", default=D.DATA, show_default=True, metavar="sim|DIR", help=help),
                         "data", legacy)


def n_option(default: int | None, help: str, *, minimum: int = 1, legacy: tuple[str, ...] = ()) -> Decorator:
    return _with_aliases(click.option("--n", "n", default=default, show_default=default is not None,
                                      type=click.IntRange(min=minimum), help=help), "n", legacy, minimum)


def seed_option(help: str = "random seed") -> Decorator:
    return click.option("--seed", default=D.SEED, show_default=True, type=click.IntRange(min=0), help=help)


def batch_option(help: str = "slices per engine call [the engine's optimum]", default: int | None = None) -> Decorator:
    return click.option("--batch", default=default, show_default=default is not None, type=click.IntRange(min=1),
                        help=help)


def threads_option(help: str = "CPU threads [all cores]") -> Decorator:
    return click.option("--threads", default=None, type=click.IntRange(min=1), help=help)


def force_option(help: str = "replace an existing output") -> Decorator:
    return click.option("--force", "--overwrite", "force", is_flag=True, help=help)


def _with_aliases(option: Decorator, dest: str, legacy: tuple[str, ...], minimum: int | None = None) -> Decorator:
    """``option`` plus hidden aliases that set the same value (the last one given wins)."""
    if not legacy:
        return option

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def merge(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
            if value is not None and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE:
                ctx.meta[f"sgf.alias.{dest}"] = value
            return value

        wrapped = fn
        for flag in legacy:
            kind = click.IntRange(min=minimum) if minimum is not None else str
            wrapped = click.option(flag, f"_alias_{dest}_{flag.strip('-').replace('-', '_')}", default=None,
                                   type=kind, hidden=True, expose_value=False, callback=merge)(wrapped)
        return option(_resolve_alias(wrapped, dest))

    return decorate


def _resolve_alias(fn: Callable[..., Any], dest: str) -> Callable[..., Any]:
    import functools

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        alias = ctx.meta.get(f"sgf.alias.{dest}")
        if alias is not None and ctx.get_parameter_source(dest) != click.core.ParameterSource.COMMANDLINE:
            kwargs[dest] = alias
        return fn(*args, **kwargs)

    return call
