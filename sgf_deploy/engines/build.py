"""``build_engine``: exported ONNX -> precision conversion -> backend engine -> parity -> manifest.

The driver is a short list of named steps: :func:`plan_build` (backend, profile, device, name,
calibration set), :func:`convert_precision` (:mod:`sgf_deploy.calibration`: FP16 conversion or
INT8 Q/DQ), :func:`build_backend` (:mod:`.onnxruntime.builder` / :mod:`.tensorrt.builder`),
:func:`make_manifest`, :func:`measure_parity` (:mod:`.parity`) and :func:`install`. Everything is
assembled in a temporary folder inside the output folder and renamed into place only at the end:
an interrupted or failed build leaves nothing behind, and an existing engine is never overwritten
without ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from .. import defaults as D
from ..artifacts import check_writable, sha256_file, temp_beside
from ..errors import InputError, SgfError
from .base import BuildResult
from .identity import (
    Profile,
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
from .manifest import FORMAT_VERSION, EngineManifest, ModelInfo, manifest_path
from .settings import BuildSettings

MCNS_MODES: tuple[str, ...] = ("function", "plugin")
Echo = Callable[[str], None]


def find_onnx(export_dir: str | os.PathLike = D.EXPORT_DIR) -> Path:
    """The single ``.onnx`` file in ``export_dir``; errors list the candidates or say to export."""
    export_dir = Path(export_dir)
    found = sorted(export_dir.glob("*.onnx")) if export_dir.is_dir() else []
    if not found:
        raise InputError(f"{export_dir}/ holds no .onnx file; run `sgf-deploy export` first (or pass --onnx PATH)")
    if len(found) > 1:
        raise InputError(f"{export_dir}/ holds {len(found)} .onnx files ({', '.join(p.name for p in found)}); choose one with --onnx")
    return found[0]


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


@dataclass
class BuildPlan:
    """Everything decided before any work is done: what will be built, from what, where."""

    onnx_path: Path
    metadata: dict[str, Any]
    settings: BuildSettings
    backend: str
    version: str
    device: dict[str, Any]
    profile: Profile
    targets: tuple[str, ...]
    variant: dict[str, Any]
    calib_set: Any
    engine_path: Path

    @property
    def precision(self) -> str:
        return self.settings.precision

    @property
    def out_dir(self) -> Path:
        return self.engine_path.parent


# -------------------------------------------------------------------------------------- planning
def _variant(settings: BuildSettings) -> dict[str, Any]:
    """Options that change the engine beyond the defaults: they go into the name as a short hash."""
    from ..calibration.patterns import DEFAULT_INT8_EXCLUDE, DEFAULT_KEEP_FP32, parse_patterns

    variant: dict[str, Any] = {}
    if settings.precision == "fp16" and settings.keep_fp32 is not None:
        chosen = parse_patterns(settings.keep_fp32, DEFAULT_KEEP_FP32)
        if chosen != list(DEFAULT_KEEP_FP32):
            variant["keep_fp32"] = chosen
    if settings.precision == "int8":
        chosen = parse_patterns(settings.keep_fp32, DEFAULT_INT8_EXCLUDE) + parse_patterns(settings.exclude, [])
        if chosen != list(DEFAULT_INT8_EXCLUDE):
            variant["int8_float_nodes"] = chosen
        if settings.quantizer != D.QUANTIZER:
            variant["quantizer"] = settings.quantizer
        if settings.int8_activations != D.INT8_ACTIVATIONS:
            variant["activations"] = settings.int8_activations
        if settings.overflow_fix is not None:
            variant["overflow_fix"] = settings.overflow_fix
        if settings.int8_max_drop is not None:
            variant["int8_max_drop"] = settings.int8_max_drop
    if settings.mcns != D.MCNS:
        variant["mcns"] = settings.mcns
    return variant


def _device(backend: str, targets: tuple[str, ...]) -> dict[str, Any]:
    if backend == "onnxruntime":
        from .onnxruntime.builder import ort_device

        return ort_device()
    if backend == "openvino":
        from .openvino.builder import ov_device

        return ov_device()
    from .tensorrt.builder import device_for

    return device_for(backend, import_trt(backend, "building engines"), targets)


def _precision_token(settings: BuildSettings, variant: dict[str, Any], backend: str = "onnxruntime") -> str:
    method = settings.calib_method
    if backend == "openvino" and settings.precision == "int8":
        from ..calibration.nncf_int8 import estimator_token

        method = estimator_token(method)  # NNCF's range estimator (e.g. histogram), not ORT's method name
    token = settings.precision if settings.precision != "int8" else f"int8-{method}"
    return token + (f"+{options_hash(variant)}" if variant else "")


def plan_build(onnx_path: str | os.PathLike | None, settings: BuildSettings) -> BuildPlan:
    """Check the request against the ONNX file and this machine; name the engine. No side effects."""
    import onnx

    from ..contract import size_multiple
    from ..export.metadata import read_onnx_metadata

    onnx_path = Path(onnx_path) if onnx_path is not None else find_onnx()
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: ONNX file not found; run `sgf-deploy export` first")
    metadata = read_onnx_metadata(onnx_path)
    backend = resolve_backend(settings.backend)
    if str(settings.backend).lower() == "auto" and backend == "onnxruntime":
        from .openvino.choice import choose_cpu_backend

        backend = choose_cpu_backend(onnx_path, settings.precision, Path(settings.out_dir), settings.threads)
    check_mcns_mode(settings.mcns, backend)
    if settings.int8_max_drop is not None and backend != "openvino":
        raise InputError(f"--int8-max-drop (NNCF accuracy control) applies to --backend openvino, not {backend}")
    targets = normalize_targets(settings.targets)
    if targets and backend != "tensorrt-rtx":
        raise InputError("--targets (compute capabilities) applies to --backend tensorrt-rtx only")
    model = onnx.load(str(onnx_path), load_external_data=False)
    profile = resolve_profile(backend, parse_shapes(settings.shapes, size_multiple(metadata)),
                              onnx_input_shape(model), str(onnx_path))
    del model
    calib_set = None
    if settings.precision == "int8":
        from ..calibration.dataset import CalibrationSet, find_calibration_set

        calib_set = CalibrationSet(find_calibration_set(settings.calib, folder=settings.calibration_dir,
                                                        pair=metadata.get("sgf.pair"), task=metadata.get("sgf.task")))
    version = backend_version(backend)
    device = _device(backend, targets)
    if backend == "openvino" and settings.precision == "fp16":
        from .openvino.builder import fp16_problem

        if fp16_problem(device):
            raise InputError(f"--fp16 --backend openvino: {fp16_problem(device)}")
    variant = _variant(settings)
    name = engine_filename(onnx_path.stem, backend, version, _precision_token(settings, variant, backend),
                           device_token(backend, device), profile)
    engine_path = Path(settings.out_dir) / name
    check_writable(engine_path, settings.overwrite)
    check_writable(manifest_path(engine_path), settings.overwrite)
    if backend == "openvino":
        check_writable(engine_path.with_suffix(".bin"), settings.overwrite)
    return BuildPlan(onnx_path, metadata, settings, backend, version, device, profile, targets, variant,
                     calib_set, engine_path)


# -------------------------------------------------------------------------------------- building
def convert_precision(plan: BuildPlan, work: Path, say: Echo) -> tuple[Path, dict[str, Any]]:
    """(the model the backend builds from, the conversion record): FP16 conversion or INT8 Q/DQ."""
    s = plan.settings
    if plan.backend in ("tensorrt", "tensorrt-rtx"):
        from ..export.attention import without_chunking

        plain = work / "model.plain-attention.onnx"  # TensorRT(-RTX) cannot build the chunked Loop
        if without_chunking(plan.onnx_path, plain):
            say("attention: the query-chunked Loop replaced by the plain attention for TensorRT")
            plan = dataclasses.replace(plan, onnx_path=plain)
    if plan.backend == "openvino":
        from .openvino.convert import convert_for_openvino

        return convert_for_openvino(plan, work, say)
    if plan.precision == "fp16":
        from ..calibration.fp16 import convert_fp16

        model_path = work / "model.fp16.onnx"
        _, info = convert_fp16(plan.onnx_path, model_path, keep_fp32=s.keep_fp32)
        say(f"FP16: {len(info['fp32_nodes'])} node(s) kept in FP32 ({', '.join(info['keep_fp32'])}); I/O float32")
        return model_path, info
    if plan.precision == "int8":
        from ..calibration.int8 import quantize_int8

        model_path = work / "model.int8.onnx"
        p = plan.profile
        fixed = p.min[2:] if p.min and p.min[2:] == p.max[2:] else None  # type: ignore[index]
        say(f"INT8: calibrating on {plan.calib_set.folder} ({len(plan.calib_set)} pairs, {s.calib_method}) ...")
        info = quantize_int8(plan.onnx_path, model_path, plan.calib_set, method=s.calib_method, exclude=s.exclude,
                             keep_fp32=s.keep_fp32, backend=plan.backend, quantizer=s.quantizer,
                             activation_type=s.int8_activations, input_shape=tuple(fixed) if fixed else None)
        say(f"INT8: {info['qdq']['quantize_linear']} QuantizeLinear, {len(info['float_nodes'])} node(s) left in float "
            f"({', '.join(info['float_patterns'])}); activations {info.get('activations')}")
        return model_path, info
    return plan.onnx_path, {}


def build_backend(plan: BuildPlan, model_path: Path, staged: Path) -> dict[str, Any]:
    """Build the engine file ``staged`` from ``model_path``; the backend's build record."""
    if plan.backend == "onnxruntime":
        from .onnxruntime.builder import build as ort_build

        return ort_build(model_path, staged, device=plan.device, threads=plan.settings.threads)
    if plan.backend == "openvino":
        from .openvino.builder import build as ov_build
        from .openvino.builder import read_model

        return ov_build(read_model(model_path), staged, threads=plan.settings.threads)
    from .tensorrt.builder import build as trt_build
    from .tensorrt.builder import timing_cache_path

    return trt_build(model_path, staged, backend=plan.backend, profile=plan.profile, device=plan.device,
                     mcns=plan.settings.mcns,
                     timing_cache=timing_cache_path(plan.out_dir, plan.backend, plan.version, plan.device))


