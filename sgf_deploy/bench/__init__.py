"""Benchmarks (issue 8): speed, memory and scaling of every backend, side by side.

* :mod:`sgf_deploy.bench.backends` — PyTorch eager FP32 (the reference) against every engine this
  machine can run: latency p50/p95 per slice, throughput on a 32-slice stack, peak host memory and
  start-up time (fresh processes), PSNR parity on simulated held-out slices.
* :mod:`sgf_deploy.bench.scaling` — MCNS, SFA attention, the whole network and an MTrans-style full
  cross-attention against the number of pixels (power-law exponents, the attention crossover).
* :mod:`sgf_deploy.bench.settings` — the settings of both studies and their defaults.
* :mod:`sgf_deploy.bench.workers` — what runs inside the worker and probe subprocesses.
* :mod:`sgf_deploy.bench.machine` — the machine record and the shared measurement mechanics.
* :mod:`sgf_deploy.bench.plot` — the PNG of the scaling study.

Nothing is imported here: ``sgf-deploy bench`` loads what it needs.
"""
