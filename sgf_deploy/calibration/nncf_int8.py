"""INT8 for OpenVINO engines with NNCF post-training quantisation, under the same float rules as
the ONNX Runtime INT8 (:mod:`.int8`): the nodes the patterns of :mod:`.patterns` select
(default ``@mcns,@attention,@input,@output``) are given to NNCF as its ignored scope, and the
calibration pairs come from the same calibration set.

Why not NNCF's defaults: with nothing ignored, NNCF quantises the MCNS similarity and the
attention too, and the image is ruined (28.5 dB vs FP32, DESIGN.md section 7).

Settings (chosen by measurement, ``benchmarks/int8_options.py``; table in benchmarks/README.md):

* preset ``MIXED``: symmetric int8 weights per channel, asymmetric activations (the activations
  after LeakyReLU are mostly positive: a symmetric range wastes about one bit, as for ONNX
  Runtime);
* activation ranges from histograms (NNCF ``RangeEstimatorParametersSet.HISTOGRAM``; our
  ``--calib-method entropy``, the default, maps to it, ``max`` to ``MINMAX``, ``percentile`` to
  ``MEAN_QUANTILE``); the engine name carries the estimator (``int8-histogram``);
* overflow fix: on CPUs without VNNI / AMX the 8-bit products are summed in 16 bits
  (``vpmaddubsw``) and can saturate; NNCF's fix (7-bit weights) is applied to every layer there
  (``ENABLE``) and not at all on VNNI / AMX CPUs (``DISABLE``);
* fast bias correction on (NNCF default).

Accuracy control (``build --int8-max-drop DB``, :func:`quantize_openvino` ``max_drop``): the same
quantisation, then NNCF's ``quantize_with_accuracy_control`` reverts quantised layers to float,
the most harmful first, until the mean PSNR vs ground truth on a validation set has dropped by at
most ``max_drop`` dB (``DropType.ABSOLUTE``) from the float model. Why our metric and not NNCF's
default: the bar this toolkit is held to is mean delta PSNR vs ground truth (``validate``), and
a layer that costs 0.01 dB is invisible in any output-difference loss. The validation slices are
the simulator's **val** split (never the train split calibration uses, nor the test split
``validate`` and build parity score), prepared by the input contract exactly as at run time, and
scored as ``validate`` scores: de-normalised output, PSNR per slice with the slice's ground-truth
maximum as data range. The record names every layer reverted to float and the ``max_drop`` used.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ..errors import InputError, require
from .dataset import CalibrationSet
from .patterns import DEFAULT_INT8_EXCLUDE, parse_patterns, select_nodes, unmatched

ESTIMATORS: dict[str, str] = {"entropy": "HISTOGRAM", "max": "MINMAX", "percentile": "MEAN_QUANTILE"}
ESTIMATOR_TOKENS: dict[str, str] = {"entropy": "histogram", "max": "minmax", "percentile": "quantile"}

#: accuracy control: validation slices (simulator val split) and their seed
ACCURACY_VAL_N = 32
ACCURACY_VAL_SEED = 0
#: slices NNCF ranks the quantised layers on (it picks those the quantisation hurt most)
ACCURACY_RANKING_N = 16
#: OpenVINO op types whose quantisation NNCF's accuracy control can revert (the compute layers)
COMPUTE_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def check_max_drop(max_drop: Any) -> float:
    """``--int8-max-drop`` as a float: a finite number of dB >= 0, else a one-line error."""
    try:
        value = float(max_drop)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise InputError(f"--int8-max-drop must be a finite PSNR drop in dB >= 0 (e.g. 0.02), got {max_drop!r}")
    return value


def estimator_token(method: str) -> str:
    """The name an NNCF INT8 engine carries for ``--calib-method`` (``int8-<token>``)."""
    if method not in ESTIMATORS:
        raise InputError(f"calibration method {method!r}; choose from {', '.join(ESTIMATORS)}")
    return ESTIMATOR_TOKENS[method]


def ignored_patterns(node_names: Iterable[str], onnx_model: Any = None) -> list[str]:
    """NNCF ignored-scope regexes for ONNX node names: OpenVINO names an op after its node, and
    splits some (``<name>/WithoutBiases``); the inlined MCNS ops are ``<call>/mcns/<i>``. An op
    that produces a graph output is named after the output tensor instead (``reconstruction``,
    not ``node_add_631``): with ``onnx_model`` those names are added for the float nodes, or the
    ``@output`` rule would not reach NNCF and the target image would be quantised."""
    names = list(node_names)
    patterns = [f"^{re.escape(name)}(/.*)?$" for name in names]
    if onnx_model is not None:
        graph_outputs = {o.name for o in onnx_model.graph.output}
        chosen = set(names)
        patterns += [f"^{re.escape(out)}$" for node in onnx_model.graph.node if node.name in chosen
                     for out in node.output if out in graph_outputs]
    return patterns


def float_nodes(onnx_model: Any, keep_fp32: str | Iterable[str] | None,
                exclude: str | Iterable[str] | None) -> tuple[list[str], list[str], list[str]]:
    """(patterns, selected node names, unmatched globs) on the exported (not inlined) model."""
    patterns = list(dict.fromkeys(parse_patterns(keep_fp32, DEFAULT_INT8_EXCLUDE) + parse_patterns(exclude, [])))
    return patterns, select_nodes(onnx_model, patterns), unmatched(onnx_model, patterns)


def quantize_openvino(ov_model: Any, onnx_model: Any, calib: CalibrationSet, *, method: str = "entropy",
                      keep_fp32: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
                      input_shape: tuple[int, int] | None = None, overflow_fix: str | None = None,
                      subset_size: int | None = None, max_drop: float | None = None, pair: str | None = None,
                      task: str | None = None, size_multiple: int = 8,
                      val_n: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Quantise the OpenVINO model ``ov_model`` (converted from the inlined ``onnx_model``'s
    source) with NNCF; returns (quantised model, the record for the manifest).

    With ``max_drop`` (dB): NNCF accuracy control on ``val_n`` (default :data:`ACCURACY_VAL_N`)
    slices of the simulator's val split for the model's ``pair``/``task`` (see the module doc)."""
    nncf = require("nncf", "openvino", "INT8 OpenVINO engines (NNCF)")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from ..contract import fit
    from ..cpu import has_int8_dot_product

    estimator_token(method)
    if max_drop is not None:
        max_drop = check_max_drop(max_drop)
    patterns, nodes, missing = float_nodes(onnx_model, keep_fp32, exclude)
    fix = overflow_fix or ("disable" if has_int8_dot_product() else "enable")
    fixes = {"enable": OverflowFix.ENABLE, "disable": OverflowFix.DISABLE, "first_layer": OverflowFix.FIRST_LAYER}
    if fix not in fixes:
        raise InputError(f"overflow fix {fix!r}; choose from {', '.join(fixes)}")

    def transform(index: int) -> dict[str, Any]:
        ref, tar = calib.load(index)
        if input_shape is not None:
            ref, tar = fit(ref, input_shape), fit(tar, input_shape)
        return {"reference": ref[None, None], "target": tar[None, None]}

    n = len(calib) if subset_size is None else min(int(subset_size), len(calib))
    dataset = nncf.Dataset(range(n), transform)
    advanced = AdvancedQuantizationParameters(
        overflow_fix=fixes[fix],
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, ESTIMATORS[method]))
    scope = nncf.IgnoredScope(patterns=ignored_patterns(nodes, onnx_model), validate=False)
    _quiet_nncf()
    accuracy: dict[str, Any] | None = None
    if max_drop is None:
        quantized = nncf.quantize(ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=n,
                                  ignored_scope=scope, advanced_parameters=advanced)
    else:
        quantized, accuracy = _quantize_with_accuracy_control(
            nncf, ov_model, dataset, n, scope, advanced, max_drop=max_drop, pair=pair, task=task,
            multiple=size_multiple, input_shape=input_shape, val_n=ACCURACY_VAL_N if val_n is None else int(val_n))
    fq = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    if fq == 0:
        if accuracy is not None:
            raise InputError(f"--int8-max-drop {max_drop:g}: NNCF reverted every quantised layer to float and the "
                             "engine would be FP32; allow a larger drop or build --fp32")
        raise InputError("NNCF inserted no quantisers: every node is in the float list?")
    record = {
        "quantizer": "nncf.quantize (OpenVINO, preset MIXED)" if accuracy is None
        else "nncf.quantize_with_accuracy_control (OpenVINO, preset MIXED)",
        "quantizer_version": nncf.__version__,
        "activations": "uint8, asymmetric (NNCF MIXED preset)",
        "weights": "int8, symmetric, per channel",
        "range_estimator": ESTIMATORS[method],
        "calibration_method": method,
        "overflow_fix": fix,
        "calibration_set": calib.describe(),
        "calibration_pairs": n,
        "float_patterns": patterns,
        "unmatched_patterns": missing,
        "float_nodes": nodes,
        "fake_quantize": fq,
    }
    if accuracy is not None:
        record["accuracy_control"] = accuracy
        record["reverted_to_float"] = accuracy["reverted_operations"]
    return quantized, record


