"""``sgf::MCNS`` version 1 as a TensorRT IPluginV3, written in Python (works with ``tensorrt`` and
``tensorrt_rtx``: the module is passed in, never imported here).

Hook for the engine builder (``--mcns plugin``)::

    from sgf_deploy.engines.plugins import register_mcns_plugin, mark_mcns_nodes_for_plugin
    creator = register_mcns_plugin(trt)            # once per process, before parsing/deserialising
                                                   # (RTX: also links libtensorrt_rtx.so, see below)
    n = mark_mcns_nodes_for_plugin(model_proto)    # sgf.MCNS nodes get plugin_namespace="sgf"
    parser.parse(model_proto.SerializeToString())  # the parser now imports them as this plugin

Why the node attribute: the ONNX parser takes a registered plugin in preference to the model-local
``sgf.MCNS`` function only when the node carries ``plugin_namespace`` or the parser flag
``ENABLE_PLUGIN_OVERRIDE`` is set -- and with the flag alone it looks the creator up in the
*empty* namespace (the attribute's default), not in ``sgf``; it falls back to the node's domain
only for ops it has no function for. So the attribute is what selects this plugin; setting the
flag as well is harmless. The ONNX file on disk stays unchanged (one file for every runtime).

Attributes (PluginFieldCollection): ``groups`` (int32) and ``eps`` (float32). Output
``(B, 32*groups, H, W)`` of the input type; float32 or float16, linear layout, all five tensors
of one type. ``enqueue`` launches the NVRTC-compiled kernel of ``sgf_deploy/kernels/mcns.cu`` on
TensorRT's stream (needs cuda-python + NVRTC at run time, imported lazily).

TensorRT-RTX 1.7 (pip wheel): its ONNX parser dlopen()s ``libtensorrt_rtx.so`` while importing a
plugin node, the wheel ships only ``libtensorrt_rtx.so.1``, and the failure aborts the process
(``terminate called without an active exception``). :func:`register_mcns_plugin` therefore makes
the name resolvable first (a symlink beside the library, see :func:`link_rtx_library`). With it,
engines with this plugin build on the CPU (fp32 and fp16; seen with the exported lite network).

Python plugins are not serialised into the engine: a process that deserialises an engine built
with this plugin must call :func:`register_mcns_plugin` first (TensorRT then recreates the plugin
from the serialised fields), and running it needs Python with cuda-python + NVRTC. This module
imports numpy only (and onnx inside :func:`mark_mcns_nodes_for_plugin`); never torch.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import math
import threading
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from sgf_deploy.errors import MissingDependencyError

log = logging.getLogger(__name__)

PLUGIN_NAME = "MCNS"
PLUGIN_NAMESPACE = "sgf"
PLUGIN_VERSION = "1"
ONNX_DOMAIN = "sgf"
FIELD_NAMES = ("groups", "eps")
DEFAULT_EPS = 1e-6
OUT_PER_GROUP = 32  # 4 pairs x 8 neighbours
NUM_INPUTS = 4  # feat_tar, feat_ref, sal_tar, sal_ref

_LOCK = threading.Lock()
_CLASSES: dict[int, tuple[type, type]] = {}
_CREATORS: dict[int, Any] = {}  # keeps the Python creators alive as long as the registry holds them


# --------------------------------------------------------------------------------------------
# Pure logic (no TensorRT object needed): field parsing, shape expressions, format table.
# --------------------------------------------------------------------------------------------


def _field_name(field) -> str:
    name = field.name
    return name.decode() if isinstance(name, bytes) else str(name)


def parse_fields(fields: Iterable) -> tuple[int, float]:
    """``(groups, eps)`` from a PluginFieldCollection (anything iterable of ``.name``/``.data``).

    Unknown fields (e.g. ``plugin_version`` when a parser forwards it) are ignored; ``groups`` is
    required, ``eps`` defaults to 1e-6. Raises ValueError naming the bad field.
    """
    values: dict[str, float] = {}
    for field in fields:
        name = _field_name(field)
        if name not in FIELD_NAMES:
            continue
        data = np.asarray(field.data).reshape(-1)
        if data.size != 1 or data.dtype.kind not in "iuf":
            raise ValueError(f"sgf::MCNS plugin: field {name!r} must hold one number; got {data!r}")
        values[name] = data[0].item()
    if "groups" not in values:
        raise ValueError("sgf::MCNS plugin: the required field 'groups' is missing")
    groups_value = values["groups"]
    if float(groups_value) != int(groups_value) or int(groups_value) < 1:
        raise ValueError(f"sgf::MCNS plugin: 'groups' must be a positive integer; got {groups_value}")
    eps = float(values.get("eps", DEFAULT_EPS))
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"sgf::MCNS plugin: 'eps' must be finite and >= 0; got {eps}")
    return int(groups_value), eps


def field_arrays(groups: int, eps: float) -> list[tuple[str, np.ndarray]]:
    """The serialised fields, in order: ``groups`` int32[1], ``eps`` float32[1]."""
    return [("groups", np.array([int(groups)], dtype=np.int32)), ("eps", np.array([float(eps)], dtype=np.float32))]


def output_shape_exprs(input_exprs: list, groups: int, expr_builder) -> list:
    """``[B, 32*groups, H, W]`` as dimension expressions of the first input ``(B, C, H, W)``.

    ``input_exprs`` is ``inputs[0]`` of ``get_output_shapes`` (indexable by 0..3); only
    ``expr_builder.constant`` is used, so a duck-typed builder tests it without TensorRT.
    """
    return [input_exprs[0], expr_builder.constant(OUT_PER_GROUP * int(groups)), input_exprs[2], input_exprs[3]]


def format_supported(trt, pos: int, in_out, num_inputs: int) -> bool:
    """The supports_format_combination truth table: linear float32/float16, all of one type.

    ``in_out[i].desc`` has ``.format`` and ``.type``; only entries ``<= pos`` are examined.
    """
    if num_inputs != NUM_INPUTS or not 0 <= pos < NUM_INPUTS + 1 or len(in_out) != NUM_INPUTS + 1:
        return False
    desc = in_out[pos].desc
    if desc.format != trt.TensorFormat.LINEAR:
        return False
    if desc.type not in (trt.DataType.FLOAT, trt.DataType.HALF):
        return False
    return pos == 0 or desc.type == in_out[0].desc.type


def _dims(dims) -> tuple[int, ...]:
    return tuple(int(dims[i]) for i in range(len(dims)))


def check_io_dims(groups: int, feat_dims, sal_dims_list: Iterable) -> None:
    """Validate known (non -1) dimensions: 4-D, C divisible by groups, saliency (B, groups, H, W)."""
    feat = _dims(feat_dims)
    if len(feat) != 4:
        raise ValueError(f"sgf::MCNS plugin: feature maps must be 4-D (B,C,H,W); got {feat}")
    c = feat[1]
    if c > 0 and c % groups:
        raise ValueError(f"sgf::MCNS plugin: {c} channels are not divisible into {groups} groups")
    for sal_dims in sal_dims_list:
        sal = _dims(sal_dims)
        if len(sal) != 4 or (sal[1] > 0 and sal[1] != groups):
            raise ValueError(f"sgf::MCNS plugin: saliency must be (B, {groups}, H, W); got {sal}")


def _dtype_name(trt, data_type) -> str:
    if data_type == trt.DataType.FLOAT:
        return "float32"
    if data_type == trt.DataType.HALF:
        return "float16"
    raise ValueError(f"sgf::MCNS plugin: unsupported tensor type {data_type}")


# --------------------------------------------------------------------------------------------
# The IPluginV3 and its creator, built once per TensorRT module.
# --------------------------------------------------------------------------------------------


def _make_classes(trt) -> tuple[type, type]:
    class McnsPlugin(trt.IPluginV3, trt.IPluginV3OneCore, trt.IPluginV3OneBuild, trt.IPluginV3OneRuntime):
        """sgf::MCNS v1; one instance per network layer / execution context."""

        def __init__(self, groups: int, eps: float, phase=None) -> None:
            trt.IPluginV3.__init__(self)
            trt.IPluginV3OneCore.__init__(self)
            trt.IPluginV3OneBuild.__init__(self)
            trt.IPluginV3OneRuntime.__init__(self)
            self.num_outputs = 1
            self.plugin_name = PLUGIN_NAME
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            # Timing depends on the I/O shapes and types only, which TensorRT already keys on.
            self.timing_cache_id = ""
            self.groups = int(groups)
            self.eps = float(eps)
            self.phase = phase
            self.io_dims: tuple[tuple[int, ...], ...] | None = None

        # IPluginV3
        def get_capability_interface(self, capability_type):
            return self

        def clone(self):
            other = McnsPlugin(self.groups, self.eps, self.phase)
            other.io_dims = self.io_dims
            return other

        # IPluginV3OneBuild
        def get_output_data_types(self, input_types):
            return [input_types[0]]

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return [trt.DimsExprs(output_shape_exprs(inputs[0], self.groups, expr_builder))]

        def supports_format_combination(self, pos, in_out, num_inputs):
            return format_supported(trt, pos, in_out, num_inputs)

        def configure_plugin(self, inp, out):
            check_io_dims(self.groups, inp[0].desc.dims, [inp[2].desc.dims, inp[3].desc.dims])

        def get_workspace_size(self, input_desc, output_desc):
            return 0

        def get_valid_tactics(self):
            return []

        # IPluginV3OneRuntime
        def on_shape_change(self, inp, out):
            check_io_dims(self.groups, inp[0].dims, [inp[2].dims, inp[3].dims])
            self.io_dims = tuple(_dims(d.dims) for d in (*inp, *out))

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            from sgf_deploy.kernels.nvrtc import launch_mcns

            b, c, h, w = _dims(input_desc[0].dims)
            launch_mcns(
                int(inputs[0]), int(inputs[1]), int(inputs[2]), int(inputs[3]), int(outputs[0]),
                batch=b, channels=c, groups=self.groups, height=h, width=w, eps=self.eps,
                dtype=_dtype_name(trt, input_desc[0].type), stream=int(stream),
            )

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            # A PluginField keeps a raw pointer to its numpy buffer, not a reference: the arrays
            # must outlive the collection, so they are kept on the plugin.
            self._serialized = field_arrays(self.groups, self.eps)
            types = {"groups": trt.PluginFieldType.INT32, "eps": trt.PluginFieldType.FLOAT32}
            return trt.PluginFieldCollection(
                [trt.PluginField(name, data, types[name]) for name, data in self._serialized]
            )

    class McnsPluginCreator(trt.IPluginCreatorV3One):
        """Creates sgf::MCNS v1 from the ONNX node's attributes or an engine's serialised fields."""

        def __init__(self) -> None:
            trt.IPluginCreatorV3One.__init__(self)
            self.name = PLUGIN_NAME
            self.plugin_namespace = PLUGIN_NAMESPACE
            self.plugin_version = PLUGIN_VERSION
            self._field_buffers = (np.array([], dtype=np.int32), np.array([], dtype=np.float32))
            self.field_names = trt.PluginFieldCollection(
                [
                    trt.PluginField("groups", self._field_buffers[0], trt.PluginFieldType.INT32),
                    trt.PluginField("eps", self._field_buffers[1], trt.PluginFieldType.FLOAT32),
                ]
            )

        def create_plugin(self, name, field_collection, phase):
            groups, eps = parse_fields(field_collection)
            return McnsPlugin(groups, eps, phase)

    return McnsPlugin, McnsPluginCreator


def plugin_classes(trt) -> tuple[type, type]:
    """``(McnsPlugin, McnsPluginCreator)`` subclassing ``trt``'s IPluginV3 classes (cached)."""
    with _LOCK:
        classes = _CLASSES.get(id(trt))
        if classes is None:
            classes = _CLASSES[id(trt)] = _make_classes(trt)
        return classes


