"""The scaling study: MCNS, SFA attention, the whole network and an MTrans-style full
cross-attention against the number of pixels.

* :mod:`.run` — :func:`~.run.run_scaling`: the measurement run; its module docstring describes
  what is measured and how.
* :mod:`.plan` — the items, their workload constants and memory estimates, which worker runs each.
* :mod:`.kernels` — what a worker's own process does (build an item at a size, time one call).
* :mod:`.analyse` — per-item rows, power-law fits, attention share and crossover, cross-attention.
* :mod:`.render` — summary lines and README tables.

Nothing is imported here: the worker processes load only what they need.
"""
