"""Package a trained checkpoint as the embedded default (and its control), plus the embedded sample.

Usage (what produced the shipped assets):
    python benchmarks/package_default.py MAIN.pt CONTROL.pt TRAIN_LOG_MAIN TRAIN_LOG_CONTROL

The shipped checkpoints drop the optimizer state (resume needs the original training output);
weights, config and provenance are unchanged. The sample is one held-out 'test' split slice.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from sgf_deploy.data.sample import write_sample
from sgf_deploy.data.simulator import make_example, split_slices, split_subjects
from sgf_deploy.model import DEFAULT_CHECKPOINT, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
CONTROL = ROOT / "benchmarks" / "checkpoints" / "lite-recon4x-t1-t2-control.pt"
SAMPLE_DIR = DEFAULT_CHECKPOINT.parent.parent / "sample"


def main(main_ckpt: str, control_ckpt: str, log_main: str, log_control: str) -> None:
    for src, dst in ((main_ckpt, DEFAULT_CHECKPOINT), (control_ckpt, CONTROL)):
        model, meta = load_checkpoint(src)
        out = save_checkpoint(dst, model, dict(meta["provenance"], trained_checkpoint_sha256=meta["sha256"]), overwrite=True)
        print(f"{dst}: sha256 {out['sha256']} (from {src}, sha256 {meta['sha256']})")
    shutil.copyfile(log_main, DEFAULT_CHECKPOINT.parent / "train-main.log")
    shutil.copyfile(log_control, DEFAULT_CHECKPOINT.parent / "train-control.log")
    slices = split_slices("test")
    subject = split_subjects("test")[0]
    slice_index = slices[len(slices) // 4]
    example = make_example("t1-t2", "recon4x", "test", subject, slice_index, seed=0)
    write_sample(SAMPLE_DIR, example, {"pair": "t1-t2", "task": "recon4x", "split": "test", "subject": subject,
                                       "slice_index": slice_index, "seed": 0}, overwrite=True)
    print(f"sample: test subject {subject}, template slice {slice_index} -> {SAMPLE_DIR}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
