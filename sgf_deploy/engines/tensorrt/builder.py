"""Build a TensorRT or TensorRT-RTX engine (one code path: their Python APIs match; the module is
picked by backend name, ``tensorrt`` or ``tensorrt_rtx``).

* Strongly typed network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` where the enum has it;
  TensorRT 11 and TensorRT-RTX are strongly typed anyway): precision comes from the ONNX file
  (FP16-converted or Q/DQ), never from builder flags (TensorRT 11 removed FP16/INT8 flags).
* The ONNX parser inlines the model-local ``sgf::MCNS`` function (standard ops). ``mcns="plugin"``
  parses a copy whose MCNS nodes carry ``plugin_namespace="sgf"`` (with
  ``OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE``), so the registered sgf::MCNS plugin is imported; a
  build where no plugin layer results is an error, never a silent fallback.
* One optimisation profile for ``reference``/``target`` (``--shapes``; defaults in
  :func:`sgf_deploy.engines.identity.resolve_profile`).
* TensorRT: persistent timing cache ``<out dir>/.timing-cache-tensorrt-<version>-<sm>.bin`` (read
  before, merged and written after each build). TensorRT-RTX: no timing cache — it has no effect on
  RTX engines and forces a GPU query that would break CPU-only ahead-of-time builds (TensorRT-RTX
  "Timing Cache Migration"); RTX compiles kernels just in time on the target GPU and keeps them in a
  runtime cache instead (see the runner).
* TensorRT-RTX builds without a GPU; the compute-capability targets (default: the library's own,
  SM80/86/89/120) are recorded in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...artifacts import write_bytes_atomic
from ...errors import SgfError
from ..identity import RTX_DEFAULT_TARGETS, Profile, backend_label, gpu_devices, import_trt


class BuildError(SgfError):
    """The TensorRT builder or parser refused the model."""


def make_logger(trt: Any):
    """A TensorRT logger that keeps errors/warnings (for one-line error messages) and prints nothing."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's signature
            name = str(severity).rsplit(".", 1)[-1]
            if name in ("INTERNAL_ERROR", "ERROR", "WARNING"):
                self.messages.append((name, str(msg)))

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

    return _Logger()


def mcns_plugin_registered(trt: Any) -> bool:
    """A plugin creator named MCNS (namespace ``sgf`` or empty) is registered with TensorRT."""
    try:
        registry = trt.get_plugin_registry()
        creators = list(getattr(registry, "all_creators", None) or getattr(registry, "plugin_creator_list", []))
    except Exception:  # noqa: BLE001
        return False
    return any(getattr(c, "name", "") == "MCNS" and getattr(c, "plugin_namespace", "") in ("", "sgf") for c in creators)


def device_for(backend: str, trt: Any, targets: tuple[str, ...]) -> dict[str, Any]:
    """The device an engine is tied to: RTX -> AOT targets; TensorRT -> the GPU it is built on."""
    if backend == "tensorrt-rtx":
        chosen = list(targets) or list(RTX_DEFAULT_TARGETS)
        return {
            "kind": "cuda",
            "name": "NVIDIA RTX-class GPU (TensorRT-RTX ahead-of-time engine)",
            "targets": chosen,
            "targets_source": "--targets" if targets else "TensorRT-RTX default (compute capability 8.0, 8.6, 8.9, 12.0)",
            "compute_capability": [f"{t[2:-1]}.{t[-1]}" for t in chosen],
        }
    gpus = gpu_devices()
    if not gpus:
        raise BuildError("building a TensorRT engine needs an NVIDIA GPU (TensorRT tunes kernels on it); none found. "
                         "Use --backend tensorrt-rtx (builds without a GPU) or --backend onnxruntime")
    gpu = gpus[0]
    return {"kind": "cuda", "name": gpu["name"], "compute_capability": gpu["compute_capability"], "sm": gpu["sm"]}


def timing_cache_path(out_dir: Path, backend: str, version: str, device: dict[str, Any]) -> Path | None:
    if backend != "tensorrt":
        return None
    return out_dir / f".timing-cache-tensorrt-{version}-{str(device.get('sm', 'gpu')).lower()}.bin"


