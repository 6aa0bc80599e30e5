"""The ``convert_precision`` step of a build for OpenVINO: inline MCNS, and for INT8 quantise
with NNCF under the float rules of the ONNX Runtime INT8 (:mod:`sgf_deploy.calibration.nncf_int8`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .builder import inline_for_openvino, read_model, save_ir


def convert_for_openvino(plan: Any, work: Path, say: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    """(the model file the OpenVINO engine is built from, the conversion record)."""
    inlined = work / "model.inlined.onnx"
    info = inline_for_openvino(plan.onnx_path, inlined)
    if plan.precision != "int8":
        return inlined, {"kind": "none (FP32 as exported); " + info["mcns"], **info}
    import onnx

    from ...calibration.nncf_int8 import quantize_openvino
    from ...contract import size_multiple

    s, p = plan.settings, plan.profile
    fixed = tuple(p.min[2:]) if p.min and p.min[2:] == p.max[2:] else None
    say(f"INT8 (NNCF): calibrating on {plan.calib_set.folder} ({len(plan.calib_set)} pairs, {s.calib_method}) ..."
        + (f"; accuracy control, max drop {s.int8_max_drop:g} dB on the simulator's val split"
           if s.int8_max_drop is not None else ""))
    quantized, qinfo = quantize_openvino(read_model(inlined), onnx.load(str(plan.onnx_path), load_external_data=False),
                                         plan.calib_set, method=s.calib_method, keep_fp32=s.keep_fp32,
                                         exclude=s.exclude, input_shape=fixed, overflow_fix=s.overflow_fix,  # type: ignore[arg-type]
                                         max_drop=s.int8_max_drop, pair=plan.metadata.get("sgf.pair"),
                                         task=plan.metadata.get("sgf.task"), size_multiple=size_multiple(plan.metadata))
    say(f"INT8 (NNCF): {qinfo['fake_quantize']} FakeQuantize, {len(qinfo['float_nodes'])} node(s) left in float "
        f"({', '.join(qinfo['float_patterns'])}); overflow fix {qinfo['overflow_fix']}")
    acc = qinfo.get("accuracy_control")
    if acc is not None:
        say(f"INT8 (NNCF accuracy control): {acc['reverted_count']} layer(s) reverted to float"
            + (f" ({', '.join(acc['reverted_operations'])})" if acc["reverted_operations"] else "")
            + f"; val PSNR float {_db(acc['val_psnr_float_db'])}, INT8 {_db(acc['val_psnr_int8_db'])} dB "
              f"({acc['validation']['n']} slices, {acc['seconds']:.0f} s)")
    out = work / "model.int8.xml"
    save_ir(quantized, out)
    return out, {"kind": "int8 (NNCF post-training quantisation)", **info, **qinfo}


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