def make_manifest(plan: BuildPlan, staged: Path, precision_info: dict[str, Any],
                  backend_info: dict[str, Any]) -> EngineManifest:
    meta = plan.metadata
    from ..contract import size_multiple

    return EngineManifest(
        engine_file=plan.engine_path.name,
        engine_sha256=sha256_file(staged),
        onnx_sha256=sha256_file(plan.onnx_path),
        onnx_path=str(plan.onnx_path),
        checkpoint_sha256=meta.get("sgf.checkpoint_sha256"),
        backend=plan.backend,
        backend_version=plan.version,
        precision=plan.precision,
        device=plan.device,
        profile=plan.profile,
        build_options={**plan.settings.record(), "targets": list(plan.targets) or None,
                       "variant_hash": options_hash(plan.variant) if plan.variant else None, **backend_info},
        precision_conversion=precision_info or {"kind": "none (FP32 as exported)"},
        calibration=plan.calib_set.describe() if plan.calib_set is not None else None,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        toolkit_version=__version__,
        model=ModelInfo.from_dict({
            "preset": meta.get("sgf.preset"), "task": meta.get("sgf.task"), "pair": meta.get("sgf.pair"),
            "config": meta.get("sgf.config"), "size_multiple": size_multiple(meta),
            "normalization": meta.get("sgf.normalization"), "opset": meta.get("sgf.opset"),
            "dynamic": meta.get("sgf.dynamic"),
        }),
        build_parity={},
        format_version=FORMAT_VERSION,
    )


