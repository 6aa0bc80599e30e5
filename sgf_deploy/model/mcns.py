"""MCNS (multi-contrast neighbourhood similarity) and its ``sgf::mcns`` custom op.

Semantics (DESIGN.md section 2), for features split into G groups of C/G channels::

    S_ab(j,k)_g = exp(-|| f_a[g](j) - f_b[g](k) ||^2 / (sigma_a(j)^2 + eps))

over the 8 neighbour offsets in :data:`NEIGHBOUR_OFFSETS`; the neighbour of (y, x) at offset
(dy, dx) is f(y - dy, x - dx) with edge replication. ``sigma_a^2`` is the 3x3 local variance of
the first map (zero padding counted in the window mean), clamped at 0 and averaged over channels.
Pairs (tar,tar)*s_tar, (tar,ref)*s_ref, (ref,tar)*s_tar, (ref,ref)*s_ref, each (B, 8G, H, W)
with channel ``k*G + g``, concatenated -> (B, 32G, H, W).

The custom op is the export boundary: the ONNX exporter emits one ``sgf.MCNS`` node for it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.torch_cuda import register_cuda_kernel

NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, 0), (-2, 0), (1, 0), (2, 0), (0, -1), (0, -2), (0, 1), (0, 2)
)
MAX_OFFSET = 2
PAIRS = 4
OUT_PER_GROUP = PAIRS * len(NEIGHBOUR_OFFSETS)  # 32


def local_variance(feat: torch.Tensor) -> torch.Tensor:
    """Channel-averaged 3x3 variance (B,C,H,W) -> (B,1,H,W), zero padding counted in the window."""
    mean = F.avg_pool2d(feat, 3, stride=1, padding=1)
    mean_sq = F.avg_pool2d(feat * feat, 3, stride=1, padding=1)
    return (mean_sq - mean * mean).clamp_min(0.0).mean(dim=1, keepdim=True)


def neighbours(feat: torch.Tensor) -> list[torch.Tensor]:
    """The 8 neighbour maps: ``out[k][..., y, x] = feat[..., clamp(y - dy), clamp(x - dx)]``."""
    h, w = feat.shape[-2:]
    padded = F.pad(feat, (MAX_OFFSET,) * 4, mode="replicate")
    return [
        padded[..., MAX_OFFSET - dy : MAX_OFFSET - dy + h, MAX_OFFSET - dx : MAX_OFFSET - dx + w]
        for dy, dx in NEIGHBOUR_OFFSETS
    ]


def pair_similarity(
    feat_a: torch.Tensor, feat_b: torch.Tensor, var_a: torch.Tensor, groups: int, eps: float
) -> torch.Tensor:
    """(B, 8G, H, W) similarities of ``feat_a`` to the neighbours of ``feat_b``."""
    b, c, h, w = feat_a.shape
    denom = var_a + eps
    sims = []
    for shifted in neighbours(feat_b):
        dist = (feat_a - shifted).pow(2).reshape(b, groups, c // groups, h, w).sum(dim=2)
        sims.append(torch.exp(-dist / denom))
    return torch.cat(sims, dim=1)


def mcns_reference(
    feat_tar: torch.Tensor,
    feat_ref: torch.Tensor,
    sal_tar: torch.Tensor,
    sal_ref: torch.Tensor,
    groups: int,
    eps: float,
) -> torch.Tensor:
    """Composite (differentiable) MCNS; the eager kernel of the custom op and its backward."""
    n_off = len(NEIGHBOUR_OFFSETS)
    var_tar = local_variance(feat_tar)
    var_ref = local_variance(feat_ref)
    # Saliency of group g multiplies neighbour k of group g: tile, not repeat_interleave.
    w_tar = sal_tar.repeat(1, n_off, 1, 1)
    w_ref = sal_ref.repeat(1, n_off, 1, 1)
    return torch.cat(
        [
            pair_similarity(feat_tar, feat_tar, var_tar, groups, eps) * w_tar,
            pair_similarity(feat_tar, feat_ref, var_tar, groups, eps) * w_ref,
            pair_similarity(feat_ref, feat_tar, var_ref, groups, eps) * w_tar,
            pair_similarity(feat_ref, feat_ref, var_ref, groups, eps) * w_ref,
        ],
        dim=1,
    )


def _check(feat_tar, feat_ref, sal_tar, sal_ref, groups: int) -> None:
    if feat_tar.dim() != 4 or feat_tar.shape != feat_ref.shape:
        raise ValueError(f"mcns: feature maps must be equal (B,C,H,W); got {tuple(feat_tar.shape)} and {tuple(feat_ref.shape)}")
    b, c, h, w = feat_tar.shape
    if groups < 1 or c % groups:
        raise ValueError(f"mcns: {c} channels are not divisible into {groups} groups")
    for name, sal in (("sal_tar", sal_tar), ("sal_ref", sal_ref)):
        if tuple(sal.shape) != (b, groups, h, w):
            raise ValueError(f"mcns: {name} must be {(b, groups, h, w)}; got {tuple(sal.shape)}")


@torch.library.custom_op("sgf::mcns", mutates_args=())
def mcns(
    feat_tar: torch.Tensor,
    feat_ref: torch.Tensor,
    sal_tar: torch.Tensor,
    sal_ref: torch.Tensor,
    groups: int,
    eps: float,
) -> torch.Tensor:
    """``torch.ops.sgf.mcns``: the whole MCNS module (no squeeze) as one op."""
    _check(feat_tar, feat_ref, sal_tar, sal_ref, groups)
    with torch.no_grad():
        return mcns_reference(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps)


@mcns.register_fake
def _mcns_fake(feat_tar, feat_ref, sal_tar, sal_ref, groups, eps):
    b, _, h, w = feat_tar.shape
    return feat_tar.new_empty((b, OUT_PER_GROUP * groups, h, w))


def _setup_context(ctx, inputs, output) -> None:
    feat_tar, feat_ref, sal_tar, sal_ref, groups, eps = inputs
    ctx.save_for_backward(feat_tar, feat_ref, sal_tar, sal_ref)
    ctx.groups = groups
    ctx.eps = eps


def _backward(ctx, grad_out):
    """Backward by recomputing the composite graph: memory is spent only during backward."""
    wanted = ctx.needs_input_grad[:4]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(bool(w)) for t, w in zip(ctx.saved_tensors, wanted)]
        needs = [t for t in leaves if t.requires_grad]
        out = mcns_reference(*leaves, ctx.groups, ctx.eps)
        grads = iter(torch.autograd.grad(out, needs, grad_out) if needs else ())
    return (*[next(grads) if w else None for w in wanted], None, None)


mcns.register_autograd(_backward, setup_context=_setup_context)


def maybe_register_fused_kernel(*, force: bool = False) -> bool:
    """Make the fused CUDA kernel this op's CUDA implementation unless ``SGF_MCNS_KERNEL=0``.

    Verified on an NVIDIA H100 (benchmarks/gpu.md). Runs once when this module is imported; a
    no-op returning False without a CUDA device or without cuda-python/NVRTC (``force`` registers
    regardless, which lets a CPU-only machine check that CPU dispatch is left alone).
    """
    return register_cuda_kernel(mcns, mcns_reference, _check, force=force)


maybe_register_fused_kernel()
