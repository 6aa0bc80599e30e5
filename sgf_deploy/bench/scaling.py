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

import argparse
import json
import math
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from . import machine as M

MODULE = "sgf_deploy.bench.scaling"
DEFAULT_SIZES: tuple[int, ...] = (128, 192, 256, 320, 384, 448, 512)
MCNS_CHANNELS = 64
MCNS_GROUPS = 8
MCNS_EPS = 1e-6
XATTN_DIM = 64
PAPER_MAX = 512  # no extra cap by default: the memory budget decides (see plan_items)
MEM_BUDGET_GB = 6.0
MATH_MATRICES = 2  # scores and softmax output live together in the math kernel
#: glibc malloc settings of the ``torch-reuse`` worker: serve large blocks from the heap and never
#: trim it, so freed temporaries are reused instead of being unmapped and page-faulted in again.
REUSE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                    "MALLOC_ARENA_MAX": "1"}
MCNS_ITEMS = ("mcns/torch", "mcns/torch-reuse", "mcns/ort")
OPSET = 21
WARM_SIZE = 16  # tiny size of the memory probes' first call


# ============================================================================ child-side kernels
class _Kernels:
    """Builds and runs one item at one size; everything cached per (item, size)."""

    def __init__(self, backend: str, xattn_dim: int = XATTN_DIM) -> None:
        self.backend = backend
        self.xattn_dim = xattn_dim
        self._cache: dict[tuple[str, int], Callable[[], Any]] = {}
        self._models: dict[str, Any] = {}
        if backend in ("torch", "torch-reuse"):
            import torch

            torch.set_num_threads(M.THREADS)
            import sgf_deploy.model.mcns  # noqa: F401 - registers torch.ops.sgf.mcns
        elif backend != "ort":
            raise ValueError(f"unknown backend {backend}")

    # ------------------------------------------------------------------ builders
    def _mcns_inputs(self, size: int) -> list[np.ndarray]:
        rng = np.random.default_rng(size)
        c, g = MCNS_CHANNELS, MCNS_GROUPS
        feats = [rng.standard_normal((1, c, size, size), dtype=np.float32) for _ in range(2)]
        sals = [rng.random((1, g, size, size), dtype=np.float32) for _ in range(2)]
        return feats + sals

    def _model(self, preset: str):
        if preset not in self._models:
            import torch

            from ..model import build_model

            torch.manual_seed(0)
            self._models[preset] = build_model(preset).eval()
        return self._models[preset]

    def build(self, item: str, size: int) -> Callable[[], Any]:
        key = (item, size)
        if key in self._cache:
            return self._cache[key]
        parts = item.split("/")
        if parts[0] == "mcns":
            fn = self._build_mcns(size)
        elif parts[0] == "net":
            fn = self._build_net(parts[1], size)
        elif parts[0] in ("attn", "attnc"):
            fn = self._build_attn(parts[1], int(parts[2]), size, contiguous=parts[0] == "attnc")
        elif parts[0] == "xattn":
            fn = self._build_xattn(parts[1], size)
        else:
            raise ValueError(f"unknown item {item}")
        # keep the buffers of one size alive at a time (items of a size are interleaved)
        self._cache = {k: v for k, v in self._cache.items() if k[1] == size}
        self._cache[key] = fn
        return fn

    def _build_mcns(self, size: int) -> Callable[[], Any]:
        arrays = self._mcns_inputs(size)
        if self.backend == "ort":
            import onnxruntime as ort

            from ..export.mcns_function import INPUTS, make_mcns_model

            model = make_mcns_model(OPSET, MCNS_GROUPS, MCNS_EPS, channels=MCNS_CHANNELS)
            so = ort.SessionOptions()
            so.intra_op_num_threads = M.THREADS
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            # no busy-waiting: the study records CPU time, which spinning threads would inflate
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            feeds = dict(zip(INPUTS, arrays))
            return lambda: sess.run(None, feeds)[0]
        import torch

        t = [torch.from_numpy(a) for a in arrays]

        def run():
            with torch.inference_mode():
                return torch.ops.sgf.mcns(t[0], t[1], t[2], t[3], MCNS_GROUPS, MCNS_EPS)

        return run

    def _build_net(self, preset: str, size: int) -> Callable[[], Any]:
        import torch

        model = self._model(preset)
        gen = torch.Generator().manual_seed(size)
        ref, tar = torch.randn(1, 1, size, size, generator=gen), torch.randn(1, 1, size, size, generator=gen)

        def run():
            with torch.inference_mode():
                return model.forward_core(ref, tar)

        return run

    def _build_attn(self, preset: str, scale: int, size: int, contiguous: bool = False) -> Callable[[], Any]:
        """SFA's SDPA call alone. ``contiguous=False``: Q, K, V laid out exactly as SFA makes them
        (``conv(x).flatten(2).transpose(1, 2).unsqueeze(1)``: last-dim stride N), for which torch
        2.13's CPU dispatcher picks the *math* kernel (N x N matrices); ``contiguous=True``: the same
        values made contiguous, for which it picks the fused flash kernel (no N x N matrix)."""
        import torch
        import torch.nn.functional as F

        from ..model.presets import get_preset

        cfg = get_preset(preset)
        n = (size >> scale) ** 2
        gen = torch.Generator().manual_seed(size)

        def layout(width: int) -> torch.Tensor:
            t = torch.randn(1, width, n, generator=gen).transpose(1, 2).unsqueeze(1)  # (1, 1, N, width)
            return t.contiguous() if contiguous else t

        q, k, v = layout(cfg.attn_dim), layout(cfg.attn_dim), layout(cfg.channels[scale])

        def run():
            with torch.inference_mode():
                return F.scaled_dot_product_attention(q, k, v)

        return run

    def _build_xattn(self, level: str, size: int) -> Callable[[], Any]:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        n = xattn_tokens(level, size)
        d = self.xattn_dim
        gen = torch.Generator().manual_seed(size)
        q = torch.randn(1, 1, n, d, generator=gen)  # from target features
        kv = torch.randn(1, 1, n, d, generator=gen)  # from reference features (K = V projection input)
        k, v = kv, kv.clone()

        def run():
            with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v)

        return run

    # ------------------------------------------------------------------ commands
    def time_once(self, item: str, size: int, warmup: bool) -> dict[str, float]:
        """Wall seconds, process CPU seconds over all threads (and its user / system parts) and
        minor page faults of one call."""
        import resource

        fn = self.build(item, size)
        if warmup:
            fn()
        r0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        return {"seconds": wall, "cpu_seconds": cpu, "user_seconds": r1.ru_utime - r0.ru_utime,
                "sys_seconds": r1.ru_stime - r0.ru_stime, "minor_faults": float(r1.ru_minflt - r0.ru_minflt)}


