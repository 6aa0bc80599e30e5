"""The model's input contract, in numpy: the one implementation every stage calls.

An SGF-MRI network takes a reference and a degraded target as ``(N, 1, Hp, Wp)`` float32 and
returns the reconstruction on the target's normalised scale. Around it:

1. **normalise** each slice by its own statistics (fastMRI's ``normalize_instance``:
   ``(x - mean) / (std + 1e-11)``, ``std`` with ``ddof=1``, statistics in float64); the
   reference and the target each by their own, the target's ``mean``/``std`` kept;
2. **pad** bottom/right with edge replication to a multiple of the model's size multiple
   (``2 ** stages``; 8 for the shipped presets) -- what torch's ``replicate`` padding in
   ``SGFMRI.forward`` does, and the only other place this padding is written;
3. run the engine in **batches**, filling an engine with a static batch dimension by repeating
   the last slice (the extra outputs are discarded);
4. **restore**: crop back to ``(H, W)`` and de-normalise with the target's statistics.

The runtime, the calibration sets, the export self-check, build-time parity, validate, bench and
the PyTorch reference path (:mod:`sgf_deploy.model.infer`) all call this module, so what the
engine sees is the same everywhere. Imports numpy only (the scanner-side runtime uses it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .errors import InputError

EPS = 1e-11
DEFAULT_SIZE_MULTIPLE = 8

Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------ normalisation
def normalize_instance(x: np.ndarray, eps: float = EPS) -> tuple[np.ndarray, float, float]:
    """``(x - mean) / (std + eps)`` with the instance's own mean and std, as fastMRI's
    ``normalize_instance`` (torch's ``std`` is the unbiased one, so ``ddof=1`` here). Statistics are
    accumulated in float64; returns (float32 array, mean, std)."""
    x = np.asarray(x)
    x64 = x.astype(np.float64, copy=False)
    mean = float(x64.mean())
    std = float(x64.std(ddof=1)) if x64.size > 1 else 0.0
    return ((x64 - mean) / (std + eps)).astype(np.float32), mean, std


def denormalize(x: np.ndarray, mean: float, std: float, eps: float = EPS) -> np.ndarray:
    """Inverse of :func:`normalize_instance`: ``x * (std + eps) + mean``, computed in float64,
    returned as float32."""
    x64 = np.asarray(x).astype(np.float64, copy=False)
    return (x64 * (float(std) + eps) + float(mean)).astype(np.float32)


# ------------------------------------------------------------------------------------ padding
def pad_amount(size: int, multiple: int) -> int:
    """Rows/columns added at the bottom/right so that ``size`` becomes a multiple of ``multiple``."""
    return (-int(size)) % int(multiple)


def padded_size(size: int, multiple: int) -> int:
    return int(size) + pad_amount(size, multiple)


def pad_edge(images: np.ndarray, shape: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """Edge-replicate ``(..., H, W)`` at the bottom/right to ``shape`` (each side >= H, W).

    Writes into ``out`` when given (no temporary), else into a new float32 array. This and the
    ``replicate`` padding of ``SGFMRI.forward`` are the two implementations of the model's padding.
    """
    images = np.asarray(images)
    h, w = images.shape[-2:]
    th, tw = int(shape[0]), int(shape[1])
    if th < h or tw < w:
        raise ValueError(f"pad_edge: cannot pad {h}x{w} to the smaller {th}x{tw}")
    if out is None:
        out = np.empty(images.shape[:-2] + (th, tw), dtype=np.float32)
    out[..., :h, :w] = images
    if tw > w:
        out[..., :h, w:] = out[..., :h, w - 1 : w]
    if th > h:
        out[..., h:, :] = out[..., h - 1 : h, :]
    return out


def fit(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop ``(..., H, W)`` to at most ``shape``, then edge-pad bottom/right to ``shape``:
    brings slices to an engine whose input size is fixed (the same input then goes to both sides
    of any comparison)."""
    images = np.asarray(images)
    h, w = images.shape[-2:]
    th, tw = int(shape[0]), int(shape[1])
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    cropped = images[..., top : top + min(h, th), left : left + min(w, tw)]
    return np.ascontiguousarray(pad_edge(cropped, (th, tw)), dtype=np.float32)


# --------------------------------------------------------------------------- the size multiple
def size_multiple(*sources: Any) -> int:
    """The model's size multiple from the first source that records it.

    Sources, tried in order: an engine manifest (``EngineManifest`` or its dict:
    ``model.size_multiple``), decoded ONNX metadata (``sgf.size_multiple``), a model config dict
    (``2 ** (len(channels) - 1)``) or anything with a ``size_multiple`` attribute (``SGFConfig``,
    ``ModelInfo``). Falls back to :data:`DEFAULT_SIZE_MULTIPLE` when none records it."""
    for source in sources:
        value = _size_multiple_of(source)
        if value is not None:
            return value
    return DEFAULT_SIZE_MULTIPLE


def _size_multiple_of(source: Any) -> int | None:
    if source is None:
        return None
    direct = getattr(source, "size_multiple", None)
    if direct is not None and not callable(direct):
        return _positive(direct)
    if hasattr(source, "model") and not isinstance(source, Mapping):  # EngineManifest
        return _size_multiple_of(source.model)
    if not isinstance(source, Mapping):
        return None
    for key in ("size_multiple", "sgf.size_multiple"):
        if key in source:
            value = _positive(source[key])
            if value is not None:
                return value
    if isinstance(source.get("model"), Mapping):
        return _size_multiple_of(source["model"])
    config = source.get("config", source.get("sgf.config", source))
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            return None
    channels = config.get("channels") if isinstance(config, Mapping) else None
    if isinstance(channels, (list, tuple)) and len(channels) >= 2:
        return 2 ** (len(channels) - 1)
    return None


def _positive(value: Any) -> int | None:
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value >= 1 else None


# ------------------------------------------------------------------------------------- inputs
def check_pair(reference: np.ndarray, target: np.ndarray, what: str = "input") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Validate two arrays and bring them to float32 ``(N, H, W)``; returns (ref, tar, notices).

    Accepted: real integer or float arrays, 2-D ``(H, W)`` or 3-D ``(N, H, W)``, the same shape,
    non-empty, all finite. Complex arrays are taken as magnitude (with a notice). A target with
    negative values (impossible for a magnitude image) is accepted with a notice. Everything else
    raises :class:`~sgf_deploy.errors.InputError` with one line.
    """
    notices: list[str] = []
    arrays = []
    for name, arr in (("reference", reference), ("target", target)):
        arr = np.asarray(arr)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufc" or arr.dtype.kind == "b":
            raise InputError(f"{what}: {name} has dtype {arr.dtype}; expected a real or complex numeric array")
        if arr.dtype.kind == "c":
            arr = np.abs(arr)
            notices.append(f"{name}: complex values; using the magnitude")
        if arr.ndim not in (2, 3):
            raise InputError(f"{what}: {name} has shape {arr.shape}; expected (H, W) or (N, H, W)")
        if arr.size == 0:
            raise InputError(f"{what}: {name} is empty (shape {arr.shape})")
        arr = np.asarray(arr, dtype=np.float32)
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{what}: {name} contains {bad} non-finite value(s) (NaN/Inf or beyond float32)")
        arrays.append(arr)
    ref, tar = arrays
    if ref.shape != tar.shape:
        raise InputError(f"{what}: reference shape {ref.shape} does not match target shape {tar.shape}")
    negative = int(np.count_nonzero(tar < 0))
    if negative:
        notices.append(f"target: {negative} negative value(s) (minimum {float(tar.min()):.4g}); a magnitude image "
                       "has none: is this a phase or signed image? the model was trained on magnitude images")
    shape = tar.shape[-2:]
    return ref.reshape((-1,) + shape), tar.reshape((-1,) + shape), notices


@dataclass
class Prepared:
    """Engine inputs for ``n`` slices of ``h x w``: ``(b, 1, Hp, Wp)`` float32 each, ``b >= n``
    (rows past ``n`` repeat the last slice for a static-batch engine), with the target's
    statistics per slice (kept as ``normalize_instance`` returned them, so that de-normalising
    reproduces the PyTorch reference bit for bit)."""

    reference: np.ndarray = field(repr=False)
    target: np.ndarray = field(repr=False)
    means: list = field(repr=False)
    stds: list = field(repr=False)
    n: int
    h: int
    w: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.target.shape[-2:])  # type: ignore[return-value]

    def select(self, start: int, stop: int) -> "Prepared":
        """Slices ``start:stop`` as their own :class:`Prepared`."""
        return Prepared(self.reference[start:stop], self.target[start:stop], self.means[start:stop],
                        self.stds[start:stop], stop - start, self.h, self.w)


def prepare(reference: np.ndarray, target: np.ndarray, multiple: int, fill_to: int | None = None) -> Prepared:
    """float32 ``(n, H, W)`` pair -> normalised, edge-padded engine inputs (see the module doc).

    ``fill_to`` > n allocates extra rows, filled by repeating the last slice, for engines with a
    static batch dimension; their outputs are to be discarded."""
    reference = np.asarray(reference, np.float32)
    target = np.asarray(target, np.float32)
    if reference.ndim == 2:
        reference, target = reference[None], target[None]
    n, h, w = target.shape
    b = max(n, fill_to or n)
    shape = (padded_size(h, multiple), padded_size(w, multiple))
    ref_p = np.empty((b, 1) + shape, dtype=np.float32)
    tar_p = np.empty_like(ref_p)
    means: list = []
    stds: list = []
    for i in range(n):
        r, _, _ = normalize_instance(reference[i])
        t, mean, std = normalize_instance(target[i])
        pad_edge(r, shape, out=ref_p[i, 0])
        pad_edge(t, shape, out=tar_p[i, 0])
        means.append(mean)
        stds.append(std)
    if b > n:
        ref_p[n:] = ref_p[n - 1]
        tar_p[n:] = tar_p[n - 1]
    return Prepared(ref_p, tar_p, means, stds, n, h, w)


def restore(pred: np.ndarray, prepared: Prepared) -> np.ndarray:
    """Engine output ``(b, 1, Hp, Wp)`` -> ``(n, H, W)`` float32 in the target's intensity scale
    (what a user gets; every comparison scores these). NaN/Inf pass through (callers count them)."""
    pred = np.asarray(pred)
    out = np.empty((prepared.n, prepared.h, prepared.w), dtype=np.float32)
    with np.errstate(all="ignore"):
        for i in range(prepared.n):
            out[i] = denormalize(pred[i, 0, : prepared.h, : prepared.w], prepared.means[i], prepared.stds[i])
    return out


# ------------------------------------------------------------------------------------ batching
def run_batched(infer: Infer, reference: np.ndarray, target: np.ndarray, batch: int,
                static_batch: int | None = None) -> np.ndarray:
    """``infer`` over ``(n, 1, Hp, Wp)`` inputs ``batch`` slices at a time -> ``(n, 1, Hp, Wp)``.

    With ``static_batch`` every call gets exactly that many slices (a short last batch is filled
    by repeating its last slice; the extra outputs are dropped). An engine that returns the wrong
    shape is an error naming both shapes."""
    n = int(target.shape[0])
    batch = int(static_batch or batch)
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    out = np.empty(target.shape, dtype=np.float32)
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        ref, tar = reference[start:stop], target[start:stop]
        short = (static_batch or 0) - (stop - start)
        if short > 0:
            ref = np.concatenate([ref, np.repeat(ref[-1:], short, axis=0)])
            tar = np.concatenate([tar, np.repeat(tar[-1:], short, axis=0)])
        pred = np.asarray(infer(np.ascontiguousarray(ref), np.ascontiguousarray(tar)))
        if pred.ndim != 4 or pred.shape[0] < stop - start or pred.shape[-2:] != tar.shape[-2:]:
            raise InputError(f"engine returned shape {pred.shape} for input {tar.shape}")
        out[start:stop] = pred[: stop - start]
    return out


def reconstruct(infer: Infer, reference: np.ndarray, target: np.ndarray, multiple: int, batch: int = 4,
                static_batch: int | None = None) -> np.ndarray:
    """The whole contract around ``infer``: ``(N, H, W)`` or ``(H, W)`` in the target's scale ->
    reconstruction of the same shape (no input checks: see :func:`check_pair`)."""
    squeeze = np.ndim(target) == 2
    prepared = prepare(reference, target, multiple)
    raw = run_batched(infer, prepared.reference, prepared.target, batch, static_batch)
    out = restore(raw, prepared)
    return out[0] if squeeze else out


def describe(multiple: int = DEFAULT_SIZE_MULTIPLE) -> dict[str, Any]:
    """The contract as recorded in artefacts (ONNX metadata, calibration manifests)."""
    return {
        "normalization": "per-instance (x - mean) / (std + 1e-11), std with ddof=1, float64 statistics; "
                         "reference and target each by their own statistics",
        "pad": {"mode": "edge", "sides": "bottom,right", "multiple": int(multiple)},
        "denormalize": "reconstruction * (std_target + eps) + mean_target",
    }