# ---------------------------------------------------------------------------- accuracy control
@dataclass(frozen=True)
class ValidationSlice:
    """One validation slice: the engine's inputs (1, 1, Hp, Wp) as the runtime prepares them, and
    what scoring needs (the contract's :class:`~sgf_deploy.contract.Prepared`, the ground truth)."""

    reference: Any
    target: Any
    prepared: Any
    ground_truth: Any


def validation_slices(pair: str | None, task: str | None, n: int, *, seed: int = ACCURACY_VAL_SEED,
                      multiple: int = 8, input_shape: tuple[int, int] | None = None
                      ) -> tuple[list[ValidationSlice], dict[str, Any]]:
    """``n`` slices of the simulator's **val** split for ``pair``/``task`` (a pair the simulator
    does not have falls back to t1-t2, as build parity does), prepared by the input contract; a
    fixed ``input_shape`` is applied to the images first (``contract.fit``), ground truth included,
    so output and ground truth cover the same pixels."""
    from ..contract import fit, prepare
    from ..data.simulator import PAIR_CHOICES, simulate

    if int(n) < 1:
        raise InputError(f"accuracy control needs >= 1 validation slice, got {n}")
    note = None
    if pair not in PAIR_CHOICES:
        note = f"model pair {pair!r} is not simulated; validation slices use t1-t2"
        pair = "t1-t2"
    task = task or "recon4x"
    sim = simulate(str(pair), task, "val", int(n), seed=int(seed))
    slices = []
    for i in range(int(n)):
        ref, tar, gt = (sim[k][i] for k in ("reference", "target", "ground_truth"))
        if input_shape is not None:
            ref, tar, gt = (fit(x, input_shape) for x in (ref, tar, gt))
        prepared = prepare(ref, tar, multiple)
        slices.append(ValidationSlice(prepared.reference, prepared.target, prepared, gt.astype("float64")))
    detail = {"source": "simulator", "split": "val", "pair": pair, "task": task, "n": int(n), "seed": int(seed),
              "shape": list(slices[0].reference.shape[-2:])}
    if note:
        detail["note"] = note
    return slices, detail