def xattn_tokens(level: str, size: int) -> int:
    return size * size if level == "full" else (size // 2) ** 2


def xattn_matrix_bytes(level: str, size: int) -> int:
    n = xattn_tokens(level, size)
    return n * n * 4


def backend_of(item: str) -> str:
    """The worker that runs ``item``: ``ort``, ``torch-reuse`` (malloc keeps freed memory) or ``torch``."""
    if item.endswith("/ort"):
        return "ort"
    return "torch-reuse" if item.endswith("/torch-reuse") else "torch"


def backend_env(backend: str) -> dict[str, str]:
    return dict(REUSE_MALLOC_ENV) if backend == "torch-reuse" else {}


def _worker_main(spec: dict[str, Any]) -> None:
    kernels = _Kernels(spec["backend"], int(spec.get("xattn_dim", XATTN_DIM)))
    seen: set[tuple[str, int]] = set()

    def handle(cmd: dict[str, Any]) -> dict[str, Any]:
        item, size = cmd["item"], int(cmd["size"])
        key = (item, size)
        reply = kernels.time_once(item, size, warmup=key not in seen)
        seen.add(key)
        return reply

    M.serve(handle, {"backend": spec["backend"]})


def _probe_main(spec: dict[str, Any]) -> None:
    """One cold call in a fresh process: RSS before, peak during, seconds."""
    kernels = _Kernels(backend_of(spec["item"]), int(spec.get("xattn_dim", XATTN_DIM)))
    kernels.build(spec["item"], WARM_SIZE)()  # one-off lazy initialisation (thread pools, kernels) at a tiny size
    fn = kernels.build(spec["item"], int(spec["size"]))
    before = M.current_rss_mb()
    reset = M.reset_peak_rss()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    peak = M.peak_rss_mb()
    del out
    print(json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "delta_mb": (peak - before) if reset and before else None,
                      "cold_seconds": secs, "peak_reset": reset}))


