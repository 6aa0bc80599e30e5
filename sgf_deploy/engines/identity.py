"""Engine identity: backends, their versions, the device an engine is built for, optimisation
profiles, and the artefact name that follows from them.

An engine is only valid for what determined it (DESIGN.md section 6): the model (ONNX sha256),
the backend and its exact version, the precision and the options of the precision conversion, the
device (CPU + ONNX Runtime execution provider; GPU compute capability for TensorRT; the
ahead-of-time compute-capability targets for TensorRT-RTX) and the optimisation profile. The file
name carries all of these in readable form (options as a short hash), the manifest beside it the
full detail.

Imports only the standard library and numpy; GPUs are found through NVML (``libnvidia-ml``) with
ctypes, so no CUDA Python package and never torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import importlib.util
import json
import os
import platform
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import InputError, MissingDependencyError

BACKENDS: tuple[str, ...] = ("onnxruntime", "openvino", "tensorrt", "tensorrt-rtx")
BACKEND_CHOICES: tuple[str, ...] = ("auto",) + BACKENDS
TRT_MODULES: dict[str, str] = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
BACKEND_TOKENS: dict[str, str] = {"onnxruntime": "ort", "openvino": "ov", "tensorrt": "trt", "tensorrt-rtx": "rtx"}
BACKEND_LABELS: dict[str, str] = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tensorrt": "TensorRT",
                                   "tensorrt-rtx": "TensorRT-RTX"}
EXTRAS: dict[str, str] = {"onnxruntime": "gpu", "openvino": "openvino", "tensorrt": "trt", "tensorrt-rtx": "rtx"}
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
ENGINE_SUFFIX: dict[str, str] = {"onnxruntime": ".onnx", "openvino": ".xml", "tensorrt": ".engine", "tensorrt-rtx": ".engine"}

# TensorRT-RTX builds ahead of time without a GPU; with no compute capability set, its engines run
# on compute capability 8.0, 8.6, 8.9 and 12.0 (Ampere incl. A100, Ada, Blackwell RTX); not 9.0
# (Hopper) and not 7.5 (Turing) unless asked for (TensorRT-RTX "CPU-only AOT" documentation).
RTX_DEFAULT_TARGETS: tuple[str, ...] = ("SM80", "SM86", "SM89", "SM120")

# Default TensorRT optimisation profile for an ONNX file with dynamic N, H, W: narrow around the
# slice sizes of real data (fastMRI 320x320 crops, simulator 240x200 padded, brain 256x256).
OV_MAX_BATCH = 64  # OpenVINO engines of an ONNX file with fixed dimensions: the batch range 1..64

DEFAULT_TRT_PROFILE: tuple[tuple[int, int, int, int], ...] = ((1, 1, 64, 64), (1, 1, 320, 320), (4, 1, 512, 512))


def backend_label(backend: str) -> str:
    return BACKEND_LABELS.get(backend, backend)


# ----------------------------------------------------------------------------------- backends
def trt_available(backend: str) -> bool:
    """The Python module of a TensorRT flavour can be found (without importing it)."""
    return importlib.util.find_spec(TRT_MODULES[backend]) is not None


def import_trt(backend: str, purpose: str):
    """``tensorrt`` or ``tensorrt_rtx`` (their Python APIs match), or a one-line install hint."""
    from ..errors import require

    return require(TRT_MODULES[backend], EXTRAS[backend], purpose)


def backend_version(backend: str) -> str:
    """The installed version of ``backend`` (imports it)."""
    if backend == "onnxruntime":
        import onnxruntime

        return str(onnxruntime.__version__)
    if backend == "openvino":
        from ..errors import require  # identity sits below the backends: it never imports openvino/builder

        return str(require("openvino", "openvino", "OpenVINO engines").__version__).split("-")[0]
    return str(import_trt(backend, f"{backend_label(backend)} engines").__version__)


def resolve_backend(name: str) -> str:
    """``auto`` -> ``tensorrt`` when its module is importable and an NVIDIA GPU is present, else
    ``onnxruntime`` (``build`` then measures whether OpenVINO is faster on this CPU:
    :mod:`sgf_deploy.engines.openvino.choice`). TensorRT-RTX is never picked automatically: it is chosen by name (it builds
    without a GPU, so picking it on a CPU-only machine would give an engine this machine can't run)."""
    name = str(name).lower().replace("_", "-")
    if name in ("trt", "tensorrt11"):
        name = "tensorrt"
    if name in ("rtx", "trt-rtx", "tensorrtrtx"):
        name = "tensorrt-rtx"
    if name in ("ort",):
        name = "onnxruntime"
    if name in ("ov", "open-vino"):
        name = "openvino"
    if name == "auto":
        return "tensorrt" if trt_available("tensorrt") and gpu_devices() else "onnxruntime"
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_CHOICES)}")
    if name == "openvino":
        if importlib.util.find_spec("openvino") is None:
            raise MissingDependencyError("the OpenVINO backend needs the Python package 'openvino', which is not installed; "
                                         f"install it with: pip install 'sgf-deploy[{EXTRAS[name]}]'")
        return name
    if name != "onnxruntime" and not trt_available(name):
        raise MissingDependencyError(
            f"the {backend_label(name)} backend needs the Python package '{TRT_MODULES[name]}', which is not "
            f"installed; install it with: pip install 'sgf-deploy[{EXTRAS[name]}]'"
            + (" (full TensorRT is installed from NVIDIA's package index)" if name == "tensorrt" else "")
        )
    return name


