"""Triton model configurations (``config.pbtxt``) from plain Python values, and the serving plan.

A configuration is written from a dict in protobuf text format (Triton's ``model_config.proto``);
the tests parse every generated file against that schema (``tritonclient.grpc.model_config_pb2``),
so this writer needs no Triton package at export time.

:func:`serving_plan` turns what the engine's manifest records into Triton's scheduling: the
engine's optimum batch (its profile's ``opt`` batch, else :data:`~sgf_deploy.defaults.RUN_BATCH`)
becomes the dynamic batcher's preferred batch, the largest batch its profile accepts bounds
``max_batch_size``, and the CPU threads one instance uses decide how many instances share the
machine's cores (a GPU engine: one instance per GPU).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from .. import defaults as D
from ..engines.manifest import EngineManifest
from ..errors import InputError


class Token(str):
    """An enum value (``TYPE_FP32``, ``KIND_CPU``): written without quotes."""


# ----------------------------------------------------------------------------- the serving plan
@dataclass(frozen=True)
class ServingPlan:
    """Triton scheduling for one engine, and where each number came from."""

    preferred_batch: int
    max_batch: int
    instances: int
    instance_kind: str  # "KIND_CPU" | "KIND_GPU"
    threads: int | None  # CPU threads per instance (None: the backend's default)
    queue_delay_us: int
    dynamic_batching: bool
    source: str

    def describe(self) -> str:
        batching = (f"dynamic batching (preferred {self.preferred_batch}, max {self.max_batch}, "
                    f"queue delay {self.queue_delay_us} us)" if self.dynamic_batching
                    else f"no dynamic batching (max {self.max_batch} slices per request)")
        threads = f", {self.threads} thread(s) each" if self.threads else ""
        return f"{batching}; {self.instances} x {self.instance_kind}{threads} [{self.source}]"


def serving_plan(manifest: EngineManifest, *, instances: int | None = None, max_batch: int | None = None,
                 queue_delay_us: int | None = None, dynamic_batching: bool = True,
                 cores: int | None = None) -> ServingPlan:
    """The plan for ``manifest``'s engine (see the module doc); explicit values override it."""
    profile = manifest.profile
    preferred = profile.choose_batch(None, D.RUN_BATCH)
    source = [f"batch {preferred} = " + ("the profile's optimum" if profile.opt else f"default {D.RUN_BATCH}")]
    static = profile.static_batch
    limit = profile.max[0] if profile.max else None
    if static:
        cap = static
    else:
        cap = int(max_batch) if max_batch else (limit or max(D.TRITON_MAX_BATCH, preferred))
        if limit and cap > limit:
            raise InputError(f"--max-batch {cap}: the engine's profile accepts at most {limit} slices per call")
    if cap < 1:
        raise InputError(f"--max-batch must be >= 1, got {cap}")
    preferred = min(preferred, cap)
    if manifest.is_gpu:
        kind, threads, count = "KIND_GPU", None, int(instances or 1)
        source.append("1 instance per GPU")
    else:
        cores = int(cores or os.cpu_count() or 1)
        recorded = manifest.build_options.get("threads")
        threads = int(recorded) if recorded else None
        per = threads or cores
        if instances:
            count = int(instances)
            source.append(f"{count} instance(s) as asked")
        else:
            count = max(1, cores // per)
            source.append(f"{count} instance(s) = {cores} core(s) / {per} thread(s) per instance"
                          + ("" if recorded else " (engine records no thread count: all cores)"))
        if threads is None and count > 1:  # instances share the cores instead of each taking all of them
            threads = max(1, cores // count)
            source.append(f"{threads} thread(s) per instance = {cores} core(s) / {count} instances")
        kind = "KIND_CPU"
    if count < 1:
        raise InputError(f"--instances must be >= 1, got {count}")
    delay = D.TRITON_QUEUE_DELAY_US if queue_delay_us is None else int(queue_delay_us)
    if delay < 0:
        raise InputError(f"--queue-delay-us must be >= 0, got {delay}")
    return ServingPlan(preferred, cap, count, kind, threads, delay, bool(dynamic_batching) and cap > 1,
                       "; ".join(source))


# --------------------------------------------------------------------------------- the writer
def parameters(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"k": v}`` -> the repeated ``parameters { key value { string_value } }`` entries."""
    return [{"key": str(k), "value": {"string_value": "" if v is None else str(v)}} for k, v in values.items()]


def tensor(name: str, dtype: str, dims: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "data_type": Token(dtype), "dims": list(dims), **extra}


def to_pbtxt(config: Mapping[str, Any]) -> str:
    """A model configuration dict in protobuf text format: nested dicts are messages, lists of
    dicts repeated messages, lists of scalars ``[a, b]``, :class:`Token` enum values."""
    return "".join(_field(key, value, 0) for key, value in config.items() if value is not None)


def _field(key: str, value: Any, depth: int) -> str:
    pad = "  " * depth
    if isinstance(value, Mapping):
        inner = "".join(_field(k, v, depth + 1) for k, v in value.items() if v is not None)
        return f"{pad}{key} {{\n{inner}{pad}}}\n"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) for v in value):
            return "".join(_field(key, v, depth) for v in value)
        return f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]\n"
    return f"{pad}{key}: {_scalar(value)}\n"


def _scalar(value: Any) -> str:
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} in a model configuration")
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'
