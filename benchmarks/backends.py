"""Reproduce benchmarks/results/backends.json (issue 8, backend comparison).

    python benchmarks/backends.py [--repeat 5] [--sizes 256,320,384,512] [--batch 1,4]

``sgf-deploy bench --all`` with this repository's paths (any option of the command passes
through): exports the embedded default checkpoint (an untrained lite network if this install
lacks it; the JSON says which), writes a 64-pair INT8 calibration set (simulator, train split),
builds every backend/precision this machine can run (ONNX Runtime FP32/FP16/INT8 on a CPU-only
machine) into build/bench-work/, then measures PyTorch eager FP32 and every engine interleaved in
one run: latency p50/p95 per slice, throughput on a 32-slice stack and its ratio to PyTorch, peak
RSS and start-up in fresh processes, PSNR parity on simulated held-out slices, ORT node-time
profiles. Prints the key figures and the issue's bar; writes the JSON. ``--markdown JSON`` prints
the README tables of a recorded run instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgf_deploy.cli import main  # noqa: E402

DEFAULTS = {"--json": str(ROOT / "benchmarks" / "results" / "backends.json"),
            "--workdir": str(ROOT / "build" / "bench-work")}

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--markdown" not in args:
        if "--engine" not in args and "--all" not in args:
            args.append("--all")
        args += [part for flag, value in DEFAULTS.items() if flag not in args for part in (flag, value)]
    sys.exit(main(["bench", *args]))