# ------------------------------------------------------------------------------------ devices
def cpu_device() -> dict[str, Any]:
    """The CPU this process runs on: model name, architecture, logical cores."""
    name = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kind": "cpu",
        "name": name or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
    }


@lru_cache(maxsize=1)
def gpu_devices() -> tuple[dict[str, Any], ...]:
    """NVIDIA GPUs visible through NVML: ``({"index", "name", "compute_capability": "8.9", "sm":
    "SM89"}, ...)``; empty when there is no driver or no GPU. Never raises."""
    lib = None
    for candidate in ("libnvidia-ml.so.1", "libnvidia-ml.so", "nvml.dll"):
        try:
            lib = ctypes.CDLL(candidate)
            break
        except OSError:
            continue
    if lib is None:
        return ()
    try:
        if lib.nvmlInit_v2() != 0:
            return ()
    except AttributeError:
        return ()
    found = []
    try:
        count = ctypes.c_uint(0)
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return ()
        for index in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                continue
            name = ctypes.create_string_buffer(96)
            lib.nvmlDeviceGetName(handle, name, 96)
            major, minor = ctypes.c_int(0), ctypes.c_int(0)
            lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor))
            found.append({
                "index": index,
                "name": name.value.decode(errors="replace"),
                "compute_capability": f"{major.value}.{minor.value}",
                "sm": f"SM{major.value}{minor.value}",
            })
    except Exception:  # noqa: BLE001 - a broken driver means "no usable GPU", never a crash
        return tuple(found)
    finally:
        try:
            lib.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    return tuple(found)


def normalize_targets(targets: Any) -> tuple[str, ...]:
    """``"sm86,8.9"`` / ``["SM86", "8.9"]`` -> ``("SM86", "SM89")``."""
    if targets is None:
        return ()
    items = targets.split(",") if isinstance(targets, str) else list(targets)
    out = []
    for item in items:
        text = str(item).strip().upper().replace("SM_", "SM")
        if not text:
            continue
        if re.fullmatch(r"\d+\.\d+", text):
            text = "SM" + text.replace(".", "")
        if not re.fullmatch(r"SM\d{2,3}", text):
            raise InputError(f"compute capability target {item!r} not understood; use e.g. sm86 or 8.9")
        out.append(text)
    return tuple(dict.fromkeys(out))


# ----------------------------------------------------------------------------------- profiles
Shape = tuple[int, int, int, int]