def measure_parity(plan: BuildPlan, staged: Path, manifest: EngineManifest, model_path: Path,
                   say: Echo) -> dict[str, Any]:
    """Build-time PSNR of the staged engine vs the PyTorch reference (:mod:`.parity`), printed."""
    from .parity import engine_parity

    result = engine_parity(plan, staged, manifest, model_path)
    precision = plan.precision.upper()
    if result.get("status") == "run":
        flag = "" if result.get("meets_guide") else f"  (below the {result.get('guide_db')} dB guide for {precision})"
        say(f"parity vs {result['reference'].split(' (')[0]}: PSNR {result['psnr_db']} dB, max |err| "
            f"{result['max_abs_error']:.3g} on {result['slices']}{flag}")
    elif result.get("status", "").startswith("not run"):
        proxy_db = (result.get("onnx_proxy") or {}).get("psnr_db")
        say(f"parity: engine {result.get('status')}"
            + (f"; its {precision} ONNX in ONNX Runtime: PSNR {proxy_db} dB" if proxy_db is not None else ""))
    return result


def install(plan: BuildPlan, staged: Path, manifest: EngineManifest, model_path: Path) -> None:
    """Move the engine (and, for TensorRT, its precision-converted ONNX) and the manifest into place.

    TensorRT engines are opaque: the converted ONNX they were built from is kept beside them for
    layer-wise debugging (``validate --layerwise``, ``polygraphy debug precision``)."""
    engine_path, overwrite = plan.engine_path, plan.settings.overwrite
    keep_onnx = plan.backend not in ("onnxruntime", "openvino") and model_path != plan.onnx_path
    if keep_onnx:
        manifest.precision_onnx = engine_path.name + ".model.onnx"
        check_writable(plan.out_dir / manifest.precision_onnx, overwrite)
    manifest.save(staged)
    check_writable(engine_path, overwrite)
    if keep_onnx:
        os.replace(model_path, plan.out_dir / manifest.precision_onnx)  # type: ignore[operator]
    if plan.backend == "openvino":  # the IR's weights, hashed in build_options.weights_sha256
        check_writable(engine_path.with_suffix(".bin"), overwrite)
        os.replace(staged.with_suffix(".bin"), engine_path.with_suffix(".bin"))
    os.replace(staged, engine_path)
    os.replace(manifest_path(staged), manifest_path(engine_path))


