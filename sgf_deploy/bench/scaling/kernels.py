"""Inside a scaling worker's own process: build each item at each size and time one call.

Used by the worker and probe processes (:mod:`sgf_deploy.bench.workers`); torch is imported only
by the torch workers, ONNX Runtime only by the ``ort`` one.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .. import machine as M
from .plan import MCNS_CHANNELS, MCNS_EPS, MCNS_GROUPS, OPSET, XATTN_DIM, xattn_tokens


class Kernels:
    """Builds and runs one item at one size; everything cached per (item, size), one size at a time."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self._cache: dict[tuple[str, int], Callable[[], Any]] = {}
        self._models: dict[str, Any] = {}
        if backend in ("torch", "torch-reuse"):
            import torch

            torch.set_num_threads(M.THREADS)
            import sgf_deploy.model.mcns  # noqa: F401 - registers torch.ops.sgf.mcns
        elif backend != "ort":
            raise ValueError(f"unknown backend {backend}")

    def build(self, item: str, size: int) -> Callable[[], Any]:
        """The zero-argument call that runs ``item`` at ``size`` (inputs built once)."""
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

    # ------------------------------------------------------------------ builders
    def _model(self, preset: str) -> Any:
        if preset not in self._models:
            import torch

            from ...model import build_model

            torch.manual_seed(0)
            self._models[preset] = build_model(preset).eval()
        return self._models[preset]

    def _build_mcns(self, size: int) -> Callable[[], Any]:
        rng = np.random.default_rng(size)
        feats = [rng.standard_normal((1, MCNS_CHANNELS, size, size), dtype=np.float32) for _ in range(2)]
        sals = [rng.random((1, MCNS_GROUPS, size, size), dtype=np.float32) for _ in range(2)]
        arrays = feats + sals
        if self.backend == "ort":
            return _ort_mcns(arrays)
        import torch

        t = [torch.from_numpy(a) for a in arrays]

        def run() -> Any:
            with torch.inference_mode():
                return torch.ops.sgf.mcns(t[0], t[1], t[2], t[3], MCNS_GROUPS, MCNS_EPS)

        return run

    def _build_net(self, preset: str, size: int) -> Callable[[], Any]:
        import torch

        model = self._model(preset)
        gen = torch.Generator().manual_seed(size)
        ref, tar = torch.randn(1, 1, size, size, generator=gen), torch.randn(1, 1, size, size, generator=gen)

        def run() -> Any:
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

        from ...model.presets import get_preset

        cfg = get_preset(preset)
        n = (size >> scale) ** 2
        gen = torch.Generator().manual_seed(size)

        def layout(width: int) -> torch.Tensor:
            t = torch.randn(1, width, n, generator=gen).transpose(1, 2).unsqueeze(1)  # (1, 1, N, width)
            return t.contiguous() if contiguous else t

        q, k, v = layout(cfg.attn_dim), layout(cfg.attn_dim), layout(cfg.channels[scale])

        def run() -> Any:
            with torch.inference_mode():
                return F.scaled_dot_product_attention(q, k, v)

        return run

    def _build_xattn(self, level: str, size: int) -> Callable[[], Any]:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel

        n = xattn_tokens(level, size)
        gen = torch.Generator().manual_seed(size)
        q = torch.randn(1, 1, n, XATTN_DIM, generator=gen)  # from target features
        kv = torch.randn(1, 1, n, XATTN_DIM, generator=gen)  # from reference features (K = V projection input)
        k, v = kv, kv.clone()

        def run() -> Any:
            with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v)

        return run


def _ort_mcns(arrays: list[np.ndarray]) -> Callable[[], Any]:
    """The ``sgf::MCNS`` ONNX function body (``make_mcns_model``) in an ONNX Runtime CPU session."""
    import onnxruntime as ort

    from ...export.mcns_function import INPUTS, make_mcns_model

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