@dataclass(frozen=True)
class Profile:
    """Optimisation profile for the inputs ``reference`` and ``target`` (both the same shape).

    ``min``/``opt``/``max`` are ``(N, 1, H, W)``; all three ``None`` means "any shape the model
    accepts" (ONNX Runtime with a dynamic ONNX file and no ``--shapes``)."""

    min: Shape | None
    opt: Shape | None
    max: Shape | None
    source: str = "default"

    @property
    def dynamic(self) -> bool:
        return self.min is None

    @property
    def static(self) -> bool:
        return self.min is not None and self.min == self.max

    def token(self) -> str:
        """For the file name: ``dyn``, ``1x320x320`` (static) or ``1x64x64-1x320x320-4x512x512``."""
        if self.dynamic:
            return "dyn"
        if self.static:
            return _nhw(self.min)
        return "-".join(_nhw(s) for s in (self.min, self.opt, self.max))

    def to_manifest(self) -> dict[str, Any]:
        return {
            "min": list(self.min) if self.min else None,
            "opt": list(self.opt) if self.opt else None,
            "max": list(self.max) if self.max else None,
            "inputs": ["reference", "target"],
            "layout": "N,1,H,W",
            "source": self.source,
        }

    @classmethod
    def from_manifest(cls, data: Any) -> "Profile":
        data = data if isinstance(data, dict) else {}
        for per_input in ("target", "reference"):  # per-input profiles: both inputs share one shape
            if isinstance(data.get(per_input), dict):
                data = data[per_input]
                break

        def shape(key: str) -> Shape | None:
            value = data.get(key)
            if isinstance(value, (list, tuple)) and len(value) == 4:
                return tuple(int(v) for v in value)  # type: ignore[return-value]
            return None

        return cls(shape("min"), shape("opt"), shape("max"), str(data.get("source", "manifest")))

    def contains(self, shape: tuple[int, ...]) -> bool:
        if self.dynamic:
            return True
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))  # type: ignore[arg-type]

    @property
    def static_batch(self) -> int | None:
        """The batch every call must have, when the batch dimension is fixed."""
        if self.min and self.max and self.min[0] == self.max[0]:
            return self.min[0]
        return None

    def choose_batch(self, requested: int | None, default: int) -> int:
        """The batch to run with: the static batch, else ``requested`` (or the profile's optimum,
        else ``default``) clamped to the profile's range."""
        if requested is not None and int(requested) < 1:
            raise InputError(f"batch must be >= 1, got {requested}")
        if self.static_batch:
            return self.static_batch
        batch = int(requested) if requested else (self.opt[0] if self.opt else int(default))
        if self.max:
            batch = min(batch, self.max[0])
        if self.min:
            batch = max(batch, self.min[0])
        return max(1, batch)

    def spatial_problem(self, padded: tuple[int, int], original: tuple[int, int]) -> str | None:
        """Why slices of ``original`` size (``padded`` after the contract's padding) do not fit,
        or None when they do."""
        if self.dynamic:
            return None
        (hp, wp), (h, w) = padded, original
        lo, hi = self.min, self.max
        if lo[2] <= hp <= hi[2] and lo[3] <= wp <= hi[3]:  # type: ignore[index]
            return None
        if (lo[2], lo[3]) == (hi[2], hi[3]):  # type: ignore[index]
            allowed = f"exactly {hi[2]}x{hi[3]}"  # type: ignore[index]
        else:
            allowed = f"{lo[2]}x{lo[3]} to {hi[2]}x{hi[3]}"  # type: ignore[index]
        return (f"this engine accepts padded slices of {allowed}; the input's {h}x{w} slices pad to {hp}x{wp}; "
                "rebuild the engine for this size (sgf-deploy build --shapes) or use another")

    def describe(self) -> str:
        if self.dynamic:
            return "any N, H, W"
        if self.static:
            return "x".join(map(str, self.min))  # type: ignore[arg-type]
        return " .. ".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))  # type: ignore[arg-type]


def _nhw(shape: Shape) -> str:
    return f"{shape[0]}x{shape[2]}x{shape[3]}"


def _parse_one(text: str, what: str) -> Shape:
    parts = [p for p in re.split(r"[x,*]", text.strip().lower()) if p != ""]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"--shapes: cannot read {what} shape {text!r}; use NxCxHxW, NxHxW or HxW, e.g. 1x1x320x320") from None
    if len(dims) == 2:
        dims = [1, 1] + dims
    elif len(dims) == 3:
        dims = [dims[0], 1, dims[1], dims[2]]
    if len(dims) != 4:
        raise InputError(f"--shapes: {what} shape {text!r} must have 2 (HxW), 3 (NxHxW) or 4 (NxCxHxW) numbers")
    if dims[1] != 1:
        raise InputError(f"--shapes: {what} shape {text!r} has {dims[1]} channels; SGF-MRI inputs have 1")
    if min(dims) < 1:
        raise InputError(f"--shapes: {what} shape {text!r} has a dimension < 1")
    return tuple(dims)  # type: ignore[return-value]


def parse_shapes(text: str | None, size_multiple: int = 8) -> Profile | None:
    """``"MIN:OPT:MAX"`` (or one shape for a static profile) -> :class:`Profile`; ``None`` -> ``None``.

    Shapes are ``NxCxHxW``, ``NxHxW`` or ``HxW``; H and W must be multiples of ``size_multiple``
    (the engine sees padded slices) and ``min <= opt <= max`` in every dimension."""
    if text is None or str(text).strip() == "":
        return None
    pieces = str(text).split(":")
    if len(pieces) == 1:
        lo = opt = hi = _parse_one(pieces[0], "the")
    elif len(pieces) == 3:
        lo, opt, hi = (_parse_one(p, w) for p, w in zip(pieces, ("MIN", "OPT", "MAX")))
    else:
        raise InputError(f"--shapes {text!r}: expected MIN:OPT:MAX (e.g. 1x1x64x64:1x1x320x320:4x1x512x512) or one shape")
    for shape, what in ((lo, "MIN"), (opt, "OPT"), (hi, "MAX")):
        if shape[2] % size_multiple or shape[3] % size_multiple:
            raise InputError(
                f"--shapes: {what} {'x'.join(map(str, shape))}: H and W must be multiples of {size_multiple} "
                "(engines see slices edge-padded to that multiple)"
            )
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise InputError(f"--shapes {text!r}: need MIN <= OPT <= MAX in every dimension")
    return Profile(lo, opt, hi, "--shapes")


