"""SGF-MRI: shared-weight encoder/decoder with MCSD fusion of a reference contrast.

An independent implementation from the paper's description (the authors' code is not public).
Inputs are per-instance normalised magnitude images on the full-resolution grid; the output is the
reconstructed target on the same (normalised) scale.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import MCSD, ResBlock, conv1x1, conv3x3
from .config import SGFConfig


class SGFMRI(nn.Module):
    def __init__(self, config: SGFConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        slope = config.negative_slope
        self.head = conv3x3(1, ch[0])
        self.act = nn.LeakyReLU(slope)
        # One block per scale, used by the encoder (both contrasts) and again by the decoder.
        self.blocks = nn.ModuleList(ResBlock(c, slope) for c in ch)
        self.down = nn.ModuleList(conv3x3(ch[s], ch[s + 1], stride=2) for s in range(config.stages))
        self.up = nn.ModuleList(conv1x1(ch[s + 1], ch[s]) for s in range(config.stages))
        self.skip = nn.ModuleList(conv1x1(3 * ch[s], ch[s]) for s in range(config.stages))
        self.mcsd = nn.ModuleDict(
            {
                str(s): MCSD(ch[s], config.groups, config.squeeze_dim, config.attn_dim, config.eps, slope)
                for s in config.mcsd_scales
            }
        )
        self.tail = conv3x3(ch[0], 1)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        x = self.act(self.head(image))
        for s, block in enumerate(self.blocks):
            x = block(x)
            feats.append(x)
            if s < self.config.stages:
                x = self.act(self.down[s](x))
        return feats

    def forward_core(self, reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The network proper: H and W must be multiples of ``config.size_multiple``."""
        if not self.config.use_reference:
            reference = torch.zeros_like(target)
        feats_tar = self.encode(target)
        feats_ref = self.encode(reference)
        top = self.config.stages
        x = feats_tar[top]
        if str(top) in self.mcsd:
            x = x + self.mcsd[str(top)](x, feats_ref[top])
        for s in range(top - 1, -1, -1):
            # The 1x1 conv and LeakyReLU act per pixel, so they commute with nearest upsampling:
            # running them at the coarse scale is exact and does 4x less work there.
            x = F.interpolate(self.act(self.up[s](x)), scale_factor=2.0, mode="nearest")
            x = self.act(self.skip[s](torch.cat([x, feats_tar[s], feats_ref[s]], dim=1)))
            if str(s) in self.mcsd:
                x = x + self.mcsd[str(s)](x, feats_ref[s])
            x = self.blocks[s](x)
        out = self.tail(x)
        return target + out if self.config.residual else out

    def forward(self, reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,1,H,W) reference and target -> (N,1,H,W); any H, W (replicate-pad, then crop)."""
        if reference.shape != target.shape or target.dim() != 4 or target.shape[1] != 1:
            raise ValueError(
                f"reference and target must both be (N,1,H,W); got {tuple(reference.shape)} and {tuple(target.shape)}"
            )
        h, w = target.shape[-2:]
        pad_h, pad_w = pad_amount(h, self.config.size_multiple), pad_amount(w, self.config.size_multiple)
        if pad_h or pad_w:
            reference = F.pad(reference, (0, pad_w, 0, pad_h), mode="replicate")
            target = F.pad(target, (0, pad_w, 0, pad_h), mode="replicate")
        return self.forward_core(reference, target)[..., :h, :w]


def pad_amount(size: int, multiple: int) -> int:
    """Rows/columns to add at the bottom/right so ``size`` becomes a multiple (runtime mirrors it)."""
    return (-size) % multiple


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
