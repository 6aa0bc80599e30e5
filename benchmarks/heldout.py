"""Held-out evaluation of the shipped defaults: the simulator's T1->T2 test split (64 slices)
and the Colin27 task x contrast-pair table (``sgf-deploy evaluate --anatomy colin27``), written
to ``benchmarks/results/heldout.json`` and ``heldout.md``::

    python benchmarks/heldout.py [--n 48] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sgf_deploy.artifacts import write_bytes_atomic, write_json_atomic  # noqa: E402
from sgf_deploy.bench.heldout import evaluate_heldout, format_markdown, simulator_t1_t2  # noqa: E402
from sgf_deploy.bench.machine import loadavg, machine_info  # noqa: E402
from sgf_deploy.model.registry import read_registry, shipped_models  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "heldout"))
    a = p.parse_args()
    tasks = sorted({t for m in shipped_models().values() for t in m.tasks})
    sim = simulator_t1_t2(threads=a.threads, echo=print)
    colin = evaluate_heldout(tasks, n=a.n, threads=a.threads, echo=print)
    result = {"machine": machine_info(), "loadavg": loadavg(), "registry_tasks": read_registry()["tasks"], "simulator": sim,
              "colin27": colin, "command": "python benchmarks/heldout.py " + " ".join(sys.argv[1:])}
    write_json_atomic(a.out + ".json", result, overwrite=True)
    md = format_markdown(colin) + "\n" + "\n".join(
        f"- simulator t1-t2: {k} {v['mean']:.2f} dB [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"
        for k, v in sim["psnr"].items()) + "\n"
    write_bytes_atomic(a.out + ".md", md.encode(), overwrite=True)
    print(md)


if __name__ == "__main__":
    main()
