"""What the scaling study measures: its items, their workload constants, the N x N memory
estimates that keep items out of the memory budget, and which worker process runs each item.

Items: ``mcns/torch``, ``mcns/torch-reuse``, ``mcns/ort`` (MCNS alone); ``net/<preset>`` (the
whole forward); ``attn/<preset>/<scale>`` and ``attnc/<preset>/<scale>`` (SFA's attention alone,
as SFA lays out Q/K/V and made contiguous); ``xattn/<full|half>`` (MTrans-style cross-attention).
"""

from __future__ import annotations

from typing import Sequence

MCNS_CHANNELS = 64
MCNS_GROUPS = 8
MCNS_EPS = 1e-6
OPSET = 21
XATTN_DIM = 64
XATTN_LEVELS = ("full", "half")
MATH_MATRICES = 2  # scores and softmax output live together in the math kernel
WARM_SIZE = 16  # tiny size of the memory probes' first call
MCNS_ITEMS = ("mcns/torch", "mcns/torch-reuse", "mcns/ort")
#: The timing workers: torch with glibc's default malloc, torch with freed memory kept, ONNX Runtime.
WORKER_BACKENDS = ("torch", "torch-reuse", "ort")
#: glibc malloc settings of the ``torch-reuse`` worker: serve large blocks from the heap and never
#: trim it, so freed temporaries are reused instead of being unmapped and page-faulted in again.
REUSE_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                    "MALLOC_ARENA_MAX": "1"}

GB = 1024**3


def xattn_tokens(level: str, size: int) -> int:
    """Tokens of the cross-attention at ``level``: every pixel (``full``) or the 1/2-scale grid."""
    return size * size if level == "full" else (size // 2) ** 2


def xattn_matrix_bytes(level: str, size: int) -> int:
    """Bytes of one fp32 N x N matrix of the cross-attention."""
    n = xattn_tokens(level, size)
    return n * n * 4


def xattn_fits(level: str, size: int, mem_budget_gb: float) -> bool:
    """Whether the math kernel's :data:`MATH_MATRICES` N x N matrices fit the budget."""
    return MATH_MATRICES * xattn_matrix_bytes(level, size) <= mem_budget_gb * GB


def net_attention_bytes(preset: str, size: int) -> int:
    """Estimated peak of the network's SFA attention with the math kernel (what torch 2.13 runs
    for SFA's layout on the CPU): MATH_MATRICES N x N fp32 matrices at the finest MCSD scale."""
    from ...model.presets import get_preset

    cfg = get_preset(preset)
    n = max((size >> sc) ** 2 for sc in cfg.mcsd_scales) if cfg.mcsd_scales else 0
    return MATH_MATRICES * n * n * 4


def _preset_left_out(preset: str, size: int, paper_max: int, mem_budget_gb: float) -> str | None:
    """Why ``net/<preset>`` is not run at ``size``, or None when it is."""
    from ...model.presets import get_preset

    cfg = get_preset(preset)
    if size % cfg.size_multiple:
        return f"{size} is not a multiple of {cfg.size_multiple}"
    if preset == "paper" and size > paper_max:
        return f"paper capped at {paper_max}x{paper_max} (--paper-max)"
    need = net_attention_bytes(preset, size)
    if need > mem_budget_gb * GB:
        return (f"not run: its SFA attention at scale {min(cfg.mcsd_scales)} would materialise "
                f"~{need / GB:.1f} GB (math kernel) > budget {mem_budget_gb:g} GB")
    return None


def plan_items(sizes: Sequence[int], paper_max: int, mem_budget_gb: float,
               presets: Sequence[str] = ("lite", "paper"), xattn: bool = True
               ) -> tuple[dict[int, list[str]], dict[int, dict[str, str]]]:
    """Items to time at each size, and what was left out and why (the paper cap; N x N estimates
    over the memory budget)."""
    from ...model.presets import get_preset

    plan: dict[int, list[str]] = {}
    skipped: dict[int, dict[str, str]] = {}
    for s in sizes:
        items = list(MCNS_ITEMS)
        left: dict[str, str] = {}
        for preset in presets:
            why = _preset_left_out(preset, s, paper_max, mem_budget_gb)
            if why:
                left[f"net/{preset}"] = why
                continue
            items.append(f"net/{preset}")
            items += [f"{kind}/{preset}/{sc}" for sc in get_preset(preset).mcsd_scales for kind in ("attn", "attnc")]
        for level in XATTN_LEVELS if xattn else ():
            if xattn_fits(level, s, mem_budget_gb):
                items.append(f"xattn/{level}")
            else:
                left[f"xattn/{level}"] = "over budget"
        plan[s] = items
        skipped[s] = left
    return plan, skipped


def backend_of(item: str) -> str:
    """The worker that runs ``item``: ``ort``, ``torch-reuse`` (malloc keeps freed memory) or ``torch``."""
    if item.endswith("/ort"):
        return "ort"
    return "torch-reuse" if item.endswith("/torch-reuse") else "torch"


def backend_env(backend: str) -> dict[str, str]:
    """The environment a worker of ``backend`` adds to the children's standard one."""
    return dict(REUSE_MALLOC_ENV) if backend == "torch-reuse" else {}