# ================================================================================= parent side
def net_attention_bytes(preset: str, size: int) -> int:
    """Estimated peak of the network's SFA attention with the math kernel (what torch 2.13 runs
    for SFA's layout on the CPU): MATH_MATRICES N x N fp32 matrices at the finest MCSD scale."""
    from ..model.presets import get_preset

    cfg = get_preset(preset)
    n = max((size >> sc) ** 2 for sc in cfg.mcsd_scales) if cfg.mcsd_scales else 0
    return MATH_MATRICES * n * n * 4


def plan_items(sizes: Sequence[int], paper_max: int, mem_budget_gb: float,
               presets: Sequence[str] = ("lite", "paper"), xattn: bool = True
               ) -> tuple[dict[int, list[str]], dict[int, dict[str, str]]]:
    """Items to time at each size, and what was left out and why (the paper cap; N x N estimates
    over the memory budget)."""
    from ..model.presets import get_preset

    budget = mem_budget_gb * 1024**3
    plan: dict[int, list[str]] = {}
    skipped: dict[int, dict[str, str]] = {}
    for s in sizes:
        items = list(MCNS_ITEMS)
        left: dict[str, str] = {}
        for preset in presets:
            cfg = get_preset(preset)
            if s % cfg.size_multiple:
                left[f"net/{preset}"] = f"{s} is not a multiple of {cfg.size_multiple}"
            elif preset == "paper" and s > paper_max:
                left[f"net/{preset}"] = f"paper capped at {paper_max}x{paper_max} (--paper-max)"
            elif net_attention_bytes(preset, s) > budget:
                left[f"net/{preset}"] = (f"not run: its SFA attention at scale {min(cfg.mcsd_scales)} would materialise "
                                         f"~{net_attention_bytes(preset, s) / 1024**3:.1f} GB (math kernel) > budget {mem_budget_gb:g} GB")
            else:
                items.append(f"net/{preset}")
                items += [f"{kind}/{preset}/{sc}" for sc in cfg.mcsd_scales for kind in ("attn", "attnc")]
        if xattn:
            for level in ("full", "half"):
                if xattn_fits(level, s, mem_budget_gb):
                    items.append(f"xattn/{level}")
                else:
                    left[f"xattn/{level}"] = "over budget"
        plan[s] = items
        skipped[s] = left
    return plan, skipped


def xattn_fits(level: str, size: int, mem_budget_gb: float) -> bool:
    return MATH_MATRICES * xattn_matrix_bytes(level, size) <= mem_budget_gb * 1024**3