def onnx_input_shape(model: Any) -> tuple[Any, ...]:
    """The (N, C, H, W) of the ``target`` input: ints for fixed dims, ``None`` for dynamic ones."""
    inputs = {i.name: i for i in model.graph.input}
    value = inputs.get("target") or model.graph.input[0]
    dims = []
    for d in value.type.tensor_type.shape.dim:
        dims.append(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None)
    return tuple(dims)


def resolve_profile(backend: str, requested: Profile | None, onnx_shape: tuple[Any, ...], source: str) -> Profile:
    """The profile an engine is built with.

    * ``--shapes`` given: it, checked against the ONNX file's fixed dimensions.
    * Static ONNX file (all of N, H, W fixed): exactly that shape.
    * Otherwise ONNX Runtime: dynamic (any shape); TensorRT: :data:`DEFAULT_TRT_PROFILE` with its
      fixed dimensions (if any) taken from the ONNX file.
    """
    if len(onnx_shape) != 4:
        raise InputError(f"{source}: input 'target' has rank {len(onnx_shape)}; expected (N, 1, H, W)")
    if requested is not None:
        for axis, fixed in enumerate(onnx_shape):
            if fixed is not None and not (requested.min[axis] == requested.max[axis] == fixed):  # type: ignore[index]
                raise InputError(
                    f"{source}: the ONNX input is fixed at {'x'.join(str(d or '?') for d in onnx_shape)}; "
                    f"--shapes {requested.describe()} does not match it (export again without --static, or drop --shapes)"
                )
        return requested
    if all(d is not None for d in onnx_shape):
        shape = tuple(int(d) for d in onnx_shape)
        return Profile(shape, shape, shape, "static ONNX input")  # type: ignore[arg-type]
    if backend == "openvino" and any(onnx_shape[axis] is not None for axis in (0, 2, 3)):
        # OpenVINO compiles a static copy per input shape: keep the file's fixed H, W in the profile
        # so inputs of another size are refused up front (and parity slices are fitted to it).
        lo = tuple(fixed if fixed is not None else d for fixed, d in zip(onnx_shape, (1, 1, 8, 8)))
        hi = tuple(fixed if fixed is not None else d for fixed, d in zip(onnx_shape, (OV_MAX_BATCH, 1, 4096, 4096)))
        return Profile(lo, lo, hi, "ONNX input's fixed dimensions")  # type: ignore[arg-type]
    if backend in ("onnxruntime", "openvino"):
        return Profile(None, None, None, f"dynamic ONNX input ({backend_label(backend)} accepts any N, H, W)")
    shapes = []
    for default in DEFAULT_TRT_PROFILE:
        shapes.append(tuple(fixed if fixed is not None else d for fixed, d in zip(onnx_shape, default)))
    lo, opt, hi = shapes
    # A fixed H or W larger than the default range: keep the profile ordered.
    return Profile(lo, opt, hi, "default (min 1x1x64x64, opt 1x1x320x320, max 4x1x512x512)")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------- names
def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:6]


def device_token(backend: str, device: dict[str, Any]) -> str:
    """``cpu-x86_64``, ``cuda-sm89`` (ONNX Runtime), ``sm89`` (TensorRT), ``sm80-86-89-120`` (RTX)."""
    if backend == "tensorrt-rtx":
        targets = device.get("targets") or []
        return "sm" + "-".join(t.upper().replace("SM", "") for t in targets)
    if backend == "tensorrt":
        return str(device.get("sm", "sm")).lower()
    if device.get("kind") == "cuda":
        return f"cuda-{str(device.get('sm', '')).lower()}"
    return f"cpu-{device.get('arch', platform.machine())}"


def engine_filename(onnx_stem: str, backend: str, version: str, precision_token: str, device_tok: str,
                    profile: Profile) -> str:
    """``<onnx stem>.<backend>-<version>.<precision>.<device or targets>.<profile><ext>``, e.g.
    ``sgf_mri-lite-recon4x-t1-t2-1a2b3c4d.ort-1.32.0.int8.cpu-x86_64.dyn.onnx``."""
    return (f"{onnx_stem}.{BACKEND_TOKENS[backend]}-{version}.{precision_token}.{device_tok}."
            f"{profile.token()}{ENGINE_SUFFIX[backend]}")
