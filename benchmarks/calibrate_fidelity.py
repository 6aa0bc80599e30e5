"""Calibrate the contrast-fidelity guard's threshold of a shipped default on held-out data.

For a model of the registry (``sgf_deploy/assets/default/defaults.json``) and a task: run the
model (its shipped ONNX file, ONNX Runtime, the same engine ``run`` uses) on ``--n`` slices of
the simulator's *validation* split for each in-distribution pair (never seen in training), score
every slice with :func:`sgf_deploy.runtime.fidelity.assess`, and set the threshold to ``--margin``
x the largest slice score (so no in-distribution slice, hence no volume, triggers it). Then check
it on the *test* split (false alarms, in distribution) and on the out-of-distribution pairs given
with ``--mismatch`` (how often it fires), and record all of it in the registry::

    python benchmarks/calibrate_fidelity.py --model lite-recon4x-t1-t2 --task recon4x \\
        --pairs t1-t2 --mismatch t1-pd,pd-t2 --n 48
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sgf_deploy.data.simulator import simulate  # noqa: E402
from sgf_deploy.model.registry import read_registry, shipped_models, write_registry  # noqa: E402
from sgf_deploy.runtime.embedded import default_engine  # noqa: E402
from sgf_deploy.runtime.fidelity import assess, calibrate_threshold  # noqa: E402
from sgf_deploy.runtime.reconstructor import Reconstructor  # noqa: E402

SEED = 777  # simulator seed of the calibration / check sets (not a training seed)


def slice_scores(rec: Reconstructor, pair: str, task: str, split: str, n: int) -> dict[str, np.ndarray]:
    """Per-slice scores in both guard modes: "centre" (no mask known) and "measured" (the mask)."""
    data = simulate(pair, task, split, n, seed=SEED)
    out = rec(data["reference"], data["target"])
    modes = {"centre": [None] * n}
    if "mask" in data:
        modes["measured"] = list(data["mask"])
    return {mode: np.array([assess(out[i], data["target"][i], task, None, mask=masks[i]).score for i in range(n)])
            for mode, masks in modes.items()}


def summarise(val: dict, test: dict, mism: dict, mode: str, margin: float) -> dict:
    cal = calibrate_threshold(np.concatenate([v[mode] for v in val.values()]), margin)
    thr = cal["threshold"]
    return dict(cal, test_false_alarms={pr: int((s[mode] > thr).sum()) for pr, s in test.items()},
                test_max={pr: float(s[mode].max()) for pr, s in test.items()},
                mismatch_fired={pr: f"{int((s[mode] > thr).sum())}/{s[mode].size}" for pr, s in mism.items()},
                mismatch_min={pr: float(s[mode].min()) for pr, s in mism.items()},
                mismatch_median={pr: float(np.median(s[mode])) for pr, s in mism.items()})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--pairs", required=True, help="in-distribution pairs (comma-separated)")
    p.add_argument("--mismatch", default="", help="out-of-distribution pairs to report (comma-separated)")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--margin", type=float, default=1.25)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    model = shipped_models()[a.model]
    engine, _ = default_engine(checkpoint=model.checkpoint_path, echo=print)
    rec = Reconstructor.load(engine, threads=a.threads)
    t0 = time.time()
    val = {pair: slice_scores(rec, pair, a.task, "val", a.n) for pair in a.pairs.split(",")}
    test = {pair: slice_scores(rec, pair, a.task, "test", a.n) for pair in a.pairs.split(",")}
    mism = {pair: slice_scores(rec, pair, a.task, "test", a.n) for pair in a.mismatch.split(",") if pair}
    record = summarise(val, test, mism, "centre", a.margin)
    if "measured" in next(iter(val.values())):
        measured = summarise(val, test, mism, "measured", a.margin)
        record["threshold_measured"] = measured.pop("threshold")
        record["measured"] = measured
    record.update(calibrated_on=f"simulator val split, pairs {a.pairs}, {a.n} slices each, seed {SEED}",
                  command="python benchmarks/calibrate_fidelity.py " + " ".join(sys.argv[1:] if argv is None else argv),
                  machine_note="scores do not depend on the CPU beyond float rounding")
    thr = record["threshold"]
    data = read_registry()
    data["models"][a.model].setdefault("fidelity", {})[a.task] = record
    write_registry(data)
    print(json.dumps(record, indent=1))
    print(f"{a.model} {a.task}: threshold {thr:.2%}; test false alarms {record['test_false_alarms']}; "
          f"mismatch fired {record['mismatch_fired']} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
