"""The backends to compare: the checkpoint, what this machine can run, the engines (given, or built
from the checkpoint) and the spec each worker process is started with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import machine as M
from ..settings import BackendsBenchSettings

#: The short names of the backends in the record (``ort-fp32``, ``trt-int8``, ...).
SHORT_NAMES = {"onnxruntime": "ort", "openvino": "ov", "tensorrt": "trt", "tensorrt-rtx": "rtx"}
PRECISION_DETAIL = ("activations", "weights", "calibration_method", "float_patterns", "format", "quant_format",
                    "per_channel", "kind", "keep_fp32")


def checkpoint_info(path: Path) -> dict[str, Any]:
    """What the record says about the checkpoint: sha256, config, provenance, trained or not."""
    from ...artifacts import sha256_file
    from ...model.checkpoint import read_checkpoint

    _, meta, _ = read_checkpoint(path)
    prov = meta.get("provenance") or {}
    steps = prov.get("steps")
    final = prov.get("final_validation")
    return {
        "path": str(path), "sha256": sha256_file(path), "config": meta.get("config"),
        "parameters": meta.get("parameters"), "task": prov.get("task"), "pair": prov.get("pair"),
        "steps": steps, "trained": bool(steps),
        "final_validation": final if isinstance(final, dict) else None,
    }


def choose_checkpoint(ckpt: str | os.PathLike | None, workdir: Path, echo: Callable[[str], None]) -> tuple[Path, str]:
    """``--ckpt``, else the embedded default, else an untrained ``lite`` network (speed does not
    depend on the weights; parity does — the record says which)."""
    if ckpt is not None:
        p = Path(ckpt)
        if not p.is_file():
            from ...errors import CheckpointError

            raise CheckpointError(f"{p}: checkpoint not found")
        return p, "--ckpt"
    from ...model import DEFAULT_CHECKPOINT

    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, "embedded default checkpoint"
    import torch

    from ...model import build_model, save_checkpoint

    path = workdir / "untrained-lite-recon4x-t1-t2.pt"
    if not path.is_file():
        torch.manual_seed(0)
        save_checkpoint(path, build_model("lite"), {"task": "recon4x", "pair": "t1-t2", "steps": 0, "seed": 0,
                                                    "note": "untrained (sgf-deploy bench): for speed only"}, overwrite=True)
    echo(f"[bench] no embedded default checkpoint in this install: using an UNTRAINED lite network ({path}); "
         "speed does not depend on the weights, parity does")
    return path, "untrained lite (embedded default missing)"


def engine_checkpoint(engine: Path) -> tuple[Path, str]:
    """The checkpoint ``engine`` was built from, found by SHA-256 as ``sgf-deploy validate`` finds
    it (:func:`sgf_deploy.validate.sources.engine_origin`): (path, how it was found)."""
    from ...engines.manifest import EngineManifest
    from ...validate.sources import engine_origin

    path, _, how = engine_origin(engine, EngineManifest.load(engine)).checkpoint
    return path, how


def detect_backends() -> dict[str, Any]:
    """What can run here: ONNX Runtime CPU always; CUDA EP, TensorRT, TensorRT-RTX where present."""
    from ...engines.identity import trt_available

    found_gpus = M.gpus()
    providers = M.ort_providers()
    det: dict[str, Any] = {"gpus": found_gpus, "ort_providers": providers}
    det["onnxruntime-cpu"] = {"runnable": "CPUExecutionProvider" in providers}
    cuda_ep = "CUDAExecutionProvider" in providers
    det["onnxruntime-cuda"] = {"runnable": bool(cuda_ep and found_gpus),
                               "reason": None if cuda_ep and found_gpus else
                               ("no NVIDIA GPU" if not found_gpus else "onnxruntime-gpu (CUDAExecutionProvider) not installed")}
    import importlib.util

    ov_installed = importlib.util.find_spec("openvino") is not None
    det["openvino"] = {"installed": ov_installed, "runnable": ov_installed,
                       "reason": None if ov_installed else "not installed (pip install 'sgf-deploy[openvino]')"}
    for name in ("tensorrt", "tensorrt-rtx"):
        installed = trt_available(name)
        det[name] = {"installed": installed, "runnable": bool(installed and found_gpus),
                     "reason": None if installed and found_gpus else
                     ("not installed" if not installed else "installed, but engine execution needs an NVIDIA GPU (none found)")}
    return det


def _find_engine(engines_dir: Path, onnx_sha: str, backend: str, precision: str) -> Path | None:
    from ...engines import read_manifest

    if not engines_dir.is_dir():
        return None
    for js in sorted(engines_dir.glob("*.json")):
        eng = js.with_suffix("")
        if not eng.is_file():
            continue
        try:
            man = read_manifest(eng)
        except Exception:  # noqa: BLE001 - a foreign file: skip
            continue
        if man.get("onnx_sha256") == onnx_sha and man.get("backend") == backend and man.get("precision") == precision:
            return eng
    return None


def _export(ckpt: Path, info: dict[str, Any], workdir: Path, echo: Callable[[str], None]) -> Path:
    """The checkpoint exported with dynamic N, H, W (reused when already there)."""
    from ...export import export_onnx

    onnx_path = workdir / "export" / f"sgf_mri-{info['sha256'][:12]}.onnx"
    if not onnx_path.is_file():
        echo(f"[bench] exporting {ckpt} -> {onnx_path}")
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(ckpt, onnx_path, overwrite=True)
    return onnx_path


def _calibration(info: dict[str, Any], workdir: Path, calib_n: int, echo: Callable[[str], None]) -> Path:
    """The INT8 calibration set (simulator, train split), written unless a valid one is there."""
    from ...calibration.dataset import CalibrationSet, write_calibration_set

    pair, task = info.get("pair") or "t1-t2", info.get("task") or "recon4x"
    calib = workdir / "calibration" / f"{pair}-{task}-sim-n{calib_n}"
    try:
        CalibrationSet(calib)
    except Exception:  # noqa: BLE001 - missing or stale: write it
        echo(f"[bench] writing the INT8 calibration set {calib} (simulator, train split, n={calib_n})")
        write_calibration_set("sim", n=calib_n, out=calib, pair=pair, task=task, overwrite=True)
    return calib


def build_all(ckpt: Path, workdir: Path, detected: dict[str, Any], echo: Callable[[str], None],
              precisions: Sequence[str], calib_n: int) -> list[Path]:
    """Export ``ckpt``, write a calibration set and build every runnable backend/precision into
    ``workdir`` (artefacts already there for the same ONNX are reused)."""
    from ...artifacts import sha256_file
    from ...engines import build_engine

    info = checkpoint_info(ckpt)
    onnx_path = _export(ckpt, info, workdir, echo)
    onnx_sha = sha256_file(onnx_path)
    calib = _calibration(info, workdir, calib_n, echo) if "int8" in precisions else None
    backends = []
    if detected["onnxruntime-cpu"]["runnable"] or detected["onnxruntime-cuda"]["runnable"]:
        backends.append("onnxruntime")
    backends += [b for b in ("openvino", "tensorrt", "tensorrt-rtx") if detected.get(b, {}).get("runnable")]
    engines = []
    for backend in backends:
        for precision in precisions:
            if backend == "openvino" and precision == "fp16" and _ov_fp16_problem():
                echo(f"[bench] openvino fp16 not built: {_ov_fp16_problem()}")
                continue
            found = _find_engine(workdir / "engines", onnx_sha, backend, precision)
            if found is None:
                echo(f"[bench] building {backend} {precision}")
                res = build_engine(onnx_path, backend=backend, precision=precision,
                                   calib=calib if precision == "int8" else None, out_dir=workdir / "engines",
                                   threads=M.THREADS, parity_n=0, overwrite=True)
                found = res.engine_path
            engines.append(found)
    return engines


def _ov_fp16_problem() -> str | None:
    from ...engines.openvino.builder import fp16_problem, ov_device

    return fp16_problem(ov_device())


def engine_spec(path: Path) -> dict[str, Any]:
    """A worker spec for an engine file, from its manifest (keys starting ``_`` stay out of the record)."""
    from ...engines import read_manifest
    from ...engines.identity import Profile

    man = read_manifest(path)
    device = man.get("device") or {}
    backend = man.get("backend")
    where = "cuda" if device.get("kind") == "cuda" else ("gpu" if backend not in ("onnxruntime", "openvino") else "cpu")
    conv = man.get("precision_conversion") or {}
    return {
        "name": f"{SHORT_NAMES.get(backend, backend)}{'-cuda' if where == 'cuda' else ''}-{man.get('precision')}",
        "kind": "engine", "path": str(path), "backend": backend, "precision": man.get("precision"),
        "backend_version": man.get("backend_version"), "device": device,
        "profile": Profile.from_manifest(man.get("profile")).describe(),
        "_profile": man.get("profile"),
        "checkpoint_sha256": man.get("checkpoint_sha256"), "engine_sha256": man.get("engine_sha256"),
        "precision_detail": {k: conv.get(k) for k in PRECISION_DETAIL if conv.get(k) is not None},
    }


def fits_profile(spec: dict[str, Any], shape: tuple[int, ...]) -> bool:
    """Whether a backend accepts inputs of ``shape`` (PyTorch: always; an engine: its profile)."""
    if spec["kind"] == "torch":
        return True
    from ...engines.identity import Profile

    return Profile.from_manifest(spec.get("_profile")).contains(shape)


def public(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec without its private (``_``) keys: what the record and the probes get."""
    return {k: v for k, v in spec.items() if not k.startswith("_")}


