"""Serving validated engines on NVIDIA Triton Inference Server (``sgf-deploy triton``).

* :mod:`.repository` -- ``export_repository``: a model repository (layout ``python`` or ``native``)
* :mod:`.server` -- ``TritonServer`` / ``serve``: the tritonserver bundled in nvidia-pytriton
* :mod:`.client` -- ``connect``: a torch-free KServe v2 client (``run --server``)
* :mod:`.backend` -- the Python-backend models the repository runs
* :mod:`.config` -- ``config.pbtxt`` writer and the serving plan from the engine's manifest

Imports below this package: engines, contract, artifacts, errors (never runtime, never torch);
``tritonclient`` is imported only by the client.
"""
