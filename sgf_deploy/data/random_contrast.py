"""Domain-randomised contrasts for the simulator's ``random`` pair (SynthSeg / SynthSR style).

Each subject of the ``random`` pair draws its reference and its target contrast independently,
so that a network trained on it cannot learn one fixed reference -> target mapping: it has to take
the target's contrast from the target's own (measured) data and only structure from the reference.

A contrast is one of

* a named sequence of the simulator (T1w, T2w, PD, FLAIR), with probability ``named_fraction``;
* spin echo ``S = PD (1 - e^{-TR/T1}) e^{-TE/T2}`` with TR and TE drawn from :data:`RANGES`;
* inversion recovery ``S = PD |1 - 2 e^{-TI/T1} + e^{-TR/T1}| e^{-TE/T2}``;
* spoiled gradient echo ``S = PD sin(a) (1 - E1) / (1 - cos(a) E1) e^{-TE/T2*}``, E1 = e^{-TR/T1},
  T2* taken as ``T2STAR_FACTOR`` x T2;
* per-tissue intensities drawn independently in [0, 1] (``labels``), as in SynthSeg; with
  probability ``iso_fraction`` grey and white matter are drawn nearly iso-intense, so that some
  references carry no grey/white boundary at all.

With probability ``fluid_fraction`` (0 unless asked for) a subject's two contrasts are instead a
*fluid-inverted* pair (:func:`draw_fluid_pair`): one image fluid-suppressed (inversion recovery
with TI at the fluid's null and a long TE, as in FLAIR), the other
fluid-bright (long-TR, long-TE spin echo), in either order. Independent draws make such pairs
rarely (about 1 % of subjects), and a model trained without them copies the reference's dark fluid
into a fluid-bright target when the target's measured data is scarce (8x).

Besides the contrast, every image draws a bias-field strength, a noise level, a resolution (the
kept fraction of k-space per axis) and a global intensity scale from :data:`RANGES`; the anatomy
deformation is the simulator's per-subject warp, widened for this pair (see ``DEFORM``).

Everything here is a pure function of a numpy generator, so draws are deterministic for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KINDS = ("named", "SE", "IR", "GRE", "labels")

#: physical / nuisance ranges of the draws (uniform unless noted)
RANGES: dict[str, tuple[float, float]] = {
    "SE.TR": (300.0, 6000.0),  # ms
    "SE.TE": (8.0, 150.0),
    "IR.TI": (100.0, 2800.0),
    "IR.TR": (2000.0, 10000.0),
    "IR.TE": (8.0, 120.0),
    "GRE.TR": (5.0, 300.0),
    "GRE.TE": (2.0, 30.0),
    "GRE.flip": (3.0, 90.0),  # degrees
    "labels": (0.0, 1.0),
    "bias": (0.0, 0.25),  # amplitude of each of the 3 log-bias modes
    "noise": (0.003, 0.05),  # per-component noise std, fraction of the image maximum
    "resolution": (0.55, 1.0),  # kept fraction of k-space per axis (1 = full resolution)
    "scale": (0.2, 5.0),  # global intensity factor (log-uniform)
}
#: ranges of a fluid-inverted pair (:func:`draw_fluid_pair`): the fluid-suppressed IR image and
#: the fluid-bright SE image
FLUID_RANGES: dict[str, tuple[float, float]] = {
    "IR.TR": (6000.0, 11000.0),
    "IR.TE": (70.0, 140.0),
    "IR.null": (0.92, 1.08),  # TI as a multiple of the TI that nulls the fluid
    "SE.TR": (3000.0, 8000.0),
    "SE.TE": (70.0, 140.0),
}
#: probabilities: which kind a contrast is drawn as (named first, then the physical kinds)
KIND_WEIGHTS = {"SE": 0.3, "IR": 0.2, "GRE": 0.25, "labels": 0.25}
T2STAR_FACTOR = 0.6
#: in-plane deformation of a random-pair subject: rotation (deg), scale (+-), shift (mm)
DEFORM = {"rotation": 12.0, "scale": 0.10, "shift": 8.0}
NAMED = ("T1w", "T2w", "PD", "FLAIR")


@dataclass(frozen=True)
class RandomSpec:
    """Tilts of the random draws (recorded in a trained checkpoint's provenance)."""

    named_fraction: float = 0.2  # probability that a contrast is one of the named sequences
    iso_fraction: float = 0.15  # probability that a ``labels`` contrast has GM ~ WM
    full_resolution_fraction: float = 0.5  # probability that an image keeps all of k-space
    fluid_fraction: float = 0.0  # probability that a subject's pair is fluid-inverted (draw_fluid_pair)

    def validate(self) -> "RandomSpec":
        from ..errors import InputError

        for name in ("named_fraction", "iso_fraction", "full_resolution_fraction", "fluid_fraction"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise InputError(f"random spec {name} must be in [0, 1], got {v}")
        return self


@dataclass(frozen=True)
class Contrast:
    """One drawn contrast: the kind, its parameters and the nuisance draws of the image."""

    kind: str
    params: dict = field(default_factory=dict)
    bias: float = 0.1
    noise: float = 0.015
    resolution: float = 1.0
    scale: float = 1.0

    def describe(self) -> str:
        p = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.params.items())
        return f"{self.kind}({p})"


def _u(rng: np.random.Generator, key: str, ranges: dict[str, tuple[float, float]] = RANGES) -> float:
    lo, hi = ranges[key]
    return float(rng.uniform(lo, hi))


def draw_contrast(rng: np.random.Generator, tissues: tuple[str, ...], spec: RandomSpec = RandomSpec()) -> Contrast:
    """Draw one contrast (kind, parameters, nuisance) from ``rng``."""
    if rng.uniform() < spec.named_fraction:
        kind, params = "named", {"sequence": NAMED[int(rng.integers(len(NAMED)))]}
    else:
        kinds = list(KIND_WEIGHTS)
        p = np.asarray([KIND_WEIGHTS[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=p / p.sum()))]
        params = _draw_params(kind, rng, tissues, spec)
    return _with_nuisance(Contrast(kind, params), rng, spec)


def draw_fluid_pair(rng: np.random.Generator, fluid_t1: float) -> tuple[dict, dict]:
    """Parameters of a fluid-inverted pair, ``(fluid-suppressed IR, fluid-bright SE)``: the IR's TI
    is ``IR.null`` (:data:`FLUID_RANGES`) times the TI that nulls a tissue of T1 ``fluid_t1`` at the drawn TR
    (``TI = T1 ln(2 / (1 + e^{-TR/T1}))``, where ``1 - 2e^{-TI/T1} + e^{-TR/T1} = 0``)."""
    tr = _u(rng, "IR.TR", FLUID_RANGES)
    null = fluid_t1 * math.log(2.0 / (1.0 + math.exp(-tr / fluid_t1)))
    suppressed = {"TI": null * _u(rng, "IR.null", FLUID_RANGES), "TR": tr, "TE": _u(rng, "IR.TE", FLUID_RANGES)}
    bright = {"TR": _u(rng, "SE.TR", FLUID_RANGES), "TE": _u(rng, "SE.TE", FLUID_RANGES)}
    return suppressed, bright


def draw_contrast_pair(rng: np.random.Generator, tissues: tuple[str, ...], spec: RandomSpec,
                       fluid_t1: float) -> tuple[Contrast, Contrast]:
    """(reference, target) of one subject: two independent :func:`draw_contrast`, or with
    probability ``spec.fluid_fraction`` a fluid-inverted pair in a random order (nuisance draws as
    for any contrast). With ``fluid_fraction == 0`` the draws are those of earlier versions."""
    if spec.fluid_fraction > 0.0 and rng.uniform() < spec.fluid_fraction:
        suppressed, bright = draw_fluid_pair(rng, fluid_t1)
        pair = [Contrast("IR", suppressed), Contrast("SE", bright)]
        if rng.uniform() < 0.5:
            pair.reverse()
        return tuple(_with_nuisance(c, rng, spec) for c in pair)  # type: ignore[return-value]
    return draw_contrast(rng, tissues, spec), draw_contrast(rng, tissues, spec)


def _with_nuisance(contrast: Contrast, rng: np.random.Generator, spec: RandomSpec) -> Contrast:
    bias = _u(rng, "bias")
    noise = float(math.exp(rng.uniform(*np.log(RANGES["noise"]))))
    resolution = 1.0 if rng.uniform() < spec.full_resolution_fraction else _u(rng, "resolution")
    scale = float(math.exp(rng.uniform(*np.log(RANGES["scale"]))))
    return Contrast(contrast.kind, contrast.params, bias, noise, resolution, scale)


def _draw_params(kind: str, rng: np.random.Generator, tissues: tuple[str, ...], spec: RandomSpec) -> dict:
    if kind == "SE":
        return {"TR": _u(rng, "SE.TR"), "TE": _u(rng, "SE.TE")}
    if kind == "IR":
        return {"TI": _u(rng, "IR.TI"), "TR": _u(rng, "IR.TR"), "TE": _u(rng, "IR.TE")}
    if kind == "GRE":
        return {"TR": _u(rng, "GRE.TR"), "TE": _u(rng, "GRE.TE"), "flip": _u(rng, "GRE.flip")}
    levels = {t: _u(rng, "labels") for t in tissues}
    if "gm" in levels and "wm" in levels and rng.uniform() < spec.iso_fraction:
        levels["wm"] = float(np.clip(levels["gm"] + rng.uniform(-0.04, 0.04), 0.0, 1.0))
    return levels


def tissue_signal(contrast: Contrast, pd: float, t1: float, t2: float, tissue: str,
                  named_signal) -> float:
    """Signal of one tissue (PD, T1 ms, T2 ms) under ``contrast``; ``named_signal(name, pd, t1,
    t2)`` evaluates the simulator's named sequences."""
    p = contrast.params
    if contrast.kind == "named":
        return float(named_signal(p["sequence"], pd, t1, t2))
    if contrast.kind == "labels":
        return float(p[tissue])
    if contrast.kind == "SE":
        return pd * (1.0 - math.exp(-p["TR"] / t1)) * math.exp(-p["TE"] / t2)
    if contrast.kind == "IR":
        return pd * abs(1.0 - 2.0 * math.exp(-p["TI"] / t1) + math.exp(-p["TR"] / t1)) * math.exp(-p["TE"] / t2)
    if contrast.kind == "GRE":
        a = math.radians(p["flip"])
        e1 = math.exp(-p["TR"] / t1)
        return pd * math.sin(a) * (1.0 - e1) / (1.0 - math.cos(a) * e1) * math.exp(-p["TE"] / (T2STAR_FACTOR * t2))
    raise ValueError(f"unknown contrast kind {contrast.kind!r}")


def lower_resolution(image: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the central ``fraction`` of k-space along each axis (a lower-resolution acquisition
    on the same grid; magnitude of the result keeps the intensity scale)."""
    if fraction >= 1.0:
        return image
    from .kspace import fft2c, ifft2c

    h, w = image.shape
    k = fft2c(image.astype(np.complex64))
    kh, kw = max(2, int(round(h * fraction))), max(2, int(round(w * fraction)))
    y0, x0 = h // 2 - kh // 2, w // 2 - kw // 2
    kept = np.zeros_like(k)
    kept[y0 : y0 + kh, x0 : x0 + kw] = k[y0 : y0 + kh, x0 : x0 + kw]
    return np.abs(ifft2c(kept)).astype(np.float32)
