"""A torch-free KServe v2 client for a served SGF-MRI model (``sgf-deploy run --server``).

:func:`connect` returns a :class:`RemoteReconstructor`, which has the face of
:class:`sgf_deploy.runtime.Reconstructor` (call it with ``(N, H, W)`` reference and target, read
``timings``, ``trust``, ``describe()``), so ``run`` and the DICOM node treat a server like a local
engine. The inputs are checked here first (:func:`sgf_deploy.contract.check_pair`: the same
one-line messages as a local run); the slices go in requests of ``batch`` slices (the served
model's optimum unless asked otherwise).

Failures are one line each and never a partial result: an unreachable server, a timeout or a
server that is restarting is retried ``retries`` times with back-off (a request is idempotent,
and the client assembles the answer by slice index, so a retried request can neither be lost nor
counted twice), then reported; a request the server refuses is reported with the server's reason.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import contract
from .. import defaults as D
from ..engines.manifest import ModelInfo, TrustStatus
from ..errors import InputError, MissingDependencyError, SgfError, ValidationFailed
from .backend import INPUTS, OUTPUT

RETRY_STATUS = {"502", "503", "504"}


class ServerError(SgfError):
    """The Triton server could not be reached, timed out, or failed a request."""


@dataclass(frozen=True)
class ServedModel:
    """What the server says about the model: its config's parameters and batch limit."""

    name: str
    max_batch: int
    parameters: dict[str, str]


class ServedEnginePath(str):
    """``triton://HOST:PORT/MODEL`` (what messages print) whose ``name`` is the served engine's
    file name, as ``Reconstructor.engine_path.name`` is (provenance lines use it)."""

    def __new__(cls, url: str, engine_file: str) -> "ServedEnginePath":
        obj = super().__new__(cls, url)
        obj.engine_file = engine_file
        return obj

    @property
    def name(self) -> str:
        return self.engine_file


@dataclass(frozen=True)
class ServedManifest:
    """The parts of the served engine's manifest the config's parameters carry (what provenance
    lines and the fidelity guard read from ``Reconstructor.manifest``)."""

    engine_file: str
    engine_sha256: str
    backend: str
    precision: str
    checkpoint_sha256: str
    verdict: str | None
    model: ModelInfo

    @classmethod
    def from_parameters(cls, p: dict[str, str]) -> "ServedManifest":
        try:
            info = json.loads(p.get("model_info") or "{}")
        except ValueError:
            info = {}
        return cls(p.get("engine_file", "?"), p.get("engine_sha256", ""), p.get("backend", "?"), p.get("precision", "?"),
                   p.get("checkpoint_sha256", ""), p.get("validation_verdict") or None, ModelInfo.from_dict(info))


def parse_server(server: str) -> str:
    """``HOST:PORT`` or ``http://HOST:PORT`` -> ``HOST:PORT`` (the HTTP endpoint)."""
    text = str(server).strip()
    if text.startswith("http://"):
        text = text[len("http://"):]
    text = text.rstrip("/")
    if "://" in text or "/" in text:
        raise InputError(f"--server {server!r}: expected HOST:PORT of Triton's HTTP endpoint (e.g. 127.0.0.1:8000)")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--server {server!r}: expected HOST:PORT of Triton's HTTP endpoint (e.g. 127.0.0.1:8000)")
    return text


def _http() -> Any:
    try:
        import tritonclient.http as http
    except ImportError as exc:
        raise MissingDependencyError(f"--server needs the Python package 'tritonclient[http]' ({exc}); "
                                     "install it with: pip install 'sgf-deploy[triton]'") from None
    return http


