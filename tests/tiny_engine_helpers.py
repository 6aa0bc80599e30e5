"""A tiny real engine for tests that need one in well under a second: a two-layer convolutional
network with the model's inputs/outputs (``reference``, ``target`` -> ``reconstruction``) and the
``sgf.*`` metadata of an export, built by the real ``build_engine`` (ONNX Runtime, FP32, no parity).
Imported as a plain module (``tests/`` is on ``sys.path`` through its conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def tiny_onnx(out: Path, channels: int = 4) -> Path:
    """Write the tiny network to ``out`` (dynamic N, H, W; size multiple 8)."""
    import onnx
    from onnx import TensorProto, helper

    from sgf_deploy.export.metadata import normalization_spec

    rng = np.random.default_rng(0)
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 1, "H", "W"])
          for name in ("reference", "target", "reconstruction")]
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [channels, 2, 3, 3],
                            rng.standard_normal(channels * 18).astype(np.float32).tolist())
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [1, channels, 3, 3],
                            rng.standard_normal(channels * 9).astype(np.float32).tolist())
    nodes = [helper.make_node("Concat", ["reference", "target"], ["x"], axis=1),
             helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["d"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["d", "target"], ["reconstruction"])]
    model = helper.make_model(helper.make_graph(nodes, "tiny", io[:2], io[2:], [w1, w2]),
                              opset_imports=[helper.make_opsetid("", 17)])
    meta = {"sgf.toolkit_version": "test", "sgf.preset": "tiny", "sgf.config": json.dumps({}), "sgf.task": "recon4x",
            "sgf.pair": "t1-t2", "sgf.checkpoint_sha256": "c" * 64, "sgf.checkpoint_path": "tiny.pt",
            "sgf.normalization": json.dumps(normalization_spec(8)), "sgf.size_multiple": "8", "sgf.opset": "17",
            "sgf.exported_at": "2026-12-07T00:00:00", "sgf.dynamic": "N,H,W"}
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def tiny_ort_engine(root: Path) -> Path:
    """Export-free: the tiny network built into an ONNX Runtime FP32 CPU engine under ``root``."""
    from sgf_deploy.engines import build_engine

    onnx_path = tiny_onnx(root / "export" / "tiny.onnx")
    built = build_engine(onnx_path, backend="onnxruntime", precision="fp32", out_dir=root / "engines", parity_n=0)
    return Path(built.engine_path)
