"""Build-time parity: PSNR of the engine against the PyTorch reference on held-out slices.

Slices: the simulator's **test** split (never the train split calibration uses), pair and task
of the model (ONNX metadata), ``n`` slices (default 4), pre-processed as the runtime does
(ARCHITECTURE.md: normalise per instance, edge-pad bottom/right to a multiple of 8); when the
engine's profile does not admit the simulator's 233x197 slices, the raw slices are centre-cropped
to the profile's maximum / edge-padded to its minimum first (the same input goes to both sides).

Reference: the PyTorch model of the checkpoint named in the ONNX metadata
(``sgf.checkpoint_path``) when that file exists and its sha256 equals ``sgf.checkpoint_sha256``
(torch imported lazily, here only); otherwise the FP32 ONNX file through ONNX Runtime (the export
self-check proved it equal to PyTorch to 1e-4), and the result says so.

Score: PSNR(reference, engine) on the **de-normalised** images cropped back to the slice size,
fastMRI convention (``data_range`` = the reference's maximum over all slices), plus the max
absolute error, and both sides' PSNR against the ground truth (the model's quality; their
difference is what the deployment costs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..artifacts import sha256_file
from .identity import Profile

DEFAULT_SLICES = 4
SEED = 4321
# Guide values printed with the result (the gate is `sgf-deploy validate`, not the build).
GUIDE_DB: dict[str, float] = {"fp32": 80.0, "fp16": 50.0, "int8": 40.0}
_EPS = 1e-11
# In-process caches: several engines of one model built in one process (tests, `make demo`)
# simulate the slices and run the reference once. Keyed by everything that determines them.
_INPUTS_CACHE: dict[tuple, dict[str, Any]] = {}
_REFERENCE_CACHE: dict[tuple, tuple[np.ndarray, str]] = {}


def _fit(images: np.ndarray, profile: Profile) -> np.ndarray:
    """Centre-crop to the profile's max H, W; edge-pad bottom/right to its min H, W."""
    if profile.dynamic:
        return images
    _, h, w = images.shape
    max_h, max_w = profile.max[2], profile.max[3]  # type: ignore[index]
    min_h, min_w = profile.min[2], profile.min[3]  # type: ignore[index]
    if h > max_h:
        top = (h - max_h) // 2
        images = images[:, top : top + max_h]
    if w > max_w:
        left = (w - max_w) // 2
        images = images[:, :, left : left + max_w]
    _, h, w = images.shape
    if h < min_h or w < min_w:
        images = np.pad(images, ((0, 0), (0, max(0, min_h - h)), (0, max(0, min_w - w))), mode="edge")
    return images


def _bound(cache: dict, size: int = 4) -> None:
    while len(cache) >= size:
        cache.pop(next(iter(cache)))


def parity_inputs(pair: str, task: str, n: int, profile: Profile, multiple: int, seed: int = SEED) -> dict[str, Any]:
    key = (pair, task, n, profile.min, profile.max, multiple, seed)
    if key not in _INPUTS_CACHE:
        _bound(_INPUTS_CACHE)
        _INPUTS_CACHE[key] = _parity_inputs(pair, task, n, profile, multiple, seed)
    return _INPUTS_CACHE[key]


def _parity_inputs(pair: str, task: str, n: int, profile: Profile, multiple: int, seed: int) -> dict[str, Any]:
    from ..data.degrade import normalize_instance
    from ..data.simulator import PAIRS, simulate

    note = None
    if pair not in PAIRS:
        note = f"model pair {pair!r} is not simulated; parity slices use t1-t2"
        pair = "t1-t2"
    sim = simulate(pair, task, "test", n, seed)
    ref = _fit(np.asarray(sim["reference"], np.float32), profile)
    tar = _fit(np.asarray(sim["target"], np.float32), profile)
    gt = _fit(np.asarray(sim["ground_truth"], np.float32), profile)
    _, h, w = tar.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    refs, tars, stats = [], [], []
    for i in range(len(tar)):
        r, _, _ = normalize_instance(ref[i])
        t, mean, std = normalize_instance(tar[i])
        refs.append(np.pad(r, ((0, ph), (0, pw)), mode="edge"))
        tars.append(np.pad(t, ((0, ph), (0, pw)), mode="edge"))
        stats.append((mean, std))
    return {
        "reference": np.stack(refs)[:, None].astype(np.float32),
        "target": np.stack(tars)[:, None].astype(np.float32),
        "stats": stats,
        "ground_truth": gt,
        "shape": (h, w),
        "source": f"simulator {pair} {task}, test split, seed {seed}, {len(tar)} slices of {h}x{w}",
        "note": note,
    }


def _batched(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], ref: np.ndarray, tar: np.ndarray, batch: int) -> np.ndarray:
    outs = []
    for start in range(0, len(tar), batch):
        r, t = ref[start : start + batch], tar[start : start + batch]
        short = batch - len(t)
        if short:  # a fixed-batch engine: repeat the last slice, drop the extra outputs
            r = np.concatenate([r, np.repeat(r[-1:], short, 0)])
            t = np.concatenate([t, np.repeat(t[-1:], short, 0)])
        outs.append(np.asarray(fn(r, t))[: len(t) - short if short else None])
    return np.concatenate(outs)


