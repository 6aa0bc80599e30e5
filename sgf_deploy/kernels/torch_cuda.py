"""The fused kernel as the CUDA implementation of ``torch.ops.sgf.mcns`` (forward only).

``register_cuda_kernel()`` registers :func:`mcns_cuda` for the op's "cuda" device type. Only the
forward pass changes: the op's autograd formula (``sgf_deploy.model.mcns._backward``) still
recomputes the differentiable composite :func:`~sgf_deploy.model.mcns.mcns_reference` during
backward, on whatever device the tensors live. Registration is a no-op returning False when this
torch has no usable CUDA device or when cuda-python/NVRTC is missing (the composite then runs on
CUDA as before) -- nothing fails at import time on a CPU-only machine.

Inputs the kernel does not take (bfloat16/float64, mixed dtypes or devices) fall back to the
composite, so registering never changes which inputs the op accepts.
"""

from __future__ import annotations

import logging
import os

import torch

from sgf_deploy.kernels import nvrtc as _nvrtc
# Nothing from sgf_deploy.model at module level: importing sgf_deploy.model registers this kernel
# (model/__init__ calls register_cuda_kernel), so a module-level import here would be circular
# whenever this module is imported first.

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


def mcns_cuda(feat_tar, feat_ref, sal_tar, sal_ref, groups: int, eps: float) -> torch.Tensor:
    """CUDA forward of ``sgf::mcns``: the fused NVRTC kernel, on the current stream."""
    from sgf_deploy.model.mcns import OUT_PER_GROUP, _check, mcns_reference

    _check(feat_tar, feat_ref, sal_tar, sal_ref, groups)
    if not fused_path_supported(feat_tar, feat_ref, sal_tar, sal_ref):
        with torch.no_grad():
            return mcns_reference(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps)
    ft, fr, st, sr = (t.contiguous() for t in (feat_tar, feat_ref, sal_tar, sal_ref))
    b, _, h, w = ft.shape
    out = torch.empty((b, OUT_PER_GROUP * groups, h, w), dtype=ft.dtype, device=ft.device)
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


def register_cuda_kernel(*, force: bool = False) -> bool:
    """Make the fused kernel the CUDA implementation of ``sgf::mcns``; True if it now is.

    Without ``force`` nothing is registered (False) when ``torch.cuda.is_available()`` is False,
    when cuda-python/NVRTC cannot be loaded, or when ``SGF_MCNS_KERNEL=0``. The kernel itself is
    compiled lazily on the first CUDA call (about 0.3 s per device architecture).
    """
    global _registered
    if _registered:
        return True
    if not force:
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
    from sgf_deploy.model.mcns import mcns

    mcns.register_kernel("cuda")(mcns_cuda)
    _registered = True
    return True
