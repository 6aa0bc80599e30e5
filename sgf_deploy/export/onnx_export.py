"""Export an SGF-MRI checkpoint to one ONNX file with one ``sgf.MCNS`` node per MCSD block.

How (DESIGN.md section 3): ``torch.onnx.export(dynamo=True)`` with a custom translation of
``torch.ops.sgf.mcns`` into an opaque ``sgf.MCNS`` node (an onnxscript function in the ``sgf``
opset, type-annotated), then the model-local ``sgf::MCNS`` FunctionProto
(:mod:`sgf_deploy.export.mcns_function`, standard ops only) is attached, the metadata written, the
file checked with ``onnx.checker`` (full check) and run by ONNX Runtime against PyTorch (the
self-check, :mod:`sgf_deploy.export.selfcheck`) *before* it is renamed into place.

Default opset: 21. Evidence (2026-11-24, torch 2.13 / onnxscript 0.7 / ORT 1.32 CPU /
onnxconverter-common 1.16 / TensorRT-RTX 1.7.1 CPU build; lite and paper presets):

* opset 23 is the first at which the exporter emits the ONNX ``Attention`` op for
  ``F.scaled_dot_product_attention``; at 18-22 it emits the standard decomposition
  (Mul by sqrt(scale) on Q and K, MatMul, Softmax, MatMul) that TensorRT's MHA fusion matches.
  ORT CPU runs ``Attention`` (FP32, and FP16 after onnxconverter-common), and ORT
  ``quantize_static`` copes; but the TensorRT-RTX 1.7 parser REJECTS it for this network:
  "Query, Key, Value tensors must have the same head dimension" (SFA's V carries C channels, Q/K
  carry attn_dim: 96 vs 32 in lite, 256/128 vs 64 in paper). So opset 23 loses TensorRT.
* opset 19 (what ModelOpt INT8 needs at least): FP32/FP16/INT8 (s8 QDQ) all parse and build in
  TensorRT-RTX, ORT quantize_static s8/u8 works — but 16-bit activation QDQ (QUInt16/QInt16, the
  usual remedy when INT8 hurts a regression network) makes ORT's quantizer upgrade the model to
  opset 21 itself, and the upgraded copy loses the function ("sgf:MCNS(-1) is not a registered
  function/op").
* opset 21: everything above works — ORT FP32, ORT quantize_static QDQ with s8 symmetric, u8
  and u16 activations (standard-domain Q/DQ, checker full_check passes, MCNS node + function
  kept), onnxconverter-common float16 (``op_block_list=["MCNS"] + DEFAULT_OP_BLOCK_LIST``,
  keep_io_types), and TensorRT-RTX parse + CPU build of the FP32, FP16 and s8-QDQ files. ONNX
  Runtime >= 1.18 (this package needs >= 1.20) and TensorRT 10.x parsers read opset 21.

Found on the way and designed around: with the neighbour axis second (B, 8, ...) the function
body needs ``Unsqueeze`` of its inputs, and ORT's QDQ propagation then fails session creation of
an s8-QDQ model at opset >= 21 (QuantizeLinear "output_dtype INT8 does not match y_zero_point
type UINT8"); the body therefore puts the neighbour axis first, where inputs broadcast unchanged.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import __version__
from ..artifacts import atomic_path, check_writable, sha256_file
from ..errors import InputError, ValidationFailed
from . import selfcheck as _selfcheck
from .mcns_function import DOMAIN, FUNCTION_VERSION, MIN_OPSET, OP_TYPE, make_mcns_function
from .metadata import ONNX_SUFFIX, encode_metadata, json_safe, normalization_spec, sidecar_path

DEFAULT_OPSET = 21
MAX_OPSET = 23  # the highest opset verified end to end (see the module docstring)
DEFAULT_DIR = Path("export")
_MAX_DIM = 1024  # dynamic ranges: N <= 1024, H, W <= 1024 * size_multiple


@dataclass(frozen=True)
class ExportResult:
    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    selfcheck: dict[str, Any]
    onnx_sha256: str = ""
    mcns_nodes: int = 0


# ----------------------------------------------------------------------------- argument checks
def parse_static(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` -> (H, W); None passes through. Multiples are checked by :func:`export_onnx`."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"--static {text!r}: expected HxW, e.g. 320x320")
    return int(match.group(1)), int(match.group(2))


def _check_args(opset: int, static: tuple[int, int] | None, batch: int | None, multiple: int) -> None:
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise InputError(f"--opset {opset}: supported opsets are {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    if static is not None:
        h, w = static
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise InputError(
                f"--static {h}x{w}: H and W must be positive multiples of {multiple} "
                f"(the runtime pads slices to a multiple of {multiple}; e.g. {h + (-h) % multiple or multiple}x{w + (-w) % multiple or multiple})"
            )
    if batch is not None and int(batch) < 1:
        raise InputError(f"--batch {batch}: must be >= 1")


def _identify(config: Any, meta: dict[str, Any]) -> tuple[str, str, str]:
    """(preset, task, pair) of a checkpoint: the preset whose config matches, else the preset the
    training settings name, else "custom"."""
    from ..model.presets import PRESETS

    provenance = meta.get("provenance") if isinstance(meta.get("provenance"), dict) else {}
    settings = provenance.get("settings") if isinstance(provenance.get("settings"), dict) else {}
    preset = next((name for name, cfg in PRESETS.items() if cfg == config), None)
    if preset is None:
        preset = str(settings.get("preset") or "custom")
    task = str(provenance.get("task") or settings.get("task") or "unknown")
    pair = str(provenance.get("pair") or settings.get("pair") or "unknown")
    return preset, task, pair


def default_name(preset: str, task: str, pair: str, checkpoint_sha256: str) -> str:
    """``sgf_mri-<preset>-<task>-<pair>-<ckpt sha[:8]>`` (ARCHITECTURE.md)."""
    safe = lambda s: re.sub(r"[^A-Za-z0-9_.+-]+", "_", s)  # noqa: E731
    return f"sgf_mri-{safe(preset)}-{safe(task)}-{safe(pair)}-{checkpoint_sha256[:8]}"


# ------------------------------------------------------------------------------------ exporter
def _mcns_translation():
    from .translation import sgf_mcns_node

    return sgf_mcns_node


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (torchvision absent, deprecations)."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch._guards", "torch.fx", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_model_proto(model: Any, opset: int, static: tuple[int, int] | None = None, batch: int | None = None):
    """Trace ``model.forward_core`` to an ONNX ModelProto: inputs ``reference``, ``target``,
    output ``reconstruction``; the ``sgf::MCNS`` function attached; nothing else added."""
    import torch
    from torch.export import Dim

    multiple = int(model.config.size_multiple)

    class Core(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.net.forward_core(reference, target)

    core = Core(model).eval()
    n = batch or 2  # never 1 for a dynamic batch (torch.export specialises size-1 dims)
    h, w = static or (4 * multiple, 5 * multiple)
    gen = torch.Generator().manual_seed(0)
    # Two distinct tensors: passing one tensor twice makes torch.export treat the inputs as aliases.
    example = (torch.randn(n, 1, h, w, generator=gen), torch.randn(n, 1, h, w, generator=gen))
    axes: dict[int, Any] = {}
    if batch is None:
        axes[0] = Dim("N", min=1, max=_MAX_DIM)
    if static is None:
        axes[2] = multiple * Dim("h", min=1, max=_MAX_DIM)
        axes[3] = multiple * Dim("w", min=1, max=_MAX_DIM)
    dynamic_shapes = {"reference": dict(axes), "target": dict(axes)} if axes else None

    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            core,
            example,
            dynamo=True,
            custom_translation_table={torch.ops.sgf.mcns.default: _mcns_translation()},
            external_data=False,
            opset_version=int(opset),
            dynamic_shapes=dynamic_shapes,
            input_names=["reference", "target"],
            output_names=["reconstruction"],
            verbose=False,
        )
    proto = program.model_proto
    _strip_trace_metadata(proto)
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.add(domain=DOMAIN, version=FUNCTION_VERSION)
    del proto.functions[:]  # nothing else should be there; the body of sgf::MCNS is ours
    proto.functions.append(make_mcns_function(int(opset)))
    from .attention import chunk_attention, scales_to_chunk  # query-chunked attention (paper memory)

    cfg = model.config
    chunk_attention(proto, {cfg.channels[s] for s in scales_to_chunk(cfg.channels, cfg.mcsd_scales, static)} or {-1})
    return proto


def _strip_trace_metadata(proto: Any) -> None:
    """Drop the exporter's per-node/value provenance (Python stack traces with local paths)."""
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
    for value in list(graph.value_info) + list(graph.input) + list(graph.output) + list(graph.initializer):
        del value.metadata_props[:]
    del graph.metadata_props[:]
    del proto.metadata_props[:]


