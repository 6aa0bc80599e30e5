"""mcns.cu compiles (NVRTC from PyPI needs no GPU; nvcc too where installed), and the pure
parts of the launcher: target choice, launch geometry, argument checks, error messages."""

import shutil
import subprocess
import sys

import pytest

from sgf_deploy.errors import MissingDependencyError
from sgf_deploy.kernels import nvrtc as kn

NVRTC_SKIP = "cuda-python (cuda.bindings) and nvidia-cuda-nvrtc are not installed: pip install 'cuda-bindings>=13,<14' 'nvidia-cuda-nvrtc>=13,<14'"
needs_nvrtc = pytest.mark.skipif(not kn.nvrtc_available(), reason=NVRTC_SKIP)


@needs_nvrtc
def test_compiles_to_ptx_without_a_gpu():
    ptx = kn.compile_mcns("compute_75", "ptx").decode()
    assert ".entry sgf_mcns_f32(" in ptx and ".entry sgf_mcns_f16(" in ptx
    assert ".target sm_75" in ptx
    # the half variant converts through cvt (no cuda_fp16.h needed)
    assert "cvt.f32.f16" in ptx and "cvt.rn.f16.f32" in ptx
    # no local-memory spills of the per-thread accumulators
    assert ".local" not in ptx


@needs_nvrtc
def test_compiles_a_cubin_for_every_supported_architecture():
    archs = kn.supported_archs()
    assert 80 in archs and 86 in archs  # A100 / Ampere RTX at least
    for cc in archs:
        arch, output = kn.pick_target(cc // 10, cc % 10, archs)
        assert (arch, output) == (f"sm_{cc}", "cubin")
        image = kn.compile_mcns(arch, output)
        assert image[:4] == b"\x7fELF", f"sm_{cc}: not an ELF cubin"


@needs_nvrtc
def test_compile_error_carries_the_nvrtc_log(monkeypatch):
    monkeypatch.setattr(kn, "kernel_source", lambda: 'extern "C" __global__ void k() { undeclared_thing; }')
    kn.compile_mcns.cache_clear()
    try:
        with pytest.raises(kn.KernelError, match="undeclared_thing"):
            kn.compile_mcns("compute_80", "ptx")
    finally:
        kn.compile_mcns.cache_clear()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_nvcc_compiles_the_same_source_warning_free(tmp_path):
    src = tmp_path / "mcns.cu"
    src.write_text(kn.kernel_source())
    out = tmp_path / "mcns.ptx"
    proc = subprocess.run(
        ["nvcc", "-ptx", "-arch=compute_80", "-Werror", "all-warnings", "-o", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert ".entry sgf_mcns_f16(" in out.read_text()


def test_pick_target_prefers_exact_cubin_then_newest_older_ptx():
    archs = [75, 80, 86, 89, 90, 100, 120]
    assert kn.pick_target(8, 6, archs) == ("sm_86", "cubin")
    assert kn.pick_target(8, 7, archs) == ("compute_86", "ptx")  # not supported exactly: JIT from PTX
    assert kn.pick_target(13, 0, archs) == ("compute_120", "ptx")  # newer than this NVRTC
    with pytest.raises(kn.KernelError, match="older than anything"):
        kn.pick_target(7, 0, archs)


def test_launch_config_one_thread_per_pixel():
    assert kn.launch_config(0) == (0, kn.BLOCK)
    assert kn.launch_config(1) == (1, kn.BLOCK)
    assert kn.launch_config(4 * 160 * 160) == ((4 * 160 * 160 + kn.BLOCK - 1) // kn.BLOCK, kn.BLOCK)


@pytest.mark.parametrize(
    "args,match",
    [
        ((1, 6, 4, 3, 3, 1e-6), "not divisible"),
        ((0, 8, 2, 3, 3, 1e-6), "empty"),
        ((1, 8, 2, 3, 3, float("nan")), "eps"),
        ((1, 8, 2, 3, 3, -1.0), "eps"),
    ],
)
def test_problem_checks(args, match):
    with pytest.raises(ValueError, match=match):
        kn.check_problem(*args)


def test_bad_dtype_is_refused_before_touching_cuda():
    with pytest.raises(ValueError, match="dtype"):
        kn.launch_mcns(1, 2, 3, 4, 5, batch=1, channels=8, groups=2, height=4, width=4, eps=1e-6, dtype="bfloat16")


@needs_nvrtc
def test_launch_without_a_driver_is_a_clear_error():
    try:
        import cuda.bindings.driver as driver

        has_driver = int(driver.cuInit(0)[0]) == 0
    except Exception:
        has_driver = False
    if has_driver:
        pytest.skip("this machine has an NVIDIA driver; the GPU tests cover launching")
    with pytest.raises(kn.KernelError, match="driver"):
        kn.launch_mcns(1, 2, 3, 4, 5, batch=1, channels=8, groups=2, height=4, width=4, eps=1e-6, dtype="float32")


def test_missing_cuda_python_raises_missing_dependency(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.driver", "cuda.bindings.nvrtc"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import` fail
    with pytest.raises(MissingDependencyError, match="nvidia-cuda-nvrtc"):
        kn.nvrtc_module()
    assert kn.nvrtc_available() is False


def test_kernels_package_imports_nothing_heavy():
    code = (
        "import sys, sgf_deploy.kernels, sgf_deploy.kernels.nvrtc, sgf_deploy.kernels.emulate;"
        "bad = [m for m in ('torch', 'tensorrt', 'tensorrt_rtx', 'cuda') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@needs_nvrtc
def test_compiling_leaves_python_bytes_objects_alone():
    """NVRTC writes into the buffers it is given; an empty log must not clobber b" " (CPython shares it)."""
    kn.compile_mcns.cache_clear()
    kn.compile_mcns("compute_80", "ptx")
    assert b" ".hex() == "20"  # read at run time (b" " == bytes([32]) compares the shared object with itself)