def slice_psnr(compiled: Any, item: ValidationSlice) -> float:
    """PSNR vs ground truth (dB) of the compiled model's reconstruction of one slice, as
    ``validate`` scores it: de-normalised output, data range = the slice's ground-truth maximum.
    A non-finite output scores -1000 dB (NNCF's ranking needs finite numbers)."""
    import numpy as np

    from ..contract import restore
    from ..metrics import psnr_per_slice

    out = compiled({"reference": item.reference, "target": item.target})[compiled.output(0)]
    pred = restore(np.asarray(out), item.prepared)[0]
    value = float(psnr_per_slice(item.ground_truth, pred, float(item.ground_truth.max()))[0])
    return value if math.isfinite(value) else -1000.0


def _quantize_with_accuracy_control(nncf: Any, ov_model: Any, dataset: Any, n: int, scope: Any, advanced: Any, *,
                                    max_drop: float, pair: str | None, task: str | None, multiple: int,
                                    input_shape: tuple[int, int] | None, val_n: int) -> tuple[Any, dict[str, Any]]:
    """``nncf.quantize_with_accuracy_control`` with mean PSNR vs ground truth as the metric.

    NNCF compiles every candidate model itself, with OpenVINO's default CPU threads."""
    import time

    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    items, detail = validation_slices(pair, task, val_n, multiple=multiple, input_shape=input_shape)
    full_runs: list[float] = []  # metric of each validation over the whole set, in NNCF's order

    def validate(compiled: Any, data: Iterable[ValidationSlice]) -> tuple[float, list[float]]:
        values = [slice_psnr(compiled, item) for item in data]
        metric = sum(values) / max(len(values), 1)
        if len(values) == len(items):
            full_runs.append(metric)
        return metric, values

    validation = nncf.Dataset(items, lambda item: {"reference": item.reference, "target": item.target})
    restorer = AdvancedAccuracyRestorerParameters(ranking_subset_size=min(ACCURACY_RANKING_N, len(items)))
    started = time.perf_counter()
    with _restorer_report() as box:
        quantized = nncf.quantize_with_accuracy_control(
            ov_model, dataset, validation, validate, max_drop=float(max_drop), drop_type=nncf.DropType.ABSOLUTE,
            preset=nncf.QuantizationPreset.MIXED, subset_size=n, ignored_scope=scope,
            advanced_quantization_parameters=advanced, advanced_accuracy_restorer_parameters=restorer)
    seconds = time.perf_counter() - started
    report = box.get("report")
    if report is not None:
        reverted = [node.node_name for node in report.reverted_operations]
        reached, total = bool(report.reached_required_drop), report.num_quantized_operations
    elif "hook" in box:  # NNCF changed: read what stayed float, outside the float list, off the model
        ignored = [re.compile(p) for p in scope.patterns]
        reverted = [op for op in float_compute_ops(quantized) if not any(p.match(op) for p in ignored)]
        reached, total = None, None
    else:  # the quantised model met max_drop: NNCF reverted nothing
        reverted, reached, total = [], True, None
    final = validate(_compile(quantized), items)[0]
    initial = full_runs[0] if full_runs else None
    return quantized, {
        "max_drop_db": float(max_drop),
        "drop_type": "absolute",
        "metric": "mean PSNR vs ground truth (dB; de-normalised output, data range = slice ground-truth max)",
        "validation": detail,
        "ranking_slices": min(ACCURACY_RANKING_N, len(items)),
        "val_psnr_float_db": initial,
        "val_psnr_int8_before_revert_db": full_runs[1] if len(full_runs) > 1 else None,
        "val_psnr_int8_db": final,
        "val_drop_db": (initial - final) if initial is not None else None,
        "reached_max_drop": reached,
        "quantized_operations": total,
        "reverted_operations": reverted,
        "reverted_count": len(reverted),
        "seconds": round(seconds, 1),
    }


