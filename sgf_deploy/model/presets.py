"""Shipped configurations.

* ``lite``: about 0.65 M parameters, MCSD at the bottleneck only; the CPU default and the
  embedded demo model. Full-resolution width 32 rather than 16: measured on the 2-core CPU, INT8
  convolutions only pay off (>2x over FP32 in ONNX Runtime) at that width.
* ``paper``: the paper's settings (3 stages, G = 8, d' = 64, about 4 M parameters) with MCSD at
  the bottleneck and at the two coarser decoder scales. Attention over every position of the
  full-resolution scale (102 400 positions at 320x320) is quadratic and is not what the paper's
  0.03 s / 4.6 GB budget allows, so the full-resolution decoder stage fuses by skip connection
  only; set ``mcsd_scales`` to include 0 to change that.
"""

from __future__ import annotations

from .config import SGFConfig

PRESETS: dict[str, SGFConfig] = {
    "lite": SGFConfig(
        channels=(32, 48, 64, 96), groups=8, squeeze_dim=32, attn_dim=32, mcsd_scales=(3,)
    ),
    "paper": SGFConfig(
        channels=(32, 64, 128, 256), groups=8, squeeze_dim=64, attn_dim=64, mcsd_scales=(3, 2, 1)
    ),
}


def get_preset(name: str) -> SGFConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None


def build_model(preset: "str | SGFConfig" = "lite"):  # noqa: ANN201 - an SGFMRI (imports torch)
    """A freshly initialised network from a preset name or a config."""
    from .network import SGFMRI

    config = preset if isinstance(preset, SGFConfig) else get_preset(preset)
    return SGFMRI(config)
