"""Training loop: L1 on the target, Adam with step decay, periodic validation, resumable.

Batches are a pure function of (seed, step), so a resumed run sees exactly the batches an
uninterrupted run would, and a run is deterministic on the CPU for a seed and thread count.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..artifacts import check_writable
from ..errors import CheckpointError, SgfError
from .checkpoint import model_from_state, read_checkpoint, save_checkpoint
from .config import SGFConfig
from ..contract import normalize_instance
from .infer import reconstruct
from .network import SGFMRI
from .presets import get_preset

VAL_SEED = 1234


@dataclass
class TrainSettings:
    preset: str = "lite"
    task: str = "recon4x"
    pair: str = "t1-t2"
    steps: int = 2000
    batch: int = 4
    crop: int | None = 128
    lr: float = 2e-4
    decay_every: int | None = None  # default: 40 % of the steps (the paper: /10 every 40 epochs)
    decay_factor: float = 0.1
    val_every: int = 250
    val_n: int = 16
    seed: int = 0
    no_reference: bool = False
    data: str = "sim"  # "sim" or a folder of the user's pairs (sgf_deploy.data.pairs)
    ref_tag: str | None = None  # contrast tags pairing the folder's files (None: role names, then T1/T2)
    tar_tag: str | None = None
    threads: int | None = None
    pool: int = 512  # simulated slices generated once; each step crops from them (0 = simulate every example)

    def resolved_decay(self) -> int:
        return self.decay_every or max(1, int(self.steps * 0.4))


class BatchSource:
    """Normalised (reference, target, ground truth) crops for a training step.

    With the simulator, a pool of ``settings.pool`` whole slices (distinct subject/slice draws of
    the train split) is simulated once; each step draws slices and crop positions from it. The
    pool and every draw are functions of the seed, so batches stay a pure function of the step.
    """

    def __init__(self, settings: TrainSettings) -> None:
        self.s = settings
        self._h5 = None
        self._pool: list | None = None
        if settings.data != "sim":
            from ..data.pairs import PairSource, find_pairs

            self._h5 = PairSource(find_pairs(settings.data, settings.ref_tag, settings.tar_tag), settings.task,
                                  seed=settings.seed)
        else:
            from ..data import simulator

            self._subjects = list(simulator.split_subjects("train"))
            self._slices = list(simulator.split_slices("train"))

    def example(self, rng: np.random.Generator):
        if self._h5 is not None:
            return next(self._h5)
        if self.s.pool:
            if self._pool is None:
                self._pool = [self._simulate(np.random.default_rng([self.s.seed, 7919, i])) for i in range(self.s.pool)]
            return self._pool[int(rng.integers(len(self._pool)))]
        return self._simulate(rng)

    def _simulate(self, rng: np.random.Generator):
        from ..data.simulator import make_example

        subject = int(rng.choice(self._subjects))
        slice_index = int(rng.choice(self._slices))
        return make_example(self.s.pair, self.s.task, "train", subject, slice_index, seed=self.s.seed)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.s.seed, step])
        refs, tars, gts = [], [], []
        for _ in range(self.s.batch):
            ex = self.example(rng)
            ref_n, _, _ = normalize_instance(ex.reference)
            tar_n, mean, std = normalize_instance(ex.target)
            gt_n = (ex.ground_truth - mean) / (std + 1e-11)
            ref_n, tar_n, gt_n = _random_crop((ref_n, tar_n, gt_n.astype(np.float32)), self.s.crop, rng)
            refs.append(ref_n)
            tars.append(tar_n)
            gts.append(gt_n)
        as_t = lambda xs: torch.from_numpy(np.stack(xs)[:, None].copy())  # noqa: E731
        return as_t(refs), as_t(tars), as_t(gts)


def _random_crop(arrays, crop: int | None, rng: np.random.Generator):
    if not crop:
        return arrays
    h, w = arrays[0].shape
    ch, cw = min(crop, h), min(crop, w)
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    return tuple(a[y : y + ch, x : x + cw] for a in arrays)


def validation_set(settings: TrainSettings) -> dict[str, np.ndarray]:
    if settings.data == "sim":
        from ..data.simulator import simulate

        return simulate(settings.pair, settings.task, "val", settings.val_n, seed=VAL_SEED)
    source = BatchSource(dataclasses.replace(settings, seed=VAL_SEED))
    exs = [next(source._h5) for _ in range(settings.val_n)]
    return {k: np.stack([getattr(e, k) for e in exs]) for k in ("reference", "target", "ground_truth")}


def evaluate_arrays(model: SGFMRI, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean per-slice PSNR/SSIM/NMSE against ground truth (each slice is its own volume)."""
    from ..metrics import summarize

    model.eval()
    pred = reconstruct(model, data["reference"], data["target"])
    rows = [summarize(g, p) for g, p in zip(data["ground_truth"], pred)]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)}


