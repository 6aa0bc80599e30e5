"""Reproduce benchmarks/results/scaling.json and scaling.png (issue 8, scaling study).

    python benchmarks/scaling.py [--repeat 5] [--sizes 128,192,256,320,384,448,512]

A thin wrapper around ``sgf_deploy.bench.scaling`` (the same code as ``sgf-deploy bench --scaling``):
MCNS alone (torch eager op with glibc's default malloc and with freed memory kept, and the ONNX
function body in ONNX Runtime), SFA attention alone vs the whole network (lite; paper where its
N x N attention fits the memory budget: up to 320^2 at the default 6 GB), and an MTrans-style full
cross-attention (math SDPA kernel; sizes whose N x N matrices exceed the memory budget are marked,
not run). Prints the key
figures; writes the JSON and the PNG. Timings on a shared machine are contended: the JSON carries
the load average at the start and the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.bench.scaling import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--json" not in args:
        args += ["--json", str(ROOT / "benchmarks" / "results" / "scaling.json")]
    if "--plot" not in args:
        args += ["--plot", str(ROOT / "benchmarks" / "results" / "scaling.png")]
    sys.exit(main(args))
