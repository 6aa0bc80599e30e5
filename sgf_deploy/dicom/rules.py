"""Which received series is a reference and which a target.

The simple form is two regular expressions (``--ref-match``, ``--target-match``), searched
case-insensitively in SeriesDescription and ProtocolName. A rules file (JSON, or TOML on
Python >= 3.11) allows richer rules, e.g. by sequence parameters::

    # routing.toml
    [[reference]]
    description = "t1|mprage"
    repetition_time = [300, 3000]     # ms, inclusive range

    [[target]]
    protocol = "t2.*tse"
    echo_time = [60, 150]

Each rule's keys must all match (``description``/``protocol``/``sequence`` are regexes on
SeriesDescription/ProtocolName/SequenceName; ``echo_time``, ``repetition_time``,
``inversion_time``, ``flip_angle`` are [min, max] ranges); a series is a reference if any
``reference`` rule matches, a target if any ``target`` rule matches, and is refused (recorded as
ambiguous) if both do.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

_TEXT_KEYS = {"description": "SeriesDescription", "protocol": "ProtocolName", "sequence": "SequenceName"}
_RANGE_KEYS = {"echo_time": "EchoTime", "repetition_time": "RepetitionTime", "inversion_time": "InversionTime",
               "flip_angle": "FlipAngle"}


@dataclass(frozen=True)
class Rule:
    text: tuple[tuple[str, re.Pattern], ...] = ()  # (DICOM keyword, pattern); "*" = description or protocol
    ranges: tuple[tuple[str, float, float], ...] = ()

    def matches(self, header: Any) -> bool:
        for keyword, pattern in self.text:
            keys = ("SeriesDescription", "ProtocolName") if keyword == "*" else (keyword,)
            if not any(pattern.search(str(header.get(k, "") or "")) for k in keys):
                return False
        for keyword, lo, hi in self.ranges:
            try:
                value = float(header.get(keyword))
            except (TypeError, ValueError):
                return False
            if not lo <= value <= hi:
                return False
        return True


@dataclass(frozen=True)
class Rules:
    reference: tuple[Rule, ...] = field(default_factory=tuple)
    target: tuple[Rule, ...] = field(default_factory=tuple)
    source: str = ""

    def role(self, header: Any) -> str | None:
        """``"reference"``, ``"target"``, ``"ambiguous"`` or None (neither)."""
        is_ref = any(r.matches(header) for r in self.reference)
        is_tar = any(r.matches(header) for r in self.target)
        if is_ref and is_tar:
            return "ambiguous"
        return "reference" if is_ref else "target" if is_tar else None

    def describe(self) -> str:
        return self.source


def _regex(value: str, where: str) -> re.Pattern:
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error as exc:
        raise InputError(f"{where}: '{value}' is not a regular expression ({exc})") from None


def from_patterns(ref_match: str, target_match: str) -> Rules:
    return Rules((Rule(text=(("*", _regex(ref_match, "--ref-match")),)),),
                 (Rule(text=(("*", _regex(target_match, "--target-match")),)),),
                 f"reference: /{ref_match}/i, target: /{target_match}/i (SeriesDescription or ProtocolName)")


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, dict) or not entry:
        raise InputError(f"{where}: each rule must be a table of keys ({', '.join([*_TEXT_KEYS, *_RANGE_KEYS])})")
    text, ranges = [], []
    for key, value in entry.items():
        if key in _TEXT_KEYS:
            text.append((_TEXT_KEYS[key], _regex(str(value), f"{where}.{key}")))
        elif key in _RANGE_KEYS:
            if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
                raise InputError(f"{where}.{key}: expected [min, max], got {value!r}")
            ranges.append((_RANGE_KEYS[key], float(value[0]), float(value[1])))
        else:
            raise InputError(f"{where}: unknown key '{key}' (known: {', '.join([*_TEXT_KEYS, *_RANGE_KEYS])})")
    return Rule(tuple(text), tuple(ranges))


def load_rules(path: str | os.PathLike) -> Rules:
    """Rules from a JSON or TOML file (see the module docstring)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"rules file {p}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"rules file {p}: cannot be parsed ({exc})") from None
    if not isinstance(data, dict) or not data.get("reference") or not data.get("target"):
        raise InputError(f"rules file {p}: needs at least one [[reference]] and one [[target]] rule")
    ref = tuple(_rule(e, f"{p}: reference[{i}]") for i, e in enumerate(data["reference"]))
    tar = tuple(_rule(e, f"{p}: target[{i}]") for i, e in enumerate(data["target"]))
    return Rules(ref, tar, f"rules file {p}")


def make_rules(ref_match: str, target_match: str, rules_file: str | os.PathLike | None) -> Rules:
    return load_rules(rules_file) if rules_file else from_patterns(ref_match, target_match)
