"""The Python-backend models a generated Triton repository runs (``model.py`` imports them).

* :class:`SliceModel` -- layout ``python``: raw reference/target slices in, the reconstruction in
  the target's scale out. It loads the engine file in its version folder with
  :func:`sgf_deploy.engines.load_engine` (ONNX Runtime / TensorRT / OpenVINO inside, never torch)
  after the checks ``run`` makes (manifest, the trust rule, the engine's sha256, the repository's
  ``hashes.json``) and applies the input contract (:mod:`sgf_deploy.contract`) around it.
* :class:`PreModel` / :class:`PostModel` -- layout ``native``: the contract's two halves around an
  engine served by Triton's own backend (normalise + pad; crop + de-normalise).

A request is ``(B, H, W)`` float32 ``reference`` and ``target`` (Triton adds the batch dimension
B). Requests the dynamic batcher hands over together are validated one by one (a bad request gets
its own error response, the others are answered) and the slices of those with one size run as one
batch. :func:`run_requests` is the backend-free core (the tests call it directly).

``triton_python_backend_utils`` exists only inside Triton's Python-backend stub, so it is imported
in the methods Triton calls.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import contract
from ..errors import InputError, SgfError

INPUTS: tuple[str, str] = ("reference", "target")
OUTPUT = "reconstruction"
HASHES = "hashes.json"
_NUMPY_MAJOR = int(np.__version__.split(".")[0])

Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Answer:
    """One request's outcome: the reconstruction or the one-line reason it was refused."""

    image: np.ndarray | None = None
    error: str | None = None
    bad_input: bool = True  # False: the engine failed (a server-side error, not the client's input)


# ------------------------------------------------------------------------------------ checks
def check_request(reference: Any, target: Any, multiple: int, spatial: Callable[[tuple, tuple], str | None]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A request's arrays as float32 ``(B, H, W)``; :class:`InputError` (one line) when they are
    not a finite pair of one shape or do not fit the engine's profile."""
    if reference is None or target is None:
        raise InputError(f"the request lacks the input '{INPUTS[0] if reference is None else INPUTS[1]}'")
    ref, tar, _ = contract.check_pair(reference, target, what="request")
    h, w = tar.shape[-2:]
    problem = spatial((contract.padded_size(h, multiple), contract.padded_size(w, multiple)), (h, w))
    if problem:
        raise InputError(f"request: {problem}")
    return ref, tar


def run_requests(infer: Infer, pairs: Sequence[tuple[Any, Any]], *, multiple: int, batch: int,
                 static_batch: int | None = None,
                 spatial: Callable[[tuple, tuple], str | None] = lambda padded, original: None) -> list[Answer]:
    """Reconstruct each ``(reference, target)`` request; requests of one slice size share engine
    batches. A request that fails its checks, or whose output is not finite, gets an error."""
    answers = [Answer() for _ in pairs]
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for i, (reference, target) in enumerate(pairs):
        try:
            ref, tar = check_request(reference, target, multiple, spatial)
        except SgfError as exc:
            answers[i].error = str(exc)
            continue
        groups.setdefault(tar.shape[-2:], []).append((i, ref, tar))
    for members in groups.values():
        ref = np.concatenate([m[1] for m in members])
        tar = np.concatenate([m[2] for m in members])
        try:
            out = contract.reconstruct(infer, ref, tar, multiple, batch, static_batch)
        except Exception as exc:  # noqa: BLE001 - the engine's own errors go back to the clients
            for i, _, _ in members:
                answers[i].error = f"the engine failed: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}"
                answers[i].bad_input = False
            continue
        start = 0
        for i, _, slices in members:
            image = out[start : start + slices.shape[0]]
            start += slices.shape[0]
            bad = image.size - int(np.count_nonzero(np.isfinite(image)))
            if bad:
                answers[i].error = (f"the engine produced {bad} non-finite value(s) (NaN/Inf) for this request; "
                                    "nothing was returned")
                answers[i].bad_input = False
            else:
                answers[i].image = np.ascontiguousarray(image, dtype=np.float32)
    return answers


def verify_hashes(folder: Path) -> None:
    """Every file ``hashes.json`` in ``folder`` names still has its recorded sha256."""
    from ..artifacts import sha256_file
    from ..errors import EngineMismatchError

    path = folder / HASHES
    if not path.is_file():
        raise EngineMismatchError(f"{path}: missing; re-export the repository with sgf-deploy triton export")
    try:
        recorded = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineMismatchError(f"{path}: unreadable ({exc}); re-export the repository") from None
    for name, sha in recorded.items():
        actual = sha256_file(folder / name) if (folder / name).is_file() else "(missing)"
        if actual != sha:
            raise EngineMismatchError(f"{folder / name}: sha256 {actual[:16]} does not match {HASHES} ({str(sha)[:16]}); "
                                      "re-export the repository with sgf-deploy triton export")


def _parameters(args: dict) -> tuple[dict[str, str], Path]:
    config = json.loads(args["model_config"])
    params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    folder = Path(args["model_repository"]) / str(args["model_version"])
    return params, folder


class _UnversionedDLPack:
    """An array seen through the unversioned DLPack protocol.

    The Python-backend stub bundled with nvidia-pytriton is built against numpy 1's C API: for a
    numpy 2 array, ``pb_utils.Tensor(name, array)`` sends 0 bytes (the client then sees an empty
    output) and ``as_numpy()`` repeats the first element (the element size is read from a field
    numpy 2 moved). ``pb_utils.Tensor.from_dlpack`` reads
    the buffer correctly but wants the unversioned ``dltensor`` capsule, which ``__dlpack__()``
    without ``max_version`` returns. The stub frees the tensor itself (checked: no growth over 400
    4-MB responses), after renaming the capsule to a name numpy's capsule destructor does not
    know; :func:`_quiet_capsule_destructor` silences that destructor's harmless complaint."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __dlpack__(self, stream: Any = None) -> Any:
        return self.array.__dlpack__()

    def __dlpack_device__(self) -> Any:
        return self.array.__dlpack_device__()


def output_tensor(pb_utils: Any, name: str, array: np.ndarray) -> Any:
    """``pb_utils.Tensor`` holding ``array`` (see :class:`_UnversionedDLPack`)."""
    array = np.ascontiguousarray(array)
    if _NUMPY_MAJOR < 2:
        return pb_utils.Tensor(name, array)
    return pb_utils.Tensor.from_dlpack(name, _UnversionedDLPack(array))


def _quiet_capsule_destructor() -> None:
    previous = sys.unraisablehook

    def hook(info: Any) -> None:
        if isinstance(info.exc_value, ValueError) and "PyCapsule_GetPointer" in str(info.exc_value):
            return
        previous(info)

    sys.unraisablehook = hook


def _error(pb_utils: Any, message: str, bad_input: bool = True) -> Any:
    """A TritonError; "invalid argument" (HTTP 400) for bad input where this Triton supports
    error codes, else the default (HTTP 500)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if bad_input else None
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _respond(pb_utils: Any, answers: list[Answer], outputs: Callable[[Answer], list]) -> list:
    responses = []
    for answer in answers:
        if answer.error is not None:
            responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(pb_utils, answer.error, answer.bad_input)))
        else:
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs(answer)))
    return responses


