"""An ONNX Runtime ``CalibrationDataReader`` over a calibration set (one pair per batch)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..contract import fit
from .dataset import CalibrationSet


class CalibrationSetReader(CalibrationDataReader):
    """Feeds ``{"reference": (1,1,Hp,Wp), "target": (1,1,Hp,Wp)}`` float32 pairs.

    ``input_shape`` (H, W) centre-crops / edge-pads every pair to a fixed engine input size (for
    ONNX files exported with ``--static``). Supports ``set_range`` and ``len`` so that ONNX
    Runtime calibrates in strides (``CalibStridedMinMax``) and memory stays bounded by the stride,
    not the size of the set."""

    def __init__(self, calib: str | os.PathLike | CalibrationSet, input_shape: tuple[int, int] | None = None,
                 input_names: tuple[str, str] = ("reference", "target")) -> None:
        self.set = calib if isinstance(calib, CalibrationSet) else CalibrationSet(calib)
        self.input_shape = input_shape
        self.input_names = input_names
        self.start, self.end = 0, len(self.set)
        self.position = self.start

    def __len__(self) -> int:
        return len(self.set)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = int(start_index), min(int(end_index), len(self.set))
        self.position = self.start

    def rewind(self) -> None:
        self.position = self.start

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= self.end:
            return None
        ref, tar = self.set.load(self.position)
        self.position += 1
        if self.input_shape is not None:
            ref, tar = fit(ref, self.input_shape), fit(tar, self.input_shape)
        return {self.input_names[0]: ref[None, None], self.input_names[1]: tar[None, None]}

    def stacked(self) -> dict[str, Any]:
        """All pairs as ``{"reference": (n,1,H,W), "target": ...}`` (needs one shape; for ModelOpt)."""
        items = []
        self.rewind()
        while (item := self.get_next()) is not None:
            items.append(item)
        self.rewind()
        shapes = {item[self.input_names[1]].shape for item in items}
        if len(shapes) != 1:
            from ..errors import InputError

            raise InputError(f"{self.set.folder}: pairs of {len(shapes)} different shapes; this quantizer needs one shape")
        return {name: np.concatenate([item[name] for item in items]) for name in self.input_names}
