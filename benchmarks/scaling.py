"""Reproduce benchmarks/results/scaling.json and scaling.png (issue 8, scaling study).

    python benchmarks/scaling.py [--repeat 5] [--sizes 128,192,256,320,384,448,512]

``sgf-deploy bench --scaling`` with this repository's paths (any option of the command passes
through): MCNS alone (torch eager op with glibc's default malloc and with freed memory kept, and
the ONNX function body in ONNX Runtime), SFA attention alone vs the whole network (lite; paper
where its N x N attention fits the memory budget: up to 320^2 at the default 6 GB), and an
MTrans-style full cross-attention (math SDPA kernel; sizes whose N x N matrices exceed the memory
budget are marked, not run). Prints the key figures; writes the JSON and the PNG. Timings on a
shared machine are contended: the JSON carries the load average at the start and the end.
``--markdown JSON`` prints the README tables of a recorded run instead (``--plot PNG`` with it
redraws the figure).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.cli import main  # noqa: E402

DEFAULTS = {"--json": str(ROOT / "benchmarks" / "results" / "scaling.json"),
            "--plot": str(ROOT / "benchmarks" / "results" / "scaling.png")}

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--markdown" not in args:
        args += [part for flag, value in DEFAULTS.items() if flag not in args for part in (flag, value)]
    sys.exit(main(["bench", "--scaling", *args]))
