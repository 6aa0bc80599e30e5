"""``sgf-deploy triton export``: a Triton model repository for a validated engine.

Two layouts (clients see the same model either way: ``reference`` and ``target`` float32
``(B, H, W)`` raw slices in, ``reconstruction`` ``(B, H, W)`` in the target's scale out):

* ``python`` -- one Python-backend model (:class:`sgf_deploy.serving.backend.SliceModel`) that
  runs the engine file with sgf-deploy's torch-free runtime stack (ONNX Runtime / OpenVINO /
  TensorRT inside) and applies the input contract. Runs on any Triton with the Python backend,
  the one bundled in ``nvidia-pytriton`` included; the Python it runs needs ``sgf-deploy``.
* ``native`` -- an ensemble: Python-backend pre-processing (normalise, pad), the engine served by
  Triton's own backend (``onnxruntime_onnx``, ``openvino`` or ``tensorrt_plan``), Python-backend
  post-processing (crop, de-normalise). For production Triton images; the bundled server has only
  the Python backend, so this layout cannot run on it.

The engine is refused exactly as ``run`` refuses it (the trust rule of
:meth:`~sgf_deploy.engines.EngineManifest.trust`, unless ``allow_unvalidated``); the manifest, the
validation report (or the embedded default's self-check marker) and ``hashes.json`` are copied
beside the engine and named in ``config.pbtxt``'s parameters; ``repository.json`` records every
file's sha256 and the hashes of the inputs. The repository is written to a temporary folder
beside ``out`` and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from .. import defaults as D
from ..artifacts import check_writable, sha256_file, temp_beside, write_json_atomic
from ..engines.manifest import CACHE_MARKER, EngineManifest, json_safe, manifest_path
from ..errors import InputError, OutputExistsError, ValidationFailed
from .backend import HASHES, INPUTS, OUTPUT
from .config import ServingPlan, Token, parameters, serving_plan, tensor, to_pbtxt

LAYOUTS: tuple[str, ...] = ("python", "native")
NATIVE_PLATFORMS: dict[str, dict[str, str]] = {  # engine backend -> Triton's backend and file name
    "onnxruntime": {"platform": "onnxruntime_onnx", "file": "model.onnx"},
    "tensorrt": {"platform": "tensorrt_plan", "file": "model.plan"},
    "openvino": {"backend": "openvino", "file": "model.xml"},
}
Echo = Callable[[str], None]


@dataclass(frozen=True)
class TritonExportSettings:
    """Options of ``sgf-deploy triton export``; defaults in :mod:`sgf_deploy.defaults`."""

    layout: str = D.TRITON_LAYOUT
    model_name: str = D.TRITON_MODEL
    instances: int | None = None  # None: from the engine's thread count (serving_plan)
    max_batch: int | None = None  # None: the engine profile's maximum, else TRITON_MAX_BATCH
    queue_delay_us: int | None = None
    dynamic_batching: bool = True
    allow_unvalidated: bool = False
    overwrite: bool = False


@dataclass
class ExportedRepository:
    path: Path
    layout: str
    model_name: str
    plan: ServingPlan
    trust_label: str
    models: list[str] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)


def export_repository(engine: str | os.PathLike, out: str | os.PathLike,
                      settings: TritonExportSettings | None = None, *, echo: Echo | None = None) -> ExportedRepository:
    """Write the model repository for ``engine`` to ``out`` (see the module doc)."""
    settings = settings or TritonExportSettings()
    echo = echo or (lambda msg: None)
    engine, out = Path(engine), Path(out)
    if settings.layout not in LAYOUTS:
        raise InputError(f"unknown layout {settings.layout!r}; choose from {', '.join(LAYOUTS)}")
    if not settings.model_name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"model name {settings.model_name!r}: use letters, digits, '_' and '-'")
    if not engine.is_file():
        raise InputError(f"{engine}: engine file not found")
    check_writable(out, settings.overwrite, "--force")
    manifest = EngineManifest.load(engine)
    manifest.verify_file(engine)
    trust = manifest.trust(engine)
    if not trust.ok and not settings.allow_unvalidated:
        raise ValidationFailed(f"{engine}: refused: {trust.label}; validate it with 'sgf-deploy validate' "
                               "or pass --allow-unvalidated to export it anyway")
    if not trust.ok:
        echo(f"warning: exporting an engine without a passing validation ({trust.label}): {engine}")
    plan = serving_plan(manifest, instances=settings.instances, max_batch=settings.max_batch,
                        queue_delay_us=settings.queue_delay_us, dynamic_batching=settings.dynamic_batching)
    if settings.layout == "native":
        check_native(engine, manifest, plan)
    tmp = temp_beside(out, directory=True)
    try:
        result = ExportedRepository(out, settings.layout, settings.model_name, plan, trust.label)
        common = _common_parameters(engine, manifest, trust, plan, settings)
        if settings.layout == "python":
            _write_python_layout(tmp, engine, manifest, plan, common, settings, result)
        else:
            _write_native_layout(tmp, engine, manifest, plan, common, settings, result)
        _write_readme(tmp, settings, result, manifest)
        _write_record(tmp, engine, manifest, result)
        _install(tmp, out, settings.overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result.configs = [out / m / "config.pbtxt" for m in result.models]
    return result


# ------------------------------------------------------------------------------------ checks
def check_native(engine: Path, manifest: EngineManifest, plan: ServingPlan) -> None:
    """Refuse engines Triton's own backends cannot serve, with the reason and the way out."""
    backend = manifest.backend
    if backend not in NATIVE_PLATFORMS:
        raise InputError(f"{engine}: a {backend} engine has no Triton backend; export it with --layout python")
    if backend == "tensorrt" and "plugin" in str(manifest.build_options.get("mcns", "")).lower():
        raise InputError(f"{engine}: built with the sgf::MCNS plugin, a Python IPluginV3 that Triton's C++ TensorRT "
                         "backend cannot load; rebuild with --mcns function (the default) or use --layout python")
    if manifest.profile.static_batch:
        raise InputError(f"{engine}: static batch {manifest.profile.static_batch}; the native layout needs an engine "
                         "with a dynamic batch dimension (rebuild with --shapes MIN:OPT:MAX) or use --layout python")
    if backend == "openvino" and engine.suffix == ".xml" and not engine.with_suffix(".bin").is_file():
        raise InputError(f"{engine}: its weights {engine.with_suffix('.bin').name} are missing")