# --------------------------------------------------------------------------------------------
# TensorRT-RTX 1.7 wheel workaround: its ONNX parser dlopen()s "libtensorrt_rtx.so" when it
# imports a plugin node, but the wheel ships only "libtensorrt_rtx.so.1". The failed dlopen throws
# a C++ exception nothing catches, and the whole process aborts ("terminate called without an
# active exception", SIGABRT). The parser's RPATH is $ORIGIN, so a sibling symlink (or a directory
# holding one on LD_LIBRARY_PATH at process start) fixes it.
# --------------------------------------------------------------------------------------------

RTX_LIBRARY = "libtensorrt_rtx.so"


def _rtx_libs_dir(trt) -> Path | None:
    if not getattr(trt, "__name__", "").startswith("tensorrt_rtx"):
        return None
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def rtx_library_resolvable(trt, libs_dir: Path | None = None) -> bool:
    """True when the RTX parser's ``dlopen("libtensorrt_rtx.so")`` will succeed (or trt is not RTX)."""
    libs_dir = libs_dir if libs_dir is not None else _rtx_libs_dir(trt)
    if libs_dir is None:
        return True
    if (libs_dir / RTX_LIBRARY).exists():
        return True
    try:  # LD_LIBRARY_PATH / ld.so.cache / system directories: the parser searches those too
        ctypes.CDLL(RTX_LIBRARY)
    except OSError:
        return False
    return True


