"""``build_engine``: exported ONNX -> precision conversion -> backend engine -> parity -> manifest.

Steps (each one library function): pick the backend (:func:`~.identity.resolve_backend`), convert
the precision (:mod:`sgf_deploy.calibration`: FP16 conversion or INT8 Q/DQ with a calibration
set), build (:mod:`.onnxruntime.builder` / :mod:`.tensorrt.builder`), measure parity
(:mod:`.parity`), write the engine and its manifest. Everything is assembled in a temporary folder
inside ``out_dir`` and renamed into place only at the end: an interrupted or failed build leaves
nothing behind, and an existing engine is never overwritten without ``overwrite=True``.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import __version__
from ..artifacts import check_writable, sha256_file
from ..errors import InputError, SgfError
from .base import BuildResult
from .identity import (
    PRECISIONS,
    backend_label,
    backend_version,
    device_token,
    engine_filename,
    import_trt,
    normalize_targets,
    onnx_input_shape,
    options_hash,
    parse_shapes,
    resolve_backend,
    resolve_profile,
)
from .manifest import FORMAT, FORMAT_VERSION, manifest_path, write_manifest

DEFAULT_EXPORT_DIR = Path("export")
MCNS_MODES: tuple[str, ...] = ("function", "plugin")


def find_onnx(export_dir: str | os.PathLike = DEFAULT_EXPORT_DIR) -> Path:
    """The single ``.onnx`` file in ``export_dir``; errors list the candidates or say to export."""
    export_dir = Path(export_dir)
    found = sorted(export_dir.glob("*.onnx")) if export_dir.is_dir() else []
    if not found:
        raise InputError(f"{export_dir}/ holds no .onnx file; run `sgf-deploy export` first (or pass --onnx PATH)")
    if len(found) > 1:
        raise InputError(f"{export_dir}/ holds {len(found)} .onnx files ({', '.join(p.name for p in found)}); choose one with --onnx")
    return found[0]


def _read_metadata(onnx_path: Path) -> dict[str, Any]:
    try:
        from ..export.metadata import read_onnx_metadata
    except ImportError:  # pragma: no cover - the export package is part of the toolkit
        read_onnx_metadata = None
    if read_onnx_metadata is not None:
        return read_onnx_metadata(onnx_path)
    import json

    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    for key in ("sgf.config", "sgf.normalization"):
        if key in props:
            props[key] = json.loads(props[key])
    return props


def check_mcns_mode(mcns: str, backend: str) -> None:
    """``function`` always works; ``plugin`` registers the sgf::MCNS IPluginV3 with TensorRT /
    TensorRT-RTX (ONNX Runtime has no plugin: it runs the model-local function)."""
    if mcns not in MCNS_MODES:
        raise InputError(f"--mcns {mcns!r}; choose from {', '.join(MCNS_MODES)}")
    if mcns == "function":
        return
    if backend not in ("tensorrt", "tensorrt-rtx"):
        raise InputError(
            f"--mcns plugin applies to TensorRT and TensorRT-RTX; {backend_label(backend)} runs MCNS as the "
            "ONNX function (no ONNX Runtime kernel ships: its C headers are in no package registry)"
        )
    from .plugins import register_mcns_plugin
    from .tensorrt.builder import mcns_plugin_registered

    trt = import_trt(backend, "--mcns plugin")
    register_mcns_plugin(trt)
    if not mcns_plugin_registered(trt):
        raise SgfError(f"--mcns plugin: the sgf::MCNS plugin did not register with {backend_label(backend)} {trt.__version__}")


def _precision_token(precision: str, calib_method: str, options: dict[str, Any]) -> str:
    token = precision if precision != "int8" else f"int8-{calib_method}"
    return token + (f"+{options_hash(options)}" if options else "")


def build_engine(
    onnx_path: str | os.PathLike | None = None,
    *,
    backend: str = "auto",
    precision: str = "fp32",
    calib: str | os.PathLike | None = None,
    shapes: str | None = None,
    out_dir: str | os.PathLike = "engines",
    overwrite: bool = False,
    keep_fp32: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    calib_method: str = "entropy",
    mcns: str = "function",
    threads: int | None = None,
    quantizer: str = "ort",
    targets: str | Iterable[str] | None = None,
    int8_activations: str = "auto",
    parity: int = 4,
    calibration_dir: str | os.PathLike = "calibration",
    echo: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build one engine from an exported ONNX file (ARCHITECTURE.md, "Engines").

    ``onnx_path=None`` takes the single file in ``export/``. ``precision``: fp32 | fp16 | int8.
    INT8 needs a calibration set: ``calib`` or the only set in ``calibration_dir`` (the error says
    how to make one; scales are never invented). ``shapes``: ``MIN:OPT:MAX`` profile.
    ``keep_fp32`` / ``exclude``: node patterns (:mod:`sgf_deploy.calibration.patterns`).
    ``targets``: TensorRT-RTX compute capabilities (e.g. ``"sm86,sm89"``; default the library's).
    ``int8_activations``: auto (ONNX Runtime: uint8 asymmetric; TensorRT: int8 symmetric) | int8 |
    uint8 | uint8-asym (:mod:`sgf_deploy.calibration.int8`).
    ``parity``: held-out slices for the build-time PSNR (0 skips it)."""
    say = echo or (lambda _msg: None)
    onnx_path = Path(onnx_path) if onnx_path is not None else find_onnx()
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: ONNX file not found; run `sgf-deploy export` first")
    precision = str(precision).lower()
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    metadata = _read_metadata(onnx_path)
    backend = resolve_backend(backend)
    check_mcns_mode(mcns, backend)
    if threads is not None and int(threads) < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    targets_t = normalize_targets(targets)
    if targets_t and backend != "tensorrt-rtx":
        raise InputError("--targets (compute capabilities) applies to --backend tensorrt-rtx only")

    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    multiple = int(metadata.get("sgf.size_multiple") or 8)
    profile = resolve_profile(backend, parse_shapes(shapes, multiple), onnx_input_shape(model), str(onnx_path))
    del model

    from ..calibration.patterns import DEFAULT_INT8_EXCLUDE, DEFAULT_KEEP_FP32, parse_patterns

    # Options that change the engine beyond the defaults go into the name as a short hash.
    variant: dict[str, Any] = {}
    if precision == "fp16" and keep_fp32 is not None and parse_patterns(keep_fp32, DEFAULT_KEEP_FP32) != list(DEFAULT_KEEP_FP32):
        variant["keep_fp32"] = parse_patterns(keep_fp32, DEFAULT_KEEP_FP32)
    if precision == "int8":
        chosen = parse_patterns(keep_fp32, DEFAULT_INT8_EXCLUDE) + parse_patterns(exclude, [])
        if chosen != list(DEFAULT_INT8_EXCLUDE):
            variant["int8_float_nodes"] = chosen
        if quantizer != "ort":
            variant["quantizer"] = quantizer
        if int8_activations != "auto":
            variant["activations"] = int8_activations
    if mcns != "function":
        variant["mcns"] = mcns

    calib_set = None
    if precision == "int8":
        from ..calibration.dataset import CalibrationSet, find_calibration_set

        calib_set = CalibrationSet(find_calibration_set(calib, folder=calibration_dir,
                                                        pair=metadata.get("sgf.pair"), task=metadata.get("sgf.task")))
    elif calib is not None:
        raise InputError("--calib applies to --int8 only")

    version = backend_version(backend)
    if backend == "onnxruntime":
        from .onnxruntime.builder import ort_device

        device = ort_device()
    else:
        from .tensorrt.builder import device_for

        device = device_for(backend, import_trt(backend, "building engines"), targets_t)
    out_dir = Path(out_dir)
    name = engine_filename(onnx_path.stem, backend, version, _precision_token(precision, calib_method, variant),
                           device_token(backend, device), profile)
    engine_path = out_dir / name
    check_writable(engine_path, overwrite)
    check_writable(manifest_path(engine_path), overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    say(f"building {engine_path} ({backend_label(backend)} {version}, {precision.upper()}, profile {profile.describe()})")

    work = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        precision_info: dict[str, Any] = {}
        model_path = onnx_path
        if precision == "fp16":
            from ..calibration.fp16 import convert_fp16

            model_path = work / "model.fp16.onnx"
            _, precision_info = convert_fp16(onnx_path, model_path, keep_fp32=keep_fp32)
            say(f"FP16: {len(precision_info['fp32_nodes'])} node(s) kept in FP32 ({', '.join(precision_info['keep_fp32'])}); I/O float32")
        elif precision == "int8":
            from ..calibration.int8 import quantize_int8

            model_path = work / "model.int8.onnx"
            fixed = profile.min[2:] if profile.min and profile.min[2:] == profile.max[2:] else None
            say(f"INT8: calibrating on {calib_set.folder} ({len(calib_set)} pairs, {calib_method}) ...")
            precision_info = quantize_int8(onnx_path, model_path, calib_set, method=calib_method, exclude=exclude,
                                           keep_fp32=keep_fp32, backend=backend, quantizer=quantizer,
                                           activation_type=int8_activations,
                                           input_shape=tuple(fixed) if fixed else None)
            say(f"INT8: {precision_info['qdq']['quantize_linear']} QuantizeLinear, "
                f"{len(precision_info['float_nodes'])} node(s) left in float ({', '.join(precision_info['float_patterns'])}); "
                f"activations {precision_info.get('activations')}")

        staged = work / name
        if backend == "onnxruntime":
            from .onnxruntime.builder import build as ort_build

            backend_info = ort_build(model_path, staged, device=device, threads=threads)
        else:
            from .tensorrt.builder import build as trt_build
            from .tensorrt.builder import timing_cache_path

            backend_info = trt_build(model_path, staged, backend=backend, profile=profile, device=device, mcns=mcns,
                                     timing_cache=timing_cache_path(out_dir, backend, version, device))

        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "engine_file": name,
            "engine_sha256": sha256_file(staged),
            "onnx_sha256": sha256_file(onnx_path),
            "onnx_path": str(onnx_path),
            "checkpoint_sha256": metadata.get("sgf.checkpoint_sha256"),
            "backend": backend,
            "backend_version": version,
            "precision": precision,
            "device": device,
            "profile": profile.to_manifest(),
            "build_options": {
                "backend_requested": backend,
                "precision": precision,
                "shapes": shapes,
                "keep_fp32": keep_fp32 if keep_fp32 is None or isinstance(keep_fp32, str) else list(keep_fp32),
                "exclude": exclude if exclude is None or isinstance(exclude, str) else list(exclude),
                "calib_method": calib_method if precision == "int8" else None,
                "quantizer": quantizer if precision == "int8" else None,
                "int8_activations": int8_activations if precision == "int8" else None,
                "mcns": mcns,
                "threads": threads,
                "targets": list(targets_t) or None,
                "variant_hash": options_hash(variant) if variant else None,
                **backend_info,
            },
            "precision_conversion": precision_info or {"kind": "none (FP32 as exported)"},
            "calibration": calib_set.describe() if calib_set is not None else None,
            "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "toolkit_version": __version__,
            "model": {
                "preset": metadata.get("sgf.preset"),
                "task": metadata.get("sgf.task"),
                "pair": metadata.get("sgf.pair"),
                "config": metadata.get("sgf.config"),
                "size_multiple": multiple,
                "normalization": metadata.get("sgf.normalization"),
                "opset": metadata.get("sgf.opset"),
                "dynamic": metadata.get("sgf.dynamic"),
            },
        }
        manifest["build_parity"] = _parity(backend, staged, manifest, onnx_path, model_path, metadata, precision,
                                           profile, parity, threads, say)

        # TensorRT engines are opaque: keep the precision-converted ONNX they were built from beside
        # them, for layer-wise debugging (sgf-deploy validate --layerwise, polygraphy debug precision).
        keep_onnx = backend != "onnxruntime" and model_path != onnx_path
        if keep_onnx:
            manifest["precision_onnx"] = name + ".model.onnx"
            check_writable(out_dir / manifest["precision_onnx"], overwrite)
        with_manifest = work / (name + ".json")
        write_manifest(staged, manifest)
        check_writable(engine_path, overwrite)
        if keep_onnx:
            os.replace(model_path, out_dir / manifest["precision_onnx"])
        os.replace(staged, engine_path)
        os.replace(with_manifest, manifest_path(engine_path))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {engine_path} (sha256 {manifest['engine_sha256'][:12]}...) and {manifest_path(engine_path).name}")
    return BuildResult(engine_path, manifest_path(engine_path), manifest)


