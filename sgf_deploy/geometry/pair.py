"""``pair_inputs``: the reference brought onto the target's voxel grid, registered, or refused.

The order of work, so that the first problem found is the one reported:

1. frames of reference (DICOM FrameOfReferenceUID): different ones are refused with
   ``register="off"``; otherwise the reference is centred on the target and registration decides;
2. geometry: with both grids known, the reference is resampled into the target's grid in world
   space (any orientation, matrix, FOV, slice position; averaged over the target voxel where the
   reference is finer); volumes that do not overlap are refused; a file without geometry (.npy,
   HDF5) must have the target's shape and is taken to lie on its grid;
3. registration (``"auto"`` or ``"rigid"``): the rigid in-plane motion of every slice
   (:mod:`~sgf_deploy.geometry.register`); ``"rigid"`` always applies it, ``"auto"`` only when the
   stack's median exceeds ``REGISTER_AUTO_SHIFT_PX`` / ``REGISTER_AUTO_ANGLE_DEG`` (sub-pixel
   estimates are within the estimator's noise and left alone). The estimate is always reported.
   The stack gets one motion: every slice gets the pyramid's estimate, up to
   ``REGISTER_REFINE_SLICES`` of them (evenly spread) a full-resolution refinement, and the median
   of the refined ones is the stack's (slices run side by side on the cores); a slice that did not
   converge, did not improve the metric, or disagrees with that median is warned about
   (``strict``: refused).

The reference is interpolated once: geometry and registration are composed into one index map
per slice before SimpleITK samples it.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .. import defaults as D
from ..errors import InputError
from .grid import Grid, grid_of, index_map, overlap_fraction, same_grid, supersampling
from .register import SliceEstimate, calibrated_size, refine_slice, register_slice, rigid_index_matrix, set_threads
from .resample import effective_interpolator, resample


@dataclass(frozen=True)
class PairSettings:
    """How to pair: ``register`` = "auto" | "rigid" | "off"; ``strict`` refuses on a doubtful
    registration instead of warning; ``threads`` for SimpleITK (None: all cores)."""

    register: str = D.REGISTER
    strict: bool = False
    threads: int | None = None
    interpolator: str = D.RESAMPLE_INTERPOLATOR


@dataclass
class Registration:
    """What registration found for the stack (medians over the slices it could register)."""

    mode: str
    applied: bool
    shift_px: tuple[float, float]  # (columns, rows), target pixels
    angle_deg: float
    registered: int  # slices registered
    slices: int
    seconds: float  # registration wall time, the whole stack
    metric_before: float
    metric_after: float
    estimates: list[SliceEstimate] = field(default_factory=list, repr=False)
    shape: tuple[int, int] = (0, 0)  # the target's slice (rows, columns)

    def describe(self) -> str:
        """One line: the estimate, the metric, the time and whether it was applied."""
        dx, dy = self.shift_px
        per = self.seconds / max(1, self.registered)
        threshold = f"{D.REGISTER_AUTO_SHIFT_PX:g} px / {D.REGISTER_AUTO_ANGLE_DEG:g} deg"
        small = self.mode == "auto" and not calibrated_size(self.shape)
        verdict = "applied" if self.applied else (
            f"not applied (slices smaller than {D.REGISTER_AUTO_MIN_SIDE} px: too small for a reliable automatic "
            "estimate; --register rigid applies it)" if small else
            f"not applied (below the auto threshold {threshold})" if self.mode == "auto" else "not applied")
        return (f"rigid 2-D Mattes MI per slice: reference shifted ({dx:+.2f}, {dy:+.2f}) px (columns, rows), "
                f"rotated {self.angle_deg:+.2f} deg (median of {sum(e.refined for e in self.estimates) or self.registered} "
                f"refined, {self.registered}/{self.slices} slices registered); "
                f"MI {self.metric_before:.3f} -> {self.metric_after:.3f}; {per:.2f} s/slice; {verdict}")

    def short(self) -> str:
        """A compact form for a file header (NIfTI descrip holds 79 characters)."""
        dx, dy = self.shift_px
        return f"reg {'applied' if self.applied else 'est'} {dx:+.1f},{dy:+.1f}px {self.angle_deg:+.1f}deg"


@dataclass
class PairedInputs:
    """The reference's pixels on the target's grid and what was done to get there."""

    reference_pixels: np.ndarray  # float32 (N, H, W), the target's shape
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # {"resampling": ..., "registration": ...}
    registration: Registration | None = None


def frame_of_reference(volume: Any) -> str | None:
    """The DICOM FrameOfReferenceUID of a read volume, where it has one."""
    header = getattr(volume, "header", None)
    if getattr(volume, "fmt", None) != "dicom" or not header:
        return None
    uid = getattr(header[0], "FrameOfReferenceUID", None) if isinstance(header, list) else None
    return str(uid) if uid else None


def _centred(mapping: np.ndarray, target: Grid, reference: Grid) -> np.ndarray:
    """``mapping`` with its translation replaced so the target's centre lands on the reference's."""
    n, h, w = target.shape
    nr, hr, wr = reference.shape
    centre_t = np.array([(w - 1) / 2, (h - 1) / 2, (n - 1) / 2])
    centre_r = np.array([(wr - 1) / 2, (hr - 1) / 2, (nr - 1) / 2])
    out = mapping.copy()
    out[:3, 3] = centre_r - mapping[:3, :3] @ centre_t
    return out


def _geometry(reference: Any, target: Any, mode: str, notes: list[str]) -> tuple[np.ndarray | None, Grid, Grid, bool]:
    """(target index -> reference index map, or None for "same grid"; the two grids; frames differ)."""
    g_r, g_t = grid_of(reference), grid_of(target)
    ref, tar = f"reference {reference.source}", f"target {target.source}"
    for_r, for_t = frame_of_reference(reference), frame_of_reference(target)
    differ = for_r is not None and for_t is not None and for_r != for_t
    if differ and mode == "off":
        raise InputError(f"{ref} and {tar} are in different frames of reference (FrameOfReferenceUID {for_r} vs "
                         f"{for_t}): their positions cannot be compared; allow registration (--register auto)")
    if not (g_r.known and g_t.known):
        if g_r.shape != g_t.shape:
            raise InputError(f"{ref} is {reference.shape_str()} but {tar} is {target.shape_str()}; without geometry "
                             "(.npy, HDF5) they must be on the same grid (give NIfTI or DICOM to resample)")
        if g_r.known != g_t.known:
            notes.append(f"{'reference' if not g_r.known else 'target'} has no geometry; "
                         "the reference is taken to lie on the target's grid")
        return None, g_r, g_t, differ
    mapping = index_map(g_t, g_r)
    if differ:
        mapping = _centred(mapping, g_t, g_r)
        notes.append(f"different frames of reference ({for_r} vs {for_t}): positions ignored, the reference is "
                     "centred on the target and registration decides")
    else:
        inside = overlap_fraction(g_t, g_r, mapping)
        if inside <= 0.0:
            raise InputError(f"{ref} ({g_r.describe()}) and {tar} ({g_t.describe()}) do not overlap in space; "
                             "nothing of the reference lies in the target's field of view")
        if inside < 0.99:
            notes.append(f"{100 * (1 - inside):.0f} % of the target's field of view lies outside the reference "
                         "(no reference there: zeros)")
    if not differ and same_grid(g_t, g_r):
        return None, g_r, g_t, differ
    return mapping, g_r, g_t, differ


def _median_estimate(valid: list[SliceEstimate]) -> tuple[tuple[float, float], float]:
    """The median of the refined estimates (of all when none was refined)."""
    valid = [e for e in valid if e.refined] or valid
    dx = float(np.median([e.shift_px[0] for e in valid]))
    dy = float(np.median([e.shift_px[1] for e in valid]))
    return (dx, dy), float(np.median([e.angle_deg for e in valid]))


def _doubts(estimates: list[SliceEstimate], median: tuple[tuple[float, float], float]) -> list[str]:
    """Warnings on the registration, and the slices they concern."""
    (mx, my), ma = median
    bad_conv = [i for i, e in enumerate(estimates) if e.skipped is None and not e.converged]
    worse = [i for i, e in enumerate(estimates) if e.skipped is None and not e.improved]
    far = [i for i, e in enumerate(estimates) if e.skipped is None
           and (math.hypot(e.shift_px[0] - mx, e.shift_px[1] - my) > D.REGISTER_OUTLIER_PX
                or abs(e.angle_deg - ma) > D.REGISTER_OUTLIER_DEG)]
    msgs = []
    if bad_conv:
        msgs.append(f"registration did not converge on {len(bad_conv)} slice(s) ({_slices(bad_conv)}) within "
                    f"{D.REGISTER_ITERATIONS} iterations")
    if worse:
        msgs.append(f"registration did not improve the match on {len(worse)} slice(s) ({_slices(worse)})")
    if far:
        worst = max(math.hypot(estimates[i].shift_px[0] - mx, estimates[i].shift_px[1] - my) for i in far)
        msgs.append(f"residual misalignment: {len(far)} slice(s) ({_slices(far)}) disagree with the stack's median "
                    f"motion by up to {worst:.1f} px / {max(abs(estimates[i].angle_deg - ma) for i in far):.1f} deg "
                    "(through-plane motion or a failed estimate); the stack's median motion was used")
    return msgs


def _slices(idx: list[int]) -> str:
    shown = ", ".join(str(i) for i in idx[:6])
    return shown + (", ..." if len(idx) > 6 else "")


def _parallel(work: Callable[[int], SliceEstimate], items: list[int], threads: int | None) -> list[SliceEstimate]:
    """``work`` over ``items`` on ``threads`` workers (None: all cores). SimpleITK releases the GIL
    and one 2-D slice is too small to split well across cores, so slices run side by side, each
    single-threaded (measured: 1.86x with two workers on two cores). Single-threaded also when
    there is one worker: ITK's multi-threaded Mattes MI sums its histogram per thread, and the
    estimate of one slice moved by up to 0.2 px from run to run with 2 threads (with 1: the same
    every run, and faster for one 233x197 slice, 0.61 vs 0.68 s)."""
    workers = max(1, min(int(threads or os.cpu_count() or 1), len(items)))
    set_threads(1)
    try:
        if workers == 1:
            return [work(i) for i in items]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(work, items))
    finally:
        set_threads(threads or os.cpu_count())


def _slice_estimates(target: np.ndarray, ref_on: np.ndarray, spacing: tuple[float, float],
                     threads: int | None) -> list[SliceEstimate]:
    """Every slice's pyramid estimate, then up to ``REGISTER_REFINE_SLICES`` of them (evenly
    spread over the registered slices) refined at full resolution."""
    n = target.shape[0]
    coarse = _parallel(lambda s: register_slice(target[s], ref_on[s], spacing, seed=s, refine=False),
                       list(range(n)), threads)
    valid = [s for s in range(n) if coarse[s].skipped is None]
    picks = sorted({valid[k] for k in np.linspace(0, len(valid) - 1, min(len(valid), D.REGISTER_REFINE_SLICES))
                    .round().astype(int).tolist()}) if valid else []
    for s, fine in zip(picks, _parallel(lambda s: refine_slice(target[s], ref_on[s], coarse[s]), picks, threads)):
        coarse[s] = fine
    return coarse


def _register(ref_on: np.ndarray, target: Any, g_t: Grid, mode: str, force: bool,
              threads: int | None) -> tuple[Registration, list[np.ndarray], list[str]]:
    """Register the stack; return its estimate, the in-plane index map per slice, warnings."""
    sr, sc = g_t.spacing[0], g_t.spacing[1]
    t0 = time.perf_counter()
    estimates = _slice_estimates(np.asarray(target.data), ref_on, (sr, sc), threads)
    valid = [e for e in estimates if e.skipped is None]
    n = len(estimates)
    if not valid:
        reg = Registration(mode, False, (0.0, 0.0), 0.0, 0, n, time.perf_counter() - t0, float("nan"), float("nan"),
                           estimates, tuple(target.shape[1:]))
        return reg, [np.eye(4)] * n, []
    median = _median_estimate(valid)
    warnings = _doubts(estimates, median)
    # One motion for the stack: patient motion between two series moves the whole head, and the
    # median of the slices' estimates is steadier than any one of them (this network loses ~4 dB
    # at a 0.7 px misalignment, so estimator jitter matters). Slices that disagree are warned about.
    (mx, my), ma = median
    metric_before = float(np.mean([e.metric_before for e in valid]))
    metric_after = float(np.mean([e.metric_after for e in valid]))
    above = math.hypot(mx, my) > D.REGISTER_AUTO_SHIFT_PX or abs(ma) > D.REGISTER_AUTO_ANGLE_DEG
    large_enough = calibrated_size(target.shape[1:])
    applied = mode == "rigid" or force or (above and large_enough)
    maps = [rigid_index_matrix((mx, my), ma, estimates[0].center_px, (sr, sc))] * n
    reg = Registration(mode, applied, (mx, my), ma, len(valid), n, time.perf_counter() - t0,
                       metric_before, metric_after, estimates, tuple(target.shape[1:]))
    return reg, maps, warnings


def pair_inputs(reference: Any, target: Any, settings: Any = None) -> PairedInputs:
    """The reference (a read :class:`~sgf_deploy.data.volume.Volume`) on the target's grid.

    ``settings``: a :class:`PairSettings` or anything with ``register``/``strict``/``threads``
    attributes (``RunSettings``). Raises :class:`InputError` (one line) for volumes that cannot be
    paired, and with ``strict`` for a registration in doubt."""
    mode = str(getattr(settings, "register", D.REGISTER) or D.REGISTER)
    strict = bool(getattr(settings, "strict", False))
    interpolator = str(getattr(settings, "interpolator", D.RESAMPLE_INTERPOLATOR))
    if mode not in D.REGISTER_MODES:
        raise InputError(f"register mode {mode!r}: expected one of {', '.join(D.REGISTER_MODES)}")
    set_threads(getattr(settings, "threads", None))
    notes: list[str] = []
    mapping, g_r, g_t, differ = _geometry(reference, target, mode, notes)
    provenance: dict = {}
    sub = (1, 1, 1)
    if mapping is None:
        ref_on = np.asarray(reference.data, dtype=np.float32)
        base = np.eye(4)
    else:
        sub = supersampling(g_t, g_r)
        ref_on = resample(reference.data, [mapping], target.shape, sub, interpolator)
        base = mapping
        avg = "" if sub == (1, 1, 1) else f", averaged over {sub[0]}x{sub[1]}x{sub[2]} sub-samples per target voxel"
        used = effective_interpolator(reference.shape, interpolator)
        provenance["resampling"] = (f"reference resampled from {g_r.describe()} onto {g_t.describe()} "
                                    f"({used}{avg})")
        notes.append(provenance["resampling"])
    if mode == "off":
        provenance["registration"] = "off"
        return PairedInputs(ref_on, notes, [], provenance, None)
    reg, maps, warnings = _register(ref_on, target, g_t, mode, differ, getattr(settings, "threads", None))
    skipped = [e.skipped for e in reg.estimates if e.skipped is not None]
    if skipped:
        notes.append(f"registration skipped {len(skipped)} slice(s) with nothing to register ({skipped[0]}); "
                     + ("the stack's median motion is used there" if reg.registered else "reference used unregistered"))
    if reg.registered:
        provenance["registration"] = reg.describe()  # always reported (run's summary, the output's provenance)
        if reg.applied:  # a note on stderr only when it changed the reference
            notes.append("registration: " + reg.describe())
    else:
        provenance["registration"] = "nothing to register (constant or empty slices); reference used as it is"
    if reg.registered and reg.applied:
        ref_on = resample(reference.data, [base @ m for m in maps], target.shape, sub, interpolator)
    if strict and warnings:
        raise InputError(f"target {target.source}: {warnings[0]}; refusing (--strict)")
    return PairedInputs(ref_on, notes, warnings, provenance, reg)
