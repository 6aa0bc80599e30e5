"""The contrast-fidelity guard: does the reconstruction agree with what was measured?

A reconstruction network can return a clean image of the *wrong contrast* (the contrast it was
trained on instead of the one that was acquired). The measured data pin the contrast down: in
Cartesian undersampling the fully sampled centre of k-space (the central columns every fastMRI
mask keeps, :data:`sgf_deploy.data.masks.ACCELERATIONS`) carries the image contrast, and in
super-resolution the acquired low-resolution band (the central ``H/s x W/s`` of k-space) is what
was measured. The guard compares the output's content in that band with the target's::

    score = || B(output) - B(target) || / || B(target) ||      (B: the band of the centred FFT)

per slice, and over the volume (sums of squares over slices). A model that keeps the measured
contrast scores a few per cent (noise, the magnitude, the aliasing it removes); one that imposes
another contrast scores more.

When the column mask is known (k-space input with a mask), the guard compares like with like:
the output is put through the same measurement (``|IFFT(mask * FFT(output))|``, the zero-filled
magnitude the target is) and compared with the target on the sampled columns near the centre
(``B_m``). Without a mask (image input) it compares the fully sampled centre directly; the
target's magnitude then distorts that centre by a few per cent, so this mode separates less
sharply and has its own threshold (measured on the simulator, old T1->T2 default, 24 slices each:
with the mask, T1->T2 at most 3.4 % vs T1->PD at least 5.9 %; without, 6.6 % vs a 6.1 % minimum
and an 8.1 % median). The threshold per task and model is calibrated on held-out
in-distribution simulator data (zero false alarms there) and recorded in the registry of shipped
defaults (:mod:`sgf_deploy.model.registry`). numpy only; one FFT per slice and image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SgfError

MESSAGE = ("the output's contrast differs from the measured data: the model may not match this contrast "
           "(fidelity {score:.1%} > threshold {threshold:.1%} for {task}); check the engine's training "
           "contrasts, or use a model trained for this contrast")


def band_mask(task: str, shape: tuple[int, int], mask: np.ndarray | None = None) -> np.ndarray:
    """Boolean (H, W) k-space region that was measured fully for ``task``: the central columns of
    the task's mask (recon; with a known column ``mask``, the contiguous sampled run around the
    centre), or the central ``H/s x W/s`` block (sr)."""
    from ..data.degrade import TASKS
    from ..data.masks import ACCELERATIONS

    h, w = int(shape[0]), int(shape[1])
    spec = TASKS[task]
    out = np.zeros((h, w), dtype=bool)
    if spec["kind"] == "sr":
        kh, kw = max(1, int(round(h / spec["scale"]))), max(1, int(round(w / spec["scale"])))
        y0, x0 = h // 2 - kh // 2, w // 2 - kw // 2
        out[y0 : y0 + kh, x0 : x0 + kw] = True
        return out
    if mask is not None:
        cols = _central_run(np.asarray(mask, bool).reshape(-1))
    else:
        acc = int(spec["acceleration"])
        num_low = int(round(w * ACCELERATIONS.get(acc, 0.32 / acc)))
        pad = (w - num_low + 1) // 2
        cols = np.zeros(w, dtype=bool)
        cols[pad : pad + num_low] = True
    out[:, cols] = True
    return out


def _central_run(mask: np.ndarray) -> np.ndarray:
    """The contiguous run of sampled columns that contains the k-space centre."""
    w = mask.size
    c = w // 2
    run = np.zeros(w, dtype=bool)
    if not mask[c]:
        return run
    lo, hi = c, c
    while lo > 0 and mask[lo - 1]:
        lo -= 1
    while hi < w - 1 and mask[hi + 1]:
        hi += 1
    run[lo : hi + 1] = True
    return run


def measured_band(shape: tuple[int, int], mask: np.ndarray) -> np.ndarray:
    """The sampled columns of ``mask`` within the central ``ROW_FRACTION`` of the rows."""
    h, w = int(shape[0]), int(shape[1])
    r = max(4, int(round(h * ROW_FRACTION / 2)))
    out = np.zeros((h, w), dtype=bool)
    out[max(0, h // 2 - r) : h // 2 + r, :] = True
    return out & np.asarray(mask, bool).reshape(1, -1)


ROW_FRACTION = 0.14


def slice_terms(output: np.ndarray, target: np.ndarray, task: str,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: (||B(output) - B(target)||^2, ||B(target)||^2) for (N, H, W) or (H, W) images;
    with a column ``mask`` (recon), the output is first put through the measurement."""
    from ..data.kspace import fft2c, ifft2c

    out = np.asarray(output, np.float32)
    tar = np.asarray(target, np.float32)
    if out.shape != tar.shape:
        raise ValueError(f"output {out.shape} and target {tar.shape} differ in shape")
    if out.ndim == 2:
        out, tar = out[None], tar[None]
    measured = mask is not None and task.startswith("recon")
    band = measured_band(out.shape[-2:], mask) if measured else band_mask(task, out.shape[-2:])
    cols = np.asarray(mask, bool).reshape(1, -1) if measured else None
    num, den = np.empty(out.shape[0]), np.empty(out.shape[0])
    for i in range(out.shape[0]):
        ko = fft2c(out[i])
        if measured:
            ko = fft2c(np.abs(ifft2c(np.where(cols, ko, 0))))
        ko, kt = ko[band], fft2c(tar[i])[band]
        num[i] = float(np.sum(np.abs(ko - kt) ** 2))
        den[i] = float(np.sum(np.abs(kt) ** 2))
    return num, den


