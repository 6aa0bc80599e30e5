"""torch.ops.sgf.mcns with the fused kernel: harmless without CUDA, wiring checked on the CPU,
and (on a GPU machine only) the kernel against the eager composite, forward and backward."""

import os
import subprocess
import sys

import pytest
import torch

from sgf_deploy.kernels import nvrtc, torch_cuda
from sgf_deploy.model.mcns import OUT_PER_GROUP, _check, maybe_register_fused_kernel, mcns_reference

NO_GPU = "needs a CUDA GPU (none on this machine); run on a GPU machine: pytest tests/kernels"
# Pretend this machine has CUDA and NVRTC, so that in a subprocess the registration decision runs
# as on a GPU machine (on a real GPU machine this changes nothing).
FAKE_CUDA = (
    "import torch\n"
    "torch.cuda.is_available = lambda: True\n"
    "import sgf_deploy.kernels.nvrtc as n\n"
    "n.nvrtc_available = lambda: True\n"
)
HAS_CUDA_KERNEL = "torch._C._dispatch_has_kernel_for_dispatch_key('sgf::mcns', 'CUDA')"


def _inputs(b, c, h, w, groups, *, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ft = torch.randn((b, c, h, w), generator=g)
    fr = torch.randn((b, c, h, w), generator=g)
    st = torch.rand((b, groups, h, w), generator=g)
    sr = torch.rand((b, groups, h, w), generator=g)
    return [t.to(device=device, dtype=dtype) for t in (ft, fr, st, sr)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_registration_is_a_no_op_without_cuda():
    assert maybe_register_fused_kernel() is False
    assert torch_cuda.is_registered() is False
    ft, fr, st, sr = _inputs(1, 8, 6, 5, 2)
    torch.testing.assert_close(torch.ops.sgf.mcns(ft, fr, st, sr, 2, 1e-6), mcns_reference(ft, fr, st, sr, 2, 1e-6))


def test_forced_registration_leaves_cpu_dispatch_alone():
    """Registering the CUDA kernel on a CPU-only torch works and CPU calls still take the composite."""
    code = (
        "import torch\n"
        "from sgf_deploy.kernels.torch_cuda import is_registered\n"
        "from sgf_deploy.model.mcns import maybe_register_fused_kernel, mcns_reference\n"
        f"assert not {HAS_CUDA_KERNEL}\n"
        "assert maybe_register_fused_kernel(force=True) and is_registered()\n"
        f"assert {HAS_CUDA_KERNEL}\n"
        "assert maybe_register_fused_kernel(force=True)  # idempotent\n"
        "x = [torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), torch.rand(1, 2, 5, 5), torch.rand(1, 2, 5, 5)]\n"
        "torch.testing.assert_close(torch.ops.sgf.mcns(*x, 2, 1e-6), mcns_reference(*x, 2, 1e-6))\n"
        "y = [t.clone().requires_grad_() for t in x]\n"
        "torch.ops.sgf.mcns(*y, 2, 1e-6).sum().backward()\n"
        "assert all(t.grad is not None for t in y)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_disable_env():
    """SGF_MCNS_KERNEL=0 refuses registration where it would otherwise happen (CUDA and NVRTC
    present, faked here on a CPU-only machine): the op keeps no CUDA kernel of its own, and on a
    real GPU a CUDA call runs the composite (the kernel launch is made to fail to prove it)."""
    code = FAKE_CUDA + (
        "from sgf_deploy.kernels import torch_cuda\n"
        "from sgf_deploy.model.mcns import maybe_register_fused_kernel, mcns_reference\n"
        "assert maybe_register_fused_kernel() is False\n"
        "assert not torch_cuda.is_registered()\n"
        f"assert not {HAS_CUDA_KERNEL}\n"
        "if torch.cuda.device_count():\n"
        "    def no_launch(*a, **k): raise AssertionError('fused kernel launched despite SGF_MCNS_KERNEL=0')\n"
        "    n.launch_mcns = no_launch\n"
        "    x = [torch.randn(1, 4, 5, 5, device='cuda'), torch.randn(1, 4, 5, 5, device='cuda'),\n"
        "         torch.rand(1, 2, 5, 5, device='cuda'), torch.rand(1, 2, 5, 5, device='cuda')]\n"
        "    torch.testing.assert_close(torch.ops.sgf.mcns(*x, 2, 1e-6), mcns_reference(*x, 2, 1e-6))\n"
        "    print('checked on CUDA')\n"
        # control: the same probe does see a registration (so the 'not' above is not vacuous)
        f"assert maybe_register_fused_kernel(force=True) and {HAS_CUDA_KERNEL}\n"
    )
    env = dict(os.environ, **{torch_cuda.DISABLE_ENV: "0"})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert ("checked on CUDA" in proc.stdout) == torch.cuda.is_available()


def test_kernel_output_layout_matches_the_op():
    """The kernel writes nvrtc.OUT_PER_GROUP channels per group; the op declares OUT_PER_GROUP."""
    assert nvrtc.OUT_PER_GROUP == OUT_PER_GROUP


def test_fused_path_only_for_same_device_float32_or_float16():
    ft, fr, st, sr = _inputs(1, 4, 3, 3, 2)
    assert not torch_cuda.fused_path_supported(ft, fr, st, sr)  # CPU tensors
    meta = [t.to("meta") for t in (ft, fr, st, sr)]
    assert not torch_cuda.fused_path_supported(*meta)


def test_unsupported_inputs_fall_back_to_the_composite():
    mcns_cuda = torch_cuda.make_cuda_impl(mcns_reference, _check)
    ft, fr, st, sr = _inputs(2, 6, 4, 7, 3, dtype=torch.float64)
    got = mcns_cuda(ft, fr, st, sr, 3, 1e-6)
    torch.testing.assert_close(got, mcns_reference(ft, fr, st, sr, 3, 1e-6))
    with pytest.raises(ValueError, match="divisible"):
        mcns_cuda(ft, fr, st, sr, 4, 1e-6)


@pytest.mark.parametrize("dtype,name", [(torch.float32, "float32"), (torch.float16, "float16")])
def test_launch_arguments_wiring(dtype, name):
    ft, fr, st, sr = _inputs(2, 8, 5, 7, 4, dtype=dtype)
    out = torch.empty((2, 128, 5, 7), dtype=dtype)
    args = torch_cuda.launch_arguments(ft, fr, st, sr, out, 4, 1e-5)
    assert [args[k] for k in ("feat_tar", "feat_ref", "sal_tar", "sal_ref", "out")] == [
        t.data_ptr() for t in (ft, fr, st, sr, out)
    ]
    assert (args["batch"], args["channels"], args["groups"], args["height"], args["width"]) == (2, 8, 4, 5, 7)
    assert args["eps"] == pytest.approx(1e-5) and args["dtype"] == name


# --------------------------------------------------------------------------------------------
# GPU only: these are what a GPU session runs (they skip here).
# --------------------------------------------------------------------------------------------

GPU_CASES = [(1, 8, 5, 7, 2), (4, 16, 9, 11, 8), (1, 6, 1, 3, 3), (2, 64, 40, 40, 8), (4, 64, 33, 17, 8)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize("b,c,h,w,groups", GPU_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_kernel_matches_eager(b, c, h, w, groups, dtype):
    assert maybe_register_fused_kernel()
    x = _inputs(b, c, h, w, groups, device="cuda", dtype=dtype, seed=b + c + h + w)
    got = torch.ops.sgf.mcns(*x, groups, 1e-6)
    want = mcns_reference(*(t.float() for t in x), groups, 1e-6)
    assert got.dtype == dtype and got.shape == (b, 32 * groups, h, w)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=0, atol=1e-3)
    torch.testing.assert_close(got.float(), want, **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_gpu_backward_still_uses_the_composite():
    assert maybe_register_fused_kernel()
    x = [t.requires_grad_() for t in _inputs(2, 8, 6, 6, 2, device="cuda")]
    y = [t.detach().clone().requires_grad_() for t in x]
    torch.ops.sgf.mcns(*x, 2, 1e-6).square().sum().backward()
    mcns_reference(*y, 2, 1e-6).square().sum().backward()
    for a, b in zip(x, y):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_gpu_non_contiguous_and_side_stream():
    assert maybe_register_fused_kernel()
    x = _inputs(2, 8, 12, 10, 2, device="cuda")
    xt = [t.transpose(2, 3).contiguous().transpose(2, 3) for t in x]  # same values, other strides
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        got = torch.ops.sgf.mcns(*xt, 2, 1e-6)
    stream.synchronize()
    torch.testing.assert_close(got, mcns_reference(*x, 2, 1e-6), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("first", ["from sgf_deploy.kernels import torch_cuda", "import sgf_deploy.model",
                                   "from sgf_deploy.model import SGFMRI", "from sgf_deploy.model.mcns import mcns"])
def test_default_registration_on_import_in_any_import_order(first):
    """On a CUDA machine defining the op (importing sgf_deploy.model.mcns, which building the network
    does) registers the kernel; whichever module is imported first, that must not be a circular import
    (it was, and only showed on a GPU). CUDA and NVRTC are faked so this runs on a CPU-only machine."""
    code = FAKE_CUDA + (
        f"{first}\n"
        "import sgf_deploy.model.mcns\n"
        "from sgf_deploy.kernels import torch_cuda\n"
        "assert torch_cuda.is_registered(), 'not registered by default'\n"
        f"assert {HAS_CUDA_KERNEL}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != torch_cuda.DISABLE_ENV}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)


def test_disable_env_keeps_the_composite_on_import():
    code = FAKE_CUDA + (
        "import sgf_deploy.model.mcns\n"
        "from sgf_deploy.kernels import torch_cuda\n"
        "assert hasattr(torch.ops.sgf, 'mcns')  # the op is defined, without its fused CUDA kernel\n"
        "assert not torch_cuda.is_registered()\n"
        f"assert not {HAS_CUDA_KERNEL}\n"
    )
    env = dict(os.environ, **{torch_cuda.DISABLE_ENV: "0"})
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env=env)