def link_rtx_library(trt, libs_dir: Path | None = None) -> Path | None:
    """Make ``libtensorrt_rtx.so`` resolvable for the RTX ONNX parser; returns the link made.

    Creates the symlink ``libtensorrt_rtx.so -> libtensorrt_rtx.so.1`` beside the RTX libraries
    when nothing resolves the name. Returns None when nothing had to be done. Raises
    MissingDependencyError (with both fixes) when the directory is not writable.
    """
    libs_dir = libs_dir if libs_dir is not None else _rtx_libs_dir(trt)
    if libs_dir is None or rtx_library_resolvable(trt, libs_dir):
        return None
    link = libs_dir / RTX_LIBRARY
    versioned = sorted(libs_dir.glob(RTX_LIBRARY + ".*"))
    if not versioned:
        raise MissingDependencyError(f"{libs_dir}: no {RTX_LIBRARY}.* library found; reinstall tensorrt-rtx")
    try:
        link.symlink_to(versioned[0].name)
    except FileExistsError:
        pass
    except OSError as exc:
        raise MissingDependencyError(
            f"{link}: cannot create the link TensorRT-RTX's ONNX parser needs to import plugins ({exc}); "
            f"run: ln -s {versioned[0].name} {link}  (or put a directory holding such a link on "
            "LD_LIBRARY_PATH before starting Python)"
        ) from None
    log.warning("sgf::MCNS plugin: created %s -> %s (TensorRT-RTX parser needs it)", link, versioned[0].name)
    return link


