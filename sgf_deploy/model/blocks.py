"""Building blocks of SGF-MRI: residual conv block, SAN, MCSD (SAN -> MCNS -> squeeze -> SFA)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .mcns import OUT_PER_GROUP, mcns  # noqa: F401  (importing registers torch.ops.sgf.mcns)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


class ResBlock(nn.Module):
    """conv3x3 -> LeakyReLU -> conv3x3, plus identity. Shared by encoder and decoder."""

    def __init__(self, channels: int, negative_slope: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.act(self.conv1(x))))


class SAN(nn.Module):
    """Saliency: conv3x3 (C->C), LeakyReLU(0.1), conv1x1 (C->G), sigmoid -> (B, G, H, W)."""

    def __init__(self, channels: int, groups: int, negative_slope: float) -> None:
        super().__init__()
        self.conv = conv3x3(channels, channels)
        self.act = nn.LeakyReLU(negative_slope)
        self.proj = conv1x1(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(self.act(self.conv(x))))


class SFA(nn.Module):
    """Structure-features attention: Q from the distilled descriptor, K and V from the encoder
    features of the stage, softmax(QK^T / sqrt(d_k)) V over all positions (SDPA, so exporters and
    engines can fuse it)."""

    def __init__(self, squeeze_dim: int, channels: int, attn_dim: int) -> None:
        super().__init__()
        self.q = conv1x1(squeeze_dim, attn_dim)
        self.k = conv1x1(channels, attn_dim)
        self.v = conv1x1(channels, channels)
        self.out = conv1x1(channels, channels)

    def forward(self, squeezed: torch.Tensor, encoder: torch.Tensor) -> torch.Tensor:
        b, c, h, w = encoder.shape
        # Contiguous Q/K/V: PyTorch's flash / memory-efficient SDPA kernels need dense last-dim
        # strides; with transposed views SDPA falls back to the math kernel, which materialises the
        # N x N scores (2.6 GB per 320x320 slice at the paper preset's 1/2 scale).
        q = self.q(squeezed).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B,1,N,dk)
        k = self.k(encoder).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        v = self.v(encoder).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()  # (B,1,N,C)
        att = F.scaled_dot_product_attention(q, k, v)
        return self.out(att.squeeze(1).transpose(1, 2).reshape(b, c, h, w))


class MCSD(nn.Module):
    """Multi-contrast structural distillation at one scale.

    ``feat_tar`` is the target path's feature map at this scale, ``feat_ref`` the reference's
    encoder features. Returns a residual update (B, C, H, W) for the target path.
    """

    def __init__(self, channels: int, groups: int, squeeze_dim: int, attn_dim: int,
                 eps: float, negative_slope: float) -> None:
        super().__init__()
        self.groups = groups
        self.eps = eps
        self.san_tar = SAN(channels, groups, negative_slope)
        self.san_ref = SAN(channels, groups, negative_slope)
        self.squeeze = conv1x1(OUT_PER_GROUP * groups, squeeze_dim)
        self.fuse = conv1x1(2 * channels, channels)
        self.sfa = SFA(squeeze_dim, channels, attn_dim)

    def forward(self, feat_tar: torch.Tensor, feat_ref: torch.Tensor) -> torch.Tensor:
        distilled = torch.ops.sgf.mcns(
            feat_tar, feat_ref, self.san_tar(feat_tar), self.san_ref(feat_ref), self.groups, self.eps
        )
        encoder = self.fuse(torch.cat([feat_tar, feat_ref], dim=1))
        return self.sfa(self.squeeze(distilled), encoder)