def train(
    settings: TrainSettings,
    out: str | Path,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train and write a checkpoint to ``out``; returns its metadata."""
    out = check_writable(out, overwrite)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    np.random.seed(settings.seed)

    config = dataclasses.replace(get_preset(settings.preset), use_reference=not settings.no_reference)
    model = SGFMRI(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.resolved_decay(), settings.decay_factor)
    start_step, history = 0, []
    if resume is not None:
        state, meta, training_state = read_checkpoint(resume)
        if training_state is None:
            raise CheckpointError(f"{resume}: has no training state to resume from (only .pt checkpoints written by train carry it)")
        model = model_from_state(state, meta, str(resume))
        if model.config != config:
            raise CheckpointError(f"{resume}: its config differs from --preset {settings.preset} / --no-reference {settings.no_reference}")
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
        optimizer.load_state_dict(training_state["optimizer"])
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.resolved_decay(), settings.decay_factor)
        scheduler.load_state_dict(training_state["scheduler"])
        start_step = int(training_state["step"])
        history = list(meta.get("provenance", {}).get("history", []))
        log(f"resuming {resume} at step {start_step}")
    if start_step >= settings.steps:
        raise SgfError(f"{resume}: already trained for {start_step} steps; ask for more than that with --steps")

    source = BatchSource(settings)
    val_data = validation_set(settings)
    loss_fn = torch.nn.L1Loss()
    t0 = time.time()
    bar = _progress(range(start_step, settings.steps), progress, settings.steps, start_step)
    last_val: dict[str, float] = {}
    for step in bar:
        model.train()
        ref, tar, gt = source.batch(step)
        loss = loss_fn(model(ref, tar), gt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % settings.val_every == 0 or done == settings.steps:
            last_val = evaluate_arrays(model, val_data)
            history.append({"step": done, "loss": loss.item(), **last_val})
            msg = f"step {done}: loss {loss.item():.4f} val PSNR {last_val['psnr']:.2f} dB SSIM {last_val['ssim']:.4f}"
            bar.write(msg) if hasattr(bar, "write") else log(msg)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")

    provenance = {
        "data": "simulator (MNI152 2009 tissue maps, nilearn)" if settings.data == "sim" else str(settings.data),
        "settings": dataclasses.asdict(settings),
        "task": settings.task,
        "pair": settings.pair,
        "steps": settings.steps,
        "seed": settings.seed,
        "no_reference": settings.no_reference,
        "final_validation": last_val,
        "history": history,
        "train_seconds_this_run": round(time.time() - t0, 1),
        "torch_version": str(torch.__version__),
        "toolkit_version": __version__,
    }
    training_state = {
        "step": settings.steps,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    meta = save_checkpoint(out, model, provenance, training_state=training_state if Path(out).suffix == ".pt" else None, overwrite=overwrite)
    log(f"wrote {out} (sha256 {meta['sha256']})")
    return meta


def _progress(it, enabled: bool, total: int, initial: int):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


__all__ = ["TrainSettings", "train", "evaluate_arrays", "validation_set", "SGFConfig"]