def register_mcns_plugin(trt, *, link_rtx: bool = True):
    """Register the sgf::MCNS v1 creator with ``trt.get_plugin_registry()``; returns the creator.

    ``trt`` is the imported ``tensorrt`` or ``tensorrt_rtx`` module. Idempotent: a second call
    returns the creator already registered (ours, or one a C++ library registered first).
    For TensorRT-RTX, ``link_rtx`` first makes sure the parser will not abort the process on a
    plugin node (:func:`link_rtx_library`); with ``link_rtx=False`` a missing link raises
    MissingDependencyError instead.
    """
    if not rtx_library_resolvable(trt):
        if not link_rtx:
            raise MissingDependencyError(
                f"TensorRT-RTX's ONNX parser needs '{RTX_LIBRARY}' to import plugins and would abort the "
                f"process without it; link it beside {RTX_LIBRARY}.1 in {_rtx_libs_dir(trt)}"
            )
        link_rtx_library(trt)
    with _LOCK:
        creator = _CREATORS.get(id(trt))
    if creator is not None:
        return creator
    _, creator_cls = plugin_classes(trt)
    creator = creator_cls()
    registry = trt.get_plugin_registry()
    if not registry.register_creator(creator, PLUGIN_NAMESPACE):
        existing = registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE)
        if existing is None:
            raise RuntimeError("sgf::MCNS plugin: the TensorRT plugin registry refused the creator")
        creator = existing
    with _LOCK:
        _CREATORS[id(trt)] = creator
    return creator


def mark_mcns_nodes_for_plugin(model, namespace: str = PLUGIN_NAMESPACE) -> int:
    """Give every ``sgf.MCNS`` node of ``model`` (an onnx ModelProto, changed in place) the
    attribute ``plugin_namespace=namespace``; returns how many nodes are marked.

    Only main-graph nodes are visited: the exporter puts MCNS nodes there. The model-local
    FunctionProto is left in place (ONNX Runtime keeps using it); TensorRT with the plugin
    registered then imports the node as the plugin instead of inlining the function.
    """
    from onnx import helper

    count = 0
    for node in model.graph.node:
        if node.domain == ONNX_DOMAIN and node.op_type == PLUGIN_NAME:
            kept = [a for a in node.attribute if a.name != "plugin_namespace"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(helper.make_attribute("plugin_namespace", namespace))
            count += 1
    return count
