"""Export to ONNX with one ``sgf.MCNS`` node per MCSD block (ARCHITECTURE.md, "Exported ONNX").

``export_onnx`` (needs torch) is imported lazily, so that ``sgf_deploy.export.metadata`` — what
engines and the runtime use to read an exported file — never pulls torch in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_OPSET", "ExportResult", "export_onnx", "read_onnx_metadata"]

_LAZY = {
    "export_onnx": "onnx_export",
    "ExportResult": "onnx_export",
    "DEFAULT_OPSET": "onnx_export",
    "read_onnx_metadata": "metadata",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