def _common_parameters(engine: Path, manifest: EngineManifest, trust: Any, plan: ServingPlan,
                       settings: TritonExportSettings) -> dict[str, Any]:
    validation = manifest.validation or {}
    return {
        "sgf_layout": settings.layout, "sgf_toolkit_version": __version__,
        "engine_file": engine.name, "engine_sha256": manifest.engine_sha256,
        "manifest_file": manifest_path(engine).name, "manifest_sha256": sha256_file(manifest_path(engine)),
        "backend": manifest.backend, "backend_version": manifest.backend_version, "precision": manifest.precision,
        "device": manifest.device_name, "checkpoint_sha256": manifest.checkpoint_sha256,
        "onnx_sha256": manifest.onnx_sha256, "model": manifest.model_label(),
        "model_info": json.dumps(json_safe(manifest.model.to_dict()), sort_keys=True),
        "size_multiple": manifest.model.size_multiple, "trust": trust.label, "trusted": str(trust.ok).lower(),
        "allow_unvalidated": str(bool(settings.allow_unvalidated)).lower(),
        "validation_verdict": validation.get("verdict") or "", "report_sha256": validation.get("report_sha256") or "",
        "batch": plan.preferred_batch, "threads": plan.threads or "", "serving_plan": plan.describe(),
        "hashes_file": HASHES,
    }


# ------------------------------------------------------------------------------- the layouts
def _model_config(name: str, plan: ServingPlan, inputs: list, outputs: list, params: dict, **extra: Any) -> dict:
    config: dict[str, Any] = {"name": name, **extra, "max_batch_size": plan.max_batch, "input": inputs, "output": outputs}
    if plan.dynamic_batching:
        config["dynamic_batching"] = {"preferred_batch_size": [plan.preferred_batch],
                                      "max_queue_delay_microseconds": plan.queue_delay_us}
    config["instance_group"] = [{"count": plan.instances, "kind": Token(plan.instance_kind)}]
    config["parameters"] = parameters(params)
    return config