def _parity(backend: str, staged: Path, manifest: dict[str, Any], onnx_path: Path, model_path: Path,
            metadata: dict[str, Any], precision: str, profile: Any, n: int, threads: int | None,
            say: Callable[[str], None]) -> dict[str, Any]:
    from .identity import gpu_devices
    from .parity import build_parity

    if n <= 0:
        return {"status": "not run: disabled (--parity 0)"}
    infer = proxy = None
    reason = None
    runner = None
    if backend == "onnxruntime":
        from .onnxruntime.runner import OrtRunner

        runner = OrtRunner(staged, manifest, threads=threads)
        infer = runner.infer
    elif not gpu_devices():
        reason = "not run: no GPU"
    else:
        from ..errors import EngineMismatchError
        from .tensorrt.runner import TrtRunner

        try:
            runner = TrtRunner(staged, manifest)
            infer = runner.infer
        except (EngineMismatchError, SgfError) as exc:
            reason = f"not run: {exc}"
    if infer is None:
        import onnxruntime as ort

        from .onnxruntime.builder import session_options

        session = ort.InferenceSession(str(model_path), session_options("ORT_ENABLE_ALL", threads), providers=["CPUExecutionProvider"])

        def proxy(r, t):  # noqa: ANN001
            return session.run(["reconstruction"], {"reference": r, "target": t})[0]

    try:
        result = build_parity(infer, onnx_path=onnx_path, metadata=metadata, precision=precision, profile=profile, n=n,
                              proxy=proxy, not_run_reason=reason, threads=threads,
                              proxy_label=f"the {precision.upper()} ONNX model this engine was built from, run in ONNX Runtime (CPU); not the engine")
    finally:
        if runner is not None:
            runner.close()
    if result.get("status") == "run":
        flag = "" if result.get("meets_guide") else f"  (below the {result.get('guide_db')} dB guide for {precision.upper()})"
        say(f"parity vs {result['reference'].split(' (')[0]}: PSNR {result['psnr_db']} dB, max |err| "
            f"{result['max_abs_error']:.3g} on {result['slices']}{flag}")
    else:
        proxy_db = (result.get("onnx_proxy") or {}).get("psnr_db")
        say(f"parity: engine {result.get('status')}" + (f"; its {precision.upper()} ONNX in ONNX Runtime: PSNR {proxy_db} dB" if proxy_db is not None else ""))
    return result