def backend_specs(settings: BackendsBenchSettings, workdir: Path, detected: dict[str, Any],
                  echo: Callable[[str], None]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The worker specs (PyTorch eager FP32 first, then every engine, names made unique) and the
    checkpoint record. Engines built from another checkpoint are refused."""
    from ...errors import InputError

    engine_paths = [Path(e) for e in settings.engines]
    if settings.all_backends or not engine_paths:
        ckpt_path, ckpt_source = choose_checkpoint(settings.ckpt, workdir, echo)
        engine_paths += build_all(ckpt_path, workdir, detected, echo, settings.precisions, settings.calib_n)
    elif settings.ckpt is None:
        ckpt_path, ckpt_source = engine_checkpoint(engine_paths[0])
    else:
        ckpt_path, ckpt_source = Path(settings.ckpt), "--ckpt"
    ckpt_info = checkpoint_info(ckpt_path) | {"source": ckpt_source}
    specs: list[dict[str, Any]] = [{"name": "pytorch-fp32", "kind": "torch", "ckpt": str(ckpt_path), "precision": "fp32",
                                    "backend": "pytorch-eager", "device": {"kind": "cpu"}}]
    names = {"pytorch-fp32"}
    if settings.torch_compile or (settings.torch_compile is None and settings.all_backends):
        specs.append({"name": "torch-compile-fp32", "kind": "torch", "compile": True, "ckpt": str(ckpt_path),
                      "precision": "fp32", "backend": "torch.compile (inductor)", "device": {"kind": "cpu"}})
        names.add("torch-compile-fp32")
    for p in dict.fromkeys(engine_paths):
        spec = engine_spec(p)
        if spec["checkpoint_sha256"] and spec["checkpoint_sha256"] != ckpt_info["sha256"]:
            raise InputError(f"{p}: built from checkpoint {spec['checkpoint_sha256'][:12]}..., not {ckpt_path} "
                             f"({ckpt_info['sha256'][:12]}...); pass the checkpoint it was built from with --ckpt")
        base, k = spec["name"], 2
        while spec["name"] in names:
            spec["name"] = f"{base}-{k}"
            k += 1
        names.add(spec["name"])
        specs.append(spec)
    return specs, ckpt_info