@dataclass(frozen=True)
class Fidelity:
    """The guard's verdict on one run."""

    task: str
    score: float  # over the volume
    worst: float  # the worst slice
    worst_slice: int
    threshold: float | None
    threshold_source: str  # which model's calibration the threshold comes from
    mode: str = "centre"  # "centre" (no mask known) or "measured" (the mask re-applied to the output)

    @property
    def exceeded(self) -> bool:
        return self.threshold is not None and self.score > self.threshold

    def line(self) -> str:
        """The ``fidelity:`` line ``run`` prints on every run."""
        limit = (f"threshold {self.threshold:.1%} ({self.threshold_source})" if self.threshold is not None
                 else "no calibrated threshold for this model")
        verdict = "EXCEEDED" if self.exceeded else "ok"
        what = {"centre": "k-space centre", "measured": "sampled k-space (mask re-applied)"}.get(self.mode, "band")
        return (f"{self.score:.1%} of the measured {what if not self.task.startswith('sr') else 'band'} "
                f"differs (worst slice {self.worst_slice}: {self.worst:.1%}); {limit}: {verdict}")

    def warning(self) -> str:
        return MESSAGE.format(score=self.score, threshold=self.threshold or 0.0, task=self.task)


def assess(output: np.ndarray, target: np.ndarray, task: str, threshold: float | None,
           threshold_source: str = "", mask: np.ndarray | None = None) -> Fidelity:
    """Score ``output`` against the measured ``target`` for ``task`` (see the module docstring)."""
    num, den = slice_terms(output, target, task, mask)
    per_slice = np.sqrt(num / np.maximum(den, 1e-30))
    score = float(np.sqrt(num.sum() / max(float(den.sum()), 1e-30)))
    worst = int(np.argmax(per_slice))
    mode = "measured" if mask is not None and task.startswith("recon") else "centre"
    return Fidelity(task, score, float(per_slice[worst]), worst, threshold, threshold_source, mode)


def calibrate_threshold(scores: np.ndarray, margin: float = 1.25) -> dict:
    """A threshold above every in-distribution volume score (``margin`` x the largest), so that
    held-out in-distribution runs never trigger it; returns it with the scores' summary."""
    scores = np.asarray(scores, float)
    return {"threshold": float(scores.max() * margin), "margin": margin, "n": int(scores.size),
            "max": float(scores.max()), "median": float(np.median(scores)),
            "p95": float(np.percentile(scores, 95))}