def _slice_io() -> tuple[list, list]:
    return ([tensor(n, "TYPE_FP32", [-1, -1]) for n in INPUTS], [tensor(OUTPUT, "TYPE_FP32", [-1, -1])])


def _model_py(cls: str, what: str) -> str:
    return (f'"""Generated by sgf-deploy {__version__} (triton export): {what}.\n\n'
            "Needs the sgf-deploy package in the Python that Triton's Python backend runs\n"
            "(pip install 'sgf-deploy[triton]'); the implementation is sgf_deploy.serving.backend.\n"
            '"""\n\n'
            "import os\nimport site\nimport sys\n\n"
            "# sgf-deploy triton serve names its environment here (the backend's Python ignores PYTHONPATH)\n"
            'for _path in reversed([p for p in os.environ.get("SGF_DEPLOY_PYTHONPATH", "").split(os.pathsep) if p]):\n'
            "    _before = list(sys.path)\n"
            "    site.addsitedir(_path)\n"
            "    _added = [p for p in sys.path if p not in _before]\n"
            "    sys.path[:] = _added + [p for p in sys.path if p not in _added]\n\n"
            f"from sgf_deploy.serving.backend import {cls} as TritonPythonModel  # noqa: E402,F401\n")


def _copy_evidence(engine: Path, manifest: EngineManifest, version: Path, params: dict, *,
                   engine_name: str | None = None) -> None:
    """The engine (as ``engine_name``), its manifest, the validation report or the default's
    self-check marker into ``version``; ``hashes.json`` over all of them."""
    version.mkdir(parents=True, exist_ok=True)
    files = {engine_name or engine.name: engine}
    if engine_name is None:
        files[manifest_path(engine).name] = manifest_path(engine)
    else:  # renamed for Triton's backend; the manifest stays beside it as <file>.json
        files[engine_name + ".json"] = manifest_path(engine)
        params["manifest_file"] = engine_name + ".json"
        params["engine_file"] = engine_name
    if manifest.backend == "openvino" and engine.suffix == ".xml":
        files[Path(engine_name or engine.name).with_suffix(".bin").name] = engine.with_suffix(".bin")
    report = _validation_report(manifest)
    params["report_file"] = ""
    if report is not None:
        files["validation-report.json"] = report
        params["report_file"] = "validation-report.json"
    if manifest.is_cached_default(engine):
        files[CACHE_MARKER] = engine.parent / CACHE_MARKER
        params["selfcheck_file"] = CACHE_MARKER
    for name, source in files.items():
        shutil.copy2(source, version / name)
    hashes = {name: sha256_file(version / name) for name in sorted(files)}
    write_json_atomic(version / HASHES, {"files": hashes, "source_engine": str(engine.resolve()),
                                         "toolkit_version": __version__})


def _validation_report(manifest: EngineManifest) -> Path | None:
    """The validation report the manifest names, when it is there and its sha256 matches."""
    validation = manifest.validation or {}
    path = validation.get("report_path")
    if not path or not Path(path).is_file():
        return None
    if validation.get("report_sha256") and sha256_file(path) != validation["report_sha256"]:
        raise InputError(f"{path}: sha256 does not match the engine manifest's report_sha256; re-run sgf-deploy validate")
    return Path(path)


def _write_python_layout(root: Path, engine: Path, manifest: EngineManifest, plan: ServingPlan, params: dict,
                         settings: TritonExportSettings, result: ExportedRepository) -> None:
    model = root / settings.model_name
    version = model / "1"
    _copy_evidence(engine, manifest, version, params)
    (version / "model.py").write_text(_model_py("SliceModel", "raw slices in, reconstruction out"))
    inputs, outputs = _slice_io()
    config = _model_config(settings.model_name, plan, inputs, outputs, params, backend="python")
    (model / "config.pbtxt").write_text(to_pbtxt(config))
    result.models.append(settings.model_name)


