"""The embedded sample through the embedded default engine (numpy + ONNX Runtime, no torch):
what ``sgf-deploy sample`` prints on a runtime-only install, where the PyTorch reference is absent."""

from __future__ import annotations

from typing import Any, Callable

from ..metrics import psnr, ssim


def score_default_on_sample(echo: Callable[[str], None] | None = None, task: str = "recon4x") -> dict[str, Any]:
    """PSNR/SSIM of zero-filled and of the default engine's reconstruction against ground truth."""
    from ..data import sample
    from .embedded import default_engine
    from .reconstructor import Reconstructor

    arrays = sample()
    engine, _ = default_engine(echo=echo, task=task)
    rec = Reconstructor.load(engine)
    pred = rec(arrays["reference"], arrays["target"])
    gt = arrays["ground_truth"]
    return {
        "engine": str(engine),
        "checkpoint_sha256": str(rec.manifest.checkpoint_sha256 or ""),
        "zero_filled": {"psnr": psnr(gt, arrays["target"]), "ssim": ssim(gt, arrays["target"])},
        "engine_scores": {"psnr": psnr(gt, pred), "ssim": ssim(gt, pred)},
        "shape": list(gt.shape),
    }
