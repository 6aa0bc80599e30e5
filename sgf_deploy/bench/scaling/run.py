"""Scaling study: time and memory of MCNS, of SFA's attention and of the whole network against the
number of pixels, and the MTrans-style full cross-attention the paper argued against.

What is measured (``run_scaling``), for square sizes S (default 128..512, P = S^2 pixels):

* ``mcns/torch``: ``torch.ops.sgf.mcns`` eager on (1, C=64, S, S) features, G = 8;
  ``mcns/ort``: the ``sgf::MCNS`` ONNX function body (``make_mcns_model``) run by ONNX Runtime
  (CPU EP, function inlined). Both must grow linearly in P: a power law is fitted, its exponent
  reported. ``mcns/torch-reuse``: the torch op again, in a worker whose glibc malloc keeps freed
  memory (``REUSE_MALLOC_ENV``). With glibc's defaults, blocks above its mmap threshold (at most
  32 MB) are mapped fresh and returned on every call, so the composite's temporaries (64 channels
  x S^2 floats: 37 MB from 384x384) are page-faulted in again on every call; that kernel time
  grows faster than P and hides the operator's own linear cost. Every call records user and
  system CPU time and minor page faults, so the record shows which is which.
* ``net/<preset>``: ``forward_core`` of a freshly initialised ``lite``/``paper`` network on one
  (1,1,S,S) slice (speed does not depend on the weights). ``paper`` is capped: its MCSD at 1/2
  scale attends over P/4 tokens, which the math kernel turns into N x N matrices (12 GB measured
  at 384x384 in a first run); a preset is run only where ``MATH_MATRICES * N^2 * 4`` bytes fit
  ``mem_budget_gb`` (default 6 GB: paper up to 320x320), and ``paper_max`` can cap it further.
  Every skip is recorded with its reason.
* ``attn/<preset>/<scale>``: SFA's ``scaled_dot_product_attention`` alone, with Q/K/V laid out as
  SFA lays them out (transposed views; torch 2.13's CPU dispatcher then runs the *math* kernel,
  which materialises N x N), at the token count of that MCSD scale, N = P / 4^scale, Q/K width
  ``attn_dim``, V width ``channels[scale]``; ``attnc/...``: the same made contiguous (torch then
  runs its fused flash kernel). "The rest" = net - sum of ``attn``. Where attention takes over is
  the first measured size with attention >= rest, and the crossover of the two power-law fits.
  A preset is not run at a size where its math-kernel attention would exceed ``mem_budget_gb``.
* ``xattn/<full|half>``: a plain full cross-attention between the contrasts (MTrans-style: Q from
  target features, K and V from reference features, width d = 64) at N = P (full resolution) or
  P / 4 (1/2 scale) with the *math* SDPA kernel, which materialises the N x N matrix. Its memory
  is computed analytically (N^2 x 4 bytes per matrix) at every size and measured only where the
  estimated peak (2 matrices: scores and softmax) fits ``mem_budget_gb``; the rest are marked
  ``exceeds_budget`` and not run.

Timing: three persistent worker processes (torch, torch-reuse, ONNX Runtime; 2 threads each), items interleaved
round-robin with the order rotated every repeat, one warm-up call per item and size excluded,
medians over ``repeat``; wall time and process CPU time (all threads; user and system apart) and
minor page faults of every call. On a shared,
oversubscribed machine wall time carries a per-operator hand-off latency that flattens power-law
fits at small sizes; CPU time does not (nothing here busy-waits: torch runs with
``OMP_WAIT_POLICY=PASSIVE``, the ORT session with spinning off), so exponents are fitted on both.
Memory: one fresh process per (item, size); after one call at 16x16 (lazy initialisation), the
peak RSS of the first call at the size above the RSS just before it (``/proc/self/clear_refs``
resets the high-water mark).
"""

from __future__ import annotations

from typing import Any, Callable

from .. import machine as M
from ..settings import ScalingBenchSettings
from ..workers import MODULE
from .analyse import MemTable, Table, analyse
from .plan import (
    MATH_MATRICES,
    MCNS_CHANNELS,
    MCNS_GROUPS,
    OPSET,
    REUSE_MALLOC_ENV,
    WARM_SIZE,
    WORKER_BACKENDS,
    XATTN_DIM,
    backend_env,
    backend_of,
    plan_items,
)

#: The per-call tables kept beside wall and CPU time: record key -> the worker's reply field.
EXTRA_FIELDS = {"user_s": "user_seconds", "sys_s": "sys_seconds", "minor_faults": "minor_faults"}

Plan = dict[int, list[str]]


