"""Training mixtures of the random pair with the simulator's named pairs.

``--mix "t1-t2=0.25,t1-pd=0.05"`` makes a quarter of the training slices T1->T2 and a twentieth
T1->PD; the rest come from the base pair (normally ``random``). The named pairs are physical
draws the random pair can make too, but with a small probability each (the random pair picks a
named sequence for both images 4 % of the time); mixing them in keeps a domain-randomised model
as good as the pair-specific one on the pairs users run most, without narrowing its range.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .simulator import PAIRS


def parse_mix(text: str | None) -> dict[str, float]:
    """``"t1-t2=0.25,pd-t2=0.1"`` -> ``{"t1-t2": 0.25, "pd-t2": 0.1}``; names must be named pairs,
    each fraction in [0, 1], their sum <= 1 (the remainder is the base pair)."""
    if not text:
        return {}
    mix: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name not in PAIRS:
            raise InputError(f"--mix: '{item.strip()}' is not NAME=FRACTION with NAME one of {', '.join(PAIRS)}")
        try:
            fraction = float(value)
        except ValueError:
            raise InputError(f"--mix: '{value}' in '{item.strip()}' is not a number") from None
        if not 0.0 <= fraction <= 1.0 or name in mix:
            raise InputError(f"--mix: '{item.strip()}' needs a fraction in [0, 1], once per pair")
        mix[name] = fraction
    if sum(mix.values()) > 1.0 + 1e-9:
        raise InputError(f"--mix: the fractions sum to {sum(mix.values()):.3f} > 1")
    return mix


def draw_pair(rng: np.random.Generator, base_pair: str, mix: dict[str, float]) -> str:
    """The pair of one training slice: a named pair with its ``mix`` fraction, else ``base_pair``.
    Draws one uniform number from ``rng`` whenever ``mix`` is non-empty."""
    if not mix:
        return base_pair
    u = float(rng.uniform())
    for name, fraction in mix.items():
        if u < fraction:
            return name
        u -= fraction
    return base_pair