# ---------------------------------------------------------------------------------------- driver
def build_engine(onnx_path: str | os.PathLike | None = None, settings: BuildSettings | None = None, *,
                 echo: Echo | None = None, **options: Any) -> BuildResult:
    """Build one engine from an exported ONNX file (``None``: the single file in ``export/``).

    ``settings`` (:class:`BuildSettings`) or its fields as keyword ``options``."""
    say = echo or (lambda _msg: None)
    if settings is None:
        settings = BuildSettings.from_options(**options)
    elif options:
        settings = settings.replace(**options)
    plan = plan_build(onnx_path, settings)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    say(f"building {plan.engine_path} ({backend_label(plan.backend)} {plan.version}, {plan.precision.upper()}, "
        f"profile {plan.profile.describe()})")
    work = temp_beside(plan.engine_path, directory=True)
    try:
        model_path, precision_info = convert_precision(plan, work, say)
        staged = work / plan.engine_path.name
        backend_info = build_backend(plan, model_path, staged)
        manifest = make_manifest(plan, staged, precision_info, backend_info)
        manifest.build_parity = measure_parity(plan, staged, manifest, model_path, say)
        install(plan, staged, manifest, model_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {plan.engine_path} (sha256 {manifest.engine_sha256[:12]}...) and {manifest_path(plan.engine_path).name}")
    return BuildResult(plan.engine_path, manifest_path(plan.engine_path), manifest)
