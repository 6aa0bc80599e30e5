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
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from ..errors import InputError, require
from .dataset import CalibrationSet
from .patterns import DEFAULT_INT8_EXCLUDE, parse_patterns, select_nodes, unmatched

ESTIMATORS: dict[str, str] = {"entropy": "HISTOGRAM", "max": "MINMAX", "percentile": "MEAN_QUANTILE"}
ESTIMATOR_TOKENS: dict[str, str] = {"entropy": "histogram", "max": "minmax", "percentile": "quantile"}


def estimator_token(method: str) -> str:
    """The name an NNCF INT8 engine carries for ``--calib-method`` (``int8-<token>``)."""
    if method not in ESTIMATORS:
        raise InputError(f"calibration method {method!r}; choose from {', '.join(ESTIMATORS)}")
    return ESTIMATOR_TOKENS[method]


def ignored_patterns(node_names: Iterable[str]) -> list[str]:
    """NNCF ignored-scope regexes for ONNX node names: OpenVINO names an op after its node, and
    splits some (``<name>/WithoutBiases``); the inlined MCNS ops are ``<call>/mcns/<i>``."""
    return [f"^{re.escape(name)}(/.*)?$" for name in node_names]


def float_nodes(onnx_model: Any, keep_fp32: str | Iterable[str] | None,
                exclude: str | Iterable[str] | None) -> tuple[list[str], list[str], list[str]]:
    """(patterns, selected node names, unmatched globs) on the exported (not inlined) model."""
    patterns = list(dict.fromkeys(parse_patterns(keep_fp32, DEFAULT_INT8_EXCLUDE) + parse_patterns(exclude, [])))
    return patterns, select_nodes(onnx_model, patterns), unmatched(onnx_model, patterns)


def quantize_openvino(ov_model: Any, onnx_model: Any, calib: CalibrationSet, *, method: str = "entropy",
                      keep_fp32: str | Iterable[str] | None = None, exclude: str | Iterable[str] | None = None,
                      input_shape: tuple[int, int] | None = None, overflow_fix: str | None = None,
                      subset_size: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Quantise the OpenVINO model ``ov_model`` (converted from the inlined ``onnx_model``'s
    source) with NNCF; returns (quantised model, the record for the manifest)."""
    nncf = require("nncf", "openvino", "INT8 OpenVINO engines (NNCF)")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from ..contract import fit
    from ..cpu import has_int8_dot_product

    estimator_token(method)
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
    scope = nncf.IgnoredScope(patterns=ignored_patterns(nodes), validate=False)
    _quiet_nncf()
    quantized = nncf.quantize(ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=n,
                              ignored_scope=scope, advanced_parameters=advanced)
    fq = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    if fq == 0:
        raise InputError("NNCF inserted no quantisers: every node is in the float list?")
    return quantized, {
        "quantizer": "nncf.quantize (OpenVINO, preset MIXED)",
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


def _quiet_nncf() -> None:
    import logging

    from nncf.common.logging import nncf_logger

    nncf_logger.setLevel(logging.WARNING)
