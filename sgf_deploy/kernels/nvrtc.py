"""Run-time compilation (NVRTC) and launch (CUDA driver API) of the fused MCNS kernel.

Why NVRTC through ``cuda-python`` rather than ``torch.utils.cpp_extension.load_inline``: the same
``mcns.cu`` serves the PyTorch op *and* the TensorRT plugin, and the engines stage must not import
torch; NVRTC is a pip wheel (``nvidia-cuda-nvrtc``) that needs neither nvcc, a host compiler, ninja
nor the CUDA toolkit on the user's machine, compiles the kernel in well under a second, and
compiles **without a GPU** (so CI checks that the source compiles). ``load_inline`` would need all
of those plus a CUDA build of torch, and a minute of C++ compilation on first use.

This module imports neither torch nor tensorrt; ``cuda.bindings`` is imported lazily and its
absence raises :class:`~sgf_deploy.errors.MissingDependencyError` with the install line.

Compilation targets: a CUBIN for the device's exact ``sm_XY`` when this NVRTC supports it (a CUBIN
also loads on a driver older than the NVRTC within the same major version, PTX does not), else
PTX for the newest ``compute_XY`` not above the device, which the driver JIT-compiles.
"""

from __future__ import annotations

import functools
import threading
from importlib import resources

import numpy as np

from sgf_deploy.errors import MissingDependencyError, SgfError

SOURCE_NAME = "mcns.cu"
KERNEL_NAMES = {"float32": "sgf_mcns_f32", "float16": "sgf_mcns_f16"}
BLOCK = 128  # threads per block; the kernel uses ~96 registers/thread (no spills, sm_86)
OUT_PER_GROUP = 32
NVRTC_OPTIONS = ("--fmad=true", "-default-device")
_INSTALL = "pip install 'cuda-bindings>=13,<14' 'nvidia-cuda-nvrtc>=13,<14'"


class KernelError(SgfError):
    """The MCNS kernel could not be compiled, loaded or launched (message carries the log)."""


def _import_bindings():
    """``(nvrtc, driver)`` from cuda-python (``cuda.bindings`` >= 12.6, else the old ``cuda``)."""
    try:
        from cuda.bindings import driver, nvrtc  # type: ignore[import-not-found]
    except ImportError:
        try:
            from cuda import cuda as driver  # type: ignore[import-not-found,no-redef]
            from cuda import nvrtc  # type: ignore[import-not-found,no-redef]
        except ImportError as exc:
            raise MissingDependencyError(
                f"the fused MCNS kernel needs NVIDIA's cuda-python bindings and NVRTC ({exc}); "
                f"install them with: {_INSTALL}"
            ) from None
    return nvrtc, driver


def nvrtc_module():
    """The ``nvrtc`` bindings module (raises MissingDependencyError when absent)."""
    return _import_bindings()[0]


def driver_module():
    """The CUDA driver-API bindings module (raises MissingDependencyError when absent)."""
    return _import_bindings()[1]


def nvrtc_available() -> bool:
    """True when the NVRTC bindings import *and* the NVRTC library loads (no GPU needed)."""
    try:
        nvrtc_version()
    except (MissingDependencyError, KernelError, OSError, RuntimeError):
        return False
    return True


def kernel_source() -> str:
    """The CUDA source of the kernel (``sgf_deploy/kernels/mcns.cu``)."""
    return resources.files("sgf_deploy.kernels").joinpath(SOURCE_NAME).read_text(encoding="utf-8")