def run_scaling(settings: ScalingBenchSettings | None = None, *,
                echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the study (``None``: the default settings); returns the JSON-ready record (see the
    module docstring)."""
    say = echo or (lambda _m: None)
    settings = (settings or ScalingBenchSettings()).checked()
    record: dict[str, Any] = {"study": "scaling", "machine": M.machine_info(), "loadavg_start": M.loadavg(),
                              "settings": _settings_record(settings)}
    plan, skipped = plan_items(settings.sizes, settings.paper_max, settings.mem_budget_gb, settings.presets,
                               settings.xattn)
    record["skipped"] = {str(s): v for s, v in skipped.items() if v}
    times, cpu, extra = _time_items(plan, settings.repeat, say)
    mem = _probe_memory(plan, say) if settings.memory else {}
    record["results"] = analyse(settings.sizes, times, mem, settings.presets, settings.paper_max, settings.mem_budget_gb,
                                cpu, extra)
    record["loadavg_end"] = M.loadavg()
    return record


def _settings_record(settings: ScalingBenchSettings) -> dict[str, Any]:
    """The settings and the method, in words, as the record carries them."""
    return {
        "sizes": list(settings.sizes), "repeat": settings.repeat, "paper_max": settings.paper_max,
        "mem_budget_gb": settings.mem_budget_gb, "presets": list(settings.presets),
        "mcns": {"channels": MCNS_CHANNELS, "groups": MCNS_GROUPS, "batch": 1, "opset": OPSET,
                 "ort_session": "CPU EP, ORT_ENABLE_ALL, intra-op 2, spinning off"},
        "xattn": {"dim": XATTN_DIM, "kernel": "math (SDPBackend.MATH)", "peak_estimate": f"{MATH_MATRICES} x N^2 x 4 bytes"},
        "attention_items": "attn = SFA's SDPA with SFA's (transposed) Q/K/V layout, as the network runs it "
                           "(torch picks the math kernel); attnc = the same made contiguous (torch picks flash)",
        "timing": "persistent torch, torch-reuse and ONNX Runtime worker processes, items round-robin with rotation, "
                  "1 warm-up call per item/size excluded; wall time, process CPU time (all threads; user and system) "
                  "and minor page faults per call; medians over repeats",
        "torch_reuse_env": dict(REUSE_MALLOC_ENV),
        "memory": f"fresh process per item/size; after one call at {WARM_SIZE}x{WARM_SIZE} (lazy initialisation), "
                  "peak RSS of the first call at the size minus RSS just before it",
        "weights": "freshly initialised (speed does not depend on weights)",
        "inputs": "random normal images / features (seeded)",
    }


def _time_items(plan: Plan, repeat: int, say: Callable[[str], None]) -> tuple[Table, Table, dict[str, Table]]:
    """Every planned item at every size, ``repeat`` times, round-robin in the three workers.
    Returns (wall times, CPU times, the :data:`EXTRA_FIELDS` tables)."""
    times: Table = {}
    cpu: Table = {}
    extra: dict[str, Table] = {key: {} for key in EXTRA_FIELDS}
    workers = {b: M.Worker(MODULE, {"study": "scaling", "backend": b, "name": f"scaling-{b}"}, env=backend_env(b))
               for b in WORKER_BACKENDS}
    try:
        for s, items in plan.items():
            say(f"[scaling] {s}x{s}: timing {len(items)} items x {repeat} repeats (load {M.loadavg()})")
            for rep in range(repeat):
                for item in M.rotations(items, rep):
                    reply = workers[backend_of(item)].call(item=item, size=s)
                    times.setdefault(item, {}).setdefault(s, []).append(reply["seconds"])
                    cpu.setdefault(item, {}).setdefault(s, []).append(reply["cpu_seconds"])
                    for key, field in EXTRA_FIELDS.items():
                        if field in reply:
                            extra[key].setdefault(item, {}).setdefault(s, []).append(reply[field])
    finally:
        for w in workers.values():
            w.close()
    return times, cpu, extra


def _probe_memory(plan: Plan, say: Callable[[str], None]) -> MemTable:
    """One fresh process per item and size: the working memory of its first call."""
    mem: MemTable = {}
    for s, items in plan.items():
        for item in items:
            res = M.run_probe(MODULE, {"study": "scaling", "item": item, "size": s}, env=backend_env(backend_of(item)))
            mem.setdefault(item, {})[s] = res
            say(f"[scaling] memory {item} {s}x{s}: " + (f"+{res['delta_mb']:.0f} MB (peak {res['peak_rss_mb']:.0f} MB)"
                                                     if res.get("delta_mb") is not None else str(res.get("error"))))
    return mem
