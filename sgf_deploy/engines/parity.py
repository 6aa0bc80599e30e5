"""Build-time parity: PSNR of the engine against the PyTorch reference on held-out slices.

Slices: the simulator's **test** split (never the train split calibration uses) for the pair and
task of the model (ONNX metadata), or the **test subjects** of a folder of the user's pairs
(``build --data DIR``; :mod:`sgf_deploy.data.splits`). A model trained on a folder
(``train --data DIR``; its checkpoint has ``<checkpoint>.split.json``) is checked on that folder's
test subjects even when ``--data`` is left at ``sim``: the simulator has none of its contrasts.
``n`` slices (default 4), prepared by the input contract
(:mod:`sgf_deploy.contract`); when the engine's profile does not admit the slices, they are
centre-cropped to the profile's maximum / edge-padded to its minimum first (the same input goes to
both sides).

Reference: the PyTorch model of the checkpoint named in the ONNX metadata
(``sgf.checkpoint_path``) when that file exists and its sha256 equals ``sgf.checkpoint_sha256``
(torch imported lazily, here only); otherwise the FP32 ONNX file through ONNX Runtime (the export
self-check proved it equal to PyTorch to 1e-4), and the result says so.

Score (:func:`sgf_deploy.compare.image_parity`): PSNR(reference, engine) on the **de-normalised**
images cropped back to the slice size, data range ``reference_max`` (the reference's maximum over
all slices), plus the max absolute error, and both sides' PSNR against the ground truth (the
model's quality; their difference is what the deployment costs).

An engine this machine cannot run (TensorRT without a GPU) is recorded as "not run: ..." and its
precision-converted ONNX is scored in ONNX Runtime instead, under its own label (``onnx_proxy``),
never as the engine's number.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import contract
from ..artifacts import sha256_file
from ..compare import image_parity
from ..errors import EngineMismatchError, SgfError
from .identity import Profile

SEED = 4321
# Guide values printed with the result (the gate is `sgf-deploy validate`, not the build).
GUIDE_DB: dict[str, float] = {"fp32": 80.0, "fp16": 50.0, "int8": 40.0}
PROXY_LABEL = "the {precision} ONNX model this engine was built from, run in ONNX Runtime (CPU); not the engine"
# In-process caches: several engines of one model built in one process (tests, `make demo`)
# simulate the slices and run the reference once. Keyed by everything that determines them.
_INPUTS_CACHE: dict[tuple, dict[str, Any]] = {}
_REFERENCE_CACHE: dict[tuple, tuple[np.ndarray, str]] = {}
Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _bound(cache: dict, size: int = 4) -> None:
    while len(cache) >= size:
        cache.pop(next(iter(cache)))


def fit_profile(images: np.ndarray, profile: Profile) -> np.ndarray:
    """Bring ``(n, H, W)`` slices inside the profile: centre-crop to its max, edge-pad to its min."""
    if profile.dynamic:
        return images
    h, w = images.shape[-2:]
    th = min(max(h, profile.min[2]), profile.max[2])  # type: ignore[index]
    tw = min(max(w, profile.min[3]), profile.max[3])  # type: ignore[index]
    return images if (th, tw) == (h, w) else contract.fit(images, (th, tw))


def recorded_split(metadata: dict[str, Any]) -> Any:
    """The subject split of the checkpoint the ONNX file names (``<checkpoint>.split.json``,
    tied to it by ``sgf.checkpoint_sha256``), or None (trained on the simulator, or not found)."""
    from ..data.splits import read_sidecar

    from ..errors import InputError

    ckpt = metadata.get("sgf.checkpoint_path")
    if not ckpt:
        return None
    try:
        return read_sidecar(ckpt, str(metadata.get("sgf.checkpoint_sha256") or "") or None)
    except InputError:  # a split record of another checkpoint: not this model's split
        return None


def parity_inputs(data: str, pair: str, task: str, n: int, profile: Profile, multiple: int,
                  seed: int = SEED, split: Any = None) -> dict[str, Any]:
    """Held-out slices (``data``: "sim" or a folder of the user's pairs, its test subjects under
    ``split``) fitted to the profile and prepared by the input contract."""
    key = (str(data), pair, task, n, profile.min, profile.max, multiple, seed,
           None if split is None else str(split.to_dict()))
    if key not in _INPUTS_CACHE:
        _bound(_INPUTS_CACHE)
        _INPUTS_CACHE[key] = _parity_inputs(str(data), pair, task, n, profile, multiple, seed, split)
    return _INPUTS_CACHE[key]


def _parity_inputs(data: str, pair: str, task: str, n: int, profile: Profile, multiple: int, seed: int,
                   split: Any = None) -> dict[str, Any]:
    note = None
    if data == "sim" and split is not None and Path(split.folder).is_dir():
        data = split.folder
        note = f"model trained on {split.folder} ({split.label}): parity on its held-out test subjects, not the simulator"
    elif data == "sim" and split is not None:
        note = f"model trained on {split.folder}, which is gone; parity slices are simulated"
    if data == "sim":
        from ..data.simulator import PAIRS, simulate

        if pair not in PAIRS:
            note = (note + "; " if note else "") + f"model pair {pair!r} is not simulated; parity slices use t1-t2"
            pair = "t1-t2"
        sim = simulate(pair, task, "test", n, seed)
        images, what = [sim[k] for k in ("reference", "target", "ground_truth")], f"simulator {pair} {task}, test split"
    else:
        images, what = _user_slices(data, task, n, seed, split)
    ref, tar, gt = (fit_profile(np.asarray(x, np.float32), profile) for x in images)
    prepared = contract.prepare(ref, tar, multiple)
    return {
        "prepared": prepared,
        "ground_truth": gt,
        "source": f"{what}, seed {seed}, {prepared.n} slices of {prepared.h}x{prepared.w}",
        "note": note,
    }


def _user_slices(folder: str, task: str, n: int, seed: int, split: Any = None) -> tuple[list[np.ndarray], str]:
    """The first ``n`` slices of a user folder's test pairs that share the first pair's slice shape."""
    from ..data.pairs import load_pair
    from ..data.splits import pairs_for

    picked: list[list[np.ndarray]] = [[], [], []]
    pairs, how = pairs_for(folder, "test", split)
    for files in pairs:
        pair = load_pair(files, task, seed, n - len(picked[0]))
        if pair.ground_truth is None or (picked[0] and pair.target.shape[-2:] != picked[1][0].shape):
            continue
        for i, arr in enumerate((pair.reference, pair.target, pair.ground_truth)):
            picked[i].extend(arr)
        if len(picked[0]) >= n:
            break
    if not picked[0]:
        raise SgfError(f"{folder}: no test pair with a ground truth for the build-time parity check ({how})")
    return [np.stack(x) for x in picked], f"user pairs in {folder}, {how}"


def reference_outputs(onnx_path: Path, metadata: dict[str, Any], prepared: contract.Prepared,
                      threads: int | None = None) -> tuple[np.ndarray, str]:
    """(normalised outputs, description) of the PyTorch model, or of the FP32 ONNX via ORT."""
    digest = hashlib.sha256(prepared.reference.tobytes() + prepared.target.tobytes()).hexdigest()
    key = (sha256_file(onnx_path), digest, prepared.reference.shape)
    if key not in _REFERENCE_CACHE:
        _bound(_REFERENCE_CACHE)
        _REFERENCE_CACHE[key] = _reference_outputs(onnx_path, metadata, prepared, threads)
    out, label = _REFERENCE_CACHE[key]
    return out.copy(), label


def _pytorch_reference(metadata: dict[str, Any]) -> tuple[Infer | None, str]:
    """(the checkpoint's ``forward_core`` as an infer function, its label) or (None, why not)."""
    ckpt, want = metadata.get("sgf.checkpoint_path"), metadata.get("sgf.checkpoint_sha256")
    if not ckpt:
        return None, "no checkpoint path in the ONNX metadata"
    path = Path(str(ckpt))
    if not path.is_file():
        return None, f"checkpoint {path} not found"
    if want and sha256_file(path) != want:
        return None, f"checkpoint {path} no longer matches sgf.checkpoint_sha256"
    try:
        from ..model.infer import torch_infer  # lazy: the only torch import under sgf_deploy.engines
    except ImportError:
        return None, "torch is not installed"
    from ..model import load_checkpoint

    model, _ = load_checkpoint(path)
    return torch_infer(model), f"pytorch ({path.name}, sha256 {str(want)[:12]}...)"


def ort_infer(model_path: Path, threads: int | None) -> Infer:
    """An ONNX Runtime CPU session on ``model_path`` as an infer function."""
    import onnxruntime as ort

    from .onnxruntime.builder import session_options

    session = ort.InferenceSession(str(model_path), session_options("ORT_ENABLE_ALL", threads),
                                   providers=["CPUExecutionProvider"])
    return lambda r, t: session.run(["reconstruction"], {"reference": r, "target": t})[0]


def _reference_outputs(onnx_path: Path, metadata: dict[str, Any], prepared: contract.Prepared,
                       threads: int | None) -> tuple[np.ndarray, str]:
    infer, label = _pytorch_reference(metadata)
    if infer is None:
        infer, label = ort_infer(onnx_path, threads), (
            f"fp32 onnx via onnxruntime ({label}; the export self-check showed FP32 ONNX == PyTorch to 1e-4)")
    return contract.run_batched(infer, prepared.reference, prepared.target, 1), label


def score(inputs: dict[str, Any], reference: np.ndarray, engine: np.ndarray) -> dict[str, Any]:
    """Parity of ``engine`` with ``reference`` (normalised outputs), and both vs the ground truth."""
    from ..metrics import psnr

    prepared = inputs["prepared"]
    ref_d = contract.restore(reference, prepared)  # float32: the images a user gets
    eng_d = contract.restore(engine, prepared)
    result = image_parity(ref_d, eng_d, rule="reference_max")
    out = result.to_dict(digits=3)
    if result.finite:
        gt = inputs["ground_truth"].astype(np.float64)
        out["psnr_vs_ground_truth"] = {"engine": round(float(psnr(gt, eng_d)), 3),
                                       "reference": round(float(psnr(gt, ref_d)), 3)}
    return out


def build_parity(infer: Infer | None, *, onnx_path: Path, metadata: dict[str, Any], precision: str,
                 profile: Profile, n: int, data: str = "sim", proxy: Infer | None = None,
                 not_run_reason: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Parity of ``infer`` (the engine) against the reference. ``infer=None`` records
    ``not_run_reason`` (e.g. "not run: no GPU"); ``proxy`` (the precision-converted ONNX in ONNX
    Runtime) is then scored instead, under its own label, never as the engine's number."""
    if n <= 0:
        return {"status": "not run: disabled (--n 0)"}
    started = time.perf_counter()
    inputs = parity_inputs(data, str(metadata.get("sgf.pair") or "t1-t2"), str(metadata.get("sgf.task") or "recon4x"),
                           n, profile, contract.size_multiple(metadata), split=recorded_split(metadata))
    prepared = inputs["prepared"]
    ref_out, ref_label = reference_outputs(Path(onnx_path), metadata, prepared, threads)
    result: dict[str, Any] = {
        "reference": ref_label, "slices": inputs["source"], "guide_db": GUIDE_DB.get(precision),
        "image": "de-normalised, cropped to the slice; PSNR data_range = reference max (fastMRI)",
    }
    if inputs["note"]:
        result["note"] = inputs["note"]
    batch, static = 1, profile.static_batch
    if infer is not None:
        result.update(score(inputs, ref_out, contract.run_batched(infer, prepared.reference, prepared.target, batch, static)))
        result["status"] = "run"
        guide = GUIDE_DB.get(precision)
        result["meets_guide"] = bool(guide is not None and result["psnr_db"] >= guide)
    else:
        result["status"] = not_run_reason or "not run"
        result["psnr_db"] = None
    if proxy is not None:
        proxied = score(inputs, ref_out, contract.run_batched(proxy, prepared.reference, prepared.target, batch, static))
        result["onnx_proxy"] = dict(proxied, what=PROXY_LABEL.format(precision=precision.upper()))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _engine_runner(plan: Any, staged: Path, manifest: Any) -> tuple[Any, str | None]:
    """(a runner for the staged engine, None) or (None, why it cannot run here)."""
    from .identity import gpu_devices

    if plan.backend == "onnxruntime":
        from .onnxruntime.runner import OrtRunner

        return OrtRunner(staged, manifest, threads=plan.settings.threads), None
    if plan.backend == "openvino":
        from .openvino.runner import OvRunner

        return OvRunner(staged, manifest, threads=plan.settings.threads), None
    if not gpu_devices():
        return None, "not run: no GPU"
    from .tensorrt.runner import TrtRunner

    try:
        return TrtRunner(staged, manifest), None
    except (EngineMismatchError, SgfError) as exc:
        return None, f"not run: {exc}"


def engine_parity(plan: Any, staged: Path, manifest: Any, model_path: Path) -> dict[str, Any]:
    """Build-time parity of a staged engine (:class:`sgf_deploy.engines.build.BuildPlan`)."""
    n = int(plan.settings.parity_n)
    if n <= 0:
        return {"status": "not run: disabled (--n 0)"}
    runner, reason = _engine_runner(plan, staged, manifest)
    proxy = ort_infer(model_path, plan.settings.threads) if runner is None else None
    try:
        return build_parity(runner.infer if runner is not None else None, onnx_path=plan.onnx_path,
                            metadata=plan.metadata, precision=plan.precision, profile=plan.profile, n=n,
                            data=plan.settings.parity_data, proxy=proxy, not_run_reason=reason, threads=plan.settings.threads)
    finally:
        if runner is not None:
            runner.close()
