"""Build an ONNX Runtime engine: optimise the (precision-converted) model and save the result.

The graph is saved at ``ORT_ENABLE_EXTENDED`` (fusions, QDQ -> QLinearConv, the MCNS function
inlined) and loaded at ``ORT_ENABLE_ALL``, which adds the layout transformations (NCHWc) at load
time. ONNX Runtime warns that a model saved at ``ORT_ENABLE_ALL`` carries hardware-specific
layouts (the NCHWc block size follows the CPU's vector width: AVX2 vs AVX-512) and is only valid
where it was optimised; saving at EXTENDED avoids that, at the same speed once loaded (measured:
the EXTENDED-saved INT8 and FP32 lite models run within 1 % of the originals loaded at ALL). What
remains tied to the build is the ONNX Runtime version (fused and contrib op schemas), the
execution provider and the CPU architecture: all three are part of the engine's identity
(manifest ``backend_version``, ``build_options.execution_provider``, ``device.arch``) and checked
at load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import SgfError
from ..identity import cpu_device, gpu_devices

SAVED_LEVEL = "ORT_ENABLE_EXTENDED"
LOAD_LEVEL = "ORT_ENABLE_ALL"
SPIN_ENV = "SGF_ORT_SPIN"  # "1" lets ONNX Runtime's intra-op threads spin between parallel sections


def providers_for(device: dict[str, Any]) -> list[str]:
    if device.get("kind") == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_device() -> dict[str, Any]:
    """CUDA (first GPU) when onnxruntime-gpu's CUDA provider is available and a GPU is present,
    else the CPU."""
    import onnxruntime as ort

    gpus = gpu_devices()
    if "CUDAExecutionProvider" in ort.get_available_providers() and gpus:
        gpu = gpus[0]
        return {"kind": "cuda", "name": gpu["name"], "compute_capability": gpu["compute_capability"], "sm": gpu["sm"],
                "execution_provider": "CUDAExecutionProvider"}
    return dict(cpu_device(), execution_provider="CPUExecutionProvider")


def spinning_enabled(spin: bool | None = None) -> bool:
    """Whether intra-op threads busy-wait between parallel sections: off unless asked for.

    ONNX Runtime spins by default. On the 2-core CPU this project targets, spinning threads compete
    with the threads doing the work, and with the next session or process: measured on the
    embedded ``lite`` at 320x320, 2 threads, INT8 67.0 ms with spinning off vs 80.2 ms median with it
    on (same minimum, 65.7 ms), FP32 157-158 ms either way when run alone, and FP32 192 ms with it on
    when another session runs in between. ``SGF_ORT_SPIN=1`` (or ``spin=True``) turns it back on for
    machines with cores to spare.
    """
    import os

    if spin is None:
        spin = os.environ.get(SPIN_ENV, "0").strip() == "1"
    return bool(spin)


def session_options(level: str, threads: int | None, spin: bool | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning_enabled(spin) else "0")
    # No memory pattern: with it, the second run of a shape asks the CPU arena for one planned
    # block beside the chunks the first run left there, doubling the peak (paper 320x320: 6.1 GB
    # after one slice, 11.4 GB after two at batch 1); without it the arena's chunks are reused.
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    return so


def build(model_path: str | Path, out_path: str | Path, *, device: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Optimise ``model_path`` for ``device`` and save it to ``out_path``; check it reloads."""
    import onnxruntime as ort

    providers = providers_for(device)
    so = session_options(SAVED_LEVEL, threads)
    so.optimized_model_filepath = str(out_path)
    try:
        ort.InferenceSession(str(model_path), so, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise SgfError(f"{model_path}: ONNX Runtime could not optimise the model ({str(exc).splitlines()[0][:200]})") from None
    if not Path(out_path).is_file():
        raise SgfError(f"{model_path}: ONNX Runtime wrote no optimised model")
    try:  # the saved artefact must load on its own
        session = ort.InferenceSession(str(out_path), session_options(LOAD_LEVEL, threads), providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise SgfError(f"{out_path}: the optimised model does not reload in ONNX Runtime ({str(exc).splitlines()[0][:200]})") from None
    names = [i.name for i in session.get_inputs()]
    if sorted(names) != ["reference", "target"] or [o.name for o in session.get_outputs()] != ["reconstruction"]:
        raise SgfError(f"{model_path}: expected inputs reference, target and output reconstruction; got {names}")
    return {
        "execution_provider": providers[0],
        "saved_optimization_level": SAVED_LEVEL,
        "load_optimization_level": LOAD_LEVEL,
        "mcns": "sgf::MCNS function inlined and optimised by ONNX Runtime",
    }
