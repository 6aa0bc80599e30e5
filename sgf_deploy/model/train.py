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
    init: str | None = None  # start from this checkpoint's weights (fresh optimiser); its sha256 is recorded
    snapshot: bool = False  # at every validation also write <out stem>.snapshot.pt (resumable, steps so far)
    mix: str | None = None  # named pairs mixed into the simulator's pair, "t1-t2=0.25,..." (sgf_deploy.data.pair_mixture)
    fluid_pairs: float = 0.0  # random pair only: fraction of its subjects drawn fluid-inverted (RandomSpec.fluid_fraction)

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
            from ..data.pairs import PairSource
            from ..data.splits import split_folder

            pairs, split = split_folder(settings.data, settings.seed, settings.ref_tag, settings.tar_tag)
            self._h5 = PairSource(split.select(pairs, "train"), settings.task, seed=settings.seed)  # train subjects only
        else:
            from ..data import simulator
            from ..data.pair_mixture import parse_mix
            from ..data.random_contrast import RandomSpec

            self._mix = parse_mix(settings.mix)
            self._spec = RandomSpec(fluid_fraction=settings.fluid_pairs).validate()
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
        from ..data.pair_mixture import draw_pair
        from ..data.simulator import make_example

        subject = int(rng.choice(self._subjects))
        slice_index = int(rng.choice(self._slices))
        pair = draw_pair(rng, self.s.pair, self._mix)
        return make_example(pair, self.s.task, "train", subject, slice_index, seed=self.s.seed, spec=self._spec)

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
    return user_validation_set(settings)


def user_validation_set(settings: TrainSettings) -> dict[str, np.ndarray]:
    """Up to ``val_n`` distinct slices of the folder's *validation subjects* (never a training
    subject: :mod:`sgf_deploy.data.splits`), degraded with a fixed seed; slices of different
    sizes are centre-cropped to the smallest common size."""
    from ..data.pairs import PairSource
    from ..data.splits import split_folder
    from ..metrics import center_crop

    pairs, split = split_folder(settings.data, settings.seed, settings.ref_tag, settings.tar_tag)
    source = PairSource(split.select(pairs, "val"), settings.task, seed=VAL_SEED)
    index = [(i, s) for i in range(len(source.pairs)) for s in range(source.slices(i))]
    rng = np.random.default_rng([VAL_SEED, 0x5641])
    picked = sorted(index[j] for j in rng.permutation(len(index))[: settings.val_n])
    exs = [source.example(i, s, rng) for i, s in picked]
    h = min(e.target.shape[0] for e in exs)
    w = min(e.target.shape[1] for e in exs)
    return {k: np.stack([center_crop(np.asarray(getattr(e, k)), (h, w)) for e in exs]).astype(np.float32)
            for k in ("reference", "target", "ground_truth")}


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
    if settings.mix and settings.data != "sim":
        raise SgfError(f"--mix mixes the simulator's pairs; it does not apply to --data {settings.data}")
    if settings.fluid_pairs:
        from ..data.simulator import RANDOM_PAIR

        if settings.data != "sim" or settings.pair != RANDOM_PAIR:
            raise SgfError("--fluid-pairs tilts the simulator's random pair; it needs --pair random (and no --data)")
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
    init_record = _initialise(model, settings, log) if settings.init else None
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

    user_record = _user_data_record(settings, log)  # {} for the simulator
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
            if settings.snapshot and done < settings.steps:
                _snapshot(out, model, optimizer, scheduler, done, settings, history)
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
        "init": init_record,
        "final_validation": last_val,
        "history": history,
        "train_seconds_this_run": round(time.time() - t0, 1),
        "torch_version": str(torch.__version__),
        "toolkit_version": __version__,
    }
    provenance.update(user_record)
    training_state = {
        "step": settings.steps,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    meta = save_checkpoint(out, model, provenance, training_state=training_state if Path(out).suffix == ".pt" else None, overwrite=overwrite)
    log(f"wrote {out} (sha256 {meta['sha256']})")
    if user_record:
        from ..data.splits import DataSplit, write_sidecar

        log(f"wrote {write_sidecar(out, DataSplit.from_dict(user_record['split']), meta['sha256'], task=settings.task)} (the subject split)")
    return meta


def _user_data_record(settings: TrainSettings, log: Callable[[str], None]) -> dict[str, Any]:
    """What the checkpoint records about a user folder (``--data DIR``): the pair label from the
    contrast tags (``pd-pdfs``, not the simulator's ``--pair``), the folder, and the subject split
    that every later stage reads (:mod:`sgf_deploy.data.splits`)."""
    if settings.data == "sim":
        return {}
    from ..data.splits import split_folder

    pairs, split = split_folder(settings.data, settings.seed, settings.ref_tag, settings.tar_tag)
    log(f"{settings.data}: {len(pairs)} pair(s), pair label '{split.label}', subject split {split.describe()}; "
        f"validation on the {len(split.subjects['val'])} held-out validation subject(s) only")
    return {"data": split.folder, "pair": split.label, "split": split.to_dict(),
            "settings": dict(dataclasses.asdict(settings), pair=split.label, ref_tag=split.ref_tag, tar_tag=split.tar_tag)}


def _snapshot(out: Path, model: SGFMRI, optimizer, scheduler, done: int, settings: TrainSettings,
              history: list) -> None:
    """A resumable checkpoint of the run so far beside ``out`` (``<stem>.snapshot.pt``), so that a
    run cut short on a shared machine still leaves its latest validated weights."""
    path = Path(out).with_name(Path(out).stem + ".snapshot.pt")
    provenance = {"task": settings.task, "pair": settings.pair, "steps": done, "partial_of": settings.steps,
                  "settings": dataclasses.asdict(settings), "history": list(history),
                  "torch_version": str(torch.__version__), "toolkit_version": __version__}
    state = {"step": done, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    save_checkpoint(path, model, provenance, training_state=state, overwrite=True)


def _initialise(model: SGFMRI, settings: TrainSettings, log: Callable[[str], None]) -> dict[str, Any]:
    """Copy the weights of ``settings.init`` into ``model`` (same config); the optimiser starts
    fresh. Returns what the provenance records about the starting checkpoint."""
    state, meta, _ = read_checkpoint(settings.init)
    start = model_from_state(state, meta, str(settings.init))
    if start.config != model.config:
        raise CheckpointError(f"{settings.init}: its config differs from --preset {settings.preset} / "
                              f"--no-reference {settings.no_reference}; --init needs the same network")
    model.load_state_dict(start.state_dict())
    prov = meta.get("provenance", {})
    log(f"initialised from {settings.init} (sha256 {meta['sha256']})")
    return {"name": Path(settings.init).name, "sha256": meta["sha256"], "task": prov.get("task"),
            "pair": prov.get("pair"), "steps": prov.get("steps")}


def _progress(it, enabled: bool, total: int, initial: int):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


__all__ = ["TrainSettings", "train", "evaluate_arrays", "validation_set", "SGFConfig"]
