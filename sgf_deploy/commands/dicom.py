"""``sgf-deploy dicom serve|status``: the scanner-side DICOM node (see README, "Running as a DICOM node")."""

from __future__ import annotations

import dataclasses

import click

from .. import defaults as D
from .options import batch_option, threads_option


def run_settings(**options):  # noqa: ANN003, ANN201 - the engine options of `run`, as given
    """A :class:`RunSettings` from the engine options; a field RunSettings does not (yet) have is
    left out, so an option added to `run` later (``--task``, ``--server``) passes through by name."""
    from ..runtime.pipeline import RunSettings

    known = {f.name for f in dataclasses.fields(RunSettings)}
    return RunSettings(allow_unvalidated=False, **{k: v for k, v in options.items() if k in known and v is not None})


@click.group("dicom")
def command() -> None:
    """Run as a DICOM node: receive series (C-STORE), pair, reconstruct, forward the result."""


@command.command("serve")
@click.option("--port", default=D.DICOM_PORT, show_default=True, type=click.IntRange(1, 65535), help="TCP port to listen on")
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on (127.0.0.1: this machine only)")
@click.option("--ae-title", default=D.DICOM_AE_TITLE, show_default=True, help="this node's AE title")
@click.option("--spool", default=str(D.DICOM_SPOOL), show_default=True, type=click.Path(file_okay=False),
              help="folder for received instances, results, quarantine and the journal")
@click.option("--forward", "forward", multiple=True, metavar="AET@HOST:PORT",
              help="send each result here (repeat for several destinations)")
@click.option("--ref-match", default=D.DICOM_REF_MATCH, show_default=True, metavar="REGEX",
              help="reference series: regex on SeriesDescription/ProtocolName (case-insensitive)")
@click.option("--target-match", default=D.DICOM_TARGET_MATCH, show_default=True, metavar="REGEX",
              help="target series: regex on SeriesDescription/ProtocolName (case-insensitive)")
@click.option("--rules", "rules_file", default=None, type=click.Path(dir_okay=False, exists=True),
              help="routing rules file (JSON/TOML; replaces --ref-match/--target-match)")
@click.option("--settle", default=D.DICOM_SETTLE_S, show_default=True, type=click.FloatRange(min=0),
              help="seconds without a new instance after which a series is complete")
@click.option("--pair-timeout", default=D.DICOM_PAIR_TIMEOUT_S, show_default=True, type=click.FloatRange(min=0),
              help="seconds a complete target waits for a reference in its study before it fails")
@click.option("--retry-min", default=D.DICOM_RETRY_MIN_S, show_default=True, type=click.FloatRange(min=0.05),
              help="first delay (s) before re-sending to a destination that failed; doubles each time ...")
@click.option("--retry-max", default=D.DICOM_RETRY_MAX_S, show_default=True, type=click.FloatRange(min=0.05),
              help="... up to this (s); sending is retried until it succeeds")
@click.option("--allow-ae", "allow", multiple=True, metavar="AET|AET@HOST|@HOST",
              help="accept associations only from these callers (repeat; default: anyone)")
@click.option("--engine", default="auto", show_default=True, metavar="PATH|auto",
              help="validated engine file; 'auto' = best validated engine in engines/, else the embedded default")
@click.option("--task", type=click.Choice(["recon4x", "recon8x", "sr2x", "sr4x"]), default=None,
              help="which embedded default to use [recon4x]; an --engine's own task wins")
@batch_option("slices per engine call [engine's optimum, else 4]")
@threads_option("CPU threads for the backend [all cores]")
@click.option("--server", default=None, metavar="HOST:PORT",
              help="reconstruct on a Triton server (sgf-deploy triton serve) instead of a local engine")
@click.option("--register", type=click.Choice(list(D.REGISTER_MODES)), default=D.REGISTER, show_default=True,
              help="reference vs target alignment, as in `run`: auto (correct above the calibrated threshold), "
                   "rigid (always), off (trust the geometry)")
@click.option("--strict", is_flag=True,
              help="fail a study (reason in the journal) instead of warning on a doubtful registration or contrast")
def serve(port, host, ae_title, spool, forward, ref_match, target_match, rules_file, settle, pair_timeout,
          retry_min, retry_max, allow, engine, task, batch, threads, server, register, strict) -> None:
    """Listen for MR series and reconstruct every target paired with a reference of its study.

    Only validated engines run (or the embedded default); there is no --allow-unvalidated here.
    Stop with Ctrl-C or SIGTERM; a restart on the same --spool resumes where it stopped.
    """
    from ..dicom.node import Node
    from ..dicom.settings import Allowed, NodeSettings, check_ae_title, parse_destination

    settings = NodeSettings(
        spool=spool, port=port, host=host, ae_title=check_ae_title(ae_title, "--ae-title"),
        forward=tuple(parse_destination(f) for f in forward), allow=tuple(Allowed.parse(a) for a in allow),
        ref_match=ref_match, target_match=target_match, rules_file=rules_file, settle=settle,
        pair_timeout=pair_timeout, retry_min=retry_min, retry_max=max(retry_max, retry_min),
        run=run_settings(engine=engine, task=task, batch=batch, threads=threads, server=server,
                         register=register, strict=strict),
    )
    Node(settings).serve_forever()


@command.command("status")
@click.option("--spool", default=str(D.DICOM_SPOOL), show_default=True, type=click.Path(file_okay=False),
              help="the node's spool folder")
@click.option("--recent", default=10, show_default=True, type=click.IntRange(min=0), help="how many recent results")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(spool, recent, as_json) -> None:
    """Show the queue, recent results with timings, and failures (read-only; the node may run)."""
    from ..dicom.status import collect, render

    info = collect(spool, recent=recent)
    if as_json:
        import json

        click.echo(json.dumps(info, indent=2, default=str))
    else:
        for line in render(info):
            click.echo(line)