def _check(result, what: str):
    """Unwrap a cuda-python ``(status, *values)`` tuple, raising KernelError on failure."""
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:
        raise KernelError(f"{what} failed: {_error_name(status)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _error_name(status) -> str:
    try:
        nvrtc, driver = _import_bindings()
        if isinstance(status, nvrtc.nvrtcResult):
            return nvrtc.nvrtcGetErrorString(status)[1].decode()
        err, name = driver.cuGetErrorName(status)
        if int(err) == 0:
            return name.decode()
    except Exception:  # pragma: no cover - best effort only
        pass
    return repr(status)


def nvrtc_version() -> tuple[int, int]:
    nvrtc = nvrtc_module()
    try:
        major, minor = _check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    except Exception as exc:  # the bindings import but libnvrtc is missing
        if isinstance(exc, KernelError):
            raise
        raise MissingDependencyError(
            f"the fused MCNS kernel needs the NVRTC library ({type(exc).__name__}: {exc}); install it with: {_INSTALL}"
        ) from None
    return int(major), int(minor)


def supported_archs() -> list[int]:
    """Compute capabilities (e.g. 86 for sm_86) this NVRTC can compile for, ascending."""
    return sorted(int(a) for a in _check(nvrtc_module().nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs"))


def pick_target(cc_major: int, cc_minor: int, archs: list[int] | None = None) -> tuple[str, str]:
    """``(--gpu-architecture value, "cubin"|"ptx")`` for a device of compute capability X.Y."""
    cc = 10 * int(cc_major) + int(cc_minor)
    archs = supported_archs() if archs is None else sorted(archs)
    if not archs:
        raise KernelError("this NVRTC reports no supported GPU architecture")
    if cc in archs:
        return f"sm_{cc}", "cubin"
    older = [a for a in archs if a <= cc]
    if not older:
        raise KernelError(
            f"GPU compute capability {cc_major}.{cc_minor} is older than anything this NVRTC supports "
            f"(oldest sm_{archs[0]}); install an older nvidia-cuda-nvrtc"
        )
    return f"compute_{older[-1]}", "ptx"


@functools.lru_cache(maxsize=16)
def compile_mcns(arch: str = "compute_80", output: str = "ptx") -> bytes:
    """Compile ``mcns.cu`` with NVRTC; ``output`` "ptx" (``compute_XY``) or "cubin" (``sm_XY``).

    Needs no GPU. Raises KernelError with NVRTC's log when compilation fails.
    """
    if output not in ("ptx", "cubin"):
        raise ValueError(f"output must be 'ptx' or 'cubin'; got {output!r}")
    nvrtc = nvrtc_module()
    nvrtc_version()  # a clear error when the library itself is missing
    prog = _check(nvrtc.nvrtcCreateProgram(kernel_source().encode(), SOURCE_NAME.encode(), 0, [], []), "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in NVRTC_OPTIONS)]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        log_size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        # Output buffers are bytearrays: NVRTC writes into them, and the common idiom b" " * n
        # would, for n == 1 (an empty log), overwrite CPython's shared one-byte bytes object b" ".
        log = bytearray(int(log_size))
        nvrtc.nvrtcGetProgramLog(prog, log)
        if int(status) != 0:
            raise KernelError(
                f"NVRTC could not compile {SOURCE_NAME} for {arch}: {_error_name(status)}: "
                + bytes(log).decode(errors="replace").rstrip("\x00 \n").replace("\n", " | ")
            )
        get_size, get = (
            (nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX) if output == "ptx" else (nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN)
        )
        size = _check(get_size(prog), f"nvrtcGet{output.upper()}Size")
        image = bytearray(int(size))
        _check(get(prog, image), f"nvrtcGet{output.upper()}")
        return bytes(image)
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class _ContextKernels:
    """The two kernel functions loaded into one CUDA context."""

    def __init__(self, driver, module) -> None:
        self.module = module
        self.functions = {
            dtype: _check(driver.cuModuleGetFunction(module, name.encode()), f"cuModuleGetFunction({name})")
            for dtype, name in KERNEL_NAMES.items()
        }


_LOADED: dict[int, _ContextKernels] = {}
_LOCK = threading.Lock()


def _current_context(driver, device_ordinal: int | None):
    """The context current on this thread; else the primary context of ``device_ordinal`` (or 0)."""
    try:
        _check(driver.cuInit(0), "cuInit")
    except KernelError:
        raise
    except Exception as exc:  # cuda-pathfinder: no libcuda.so (no NVIDIA driver on this machine)
        raise KernelError(f"the fused MCNS kernel needs an NVIDIA GPU driver: {type(exc).__name__}: {exc}") from None
    ctx = _check(driver.cuCtxGetCurrent(), "cuCtxGetCurrent")
    if ctx is None or int(ctx) == 0:
        dev = _check(driver.cuDeviceGet(int(device_ordinal or 0)), "cuDeviceGet")
        ctx = _check(driver.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _check(driver.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    return ctx


def _kernels_for_current_context(device_ordinal: int | None = None) -> _ContextKernels:
    driver = driver_module()
    ctx = _current_context(driver, device_ordinal)
    key = int(ctx)
    with _LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            dev = _check(driver.cuCtxGetDevice(), "cuCtxGetDevice")
            attr = driver.CUdevice_attribute
            major = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")
            minor = _check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")
            arch, output = pick_target(int(major), int(minor))
            image = compile_mcns(arch, output)
            module = _check(driver.cuModuleLoadData(image), f"cuModuleLoadData({arch} {output})")
            loaded = _LOADED[key] = _ContextKernels(driver, module)
    return loaded


def launch_config(n_pixels: int, block: int = BLOCK) -> tuple[int, int]:
    """``(grid, block)``: one thread per output pixel (b, y, x); the kernel grid-strides beyond."""
    if n_pixels <= 0:
        return 0, block
    return min((n_pixels + block - 1) // block, 2**31 - 1), block


def check_problem(b: int, c: int, groups: int, h: int, w: int, eps: float) -> None:
    """Validate sizes before a launch (the kernel trusts them)."""
    if min(b, c, groups, h, w) < 1:
        raise ValueError(f"mcns kernel: empty or negative size (B={b}, C={c}, G={groups}, H={h}, W={w})")
    if c % groups:
        raise ValueError(f"mcns kernel: {c} channels are not divisible into {groups} groups")
    if max(b, c, h, w, OUT_PER_GROUP * groups) >= 2**31:
        raise ValueError("mcns kernel: a dimension does not fit in int32")
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"mcns kernel: eps must be finite and >= 0; got {eps}")


def launch_mcns(
    feat_tar: int,
    feat_ref: int,
    sal_tar: int,
    sal_ref: int,
    out: int,
    *,
    batch: int,
    channels: int,
    groups: int,
    height: int,
    width: int,
    eps: float,
    dtype: str,
    stream: int = 0,
    device_ordinal: int | None = None,
) -> None:
    """Launch the kernel on ``stream`` (asynchronous) with raw device pointers (contiguous NCHW).

    ``dtype`` is "float32" or "float16" for all five tensors. Uses the CUDA context current on
    this thread (PyTorch's and TensorRT's primary context), compiling and loading the kernel into
    it on first use.
    """
    if dtype not in KERNEL_NAMES:
        raise ValueError(f"mcns kernel: dtype must be one of {sorted(KERNEL_NAMES)}; got {dtype!r}")
    check_problem(batch, channels, groups, height, width, eps)
    grid, block = launch_config(batch * height * width)
    if grid == 0:
        return
    driver = driver_module()
    function = _kernels_for_current_context(device_ordinal).functions[dtype]
    args = [np.array([int(p)], dtype=np.uint64) for p in (feat_tar, feat_ref, sal_tar, sal_ref, out)]
    args += [np.array([int(v)], dtype=np.int32) for v in (batch, channels, groups, height, width)]
    args.append(np.array([float(eps)], dtype=np.float32))
    params = np.array([a.ctypes.data for a in args], dtype=np.uint64)
    _check(
        driver.cuLaunchKernel(function, grid, 1, 1, block, 1, 1, 0, driver.CUstream(int(stream)), params.ctypes.data, 0),
        f"cuLaunchKernel({KERNEL_NAMES[dtype]})",
    )
