"""INT8 experiment (issue 18): quantisation-aware fine-tuning of a checkpoint, then the unchanged
post-training quantisation (``benchmarks/int8_options.py``) on the fine-tuned weights.

    python benchmarks/int8_qat.py --steps 600 --lr 1e-5 --out build/qat/lite-recon4x-t1-t2-qat.pt
    python benchmarks/int8_qat.py --steps 600 --lr 1e-5 --threads 1 --no-fq --out build/qat/lite-recon4x-t1-t2-ft-control.pt
    python benchmarks/int8_options.py --ckpt build/qat/lite-recon4x-t1-t2-qat.pt --calib-n 64 --n 64 --threads 2 \
        --variants ov-default,ort-default --speed-repeats 0 --work build/qat/int8-qat --json build/qat/int8_qat.json

Not a toolkit feature (results in benchmarks/README.md, "INT8 options, round 5"): the fine-tuned
checkpoint is a new model, and this fake quantisation only approximates the deployed one.

Fake quantisation in the forward pass of every Conv2d except the input conv (``head``, kept float
by @input): weights per output channel, symmetric, 7-bit range [-63, 63] (NNCF's overflow fix on
this non-VNNI CPU); the conv's input activation per tensor, asymmetric uint8, range = EMA of the
batch min/max. Straight-through gradients (torch.fake_quantize_*). After training the hooks are
removed and plain FP32 weights are saved: the deployed INT8 is built by the normal path.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.utils.parametrize as P

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from sgf_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from sgf_deploy.model.train import BatchSource, TrainSettings, evaluate_arrays, validation_set
from sgf_deploy.artifacts import sha256_file


class WeightFQ(nn.Module):
    def __init__(self, qmax: int):
        super().__init__()
        self.qmax = qmax

    def forward(self, w):
        scale = (w.detach().abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / self.qmax).float()
        zp = torch.zeros(w.shape[0], dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, -self.qmax, self.qmax)


class ActFQ:
    def __init__(self, momentum: float = 0.95):
        self.lo = None
        self.hi = None
        self.m = momentum
        self.frozen = False

    def __call__(self, module, args):
        x = args[0]
        if not self.frozen or self.lo is None:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            if self.lo is None:
                self.lo, self.hi = lo, hi
            else:
                self.lo = self.m * self.lo + (1 - self.m) * lo
                self.hi = self.m * self.hi + (1 - self.m) * hi
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max(hi - lo, 1e-8) / 255.0
        zp = int(round(-lo / scale))
        zp = min(max(zp, 0), 255)
        return (torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255),) + tuple(args[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=str(ROOT / "sgf_deploy/assets/default/lite-recon4x-t1-t2.pt"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--qmax", type=int, default=63)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-fq", action="store_true", help="control: the same fine-tuning without fake quantisation")
    ap.add_argument("--out", default=str(ROOT / "build/qat/lite-recon4x-t1-t2-qat.pt"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model, meta = load_checkpoint(a.ckpt)
    settings = TrainSettings(preset="lite", task="recon4x", pair="t1-t2", batch=a.batch, crop=a.crop,
                             seed=a.seed, pool=512, val_n=16)
    val = validation_set(settings)
    model.eval()
    print("FP32 before:", evaluate_arrays(model, val), flush=True)
    hooks, acts = [], []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and name != "head" and not a.no_fq:
            P.register_parametrization(mod, "weight", WeightFQ(a.qmax))
            fq = ActFQ()
            acts.append(fq)
            hooks.append(mod.register_forward_pre_hook(fq))
    print(f"fake-quantised convs: {len(hooks)}", flush=True)
    source = BatchSource(settings)
    # warm the activation ranges on a few batches without training
    model.eval()
    with torch.no_grad():
        for step in range(8):
            ref, tar, gt = source.batch(10_000 + step)
            model(ref, tar)
    print("QAT-model (fake quant) before fine-tuning:", evaluate_arrays(model, val), flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    loss_fn = nn.L1Loss()
    t0 = time.time()
    for step in range(a.steps):
        model.train()
        ref, tar, gt = source.batch(step)
        loss = loss_fn(model(ref, tar), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 100 == 0:
            model.eval()
            for f in acts:
                f.frozen = True
            r = evaluate_arrays(model, val)
            for f in acts:
                f.frozen = False
            print(f"step {step + 1}: loss {loss.item():.4f} fake-quant val PSNR {r['psnr']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    for h in hooks:
        h.remove()
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and P.is_parametrized(mod, "weight"):
            P.remove_parametrizations(mod, "weight", leave_parametrized=False)
    model.eval()
    print("FP32 after:", evaluate_arrays(model, val), flush=True)
    prov = dict(meta.get("provenance", {}))
    prov["qat"] = {"from": a.ckpt, "from_sha256": sha256_file(a.ckpt), "steps": a.steps, "lr": a.lr,
                   "batch": a.batch, "crop": a.crop, "weight_levels": [-a.qmax, a.qmax], "seed": a.seed,
                   "note": "benchmarks/int8_qat.py (issue 18 experiment)", "fake_quant": not a.no_fq}
    out = save_checkpoint(a.out, model, prov, overwrite=True)
    print("wrote", out["path"], out["sha256"][:12])


if __name__ == "__main__":
    main()
