"""What ``build_engine`` is asked to build: one settings object, defaults in :mod:`sgf_deploy.defaults`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .. import defaults as D
from ..errors import InputError



@dataclass(frozen=True)
class BuildSettings:
    """Options of one engine build (``sgf-deploy build``; ARCHITECTURE.md, "Engines").

    ``precision``: fp32 | fp16 | int8. INT8 needs a calibration set: ``calib`` or the only set in
    ``calibration_dir`` (scales are never invented). ``shapes``: ``MIN:OPT:MAX`` profile.
    ``keep_fp32`` / ``exclude``: node patterns (:mod:`sgf_deploy.calibration.patterns`).
    ``targets``: TensorRT-RTX compute capabilities (e.g. ``"sm86,sm89"``). ``int8_activations``:
    auto (ONNX Runtime: uint8 asymmetric; TensorRT: int8 symmetric) | int8 | uint8 | uint8-asym.
    ``parity_n``: held-out slices for the build-time PSNR (0 skips it); ``parity_data``: where
    they come from ("sim", or a folder of the user's pairs, see :mod:`sgf_deploy.data.pairs`).
    ``int8_max_drop``: OpenVINO INT8 with NNCF accuracy control, the largest mean PSNR drop vs
    ground truth (dB) allowed on the simulator's val split (:mod:`sgf_deploy.calibration.nncf_int8`).
    """

    backend: str = D.BACKEND
    precision: str = D.PRECISION
    calib: str | Path | None = None
    calib_method: str = D.CALIB_METHOD
    quantizer: str = D.QUANTIZER
    int8_activations: str = D.INT8_ACTIVATIONS
    shapes: str | None = None
    keep_fp32: str | tuple[str, ...] | None = None
    exclude: str | tuple[str, ...] | None = None
    mcns: str = D.MCNS
    overflow_fix: str | None = None  # OpenVINO INT8 (NNCF): enable | disable | first_layer; None: by the CPU
    int8_max_drop: float | None = None  # OpenVINO INT8 (NNCF accuracy control): max PSNR drop, dB; None: off
    threads: int | None = None
    targets: str | tuple[str, ...] | None = None
    parity_n: int = D.BUILD_PARITY_N
    parity_data: str = D.DATA
    out_dir: str | Path = D.ENGINES_DIR
    calibration_dir: str | Path = D.CALIBRATION_DIR
    overwrite: bool = False

    def __post_init__(self) -> None:
        for name in ("keep_fp32", "exclude", "targets"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "precision", str(self.precision).lower())
        from .identity import PRECISIONS

        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.threads is not None and int(self.threads) < 1:
            raise InputError(f"--threads must be >= 1, got {self.threads}")
        if int(self.parity_n) < 0:
            raise InputError(f"--n must be >= 0, got {self.parity_n}")
        if self.calib is not None and self.precision != "int8":
            raise InputError("--calib applies to --int8 only")
        if self.int8_max_drop is not None:
            from ..calibration.nncf_int8 import check_max_drop

            object.__setattr__(self, "int8_max_drop", check_max_drop(self.int8_max_drop))
            if self.precision != "int8":
                raise InputError("--int8-max-drop applies to --int8 only")

    @classmethod
    def from_options(cls, **options: Any) -> "BuildSettings":
        """Settings from keyword options (unknown names are an error naming them)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown build option(s): {', '.join(unknown)}")
        return cls(**options)

    def replace(self, **changes: Any) -> "BuildSettings":
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The options as recorded in the manifest's ``build_options``."""
        return {
            "backend_requested": self.backend,
            "precision": self.precision,
            "shapes": self.shapes,
            "keep_fp32": _listed(self.keep_fp32),
            "exclude": _listed(self.exclude),
            "calib_method": self.calib_method if self.precision == "int8" else None,
            "quantizer": self.quantizer if self.precision == "int8" else None,
            "int8_activations": self.int8_activations if self.precision == "int8" else None,
            "mcns": self.mcns,
            "overflow_fix": self.overflow_fix if self.backend in ("openvino", "ov") else None,
            "int8_max_drop": self.int8_max_drop,
            "threads": self.threads,
        }


def _listed(value: str | Iterable[str] | None) -> str | list[str] | None:
    return value if value is None or isinstance(value, str) else list(value)
