"""The README written into every exported Triton model repository."""

from __future__ import annotations

from ..engines.manifest import EngineManifest
from .config import ServingPlan

TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:<yy.mm>-py3"


def repository_readme(layout: str, model: str, plan: ServingPlan, manifest: EngineManifest) -> str:
    head = f"""# Triton model repository for SGF-MRI (layout `{layout}`)

Written by `sgf-deploy triton export`. Engine: {manifest.engine_file} ({manifest.backend}
{manifest.backend_version}, {manifest.precision.upper()}, {manifest.device_name}); model
{manifest.model_label()}. Scheduling: {plan.describe()}.

Clients call model `{model}` (KServe v2, HTTP or gRPC): inputs `reference` and `target`, float32
`[B, H, W]` raw slices of one series on one grid; output `reconstruction`, float32 `[B, H, W]` in
the target's intensity scale. `sgf-deploy run --server HOST:PORT` is such a client.

`repository.json` lists every file with its SHA-256 and the engine it came from; each version
folder holding the engine has `hashes.json`, checked when the model loads, the engine's manifest
and its validation report (or, for the embedded default, its export self-check marker).
"""
    if layout == "python":
        return head + f"""
## Serve it

* Here, with the server bundled in nvidia-pytriton (CPU, Python backend):
  `sgf-deploy triton serve --repo THIS_FOLDER`.
* In Triton's container: the Python backend must import sgf-deploy and the engine's runtime
  (for example a derived image with `pip install 'sgf-deploy[triton]'`), then
  `docker run --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v $PWD:/models {TRITON_IMAGE}
  tritonserver --model-repository=/models` (add `--gpus all` for a GPU engine).
"""
    return head + f"""
## Serve it (production Triton images only)

An ensemble: `{model}_pre` (Python backend: per-slice normalisation, edge padding to a multiple of
{manifest.model.size_multiple}), `{model}_engine` (Triton's own backend for this engine), `{model}_post`
(Python backend: crop, de-normalisation). The nvidia-pytriton server has only the Python backend, so
this layout cannot run there; use Triton's container with the backend this engine needs and
sgf-deploy installed for the two Python steps:
`docker run --rm --gpus all -p 8000:8000 -v $PWD:/models {TRITON_IMAGE} tritonserver --model-repository=/models`.

* ONNX Runtime engines (`onnxruntime_onnx`): the file is ONNX Runtime {manifest.backend_version if manifest.backend == 'onnxruntime' else '(version of the build)'}'s
  optimised model; Triton's ONNX Runtime must be that version or newer (see the Triton release
  notes), else rebuild the engine with the matching onnxruntime.
* OpenVINO engines (`openvino`): `model.xml` + `model.bin` (or `model.onnx`).
* TensorRT engines (`tensorrt_plan`): a plan is tied to the TensorRT version and the GPU it was
  built with; build it with the TensorRT of the Triton release on the same GPU model. Engines built
  with `--mcns function` (the default) hold MCNS as standard layers and need no plugin. The
  `sgf::MCNS` plugin of `--mcns plugin` is a Python IPluginV3 (it is not serialised into the plan),
  which Triton's C++ TensorRT backend cannot load, so `triton export` refuses such an engine for
  this layout; a compiled plugin library would be loaded with
  `tritonserver --backend-config=tensorrt,plugins="/path/libsgf_mcns.so"` (or `LD_PRELOAD`).
"""