# ---------------------------------------------------------------------------------- in a run
class ContrastMismatchError(SgfError):
    """``run --strict``: the guard fired; nothing is written."""

    exit_code = 3


def task_from_mask(mask: np.ndarray) -> str:
    """``recon4x`` / ``recon8x``: the reconstruction task nearest to the mask's acceleration."""
    mask = np.asarray(mask, bool).reshape(-1)
    acc = mask.size / max(int(mask.sum()), 1)
    return "recon4x" if abs(np.log(acc / 4.0)) <= abs(np.log(acc / 8.0)) else "recon8x"


def resolve_task(requested: str | None, target, notice=None) -> tuple[str, np.ndarray | None]:
    """The run's task and the target's column mask (k-space input with a mask, else None).

    A mask decides the task (a different ``requested`` task is overridden, with a notice);
    otherwise ``requested``, else the default task."""
    from .. import defaults as D

    header = getattr(target, "header", None)
    mask = header.get("mask") if isinstance(header, dict) else None
    if mask is not None:
        task = task_from_mask(mask)
        if requested is not None and requested != task and notice:
            notice(f"{target.source}: its k-space mask samples {np.mean(mask):.1%} of the columns, i.e. {task}; "
                   f"--task {requested} is overridden")
        return task, np.asarray(mask, bool)
    return requested or D.TASK, None


def threshold_for(manifest, task: str, mode: str) -> tuple[float | None, str]:
    """(threshold, whose calibration): the engine's own model when it is a shipped one, else
    the task's shipped default's (borrowed, and the line says so)."""
    from ..model.registry import default_for_task, model_by_checkpoint

    own = model_by_checkpoint(getattr(manifest, "checkpoint_sha256", None))
    if own is not None and own.threshold(task, mode) is not None:
        return own.threshold(task, mode), f"calibrated for {own.name}"
    try:
        default = default_for_task(task)
    except SgfError:
        return None, ""
    value = default.threshold(task, mode)
    return value, f"borrowed from the {task} default {default.name}: this model has no calibration of its own"


def model_line(manifest) -> str:
    """What the engine's model was trained for, from the registry or the manifest."""
    from ..model.registry import model_by_checkpoint

    own = model_by_checkpoint(getattr(manifest, "checkpoint_sha256", None))
    if own is not None:
        return own.describe()
    info = manifest.model
    extra = info.extra or {}
    contrasts = extra.get("contrasts") or (f"{info.pair} (simulator pair)" if info.pair else "not recorded")
    return f"{info.label() or 'unknown model'} (trained for {info.task or '?'}; contrasts: {contrasts})"


def guard(image: np.ndarray, target: np.ndarray, reconstructor, task: str, mask: np.ndarray | None,
          strict: bool, warn, notice=None) -> Fidelity:
    """Score a run (:func:`assess`), warn above the threshold, or refuse with ``strict``.

    The engine's own task (its manifest) wins over the requested one; the threshold is its own
    model's calibration or the task default's (:func:`threshold_for`)."""
    manifest = getattr(reconstructor, "manifest", None)
    own_task = getattr(getattr(manifest, "model", None), "task", None)
    if own_task and own_task != task:
        if notice:
            notice(f"the engine was built for {own_task}; its task wins over {task}")
        task = own_task
    if mask is not None and np.asarray(mask).size != np.shape(target)[-1]:
        mask = None
    mode = "measured" if mask is not None and task.startswith("recon") else "centre"
    threshold, source = threshold_for(manifest, task, mode) if manifest is not None else (None, "")
    result = assess(image, target, task, threshold, source, mask=mask)
    if result.exceeded:
        if strict:
            raise ContrastMismatchError(f"refused (--strict): {result.warning()}; nothing was written")
        warn(result.warning())
    return result
