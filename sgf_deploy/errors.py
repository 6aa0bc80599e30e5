"""User-facing errors.

Anything raised as a :class:`SgfError` is a problem with the user's input or environment, not a
bug: the CLI prints its message as one line on stderr (no traceback) and exits non-zero.
"""

from __future__ import annotations


class SgfError(Exception):
    """A problem the user can fix; the message is one line naming the file and the problem."""

    exit_code = 2


class InputError(SgfError):
    """A bad input file or array (missing, truncated, wrong shape/dtype, non-finite, too large)."""


class CheckpointError(SgfError):
    """A checkpoint that is missing, corrupt, unsafe, or does not match its config."""


class OutputExistsError(SgfError):
    """An output that already exists and may not be overwritten without being asked."""


class MissingDependencyError(SgfError):
    """An optional dependency (tensorrt, modelopt, polygraphy, torch, ...) is not installed."""


class EngineMismatchError(SgfError):
    """An engine built for another device, backend or backend version."""


class ValidationFailed(SgfError):
    """A parity gate failed (export self-check, engine validation)."""

    exit_code = 3


#: top-level optional modules -> the pyproject extra that installs them
EXTRAS: dict[str, str] = {
    "torch": "torch", "onnx": "torch", "onnxscript": "torch", "onnxconverter_common": "torch", "scipy": "torch",
    "nilearn": "torch", "safetensors": "torch", "matplotlib": "torch", "tensorrt_rtx": "rtx", "tensorrt": "trt",
    "polygraphy": "trt", "openvino": "openvino", "nncf": "openvino", "pynetdicom": "dicom", "pytriton": "triton",
    "tritonclient": "triton", "modelopt": "modelopt", "cuda": "cuda",
}


def missing_extra_line(exc: ModuleNotFoundError) -> str:
    """One line for a missing optional module: which package, and the extra that installs it."""
    name = str(getattr(exc, "name", "") or "").split(".")[0]
    extra = EXTRAS.get(name)
    if extra is None:
        return f"the Python package '{name or exc}' is not installed ({exc})"
    return (f"this command needs the Python package '{name}', which is not installed; "
            f"install it with: pip install 'sgf-deploy[{extra}]'")


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise a one-line error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}' ({exc}); "
            f"install it with: pip install 'sgf-deploy[{extra}]'"
        ) from None