def _write_native_layout(root: Path, engine: Path, manifest: EngineManifest, plan: ServingPlan, params: dict,
                         settings: TritonExportSettings, result: ExportedRepository) -> None:
    name = settings.model_name
    pre, core, post = f"{name}_pre", f"{name}_engine", f"{name}_post"
    target = NATIVE_PLATFORMS[manifest.backend]
    file_name = target["file"] if not (manifest.backend == "openvino" and engine.suffix != ".xml") else "model.onnx"
    _copy_evidence(engine, manifest, root / core / "1", params, engine_name=file_name)
    padded = [tensor(n, "TYPE_FP32", [1, -1, -1]) for n in INPUTS]
    platform = {k: v for k, v in target.items() if k != "file"}
    engine_params = dict(params)
    if manifest.backend == "onnxruntime" and plan.threads:  # Triton's onnxruntime backend reads this key
        engine_params["intra_op_thread_count"] = plan.threads
    engine_config = _model_config(core, plan, padded, [tensor(OUTPUT, "TYPE_FP32", [1, -1, -1])], engine_params,
                                  **platform, default_model_filename=file_name)
    # pre/post are numpy work: CPU instances, no batcher of their own (the engine's batcher batches)
    helper_plan = ServingPlan(**dict(plan.__dict__, dynamic_batching=False, instance_kind="KIND_CPU"))
    inputs, outputs = _slice_io()
    stats = [tensor("stats", "TYPE_FP64", [2]), tensor("size", "TYPE_INT64", [2])]
    pre_config = _model_config(pre, helper_plan, inputs,
                               [tensor(f"{n}_n", "TYPE_FP32", [1, -1, -1]) for n in INPUTS] + stats,
                               {"size_multiple": manifest.model.size_multiple}, backend="python")
    post_config = _model_config(post, helper_plan, [tensor("prediction", "TYPE_FP32", [1, -1, -1])] + stats,
                                outputs, {}, backend="python")
    steps = [
        {"model_name": pre, "model_version": -1,
         "input_map": [{"key": n, "value": n} for n in INPUTS],
         "output_map": [{"key": k, "value": f"_{k}"} for k in ("reference_n", "target_n", "stats", "size")]},
        {"model_name": core, "model_version": -1,
         "input_map": [{"key": n, "value": f"_{n}_n"} for n in INPUTS],
         "output_map": [{"key": OUTPUT, "value": "_prediction"}]},
        {"model_name": post, "model_version": -1,
         "input_map": [{"key": "prediction", "value": "_prediction"}, {"key": "stats", "value": "_stats"},
                       {"key": "size", "value": "_size"}],
         "output_map": [{"key": OUTPUT, "value": OUTPUT}]},
    ]
    ensemble = {"name": name, "platform": "ensemble", "max_batch_size": plan.max_batch, "input": inputs,
                "output": outputs, "ensemble_scheduling": {"step": steps},
                "parameters": parameters(dict(params, engine_model=core))}
    for model_name, config, code in ((name, ensemble, None), (pre, pre_config, "PreModel"), (core, engine_config, None),
                                     (post, post_config, "PostModel")):
        (root / model_name / "1").mkdir(parents=True, exist_ok=True)
        if code:
            what = "normalise + edge-pad" if code == "PreModel" else "crop + de-normalise"
            (root / model_name / "1" / "model.py").write_text(_model_py(code, what))
        (root / model_name / "config.pbtxt").write_text(to_pbtxt(config))
        result.models.append(model_name)


# ------------------------------------------------------------------------------- record, install
def _write_record(root: Path, engine: Path, manifest: EngineManifest, result: ExportedRepository) -> None:
    files = {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    write_json_atomic(root / "repository.json", {
        "format": "sgf-deploy-triton-repository", "format_version": 1, "toolkit_version": __version__,
        "layout": result.layout, "model_name": result.model_name, "models": result.models,
        "serving_plan": result.plan.__dict__, "trust": result.trust_label,
        "inputs": {"engine": str(engine.resolve()), "engine_sha256": manifest.engine_sha256,
                   "manifest_sha256": sha256_file(manifest_path(engine))},
        "files": files,
    })


def _write_readme(root: Path, settings: TritonExportSettings, result: ExportedRepository, manifest: EngineManifest) -> None:
    from .docs import repository_readme

    (root / "README.md").write_text(repository_readme(settings.layout, settings.model_name, result.plan, manifest))


def _install(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished repository into place; an existing one (``overwrite``) is moved aside
    first and removed only after the new one is in place."""
    old = None
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out}: appeared while exporting; pass --force to replace it")
        old = temp_beside(out, directory=True)
        old.rmdir()
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
