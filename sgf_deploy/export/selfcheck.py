"""Export self-check: the written ONNX file (ONNX Runtime, CPU, FP32) against PyTorch.

Inputs are realistic slices — the project simulator's test split when it is importable, otherwise
a checkpoint-independent smooth phantom — pre-processed exactly as the runtime does
(ARCHITECTURE.md: per-instance normalisation, bottom/right edge padding to a multiple of 8).
Both outputs are compared on the normalised scale: max abs error and PSNR with
``data_range = max - min`` of the PyTorch output (on the normalised scale the background is
negative, so max - min plays the role of fastMRI's ``gt.max()`` on magnitude images).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from .. import contract
from ..compare import image_parity

# The gate (module constants so that a test can tighten them).
MAX_ABS_ERROR = 1e-4
MIN_PSNR_DB = 80.0
FUNCTION_MAX_ABS_ERROR = 1e-5  # the sgf::MCNS function alone vs torch.ops.sgf.mcns
FUNCTION_SHAPES = ((2, 7, 5), (1, 1, 9), (1, 13, 6))  # (B, H, W): odd sizes, a single row

SLICE_SHAPE = (233, 197)  # the simulator's slice grid (MNI152 1 mm, axial)
CROP_SHAPE = (128, 160)   # second dynamic-shape case: a centre crop
SEED = 1234


# ----------------------------------------------------------------------------------------- data
def load_slices(task: str, pair: str, n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, str]:
    """(reference, target) float32 (n, H, W) in intensity scale and a description of the source."""
    try:
        from ..data.simulator import simulate

        sim = simulate(pair, task, "test", n, seed)
        ref, tar = _pick(sim)
        ref, tar = np.asarray(ref, np.float32), np.asarray(tar, np.float32)
        if ref.shape == tar.shape and ref.ndim == 3 and len(ref) >= n and np.isfinite(ref).all() and np.isfinite(tar).all():
            return ref[:n], tar[:n], f"simulator ({pair}, {task}, test split, seed {seed})"
    except Exception:  # noqa: BLE001 - the simulator is optional here; the phantom always works
        pass
    ref, tar = phantom_slices(n, task, seed)
    return ref, tar, f"smooth phantom ({task}-style degradation, seed {seed})"


def _pick(sim: Any) -> tuple[Any, Any]:
    if isinstance(sim, dict):
        return sim["reference"], sim["target"]
    if isinstance(sim, (tuple, list)):
        return sim[0], sim[1]
    return sim.reference, sim.target


def phantom_slices(n: int, task: str = "recon4x", seed: int = SEED, shape: tuple[int, int] = SLICE_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like smooth phantoms: nested ellipses with contrast-specific intensities, a smooth
    bias field and fine texture; the target is degraded like ``task`` (zero-filled k-space
    undersampling or k-space cropping). Needs nothing but numpy."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    refs, tars = [], []
    for _ in range(n):
        # tissue intensities (reference contrast, target contrast): background, skull, CSF, GM, WM
        tissues = [(0.0, 0.0), (0.35, 0.15), (0.25, 1.0), (0.6, 0.75), (0.85, 0.55)]
        ref = np.zeros(shape)
        tar = np.zeros(shape)
        cy, cx = rng.normal(0, 0.03, 2)
        radii = [(0.92, 0.78), (0.86, 0.72), (0.8, 0.66), (0.55, 0.45)]
        for (ry, rx), (ir, it) in zip(radii, tissues[1:]):
            ry, rx = ry * rng.uniform(0.95, 1.05), rx * rng.uniform(0.95, 1.05)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            ref[inside], tar[inside] = ir, it
        for _ in range(6):  # small blobs (ventricles, lesions)
            by, bx = rng.uniform(-0.5, 0.5, 2)
            r = rng.uniform(0.04, 0.12)
            inside = ((yy - by) ** 2 + (xx - bx) ** 2) <= r * r
            ref[inside], tar[inside] = tissues[2]
        bias = 1 + 0.15 * np.sin(1.3 * yy + rng.uniform(0, 3)) * np.cos(1.1 * xx + rng.uniform(0, 3))
        texture = _smooth_noise(rng, shape, 6.0)
        mask = ref > 0
        ref = np.where(mask, ref * bias * (1 + 0.08 * texture), 0.0)
        tar = np.where(mask, tar * bias * (1 + 0.08 * texture), 0.0)
        refs.append(_blur(ref, 1.0))
        tars.append(_degrade(_blur(tar, 1.0), task, rng))
    return np.stack(refs).astype(np.float32), np.stack(tars).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    noise = _blur(rng.standard_normal(shape), sigma)
    return noise / (noise.std() + 1e-12)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.fftfreq(x.shape[1])[None, :]
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (fy**2 + fx**2))
    return np.real(np.fft.ifft2(np.fft.fft2(x) * g))


def _degrade(image: np.ndarray, task: str, rng: np.random.Generator) -> np.ndarray:
    try:
        from ..data.degrade import degrade

        return np.asarray(degrade(image, task, rng), np.float32)
    except Exception:  # noqa: BLE001 - unknown task or data package unavailable: 4x column undersampling
        k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image), norm="ortho"))
        w = image.shape[1]
        keep = rng.random(w) < 0.25
        centre = max(1, int(round(0.08 * w)))
        keep[(w - centre) // 2 : (w - centre) // 2 + centre] = True
        return np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k * keep[None, :]), norm="ortho"))).astype(np.float32)


def _prepare(ref: np.ndarray, tar: np.ndarray, shape: tuple[int, int], multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre-crop raw slices to at most ``shape``, then the input contract (normalise each slice,
    edge-pad bottom/right), padded on to ``shape`` (itself a multiple of ``multiple``)."""
    h, w = shape
    y0 = max(0, (ref.shape[1] - h) // 2)
    x0 = max(0, (ref.shape[2] - w) // 2)
    prepared = contract.prepare(ref[:, y0 : y0 + h, x0 : x0 + w], tar[:, y0 : y0 + h, x0 : x0 + w], multiple)
    return contract.pad_edge(prepared.reference, shape), contract.pad_edge(prepared.target, shape)


def plan_cases(static: tuple[int, int] | None, batch: int | None, multiple: int) -> list[tuple[int, int, int]]:
    """(N, H, W) of each self-check case: the static shape only, or two shapes when H, W are
    dynamic (full padded slices with N = 1, a centre crop with N = 2 — the batch goes on the small
    case, attention memory grows with the square of the positions), at the static batch if any."""
    if static is not None:
        return [(batch or 2, static[0], static[1])]
    full = (contract.padded_size(SLICE_SHAPE[0], multiple), contract.padded_size(SLICE_SHAPE[1], multiple))
    crop = (contract.padded_size(CROP_SHAPE[0], multiple), contract.padded_size(CROP_SHAPE[1], multiple))
    return [(batch or 1, *full), (batch or 2, *crop)]


# -------------------------------------------------------------------------------------- metrics
def compare(reference: np.ndarray, test: np.ndarray) -> tuple[float, float]:
    """(max abs error, PSNR in dB with data_range = max - min of ``reference``): the self-check's
    figures on the normalised scale (:func:`sgf_deploy.compare.image_parity`, rule
    ``reference_span``); PSNR is inf when the outputs are identical."""
    result = image_parity(reference, test, rule="reference_span")
    return result.max_abs_error, result.psnr_db


def check_function(onnx_path: str, groups: int, eps: float) -> dict[str, Any]:
    """The file's own ``sgf::MCNS`` FunctionProto, alone in a one-node model, in ONNX Runtime
    against ``torch.ops.sgf.mcns`` on random inputs (odd sizes, borders everywhere).

    The whole-network comparison alone is weak evidence for the function body: in an untrained
    network the attention is nearly uniform and MCNS moves the output by ~1e-4 at most."""
    import onnx
    import onnxruntime as ort
    import torch

    from ..model import mcns as _register  # noqa: F401  (registers torch.ops.sgf.mcns)
    from .mcns_function import DOMAIN, OP_TYPE, make_mcns_model

    proto = onnx.load(onnx_path)
    functions = [f for f in proto.functions if f.domain == DOMAIN and f.name == OP_TYPE]
    if len(functions) != 1:
        return {"passed": False, "max_abs_error": float("inf"), "error": f"{len(functions)} sgf::MCNS functions in the file"}
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    channels = 2 * groups
    gen = torch.Generator().manual_seed(SEED)
    worst, error = 0.0, None
    try:
        tiny = make_mcns_model(opset, groups, eps, channels, function=functions[0])
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures are reported in the record, not on stderr
        session = ort.InferenceSession(tiny.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for b, h, w in FUNCTION_SHAPES:
            ft, fr = (torch.randn(b, channels, h, w, generator=gen) for _ in range(2))
            st, sr = (torch.rand(b, groups, h, w, generator=gen) for _ in range(2))
            want = torch.ops.sgf.mcns(ft, fr, st, sr, groups, eps).numpy()
            feeds = {"feat_tar": ft.numpy(), "feat_ref": fr.numpy(), "sal_tar": st.numpy(), "sal_ref": sr.numpy()}
            got = session.run(None, feeds)[0]
            err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
            worst = max(worst, err if math.isfinite(err) else float("inf"))
    except Exception as exc:  # noqa: BLE001 - ORT refusing or failing to run the body is a failed check
        worst, error = float("inf"), f"ONNX Runtime: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__}"
    record = {
        "passed": error is None and worst <= FUNCTION_MAX_ABS_ERROR,
        "max_abs_error": worst,
        "tolerance": FUNCTION_MAX_ABS_ERROR,
        "shapes": [[b, channels, h, w] for b, h, w in FUNCTION_SHAPES],
        "groups": groups,
    }
    if error:
        record["error"] = error
    return record


def run_selfcheck(
    onnx_path: str,
    model: Any,
    task: str,
    pair: str,
    *,
    static: tuple[int, int] | None = None,
    batch: int | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``onnx_path`` with ONNX Runtime (CPU) and ``model.forward_core`` with PyTorch on the
    same pre-processed slices; returns the record (``passed`` says whether the gate held)."""
    import onnxruntime as ort
    import torch

    multiple = int(model.config.size_multiple)
    cases = plan_cases(static, batch, multiple)
    n = max(c[0] for c in cases)
    raw_ref, raw_tar, source = load_slices(task, pair, n)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # failures are reported in the record, not on stderr
    try:
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime cannot load the file: the check fails
        session, load_error = None, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    results = []
    for count, h, w in cases:
        idx = np.arange(count) % len(raw_ref)
        ref, tar = _prepare(raw_ref[idx], raw_tar[idx], (h, w), multiple)
        with torch.no_grad():
            want = model.forward_core(torch.from_numpy(ref), torch.from_numpy(tar)).numpy()
        try:
            if session is None:
                raise RuntimeError(f"cannot load the file: {load_error}")
            got = session.run(["reconstruction"], {"reference": ref, "target": tar})[0]
        except Exception as exc:  # noqa: BLE001 - the file does not run at this shape: a failed check
            got = np.full((0,), np.nan, np.float32)
            error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        else:
            error = None
        if got.shape != want.shape:
            max_abs, psnr_db = float("inf"), float("-inf")
        else:
            max_abs, psnr_db = compare(want, got)
        ok = max_abs <= MAX_ABS_ERROR and psnr_db >= MIN_PSNR_DB
        results.append({
            "shape": [count, 1, h, w], "max_abs_error": max_abs, "psnr_db": psnr_db, "passed": ok,
            "onnx_output_shape": list(got.shape),
        })
        if error:
            results[-1]["error"] = f"ONNX Runtime: {error}"
        if echo:
            echo(f"self-check {count}x1x{h}x{w}: max |onnx - torch| = {max_abs:.3g}, "
                 f"PSNR(onnx, torch) = {psnr_db:.1f} dB  [{'ok' if ok else 'FAIL'}]")
    function = check_function(onnx_path, int(model.config.groups), float(model.config.eps))
    if echo:
        echo(f"self-check sgf::MCNS function alone vs torch.ops.sgf.mcns: max abs error = "
             f"{function['max_abs_error']:.3g}  [{'ok' if function['passed'] else 'FAIL'}]")
    passed = all(r["passed"] for r in results) and function["passed"]
    return {
        "passed": passed,
        "verdict": "pass" if passed else "fail",
        "max_abs_error": max(r["max_abs_error"] for r in results),
        "psnr_db": min(r["psnr_db"] for r in results),
        "tolerance": {"max_abs_error": MAX_ABS_ERROR, "min_psnr_db": MIN_PSNR_DB},
        "cases": results,
        "mcns_function": function,
        "data": source,
        "scale": "normalised (per-instance), PSNR data_range = max - min of the PyTorch output",
        "backend": f"onnxruntime {ort.__version__} CPUExecutionProvider, float32",
        "reference": f"torch {torch.__version__} model.forward_core, float32",
    }