def reference_outputs(onnx_path: Path, metadata: dict[str, Any], ref: np.ndarray, tar: np.ndarray,
                      threads: int | None = None) -> tuple[np.ndarray, str]:
    """(normalised outputs, description) of the PyTorch model, or of the FP32 ONNX via ORT."""
    import hashlib

    key = (sha256_file(onnx_path), hashlib.sha256(ref.tobytes() + tar.tobytes()).hexdigest(), ref.shape)
    if key not in _REFERENCE_CACHE:
        _bound(_REFERENCE_CACHE)
        _REFERENCE_CACHE[key] = _reference_outputs(onnx_path, metadata, ref, tar, threads)
    out, label = _REFERENCE_CACHE[key]
    return out.copy(), label


def _reference_outputs(onnx_path: Path, metadata: dict[str, Any], ref: np.ndarray, tar: np.ndarray,
                       threads: int | None) -> tuple[np.ndarray, str]:
    ckpt = metadata.get("sgf.checkpoint_path")
    want = metadata.get("sgf.checkpoint_sha256")
    reason = "no checkpoint path in the ONNX metadata"
    if ckpt:
        path = Path(str(ckpt))
        if not path.is_file():
            reason = f"checkpoint {path} not found"
        elif want and sha256_file(path) != want:
            reason = f"checkpoint {path} no longer matches sgf.checkpoint_sha256"
        else:
            try:
                import torch  # lazy: the only torch import under sgf_deploy.engines

                from ..model import load_checkpoint

                model, _ = load_checkpoint(path)
                with torch.no_grad():
                    out = _batched(
                        lambda r, t: model.forward_core(torch.from_numpy(r), torch.from_numpy(t)).numpy(), ref, tar, 1
                    )
                return out.astype(np.float32), f"pytorch ({path.name}, sha256 {str(want)[:12]}...)"
            except ImportError:
                reason = "torch is not installed"
    import onnxruntime as ort

    from .onnxruntime.builder import session_options

    session = ort.InferenceSession(str(onnx_path), session_options("ORT_ENABLE_ALL", threads), providers=["CPUExecutionProvider"])
    out = _batched(lambda r, t: session.run(["reconstruction"], {"reference": r, "target": t})[0], ref, tar, 1)
    return out.astype(np.float32), (f"fp32 onnx via onnxruntime ({reason}; the export self-check showed "
                                    "FP32 ONNX == PyTorch to 1e-4)")


def compare(inputs: dict[str, Any], reference: np.ndarray, engine: np.ndarray) -> dict[str, Any]:
    from ..metrics import psnr

    h, w = inputs["shape"]
    ref_d = np.stack([reference[i, 0, :h, :w] * (s + _EPS) + m for i, (m, s) in enumerate(inputs["stats"])])
    eng_d = np.stack([engine[i, 0, :h, :w] * (s + _EPS) + m for i, (m, s) in enumerate(inputs["stats"])])
    if not np.isfinite(eng_d).all():
        return {"psnr_db": float("nan"), "max_abs_error": float("inf"), "non_finite_outputs": int((~np.isfinite(eng_d)).sum())}
    gt = inputs["ground_truth"].astype(np.float64)
    return {
        "psnr_db": round(float(psnr(ref_d, eng_d)), 3),
        "max_abs_error": float(np.abs(ref_d - eng_d).max()),
        "data_range": float(ref_d.max()),
        "psnr_vs_ground_truth": {"engine": round(float(psnr(gt, eng_d)), 3), "reference": round(float(psnr(gt, ref_d)), 3)},
    }


def build_parity(
    infer: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    *,
    onnx_path: Path,
    metadata: dict[str, Any],
    precision: str,
    profile: Profile,
    n: int = DEFAULT_SLICES,
    proxy: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    proxy_label: str | None = None,
    not_run_reason: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Parity of ``infer`` (the engine) against the reference. ``infer=None`` records
    ``not_run_reason`` (e.g. "not run: no GPU"); ``proxy`` (the precision-converted ONNX in ONNX
    Runtime) is then scored instead, under its own label, never as the engine's number."""
    if n <= 0:
        return {"status": "not run: disabled (--parity 0)"}
    started = time.perf_counter()
    task = str(metadata.get("sgf.task") or "recon4x")
    pair = str(metadata.get("sgf.pair") or "t1-t2")
    multiple = int(metadata.get("sgf.size_multiple") or 8)
    inputs = parity_inputs(pair, task, n, profile, multiple)
    ref_out, ref_label = reference_outputs(Path(onnx_path), metadata, inputs["reference"], inputs["target"], threads)
    batch = profile.min[0] if profile.static and profile.min else 1
    result: dict[str, Any] = {
        "reference": ref_label,
        "slices": inputs["source"],
        "guide_db": GUIDE_DB.get(precision),
        "image": "de-normalised, cropped to the slice; PSNR data_range = reference max (fastMRI)",
    }
    if inputs["note"]:
        result["note"] = inputs["note"]
    if infer is not None:
        result.update(compare(inputs, ref_out, _batched(infer, inputs["reference"], inputs["target"], batch)))
        result["status"] = "run"
        guide = GUIDE_DB.get(precision)
        result["meets_guide"] = bool(guide is not None and result["psnr_db"] == result["psnr_db"] and result["psnr_db"] >= guide)
    else:
        result["status"] = not_run_reason or "not run"
        result["psnr_db"] = None
    if proxy is not None:
        result["onnx_proxy"] = dict(compare(inputs, ref_out, _batched(proxy, inputs["reference"], inputs["target"], batch)),
                                    what=proxy_label or "precision-converted ONNX in ONNX Runtime (CPU), not the engine")
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
