"""What the CPU can do, read once from ``/proc/cpuinfo`` (no dependencies): the one place that the
engines (OpenVINO precision and INT8 overflow rules), calibration and the benchmarks ask."""

from __future__ import annotations

# the instruction-set flags the engines and the benchmarks care about, in the order they are reported
RELEVANT_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """Every flag of the first CPU in ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# VNNI / AMX: 8-bit dot products accumulate in 32 bits (no 16-bit saturation)
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def has_int8_dot_product(flags: set[str] | None = None) -> bool:
    """Whether the CPU has an INT8 dot-product instruction (:data:`INT8_DOT_FLAGS`)."""
    flags = cpu_flags() if flags is None else flags
    return bool(flags & INT8_DOT_FLAGS)
