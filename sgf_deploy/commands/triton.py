"""``sgf-deploy triton export|serve``: serve validated engines on Triton Inference Server."""

from __future__ import annotations

import click

from .. import defaults as D
from .options import force_option


@click.group("triton")
def command() -> None:
    """Serve validated engines on NVIDIA Triton Inference Server.

    \b
    export  write a Triton model repository for an engine (layout python or native)
    serve   start the tritonserver bundled in nvidia-pytriton on a repository
    Clients: sgf-deploy run --server HOST:PORT (KServe v2 over HTTP).
    """


@command.command("export")
@click.option("--engine", default="auto", show_default=True, metavar="PATH|auto",
              help="engine file; 'auto' = the engine run would pick (best validated in engines/, else the embedded default)")
@click.option("--out", required=True, metavar="DIR", help="the model repository to write")
@click.option("--layout", type=click.Choice(["python", "native"]), default=D.TRITON_LAYOUT, show_default=True,
              help="python: one Python-backend model (runs on any Triton, the bundled one included); "
                   "native: ensemble around Triton's onnxruntime/openvino/tensorrt backend (production images)")
@click.option("--model-name", default=D.TRITON_MODEL, show_default=True, help="the model name clients address")
@click.option("--instances", type=click.IntRange(min=1), default=None,
              help="model instances [GPU: 1; CPU: cores / the engine's threads]")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help=f"largest batch of slices [the engine profile's maximum, else {D.TRITON_MAX_BATCH}]")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=None,
              help=f"dynamic batcher: how long a request waits for others [{D.TRITON_QUEUE_DELAY_US}]")
@click.option("--no-dynamic-batching", is_flag=True, help="one request = one engine call")
@click.option("--allow-unvalidated", is_flag=True, help="export an engine with no passing validation (warns)")
@force_option("replace an existing repository")
def export_command(engine, out, layout, model_name, instances, max_batch, queue_delay_us, no_dynamic_batching,
                   allow_unvalidated, force) -> None:
    """Write a Triton model repository for a validated engine."""
    from ..serving.repository import TritonExportSettings, export_repository

    path = _engine_path(engine, allow_unvalidated)
    settings = TritonExportSettings(layout=layout, model_name=model_name, instances=instances, max_batch=max_batch,
                                    queue_delay_us=queue_delay_us, dynamic_batching=not no_dynamic_batching,
                                    allow_unvalidated=allow_unvalidated, overwrite=force)
    result = export_repository(path, out, settings, echo=lambda msg: click.echo(f"sgf-deploy: {msg}", err=True))
    click.echo(f"engine:  {path} ({result.trust_label})")
    click.echo(f"layout:  {result.layout}: {', '.join(result.models)}")
    click.echo(f"serving: {result.plan.describe()}")
    click.echo(f"wrote:   {result.path}")
    if layout == "python":
        click.echo(f"serve:   sgf-deploy triton serve --repo {result.path}")
    else:
        click.echo("serve:   in a Triton image with the engine's backend (the bundled server has only the Python "
                   f"backend); see {result.path / 'README.md'}")


def _engine_path(engine: str, allow_unvalidated: bool):  # noqa: ANN202 - a Path
    """``auto`` -> the engine ``run`` would use (validated engines in engines/, else the embedded
    default, built on first use); a path as given."""
    from pathlib import Path

    if engine and engine != "auto":
        return Path(engine)
    from ..runtime.select import select_engine

    selection = select_engine("auto", engines_dir=D.ENGINES_DIR, allow_unvalidated=allow_unvalidated,
                              echo=lambda msg: click.echo(f"sgf-deploy: note: {msg}", err=True))
    path = selection.reconstructor.engine_path
    selection.reconstructor.runner.close()
    return path


@command.command("serve")
@click.option("--repo", required=True, metavar="DIR", help="model repository (sgf-deploy triton export)")
@click.option("--http-port", type=click.IntRange(1, 65535), default=D.TRITON_HTTP_PORT, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=D.TRITON_GRPC_PORT, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=D.TRITON_METRICS_PORT, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface, for clients on other machines)")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=D.TRITON_READY_TIMEOUT_S, show_default=True,
              help="seconds to wait for the models to load")
@click.option("--quiet", is_flag=True, help="do not forward the server's log lines")
def serve_command(repo, http_port, grpc_port, metrics_port, address, ready_timeout, quiet) -> None:
    """Start the bundled tritonserver on REPO until SIGTERM / Ctrl-C."""
    from ..serving.server import ServeSettings, serve

    settings = ServeSettings(repo=repo, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                             address=address, ready_timeout=ready_timeout)

    def ready(server) -> None:  # noqa: ANN001 - TritonServer
        click.echo(f"sgf-deploy: serving {server.repo} on http://{server.http_url} (gRPC {address}:{grpc_port}, "
                   f"metrics {address}:{metrics_port}); clients: sgf-deploy run --server {server.http_url} ...; "
                   "stop with SIGTERM or Ctrl-C", err=True)

    serve(settings, echo=None if quiet else (lambda line: click.echo(f"tritonserver: {line}", err=True)), on_ready=ready)
    click.echo("sgf-deploy: tritonserver stopped", err=True)
