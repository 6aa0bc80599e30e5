"""The backend comparison: PyTorch eager FP32 against every engine this machine runs.

* :mod:`.run` — :func:`~.run.run_backends`: the measurement run (workers, interleaving, probes);
  its module docstring describes what is measured and how.
* :mod:`.build` — the backends: checkpoint, detection, engines built or given, worker specs.
* :mod:`.inputs` — the stacks and the parity set every backend sees.
* :mod:`.measure` — what a backend's own process does (load, time, parity outputs, profile).
* :mod:`.analyse` — ratios, memory, start-up, parity figures, the issue-8 bar.
* :mod:`.render` — summary lines and README tables.

Nothing is imported here: the worker processes load only what they need.
"""