@contextlib.contextmanager
def _restorer_report() -> Iterator[dict[str, Any]]:
    """Catch the report of NNCF's accuracy restorer (which layers it reverted): NNCF returns only
    the model and passes the report to ``QuantizationAccuracyRestorer._print_report``, which is
    wrapped here for the duration of one call. Without that hook ``box["hook"]`` says so."""
    box: dict[str, Any] = {}
    try:
        from nncf.quantization.algorithms.accuracy_control.algorithm import QuantizationAccuracyRestorer
        original = QuantizationAccuracyRestorer.__dict__["_print_report"]
    except (ImportError, KeyError):
        box["hook"] = "missing"
        yield box
        return

    def capture(report: Any, max_num_iterations: int) -> None:
        box["report"] = report
        original.__func__(report, max_num_iterations)

    QuantizationAccuracyRestorer._print_report = staticmethod(capture)
    try:
        yield box
    finally:
        QuantizationAccuracyRestorer._print_report = original


def _compile(model: Any) -> Any:
    import openvino as ov

    return ov.Core().compile_model(model, "CPU")


#: ops a quantised tensor passes through unchanged on its way to a compute op
_TRANSPARENT_OPS = ("Concat", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool")


def float_compute_ops(model: Any) -> list[str]:
    """Names of the compute ops (:data:`COMPUTE_OPS`) of an OpenVINO model whose data input is
    not fed by a FakeQuantize (directly or through :data:`_TRANSPARENT_OPS`): the layers that
    run in float."""

    def quantized(node: Any) -> bool:
        kind = node.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind == "Concat":
            return all(quantized(v.get_node()) for v in node.input_values())
        return kind in _TRANSPARENT_OPS and quantized(node.input_value(0).get_node())

    return [op.get_friendly_name() for op in model.get_ordered_ops()
            if op.get_type_name() in COMPUTE_OPS and not quantized(op.input_value(0).get_node())]


def _quiet_nncf() -> None:
    import logging

    from nncf.common.logging import nncf_logger

    nncf_logger.setLevel(logging.WARNING)
