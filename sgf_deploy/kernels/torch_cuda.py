"""The fused kernel as the CUDA implementation of a PyTorch MCNS op (forward only).

``register_cuda_kernel(op, reference, check)`` registers, for the op's "cuda" device type, a
forward built by :func:`make_cuda_impl`: the fused NVRTC kernel for the inputs it takes and the
caller's ``reference`` (the eager composite) for the rest, so registering never changes which
inputs the op accepts. Only the forward pass changes: the op's autograd formula stays whatever
its owner registered. Registration is a no-op returning False when this torch has no usable
CUDA device, when cuda-python/NVRTC is missing, or when ``SGF_MCNS_KERNEL=0`` -- nothing fails
at import time on a CPU-only machine.

This module knows nothing about :mod:`sgf_deploy.model`: the model side (``sgf_deploy.model.mcns``)
owns the ``sgf::mcns`` op and hands over what the kernel needs, so the dependency runs one way.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

from sgf_deploy.kernels import nvrtc as _nvrtc

#: ``(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps) -> (B, 32*groups, H, W)``: the op's signature.
McnsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float], torch.Tensor]
#: ``(feat_tar, feat_ref, sal_tar, sal_ref, groups) -> None``; raises ValueError on bad shapes.
CheckFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], None]

log = logging.getLogger(__name__)

_DTYPES = {torch.float32: "float32", torch.float16: "float16"}
DISABLE_ENV = "SGF_MCNS_KERNEL"  # "0" keeps the composite on CUDA (for A/B comparisons)
_registered = False


def is_registered() -> bool:
    """True once the fused kernel is the op's CUDA implementation in this process."""
    return _registered


def fused_path_supported(feat_tar, feat_ref, sal_tar, sal_ref) -> bool:
    """Whether the kernel takes these tensors (same CUDA device, all float32 or all float16)."""
    tensors = (feat_tar, feat_ref, sal_tar, sal_ref)
    dtype, device = feat_tar.dtype, feat_tar.device
    return (
        dtype in _DTYPES
        and device.type == "cuda"
        and all(t.dtype == dtype and t.device == device for t in tensors)
    )


def launch_arguments(feat_tar, feat_ref, sal_tar, sal_ref, out, groups: int, eps: float) -> dict:
    """Keyword arguments of :func:`sgf_deploy.kernels.nvrtc.launch_mcns` for contiguous tensors.

    Split out so the wiring (pointer order, sizes, dtype name) is testable without a GPU.
    """
    b, c, h, w = (int(v) for v in feat_tar.shape)
    return dict(
        feat_tar=feat_tar.data_ptr(),
        feat_ref=feat_ref.data_ptr(),
        sal_tar=sal_tar.data_ptr(),
        sal_ref=sal_ref.data_ptr(),
        out=out.data_ptr(),
        batch=b,
        channels=c,
        groups=int(groups),
        height=h,
        width=w,
        eps=float(eps),
        dtype=_DTYPES[feat_tar.dtype],
    )


def fused_forward(feat_tar, feat_ref, sal_tar, sal_ref, groups: int, eps: float) -> torch.Tensor:
    """The fused NVRTC kernel on the current stream, for inputs :func:`fused_path_supported` takes."""
    ft, fr, st, sr = (t.contiguous() for t in (feat_tar, feat_ref, sal_tar, sal_ref))
    b, _, h, w = ft.shape
    out = torch.empty((b, _nvrtc.OUT_PER_GROUP * groups, h, w), dtype=ft.dtype, device=ft.device)
    if out.numel() == 0:
        return out
    with torch.cuda.device(ft.device):  # makes the device's primary context current
        stream = torch.cuda.current_stream(ft.device).cuda_stream
        _nvrtc.launch_mcns(
            **launch_arguments(ft, fr, st, sr, out, groups, eps),
            stream=int(stream),
            device_ordinal=ft.device.index,
        )
    return out


def make_cuda_impl(reference: McnsFn, check: CheckFn) -> McnsFn:
    """The CUDA forward of an MCNS op: ``check`` the inputs, then run the fused kernel when it
    takes them and ``reference`` (without autograd, as a custom op's forward runs) otherwise."""

    def mcns_cuda(feat_tar, feat_ref, sal_tar, sal_ref, groups: int, eps: float) -> torch.Tensor:
        check(feat_tar, feat_ref, sal_tar, sal_ref, groups)
        if not fused_path_supported(feat_tar, feat_ref, sal_tar, sal_ref):
            with torch.no_grad():
                return reference(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps)
        return fused_forward(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps)

    return mcns_cuda


def _kernel_wanted() -> bool:
    """Whether the fused kernel should replace the composite here: not disabled by
    ``SGF_MCNS_KERNEL=0``, a CUDA device visible to torch, and cuda-python/NVRTC loadable."""
    if os.environ.get(DISABLE_ENV, "1").strip() == "0":
        return False
    if not torch.cuda.is_available():
        return False
    if not _nvrtc.nvrtc_available():
        log.warning(
            "sgf::mcns: CUDA is available but cuda-python/NVRTC is not; the composite MCNS runs "
            "instead of the fused kernel (%s)", _nvrtc._INSTALL
        )
        return False
    return True


def register_cuda_kernel(op: Any, reference: McnsFn, check: CheckFn, *, force: bool = False) -> bool:
    """Make the fused kernel the CUDA implementation of ``op``; True if it now is.

    ``op`` is a ``torch.library`` custom op (``sgf::mcns``); ``reference`` and ``check`` are its
    composite forward and its input check (see :func:`make_cuda_impl`). Without ``force`` nothing
    is registered (False) unless :func:`_kernel_wanted`. The kernel itself is compiled lazily on
    the first CUDA call (about 0.3 s per device architecture).
    """
    global _registered
    if _registered:
        return True
    if not force and not _kernel_wanted():
        return False
    op.register_kernel("cuda")(make_cuda_impl(reference, check))
    _registered = True
    return True