class TritonSession:
    """One HTTP client with retries and one-line errors (not shared between threads)."""

    def __init__(self, url: str, *, timeout: float = D.TRITON_TIMEOUT_S, retries: int = D.TRITON_RETRIES,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.sleep = sleep
        self.http = _http()
        self.client: Any = None

    def _client(self) -> Any:
        if self.client is None:
            self.client = self.http.InferenceServerClient(self.url, connection_timeout=self.timeout,
                                                          network_timeout=self.timeout)
        return self.client

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self.client = None

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` with retries on connection errors, timeouts and 502/503/504."""
        from tritonclient.utils import InferenceServerException

        last = ""
        for attempt in range(self.retries):
            try:
                return fn(self._client())
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                message = " ".join(str(exc.message() or exc).split())[:300]
                if status not in RETRY_STATUS and not _unavailable(message):
                    if status == "400" or message.startswith("request:") or "unexpected" in message.lower():
                        raise InputError(f"Triton server {self.url} refused {what}: {message}") from None
                    raise ServerError(f"Triton server {self.url} failed {what}: {message}") from None
                last = f"{status} {message}".strip()
            except transport_errors() as exc:  # refused, reset, timed out, closed mid-answer: retry
                last = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}".rstrip(": ")
            except Exception as exc:  # noqa: BLE001 - anything else is an answer this client cannot read
                self.close()
                raise ServerError(f"Triton server {self.url}: unexpected answer to {what} ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:200]}); nothing was written") from None
            self.close()
            if attempt + 1 < self.retries:
                self.sleep(min(4.0, 0.5 * 2 ** attempt))
        raise ServerError(f"cannot reach the Triton server at {self.url} for {what} after {self.retries} attempt(s) "
                          f"({last}); nothing was written")


@functools.lru_cache(maxsize=1)
def transport_errors() -> tuple[type[BaseException], ...]:
    """Socket errors (timeouts included), HTTP framing errors (a connection closed mid-answer) and
    gevent's timeout: what a server going away looks like to tritonclient.http."""
    import http.client

    errors: list[type[BaseException]] = [OSError, http.client.HTTPException]
    try:
        import gevent

        errors.append(gevent.Timeout)
    except ImportError:  # pragma: no cover - tritonclient.http depends on gevent
        pass
    return tuple(errors)


def _unavailable(message: str) -> bool:
    text = message.lower()
    return "unavailable" in text or "not ready" in text or "is not found" in text and "model" in text


class RemoteReconstructor:
    """A served model with the face of :class:`sgf_deploy.runtime.Reconstructor`."""

    def __init__(self, session: TritonSession, model: ServedModel, *, batch: int | None, load_seconds: float) -> None:
        self.session = session
        self.model = model
        p = model.parameters
        self.trust = TrustStatus(p.get("trusted") == "true", p.get("trust") or "unknown (no trust parameter)")
        self.size_multiple = int(p.get("size_multiple") or contract.DEFAULT_SIZE_MULTIPLE)
        preferred = int(p.get("batch") or D.RUN_BATCH)
        if batch is not None and int(batch) < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        self.batch = min(int(batch or preferred), model.max_batch) if model.max_batch > 0 else 1
        self.load_seconds = load_seconds
        self.timings: dict[str, float] = {"load": load_seconds}  # what runtime.Timings holds: {stage: seconds}
        self.notices: list[str] = []
        self.requests = 0
        self.manifest = ServedManifest.from_parameters(p)

    # -- description, as Reconstructor ----------------------------------------------------------
    @property
    def engine_path(self) -> ServedEnginePath:
        return ServedEnginePath(f"triton://{self.session.url}/{self.model.name}", self.manifest.engine_file)

    @property
    def backend(self) -> str:
        return self.manifest.backend

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def device(self) -> str:
        return self.model.parameters.get("device", "?")

    def describe(self) -> str:
        return (f"{self.engine_path}: {self.manifest.engine_file} ({self.backend} {self.precision.upper()} on "
                f"{self.device}; {self.trust.label})")

    # -- inference ------------------------------------------------------------------------------
    def __call__(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        clock = time.perf_counter()
        ref, tar, self.notices = contract.check_pair(reference, target)
        n = tar.shape[0]
        out = np.empty(tar.shape, dtype=np.float32)
        sent = time.perf_counter()
        try:
            for start in range(0, n, self.batch):
                stop = min(start + self.batch, n)
                out[start:stop] = self.infer(ref[start:stop], tar[start:stop])
        finally:  # no idle connection left open between series (a server's clean stop waits for those)
            self.session.close()
        done = time.perf_counter()
        bad = out.size - int(np.count_nonzero(np.isfinite(out)))
        if bad:
            raise ServerError(f"{self.engine_path}: the server returned {bad} non-finite value(s); nothing was written")
        self.timings = {"load": self.load_seconds, "preprocess": sent - clock, "inference": done - sent,
                        "postprocess": time.perf_counter() - done}
        return out[0] if np.ndim(target) == 2 else out

    def infer(self, reference: np.ndarray, target: np.ndarray) -> np.ndarray:
        """One request: ``(B, H, W)`` float32 pair -> ``(B, H, W)`` reconstruction."""
        http = self.session.http
        ref = np.ascontiguousarray(reference, dtype=np.float32)
        tar = np.ascontiguousarray(target, dtype=np.float32)

        def send(client: Any) -> np.ndarray:
            inputs = []
            for name, array in zip(INPUTS, (ref, tar)):
                item = http.InferInput(name, list(array.shape), "FP32")
                item.set_data_from_numpy(array, binary_data=True)
                inputs.append(item)
            result = client.infer(self.model.name, inputs, outputs=[http.InferRequestedOutput(OUTPUT, binary_data=True)])
            return result.as_numpy(OUTPUT)

        what = f"a request of {tar.shape[0]} slice(s) of {tar.shape[1]}x{tar.shape[2]}"
        pred = self.session.call(what, send)
        self.requests += 1
        if pred is None or tuple(pred.shape) != tar.shape:
            raise ServerError(f"{self.engine_path}: answered shape {None if pred is None else pred.shape} "
                              f"for {what}; nothing was written")
        return np.asarray(pred, dtype=np.float32)

    def close(self) -> None:
        self.session.close()


def connect(server: str, *, model: str = D.TRITON_MODEL, batch: int | None = None, allow_unvalidated: bool = False,
            timeout: float = D.TRITON_TIMEOUT_S, retries: int = D.TRITON_RETRIES) -> RemoteReconstructor:
    """Connect to ``model`` on ``server`` (``HOST:PORT``); the trust rule as for a local engine:
    a model whose engine has no passing validation is refused unless ``allow_unvalidated``."""
    start = time.perf_counter()
    session = TritonSession(parse_server(server), timeout=timeout, retries=retries)
    config = session.call(f"the configuration of model '{model}'", lambda c: c.get_model_config(model))
    params = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
    served = ServedModel(model, int(config.get("max_batch_size") or 0), params)
    if "engine_file" not in params:
        session.close()
        raise ServerError(f"{session.url}: model '{model}' was not exported by sgf-deploy triton export "
                          "(its config names no engine_file)")
    session.close()
    remote = RemoteReconstructor(session, served, batch=batch, load_seconds=time.perf_counter() - start)
    if not remote.trust.ok and not allow_unvalidated:
        session.close()
        raise ValidationFailed(f"{remote.engine_path}: refused: {remote.trust.label}; validate it with "
                               "'sgf-deploy validate' or pass --allow-unvalidated to run it anyway")
    return remote