def _inputs(pb_utils: Any, request: Any, names: Sequence[str]) -> list[np.ndarray | None]:
    """The request's tensors as numpy arrays (None for a missing one). With numpy 2 through
    DLPack: the bundled stub's ``as_numpy()`` repeats the first element (see
    :class:`_UnversionedDLPack` for the cause)."""
    found = []
    for name in names:
        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            found.append(None)
        elif _NUMPY_MAJOR < 2:
            found.append(t.as_numpy())
        else:
            found.append(np.array(np.from_dlpack(t), copy=True))
    return found


# ------------------------------------------------------------------------------- layout python
class SliceModel:
    """Layout ``python``: the whole contract and the engine in one Python-backend model."""

    def initialize(self, args: dict) -> None:
        from ..engines import load_engine
        from ..engines.manifest import EngineManifest
        from ..errors import ValidationFailed

        _quiet_capsule_destructor()
        params, folder = _parameters(args)
        verify_hashes(folder)
        engine = folder / params["engine_file"]
        manifest = EngineManifest.load(engine)
        trust = manifest.trust(engine)
        if not trust.ok and params.get("allow_unvalidated") != "true":
            raise ValidationFailed(f"{engine}: refused: {trust.label}; validate it with 'sgf-deploy validate' "
                                   "or export with --allow-unvalidated")
        threads = int(params["threads"]) if params.get("threads") else None
        self.runner = load_engine(engine, threads=threads)
        self.profile = self.runner.manifest.profile
        self.multiple = contract.size_multiple(self.runner.manifest)
        self.batch = int(params.get("batch") or self.profile.choose_batch(None, 4))

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        pairs = [tuple(_inputs(pb_utils, r, INPUTS)) for r in requests]
        answers = run_requests(self.runner.infer, pairs, multiple=self.multiple, batch=self.batch,
                               static_batch=self.profile.static_batch, spatial=self.profile.spatial_problem)
        return _respond(pb_utils, answers, lambda a: [output_tensor(pb_utils, OUTPUT, a.image)])

    def finalize(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            runner.close()


# ------------------------------------------------------------------------------- layout native
class PreModel:
    """Layout ``native``, step 1: check, normalise and edge-pad; the statistics and the slice size
    travel to :class:`PostModel` as tensors."""

    def initialize(self, args: dict) -> None:
        _quiet_capsule_destructor()
        params, _ = _parameters(args)
        self.multiple = int(params.get("size_multiple") or contract.DEFAULT_SIZE_MULTIPLE)

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            reference, target = _inputs(pb_utils, request, INPUTS)
            try:
                ref, tar = check_request(reference, target, self.multiple, lambda padded, original: None)
            except SgfError as exc:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=_error(pb_utils, str(exc))))
                continue
            prepared = contract.prepare(ref, tar, self.multiple)
            stats = np.stack([np.asarray(prepared.means, np.float64), np.asarray(prepared.stds, np.float64)], axis=1)
            size = np.tile(np.asarray([[prepared.h, prepared.w]], np.int64), (prepared.n, 1))
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                output_tensor(pb_utils, "reference_n", prepared.reference),
                output_tensor(pb_utils, "target_n", prepared.target),
                output_tensor(pb_utils, "stats", stats), output_tensor(pb_utils, "size", size)]))
        return responses


class PostModel:
    """Layout ``native``, step 3: crop back and de-normalise with the target's statistics."""

    def initialize(self, args: dict) -> None:
        _quiet_capsule_destructor()

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        answers = []
        for request in requests:
            pred, stats, size = _inputs(pb_utils, request, ("prediction", "stats", "size"))
            h, w = (int(v) for v in size[0])
            prepared = contract.Prepared(pred, pred, list(stats[:, 0]), list(stats[:, 1]), int(pred.shape[0]), h, w)
            image = contract.restore(pred, prepared)
            bad = image.size - int(np.count_nonzero(np.isfinite(image)))
            answers.append(Answer(error=f"the engine produced {bad} non-finite value(s) (NaN/Inf); nothing was returned",
                                  bad_input=False) if bad else Answer(image=image))
        return _respond(pb_utils, answers, lambda a: [output_tensor(pb_utils, OUTPUT, a.image)])
