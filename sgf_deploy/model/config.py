"""The network's configuration: every size is a field, so presets are just instances."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import CheckpointError


@dataclass(frozen=True)
class SGFConfig:
    """Architecture of one SGF-MRI network.

    ``channels[s]`` is the width at scale ``s`` (full resolution is scale 0; each further scale is
    2x downsampled), so ``len(channels) - 1`` is the number of downsampling stages.
    ``mcsd_scales`` lists the scales at which an MCSD block fuses the two contrasts: the
    bottleneck is ``len(channels) - 1``.
    """

    channels: tuple[int, ...] = (32, 48, 64, 96)
    groups: int = 8
    squeeze_dim: int = 32
    attn_dim: int = 32
    mcsd_scales: tuple[int, ...] = (3,)
    residual: bool = True
    use_reference: bool = True
    eps: float = 1e-6
    negative_slope: float = 0.1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "mcsd_scales", tuple(sorted({int(s) for s in self.mcsd_scales}, reverse=True)))
        if len(self.channels) < 2:
            raise ValueError("channels needs at least two scales (one downsampling stage)")
        for scale in self.mcsd_scales:
            if not 0 <= scale < len(self.channels):
                raise ValueError(f"mcsd scale {scale} outside 0..{len(self.channels) - 1}")
            if self.channels[scale] % self.groups:
                raise ValueError(
                    f"channels[{scale}]={self.channels[scale]} is not divisible by groups={self.groups}"
                )
        if self.groups < 1 or self.squeeze_dim < 1 or self.attn_dim < 1:
            raise ValueError("groups, squeeze_dim and attn_dim must be positive")

    @property
    def stages(self) -> int:
        return len(self.channels) - 1

    @property
    def size_multiple(self) -> int:
        """H and W inside the network must be multiples of this (the model pads outside)."""
        return 2**self.stages

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["channels"] = list(self.channels)
        data["mcsd_scales"] = list(self.mcsd_scales)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "SGFConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown architecture fields {unknown}; not an SGF-MRI config of this toolkit")
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: invalid SGF-MRI config ({exc})") from None