def count_mcns_nodes(proto: Any) -> int:
    return sum(1 for node in proto.graph.node if node.domain == DOMAIN and node.op_type == OP_TYPE)


# --------------------------------------------------------------------------------------- public
def export_onnx(
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    static: tuple[int, int] | None = None,
    batch: int | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``checkpoint`` (default: the embedded default checkpoint) to ``out`` (default
    ``export/<name>.onnx``) plus the sidecar ``<name>.json``.

    ``static=(H, W)`` fixes the spatial size (multiples of the model's size multiple, 8),
    ``batch=N`` fixes the batch; otherwise N, H, W are dynamic (H, W multiples of 8). The file is
    written to a temporary path, checked (onnx.checker full check, one ``sgf.MCNS`` node per MCSD
    block, ONNX Runtime vs PyTorch self-check) and only then renamed into place: a failed check
    raises :class:`~sgf_deploy.errors.ValidationFailed` and leaves nothing behind.
    """
    import onnx

    from ..model import default_checkpoint, load_checkpoint

    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if static is not None:
        static = (int(static[0]), int(static[1]))
    batch = int(batch) if batch is not None else None
    model, meta = load_checkpoint(checkpoint)
    multiple = int(model.config.size_multiple)
    _check_args(opset, static, batch, multiple)
    preset, task, pair = _identify(model.config, meta)
    ckpt_sha = meta["sha256"]

    out = Path(out) if out is not None else DEFAULT_DIR / f"{default_name(preset, task, pair, ckpt_sha)}{ONNX_SUFFIX}"
    if out.suffix != ONNX_SUFFIX:
        raise InputError(f"{out}: the exported file must end in {ONNX_SUFFIX} (its sidecar is <name>.json beside it)")
    sidecar = sidecar_path(out)
    check_writable(out, overwrite)
    check_writable(sidecar, overwrite)

    dynamic_axes = [name for name, fixed in (("N", batch is not None), ("H", static is not None), ("W", static is not None)) if not fixed]
    metadata = {
        "sgf.toolkit_version": __version__,
        "sgf.preset": preset,
        "sgf.config": model.config.to_dict(),
        "sgf.task": task,
        "sgf.pair": pair,
        "sgf.checkpoint_sha256": ckpt_sha,
        "sgf.checkpoint_path": str(checkpoint.resolve()),
        "sgf.normalization": normalization_spec(multiple),
        "sgf.size_multiple": multiple,
        "sgf.opset": int(opset),
        "sgf.exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sgf.dynamic": ",".join(dynamic_axes) if dynamic_axes else "static",
    }

    if echo:
        shape = f"{batch or 'N'}x1x{static[0] if static else 'H'}x{static[1] if static else 'W'}"
        echo(f"exporting {checkpoint} ({preset}, {task}, {pair}) at opset {opset}, input {shape}")
    if echo and int(opset) >= 23 and any(model.config.channels[s] != model.config.attn_dim for s in model.config.mcsd_scales):
        echo(
            f"note: at opset {opset} the attention is exported as the ONNX Attention op, which the TensorRT(-RTX) "
            "parser rejects for this network (V head size != Q/K head size); ONNX Runtime runs it. "
            f"Use the default opset {DEFAULT_OPSET} for TensorRT."
        )
    proto = export_model_proto(model, int(opset), static, batch)
    n_mcns = count_mcns_nodes(proto)
    expected = len(model.config.mcsd_scales)
    if n_mcns != expected:  # a bug, not a user error: the exporter decomposed or duplicated the op
        raise RuntimeError(f"export produced {n_mcns} sgf.MCNS nodes for {expected} MCSD blocks")
    for key, value in encode_metadata(metadata).items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (
        f"SGF-MRI ({preset}) exported by sgf-deploy {__version__}: reference, target (N,1,H,W) float32, "
        f"normalised and edge-padded to a multiple of {multiple} -> reconstruction; see metadata_props."
    )
    onnx.checker.check_model(proto, full_check=True)

    with atomic_path(out, overwrite) as tmp:
        onnx.save(proto, str(tmp))
        check = _selfcheck.run_selfcheck(str(tmp), model, task, pair, static=static, batch=batch, echo=echo)
        if not check["passed"]:
            bad = next((c for c in check["cases"] if not c["passed"]), None)
            if bad is not None:
                what = (
                    f"at {'x'.join(map(str, bad['shape']))}: max |onnx - torch| = {bad['max_abs_error']:.3g} "
                    f"(limit {check['tolerance']['max_abs_error']:g}), PSNR = {bad['psnr_db']:.1f} dB "
                    f"(limit {check['tolerance']['min_psnr_db']:g})"
                )
            else:
                fn = check["mcns_function"]
                what = (
                    f"the sgf::MCNS function alone differs from torch.ops.sgf.mcns by {fn['max_abs_error']:.3g} "
                    f"(limit {fn.get('tolerance', 0):g}){' (' + fn['error'] + ')' if 'error' in fn else ''}"
                )
            raise ValidationFailed(f"{out}: export self-check failed {what}; nothing was written")
        onnx_sha = sha256_file(tmp)
        record = dict(metadata, onnx_sha256=onnx_sha, onnx_path=str(out), mcns_nodes=n_mcns, selfcheck=check)
        text = json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n"
        with atomic_path(sidecar, overwrite) as tmp_json:
            tmp_json.write_text(text, encoding="utf-8")
    if echo:
        echo(f"wrote {out} ({n_mcns} sgf.MCNS node{'s' if n_mcns != 1 else ''}, sha256 {onnx_sha[:12]}...) and {sidecar}")
    return ExportResult(
        path=out, sidecar=sidecar, metadata=metadata, selfcheck=check, onnx_sha256=onnx_sha, mcns_nodes=n_mcns
    )