def build(
    model_path: str | Path,
    out_path: str | Path,
    *,
    backend: str,
    profile: Profile,
    device: dict[str, Any],
    mcns: str = "function",
    timing_cache: Path | None = None,
    workspace_mb: int | None = None,
) -> dict[str, Any]:
    """Parse ``model_path``, build a serialized engine into ``out_path``; returns build info."""
    trt = import_trt(backend, f"building {backend_label(backend)} engines")
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    if hasattr(creation, "EXPLICIT_BATCH"):  # TensorRT 8/9 need it; deprecated no-op in 10
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    strongly_typed = bool(network.get_flag(creation.STRONGLY_TYPED)) if hasattr(creation, "STRONGLY_TYPED") else False
    parser = trt.OnnxParser(network, logger)
    parse_path = Path(model_path)
    marked_copy = None
    if mcns == "plugin":
        # The node attribute plugin_namespace="sgf" is what makes the parser import the node as the
        # registered plugin (ENABLE_PLUGIN_OVERRIDE alone keeps inlining the function): mark a copy.
        import onnx

        from ..plugins import mark_mcns_nodes_for_plugin

        proto = onnx.load(str(model_path))
        if not mark_mcns_nodes_for_plugin(proto):
            raise BuildError(f"{model_path}: --mcns plugin, but the model has no sgf.MCNS node")
        marked_copy = Path(out_path).with_name(Path(out_path).name + ".plugin.onnx")
        onnx.save(proto, str(marked_copy))
        parse_path = marked_copy
        parser.set_flag(trt.OnnxParserFlag.ENABLE_PLUGIN_OVERRIDE)
    try:
        parsed = parser.parse_from_file(str(parse_path))
    finally:
        if marked_copy is not None:
            marked_copy.unlink(missing_ok=True)
    if not parsed:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors()
        first = errors[0].replace("\n", " ") if errors else "unknown parser error"
        raise BuildError(f"{model_path}: the {backend_label(backend)} ONNX parser refused the model: {first[:300]}")
    plugin_layers = sum(
        1 for i in range(network.num_layers)
        if "PLUGIN" in str(network.get_layer(i).type)
    )
    if mcns == "plugin" and plugin_layers == 0:
        raise BuildError(f"{model_path}: --mcns plugin, but the {backend_label(backend)} parser inlined the MCNS function "
                         "instead of importing the sgf::MCNS plugin")

    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    needs_profile = False
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            needs_profile = True
            if profile.dynamic:
                raise BuildError(f"{model_path}: {backend_label(backend)} needs an optimisation profile for dynamic input {tensor.name}")
            opt_profile.set_shape(tensor.name, profile.min, profile.opt, profile.max)
    if needs_profile:
        config.add_optimization_profile(opt_profile)

    targets = device.get("targets") if backend == "tensorrt-rtx" else None
    if targets and device.get("targets_source") == "--targets":
        config.num_compute_capabilities = len(targets)
        for index, target in enumerate(targets):
            cc = getattr(trt.ComputeCapability, target, None)
            if cc is None:
                known = [n for n in dir(trt.ComputeCapability) if n.startswith("SM")]
                raise BuildError(f"{backend_label(backend)} {trt.__version__} cannot target {target}; it knows {', '.join(known)}")
            config.set_compute_capability(cc, index)

    cache = None
    if timing_cache is not None:
        data = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = logger.errors()
        raise BuildError(
            f"{model_path}: {backend_label(backend)} {trt.__version__} failed to build the engine: "
            f"{(errors[0] if errors else 'no error message').replace(chr(10), ' ')[:300]}"
        )
    Path(out_path).write_bytes(bytes(serialized))
    if cache is not None and timing_cache is not None:
        write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()), overwrite=True)
    return {
        "strongly_typed": strongly_typed,
        "network_flags": int(flags),
        "mcns_import": "sgf::MCNS v1 plugin (IPluginV3, Python)" if mcns == "plugin" else "sgf::MCNS function inlined by the ONNX parser",
        "plugin_layers": plugin_layers,
        "timing_cache": str(timing_cache) if timing_cache is not None else None,
        "runtime_cache": "TensorRT-RTX compiles kernels for the GPU at first load; the runner keeps them in "
                         "<engine>.runtime-cache" if backend == "tensorrt-rtx" else None,
        "layers": int(network.num_layers),
        "warnings": [m for s, m in logger.messages if s == "WARNING"][:10],
    }