def run_scaling(
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeat: int = 5,
    *,
    paper_max: int = PAPER_MAX,
    mem_budget_gb: float = MEM_BUDGET_GB,
    presets: Sequence[str] = ("lite", "paper"),
    memory: bool = True,
    xattn: bool = True,
    echo: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the study; returns the JSON-ready record (see the module docstring)."""
    say = echo or (lambda _m: None)
    sizes = sorted({int(s) for s in sizes})
    record: dict[str, Any] = {
        "study": "scaling",
        "machine": M.machine_info(),
        "loadavg_start": M.loadavg(),
        "settings": {
            "sizes": sizes, "repeat": repeat, "paper_max": paper_max, "mem_budget_gb": mem_budget_gb,
            "presets": list(presets), "mcns": {"channels": MCNS_CHANNELS, "groups": MCNS_GROUPS, "batch": 1, "opset": OPSET,
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
        },
    }
    plan, skipped = plan_items(sizes, paper_max, mem_budget_gb, presets, xattn)
    record["skipped"] = {str(s): v for s, v in skipped.items() if v}
    times: dict[str, dict[int, list[float]]] = {}
    cpu: dict[str, dict[int, list[float]]] = {}
    extra: dict[str, dict[str, dict[int, list[float]]]] = {"user_s": {}, "sys_s": {}, "minor_faults": {}}
    workers = {b: M.Worker(MODULE, {"backend": b, "name": f"scaling-{b}"}, env=backend_env(b))
               for b in ("torch", "torch-reuse", "ort")}
    try:
        for s in sizes:
            items = plan[s]
            say(f"[scaling] {s}x{s}: timing {len(items)} items x {repeat} repeats (load {M.loadavg()})")
            for rep in range(repeat):
                for item in M.rotations(items, rep):
                    reply = workers[backend_of(item)].call(item=item, size=s)
                    times.setdefault(item, {}).setdefault(s, []).append(reply["seconds"])
                    cpu.setdefault(item, {}).setdefault(s, []).append(reply["cpu_seconds"])
                    for key, field in (("user_s", "user_seconds"), ("sys_s", "sys_seconds"), ("minor_faults", "minor_faults")):
                        if field in reply:
                            extra[key].setdefault(item, {}).setdefault(s, []).append(reply[field])
    finally:
        for w in workers.values():
            w.close()

    mem: dict[str, dict[int, dict[str, Any]]] = {}
    if memory:
        for s in sizes:
            for item in plan[s]:
                res = M.run_probe(MODULE, {"item": item, "size": s}, env=backend_env(backend_of(item)))
                mem.setdefault(item, {})[s] = res
                say(f"[scaling] memory {item} {s}x{s}: " + (f"+{res['delta_mb']:.0f} MB (peak {res['peak_rss_mb']:.0f} MB)"
                                                         if res.get("delta_mb") is not None else str(res.get("error"))))

    record["results"] = analyse(sizes, times, mem, presets, paper_max, mem_budget_gb, cpu, extra)
    record["loadavg_end"] = M.loadavg()
    return record


def analyse(sizes: Sequence[int], times: dict[str, dict[int, list[float]]], mem: dict[str, dict[int, dict[str, Any]]],
            presets: Sequence[str], paper_max: int, mem_budget_gb: float,
            cpu: dict[str, dict[int, list[float]]] | None = None,
            extra: dict[str, dict[str, dict[int, list[float]]]] | None = None) -> dict[str, Any]:
    """``extra``: per-call ``user_s``, ``sys_s`` and ``minor_faults`` tables (item -> size -> values)."""
    from ..model.presets import get_preset

    cpu = cpu or {}
    extra = extra or {}

    def med(item: str, s: int, table: dict | None = None) -> float | None:
        vals = (times if table is None else table).get(item, {}).get(s)
        return float(np.median(vals)) if vals else None

    rows: dict[str, list[dict[str, Any]]] = {}
    for item, per_size in times.items():
        rows[item] = []
        for s in sizes:
            if s not in per_size:
                continue
            m = mem.get(item, {}).get(s, {})
            rows[item].append({"size": s, "pixels": s * s, "time_s": M.summarize(per_size[s]),
                               "cpu_s": M.summarize(cpu.get(item, {}).get(s, [])),
                               **{k: M.summarize(tab.get(item, {}).get(s, [])) for k, tab in extra.items()
                                  if tab.get(item, {}).get(s)},
                               "memory_delta_mb": m.get("delta_mb"), "peak_rss_mb": m.get("peak_rss_mb"),
                               "memory_error": m.get("error")})

    def fit(item: str, table: dict | None = None, stat: str = "median") -> dict[str, Any] | None:
        pts = []
        for s in sizes:
            vals = (times if table is None else table).get(item, {}).get(s)
            if vals:
                pts.append((s * s, float(np.median(vals)) if stat == "median" else float(np.min(vals))))
        return M.power_law([p for p, _ in pts], [t for _, t in pts])

    fits: dict[str, Any] = {}
    for item in MCNS_ITEMS:
        if item not in times:
            continue
        fits[item] = {"time": fit(item), "time_min": fit(item, stat="min"), "cpu": fit(item, cpu)}
        if extra.get("user_s", {}).get(item):
            fits[item]["cpu_user"] = fit(item, extra["user_s"])
        mpts = [(s * s, mem.get(item, {}).get(s, {}).get("delta_mb")) for s in sizes]
        fits[item]["memory"] = M.power_law([p for p, _ in mpts], [m for _, m in mpts])

    attention: dict[str, Any] = {}
    for preset in presets:
        cfg = get_preset(preset)
        per_size = []
        for s in sizes:
            net = med(f"net/{preset}", s)
            if net is None:
                continue
            att = {sc: med(f"attn/{preset}/{sc}", s) for sc in cfg.mcsd_scales}
            attc = {sc: med(f"attnc/{preset}/{sc}", s) for sc in cfg.mcsd_scales}
            att_cpu = {sc: med(f"attn/{preset}/{sc}", s, cpu) for sc in cfg.mcsd_scales}
            net_cpu = med(f"net/{preset}", s, cpu)
            total = sum(v for v in att.values() if v is not None)
            total_c = sum(v for v in attc.values() if v is not None)
            total_cpu = sum(v for v in att_cpu.values() if v is not None)
            att_mem = {str(sc): mem.get(f"attn/{preset}/{sc}", {}).get(s, {}).get("delta_mb") for sc in cfg.mcsd_scales}
            attc_mem = {str(sc): mem.get(f"attnc/{preset}/{sc}", {}).get(s, {}).get("delta_mb") for sc in cfg.mcsd_scales}
            per_size.append({
                "size": s, "pixels": s * s, "net_s": net, "attention_s": total, "rest_s": net - total,
                "attention_share": total / net if net else None,
                "net_cpu_s": net_cpu, "attention_cpu_s": total_cpu,
                "attention_share_cpu": total_cpu / net_cpu if net_cpu else None,
                "attention_contiguous_s": total_c,
                "tokens": {str(sc): (s >> sc) ** 2 for sc in cfg.mcsd_scales},
                "attention_by_scale_s": {str(sc): v for sc, v in att.items()},
                "attention_contiguous_by_scale_s": {str(sc): v for sc, v in attc.items()},
                "attention_memory_delta_mb": att_mem, "attention_contiguous_memory_delta_mb": attc_mem,
                "net_memory_delta_mb": mem.get(f"net/{preset}", {}).get(s, {}).get("delta_mb"),
            })
        px = [r["pixels"] for r in per_size]
        fit_att = M.power_law(px, [r["attention_s"] for r in per_size])
        fit_rest = M.power_law(px, [r["rest_s"] for r in per_size]) if all(r["rest_s"] > 0 for r in per_size) else None
        fit_att_cpu = M.power_law(px, [r["attention_cpu_s"] for r in per_size])
        fit_rest_cpu = M.power_law(px, [r["net_cpu_s"] - r["attention_cpu_s"] for r in per_size]) \
            if all(r["net_cpu_s"] and r["net_cpu_s"] > r["attention_cpu_s"] for r in per_size) else None
        measured = next((r["size"] for r in per_size if r["attention_s"] >= r["rest_s"]), None)
        cross = M.crossover(fit_att, fit_rest)
        cross_cpu = M.crossover(fit_att_cpu, fit_rest_cpu)
        attention[preset] = {
            "mcsd_scales": list(cfg.mcsd_scales),
            "per_size": per_size,
            "fit_attention": fit_att, "fit_rest": fit_rest, "fit_net": M.power_law(px, [r["net_s"] for r in per_size]),
            "fit_attention_cpu": fit_att_cpu, "fit_rest_cpu": fit_rest_cpu,
            "crossover_measured_size": measured,
            "crossover_fit_pixels": cross,
            "crossover_fit_side": math.sqrt(cross) if cross else None,
            "crossover_fit_side_cpu": math.sqrt(cross_cpu) if cross_cpu else None,
            "capped_at": paper_max if preset == "paper" else None,
        }

    xattn: dict[str, Any] = {}
    for level in ("full", "half"):
        xrows = []
        for s in sizes:
            n = xattn_tokens(level, s)
            row: dict[str, Any] = {"size": s, "tokens": n, "matrix_gb": xattn_matrix_bytes(level, s) / 1024**3,
                                   "estimated_peak_gb": MATH_MATRICES * xattn_matrix_bytes(level, s) / 1024**3}
            if xattn_fits(level, s, mem_budget_gb):
                row["time_s"] = M.summarize(times.get(f"xattn/{level}", {}).get(s, []))
                row["cpu_s"] = M.summarize(cpu.get(f"xattn/{level}", {}).get(s, []))
                m = mem.get(f"xattn/{level}", {}).get(s, {})
                row["memory_delta_mb"] = m.get("delta_mb")
                row["memory_error"] = m.get("error")
            else:
                row["exceeds_budget"] = True
                row["note"] = f"not run: estimated peak {row['estimated_peak_gb']:.1f} GB > budget {mem_budget_gb:g} GB"
            xrows.append(row)
        ran = [r for r in xrows if (r.get("time_s") or {}).get("median")]
        xattn[level] = {"rows": xrows,
                        "fit_time_vs_tokens": M.power_law([r["tokens"] for r in ran], [r["time_s"]["median"] for r in ran]),
                        "fit_memory_vs_tokens": M.power_law([r["tokens"] for r in ran], [r.get("memory_delta_mb") for r in ran])}

    return {"items": rows, "fits": fits, "attention": attention, "xattn": xattn}


# ===================================================================================== report
def _fit_text(f: dict[str, Any] | None) -> str:
    return f"P^{f['exponent']:.3f} (r2 {f['r2']:.3f})" if f else "-"


def local_exponents(rows: list[dict[str, Any]], key: str = "cpu_s") -> list[dict[str, Any]]:
    """Exponent between consecutive sizes, ln(t2/t1) / ln(P2/P1), from the recorded medians: shows
    where a fit over the whole range hides a change of regime (e.g. leaving the caches)."""
    pts = [(r["pixels"], (r.get(key) or {}).get("median")) for r in rows]
    pts = [(p, t) for p, t in pts if t]
    return [{"from": int(round(math.sqrt(p1))), "to": int(round(math.sqrt(p2))), "exponent": math.log(t2 / t1) / math.log(p2 / p1)}
            for (p1, t1), (p2, t2) in zip(pts, pts[1:])]


def summary_lines(record: dict[str, Any]) -> list[str]:
    """Human-readable lines of the key figures (what the CLI and the script print)."""
    res = record["results"]
    out = [f"load average start {record.get('loadavg_start')} end {record.get('loadavg_end')}"]
    for item in (i for i in MCNS_ITEMS if i in res["fits"]):
        f = res["fits"].get(item, {})
        out.append(f"{item}: wall median ~ {_fit_text(f.get('time'))}, wall min ~ {_fit_text(f.get('time_min'))}, "
                   f"CPU time ~ {_fit_text(f.get('cpu'))}, user CPU ~ {_fit_text(f.get('cpu_user'))}, "
                   f"memory ~ {_fit_text(f.get('memory'))}")
        loc = local_exponents(res["items"].get(item, []))
        if loc:
            out.append(f"{item}: CPU-time exponent between consecutive sizes: "
                       + ", ".join(f"{e['from']}->{e['to']}: {e['exponent']:.2f}" for e in loc))
        faults = [(r["size"], (r.get("sys_s") or {}).get("median"), (r.get("minor_faults") or {}).get("median"))
                  for r in res["items"].get(item, [])]
        if any(sy is not None for _, sy, _ in faults):
            out.append(f"{item}: system CPU ms / minor page faults per call: "
                       + ", ".join(f"{sz}: {sy * 1e3:.0f} / {mf:.0f}" for sz, sy, mf in faults if sy is not None and mf is not None))
    cols = MCNS_ITEMS + ("net/lite", "net/paper")
    out.append("size  " + "  ".join(f"{k:>12}" for k in cols) + "   (median wall ms; CPU ms in brackets)")
    items = res["items"]
    for s in record["settings"]["sizes"]:
        vals = []
        for k in cols:
            row = next((r for r in items.get(k, []) if r["size"] == s), None)
            if row and row["time_s"].get("median"):
                vals.append(f"{row['time_s']['median'] * 1e3:7.0f} [{(row['cpu_s'].get('median') or 0) * 1e3:5.0f}]")
            else:
                vals.append(f"{'-':>13}")
        out.append(f"{s:4d}  " + " ".join(vals))
    for preset, a in res["attention"].items():
        shares = ", ".join(f"{r['size']}: {r['attention_share'] * 100:.0f}% (CPU {r['attention_share_cpu'] * 100:.0f}%)"
                           for r in a["per_size"] if r["attention_share"] is not None and r["attention_share_cpu"] is not None)
        out.append(f"{preset}: SFA attention share of the forward [{shares}]; attention ~ {_fit_text(a.get('fit_attention'))}, "
                   f"rest ~ {_fit_text(a.get('fit_rest'))}")
        def total_mb(d: dict[str, Any]) -> str:
            vals = [v for v in d.values() if v is not None]
            return f"+{sum(vals):.0f} MB" if vals else "memory not probed"

        for r in a["per_size"]:
            out.append(f"  {preset} {r['size']}: attention as SFA lays it out {r['attention_s'] * 1e3:.1f} ms "
                       f"({total_mb(r['attention_memory_delta_mb'])}), contiguous {r['attention_contiguous_s'] * 1e3:.1f} ms "
                       f"({total_mb(r['attention_contiguous_memory_delta_mb'])})")
        if a["crossover_measured_size"]:
            out.append(f"{preset}: attention >= rest of the network from {a['crossover_measured_size']}^2 (measured)")
        if a["crossover_fit_side"]:
            out.append(f"{preset}: power-law crossover attention = rest at ~{a['crossover_fit_side']:.0f}^2 pixels (wall fit)"
                       + (f", ~{a['crossover_fit_side_cpu']:.0f}^2 (CPU-time fit)" if a.get("crossover_fit_side_cpu") else ""))
    for s, left in (record.get("skipped") or {}).items():
        for item, why in left.items():
            if item.startswith("net/"):
                out.append(f"{item} at {s}: {why}")
    for level, x in res["xattn"].items():
        for r in x["rows"]:
            if r.get("exceeds_budget"):
                out.append(f"xattn/{level} {r['size']}: N={r['tokens']} matrix {r['matrix_gb']:.2f} GB -- {r['note']}")
            else:
                t = r.get("time_s", {}).get("median")
                out.append(f"xattn/{level} {r['size']}: N={r['tokens']} matrix {r['matrix_gb']:.3f} GB, "
                           f"measured +{r.get('memory_delta_mb') or float('nan'):.0f} MB, {t * 1e3 if t else float('nan'):.0f} ms")
    return out


def markdown(record: dict[str, Any]) -> str:
    """README tables rendered from a recorded JSON."""
    res = record["results"]
    m = record["machine"]
    fmt = lambda x, f=".1f": "-" if x is None else format(x, f)  # noqa: E731
    out = [f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, {m.get('memory_gb')} GB; "
           + ", ".join(f"{k} {v}" for k, v in m["libraries"].items() if v)
           + f"; threads 2 (child env {m.get('child_environment')}); load average start {record.get('loadavg_start')}, "
           f"end {record.get('loadavg_end')}; recorded {m.get('recorded_at')}.", ""]
    items = res["items"]
    cols = [c for c in MCNS_ITEMS if c in items] + ["net/lite", "net/paper"]
    out.append("| size | pixels | " + " | ".join(f"{c} wall ms [CPU ms]" for c in cols) + " | " + " | ".join(f"{c} +MB" for c in cols) + " |")
    out.append("|---:|---:|" + "---:|" * (2 * len(cols)))
    for s in record["settings"]["sizes"]:
        t, mm = [], []
        for c in cols:
            row = next((r for r in items.get(c, []) if r["size"] == s), None)
            t.append(f"{row['time_s']['median'] * 1e3:.0f} [{row['cpu_s']['median'] * 1e3:.0f}]"
                     if row and row["time_s"].get("median") and row["cpu_s"].get("median") else "-")
            mm.append(fmt(row.get("memory_delta_mb") if row else None, ".0f"))
        out.append(f"| {s} | {s * s} | " + " | ".join(t) + " | " + " | ".join(mm) + " |")
    out.append("")
    mcns_items = [c for c in MCNS_ITEMS if c in res["fits"]]
    out.append("| MCNS power-law fit, y ~ P^k | wall median | wall min | CPU time | user CPU time | memory |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for item in mcns_items:
        f = res["fits"].get(item, {})
        out.append(f"| {item} | " + " | ".join(_fit_text(f.get(k)) for k in ("time", "time_min", "cpu", "cpu_user", "memory")) + " |")
    out.append("")
    for item in mcns_items:
        loc = local_exponents(items.get(item, []))
        if loc:
            out.append(f"- {item}, CPU-time exponent between consecutive sizes: "
                       + ", ".join(f"{e['from']}->{e['to']}: {e['exponent']:.2f}" for e in loc))
    out.append("")
    if any(r.get("sys_s") for c in mcns_items for r in items.get(c, [])):
        out.append("| size | " + " | ".join(f"{c} user / system CPU ms, minor faults" for c in mcns_items) + " |")
        out.append("|---:|" + "---:|" * len(mcns_items))
        for s in record["settings"]["sizes"]:
            cells = []
            for c in mcns_items:
                row = next((r for r in items.get(c, []) if r["size"] == s), None)
                u, sy, mf = ((row.get(k) or {}).get("median") if row else None for k in ("user_s", "sys_s", "minor_faults"))
                cells.append(f"{u * 1e3:.0f} / {sy * 1e3:.0f}, {mf:.0f}" if None not in (u, sy, mf) else "-")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
    for preset, a in res["attention"].items():
        out.append(f"**{preset}** (MCSD at scales {a['mcsd_scales']}; scale s has P/4^s tokens)")
        out.append("")
        out.append("| size | tokens per MCSD scale | whole net wall ms | SFA attention ms (as laid out by SFA: math kernel) | +MB | "
                   "same attention contiguous (flash) ms | +MB | rest ms | attention share wall / CPU | net +MB |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in a["per_size"]:
            mem = sum(v for v in r["attention_memory_delta_mb"].values() if v) if any(r["attention_memory_delta_mb"].values()) else None
            memc = sum(v for v in r["attention_contiguous_memory_delta_mb"].values() if v) \
                if any(r["attention_contiguous_memory_delta_mb"].values()) else None
            out.append(f"| {r['size']} | {r['tokens']} | {r['net_s'] * 1e3:.0f} | {r['attention_s'] * 1e3:.1f} | {fmt(mem, '.0f')} | "
                       f"{r['attention_contiguous_s'] * 1e3:.1f} | {fmt(memc, '.0f')} | {r['rest_s'] * 1e3:.0f} | "
                       f"{r['attention_share'] * 100:.1f}% / {fmt(r['attention_share_cpu'] and r['attention_share_cpu'] * 100)}% | "
                       f"{fmt(r['net_memory_delta_mb'], '.0f')} |")
        out.append("")
        line = f"Fits (wall): attention ~ {_fit_text(a.get('fit_attention'))}, rest ~ {_fit_text(a.get('fit_rest'))}"
        line += (f"; attention >= rest from {a['crossover_measured_size']}x{a['crossover_measured_size']} (measured)"
                 if a["crossover_measured_size"] else "; attention < rest at every measured size")
        if a.get("crossover_fit_side"):
            line += f"; fitted crossover at ~{a['crossover_fit_side']:.0f}x{a['crossover_fit_side']:.0f}"
        if a.get("crossover_fit_side_cpu"):
            line += f" (CPU-time fits: ~{a['crossover_fit_side_cpu']:.0f}x{a['crossover_fit_side_cpu']:.0f})"
        out.append(line + ".")
        out.append("")
    for s, left in (record.get("skipped") or {}).items():
        for item, why in left.items():
            if item.startswith("net/"):
                out.append(f"- {item} at {s}x{s}: {why}")
    out.append("")
    out.append("| size | cross-attention level | tokens N | one NxN fp32 matrix GB | measured math-SDPA +MB | wall ms (median) |")
    out.append("|---:|---|---:|---:|---:|---:|")
    for level, x in res["xattn"].items():
        for r in x["rows"]:
            if r.get("exceeds_budget"):
                out.append(f"| {r['size']} | {level} | {r['tokens']} | {r['matrix_gb']:.2f} | {r['note']} | - |")
            else:
                t = (r.get("time_s") or {}).get("median")
                out.append(f"| {r['size']} | {level} | {r['tokens']} | {r['matrix_gb']:.3f} | {fmt(r.get('memory_delta_mb'), '.0f')} | "
                           f"{fmt(t and t * 1e3)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SGF-MRI scaling study (MCNS, attention, network, cross-attention)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--paper-max", type=int, default=PAPER_MAX)
    parser.add_argument("--mem-budget-gb", type=float, default=MEM_BUDGET_GB)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    parser.add_argument("--markdown", default=None, metavar="JSON", help="print README tables of a recorded JSON and exit")
    parser.add_argument("--replot", default=None, metavar="JSON", help="redraw --plot from a recorded JSON and exit")
    args = parser.parse_args(argv)
    if args.replot:
        from .plot import plot_scaling

        plot_scaling(json.loads(open(args.replot, encoding="utf-8").read()), args.plot or "scaling.png")
        return 0
    if args.markdown:
        print(markdown(json.loads(open(args.markdown, encoding="utf-8").read())))
        return 0
    if args.worker:
        _worker_main(json.loads(args.worker))
        return 0
    if args.probe:
        _probe_main(json.loads(args.probe))
        return 0
    record = run_scaling([int(s) for s in args.sizes.split(",")], args.repeat, paper_max=args.paper_max,
                         mem_budget_gb=args.mem_budget_gb)
    for line in summary_lines(record):
        print(line)
    if args.json:
        from ..artifacts import write_json_atomic

        write_json_atomic(args.json, record, overwrite=True)
    if args.plot:
        from .plot import plot_scaling

        plot_scaling(record, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
