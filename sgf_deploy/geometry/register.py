"""Rigid in-plane registration of the reference to the target, slice by slice (SimpleITK).

The two images are different contrasts, so the metric is Mattes mutual information; the
transform is a 2-D rigid one (``Euler2DTransform``: a rotation about the slice centre and a
shift) in millimetres, optimised by regular-step gradient descent over a pyramid (shrink 4, 2, 1;
random samples), which captures shifts of 20 px and rotations of 10 degrees, then refined at full
resolution on every pixel (the network loses ~4 dB at a 0.7 px misalignment, so the last tenth
of a pixel matters). Both images are the target's slice
grid: the fixed image is the target slice, the moving image the reference already resampled onto
it from the files' geometry, so the estimate is the motion left after geometry.

:class:`SliceEstimate` keeps what a user needs to judge the result: the shift and angle, the
metric before and after, whether the optimiser converged (stopped on its step tolerance rather
than its iteration limit), and the seconds it took. Slices with nothing to register (constant,
all zero) are skipped, never an error.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .. import defaults as D
from .resample import sitk_module


@dataclass(frozen=True)
class SliceEstimate:
    """The rigid motion of one reference slice relative to the target slice.

    ``shift_px`` is the displacement (columns, rows) of the slice centre in target pixels and
    ``angle_deg`` the rotation about it (counter-clockwise in index space): the reference content
    at a target pixel p lies at ``R (p - centre) + centre + shift`` in the reference."""

    shift_px: tuple[float, float] = (0.0, 0.0)
    angle_deg: float = 0.0
    metric_before: float = float("nan")  # Mattes MI (negative: lower is better) at identity
    metric_after: float = float("nan")
    iterations: int = 0
    converged: bool = True
    seconds: float = 0.0
    skipped: str | None = None  # why this slice was not registered
    spacing: tuple[float, float] = (1.0, 1.0)  # (row, col) mm of the grid the estimate refers to
    center_px: tuple[float, float] = (0.0, 0.0)  # (col, row) index of the rotation centre
    refined: bool = False  # refined at full resolution (:func:`refine_slice`), not the pyramid's only

    @property
    def shift(self) -> float:
        """Length of the shift in pixels."""
        return float(math.hypot(*self.shift_px))

    @property
    def improved(self) -> bool:
        """The metric at the estimate is not worse than at identity (1 % slack: interpolation at a
        sub-pixel estimate smooths the moving image and moves MI a little either way)."""
        return bool(self.metric_after <= self.metric_before + 0.01 * abs(self.metric_before))

    def index_matrix(self) -> np.ndarray:
        """4x4 in target index (c, r, s): target voxel -> where the reference content is (same slice)."""
        return rigid_index_matrix(self.shift_px, self.angle_deg, self.center_px, self.spacing)


def rigid_index_matrix(shift_px: tuple[float, float], angle_deg: float, center_px: tuple[float, float],
                       spacing: tuple[float, float]) -> np.ndarray:
    """The in-plane rigid motion (rotation about ``center_px`` in millimetres, then ``shift_px``)
    as a 4x4 affine on (column, row, slice) indices of a grid with (row, col) ``spacing`` mm."""
    sr, sc = float(spacing[0]), float(spacing[1])
    d = np.diag([sc, sr])
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c_mm = d @ np.asarray(center_px, dtype=np.float64)
    t_mm = d @ np.asarray(shift_px, dtype=np.float64)
    lin = np.linalg.inv(d) @ rot @ d
    off = np.linalg.inv(d) @ (c_mm - rot @ c_mm + t_mm)
    m = np.eye(4)
    m[:2, :2] = lin
    m[:2, 3] = off
    return m


def _image2d(sitk, arr: np.ndarray, spacing: tuple[float, float]):  # noqa: ANN001, ANN202
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr, dtype=np.float32))
    img.SetSpacing((float(spacing[1]), float(spacing[0])))
    return img


def _nothing_to_register(fixed: np.ndarray, moving: np.ndarray) -> str | None:
    for name, arr in (("reference", moving), ("target", fixed)):
        if not np.isfinite(arr).all():
            return f"{name} slice not finite"
        hi = float(arr.max())
        if hi - float(arr.min()) <= 0:
            return f"{name} slice constant"
        if np.count_nonzero(arr > arr.min() + 0.05 * (hi - arr.min())) < D.REGISTER_MIN_PIXELS:
            return f"{name} slice nearly empty"
    return None


def calibrated_size(shape: tuple[int, ...]) -> bool:
    """Whether a slice of ``shape`` (H, W) is at least ``REGISTER_AUTO_MIN_SIDE`` a side: the sizes
    that ``auto``'s thresholds and the refinement's short steps were measured on."""
    return min(shape) >= D.REGISTER_AUTO_MIN_SIDE


def register_slice(fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), *,
                   seed: int = 0, refine: bool = True) -> SliceEstimate:
    """Estimate the rigid motion of ``moving`` (the reference slice, (H, W)) relative to ``fixed``
    (the target slice, same grid, (row, col) ``spacing`` mm) by Mattes mutual information.

    ``refine=False`` stops after the pyramid (~0.2-0.3 px of scatter; a stack refines only
    some of its slices, :mod:`.pair`); :func:`refine_slice` continues from there."""
    h, w = fixed.shape
    center = ((w - 1) / 2.0, (h - 1) / 2.0)
    reason = _nothing_to_register(fixed, moving)
    if reason is not None:
        return SliceEstimate(skipped=reason, spacing=tuple(spacing), center_px=center)  # type: ignore[arg-type]
    sitk = sitk_module()
    start = time.perf_counter()
    f_img, m_img = _image2d(sitk, fixed, spacing), _image2d(sitk, moving, spacing)
    reg = _method(sitk, seed, h * w)
    init = sitk.Euler2DTransform()
    init.SetCenter((center[0] * spacing[1], center[1] * spacing[0]))
    reg.SetInitialTransform(init, inPlace=False)
    try:
        before = _metric(sitk, f_img, m_img, init)
        coarse = _euler(sitk, reg.Execute(f_img, m_img))
        iterations, stop = int(reg.GetOptimizerIteration()), reg.GetOptimizerStopConditionDescription()
        after = _metric(sitk, f_img, m_img, coarse)
    except RuntimeError as exc:  # e.g. "All samples map outside moving image buffer"
        return _failed(exc, spacing, center, start)
    if not after <= before:  # never hand back a transform the full-resolution metric likes less than none
        coarse, after = init, before
    estimate = _estimate(coarse, spacing, center, before, after, iterations,
                         "Maximum number of iterations" not in stop, time.perf_counter() - start)
    return refine_slice(fixed, moving, estimate) if refine else estimate


def refine_slice(fixed: np.ndarray, moving: np.ndarray, estimate: SliceEstimate) -> SliceEstimate:
    """``estimate`` (a pyramid's, :func:`register_slice` with ``refine=False``) refined at full
    resolution on every pixel; never worse by the full-resolution metric than the estimate or
    than no motion (piecewise-flat images have pixel-locked local optima)."""
    if estimate.skipped is not None:
        return estimate
    sitk = sitk_module()
    start = time.perf_counter()
    spacing, center = estimate.spacing, estimate.center_px
    f_img, m_img = _image2d(sitk, fixed, spacing), _image2d(sitk, moving, spacing)
    coarse = _transform(sitk, estimate.shift_px, estimate.angle_deg, center, spacing)
    fine = _refinement(sitk, calibrated_size(fixed.shape))
    fine.SetInitialTransform(sitk.Euler2DTransform(coarse), inPlace=False)
    try:
        final = _euler(sitk, fine.Execute(f_img, m_img))
        after = _metric(sitk, f_img, m_img, final)
    except RuntimeError as exc:
        return _failed(exc, spacing, center, start - estimate.seconds)
    if not after < estimate.metric_after:
        final, after = coarse, estimate.metric_after
    converged = estimate.converged and "Maximum number of iterations" not in fine.GetOptimizerStopConditionDescription()
    return _estimate(final, spacing, center, estimate.metric_before, after,
                     estimate.iterations + int(fine.GetOptimizerIteration()), converged,
                     estimate.seconds + time.perf_counter() - start, refined=True)


def _estimate(euler, spacing, center, before: float, after: float, iterations: int, converged: bool,  # noqa: ANN001
              seconds: float, refined: bool = False) -> SliceEstimate:
    tx, ty = euler.GetTranslation()
    return SliceEstimate(shift_px=(tx / spacing[1], ty / spacing[0]), angle_deg=math.degrees(euler.GetAngle()),
                         metric_before=before, metric_after=after, iterations=iterations, converged=converged,
                         seconds=seconds, spacing=tuple(spacing), center_px=tuple(center), refined=refined)  # type: ignore[arg-type]


def _failed(exc: RuntimeError, spacing, center, start: float) -> SliceEstimate:  # noqa: ANN001
    msg = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__
    return SliceEstimate(skipped=f"registration failed ({msg})", spacing=tuple(spacing),  # type: ignore[arg-type]
                         center_px=tuple(center), seconds=time.perf_counter() - start)  # type: ignore[arg-type]


def _transform(sitk, shift_px, angle_deg: float, center_px, spacing):  # noqa: ANN001, ANN202
    t = sitk.Euler2DTransform()
    t.SetCenter((center_px[0] * spacing[1], center_px[1] * spacing[0]))
    t.SetAngle(math.radians(angle_deg))
    t.SetTranslation((shift_px[0] * spacing[1], shift_px[1] * spacing[0]))
    return t


def _method(sitk, seed: int, pixels: int):  # noqa: ANN001, ANN202
    """The registration method: Mattes MI on a fixed number of random samples per level (so the
    time per slice hardly grows with the matrix), regular-step descent, a 3-level pyramid.

    A slow step relaxation (0.8) keeps the rotation moving: with SimpleITK's usual 0.5 the step
    collapsed on the sampling noise before a 10-degree rotation was found."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=D.REGISTER_BINS)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    fractions = [min(1.0, n / max(1.0, pixels / float(f * f))) for n, f in zip(D.REGISTER_SAMPLES, D.REGISTER_SHRINK)]
    reg.SetMetricSamplingPercentagePerLevel(fractions, seed + 1)  # a seed of 0 would mean "from the clock"
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=D.REGISTER_STEP_MM, minStep=D.REGISTER_MIN_STEP_MM,
                                                 numberOfIterations=D.REGISTER_ITERATIONS,
                                                 gradientMagnitudeTolerance=1e-8,
                                                 relaxationFactor=D.REGISTER_RELAXATION)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(D.REGISTER_SHRINK))
    reg.SetSmoothingSigmasPerLevel(list(D.REGISTER_SMOOTHING))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _refinement(sitk, large: bool):  # noqa: ANN001, ANN202
    """The last stage: full resolution, every pixel, finer histogram, short steps. The pyramid's
    random samples leave ~0.2 px of jitter; this takes it to ~0.1 px against a 4x zero-filled
    target (measured on the simulator's validation split). ``large`` (both sides at least
    ``REGISTER_AUTO_MIN_SIDE``, :func:`calibrated_size`): shorter first and last steps, measured
    as accurate there."""
    first, last = D.REGISTER_REFINE_STEPS_LARGE_MM if large else D.REGISTER_REFINE_STEPS_MM
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=D.REGISTER_REFINE_BINS)
    if D.REGISTER_REFINE_SAMPLING < 1.0:
        reg.SetMetricSamplingStrategy(reg.REGULAR)
        reg.SetMetricSamplingPercentage(D.REGISTER_REFINE_SAMPLING, 1)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=first, minStep=last,
                                                 numberOfIterations=D.REGISTER_ITERATIONS,
                                                 gradientMagnitudeTolerance=1e-8,
                                                 relaxationFactor=D.REGISTER_RELAXATION)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([D.REGISTER_REFINE_SHRINK])
    reg.SetSmoothingSigmasPerLevel([0.5 * (D.REGISTER_REFINE_SHRINK - 1)])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _euler(sitk, transform):  # noqa: ANN001, ANN202
    inner = transform.GetNthTransform(0) if transform.GetName() == "CompositeTransform" else transform
    return sitk.Euler2DTransform(inner)


def _metric(sitk, fixed, moving, transform) -> float:  # noqa: ANN001
    """Mattes MI of the pair under ``transform``, every pixel, the refinement's histogram."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=D.REGISTER_REFINE_BINS)
    reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetInitialTransform(transform)
    return float(reg.MetricEvaluate(fixed, moving))


def set_threads(threads: int | None) -> None:
    """Limit SimpleITK's worker threads (None: its default, all cores)."""
    if threads:
        sitk_module().ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
