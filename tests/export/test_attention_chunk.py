"""Query-chunked attention (sgf_deploy.export.attention): equal to full attention, in the graph
and in PyTorch; the paper preset's finer scales chunked, the bottleneck (and lite) left alone."""

from __future__ import annotations

import numpy as np
import pytest

from sgf_deploy.export.attention import chunk_attention, find_attention


def _run(model_proto, feed):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model_proto.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize("shape", [(2, 1, 48, 40), (1, 1, 56, 72)])
def test_chunked_equals_full_attention(lite_export, shape):
    import onnx

    full = onnx.load(str(lite_export.path))
    assert len(find_attention(full.graph)) == 1  # lite: the bottleneck only, not chunked on export
    chunked = onnx.load(str(lite_export.path))
    assert chunk_attention(chunked, None, chunk=7) == 1  # 30 / 63 query rows: several steps, a padded last one
    assert not find_attention(chunked.graph) and sum(n.op_type == "Loop" for n in chunked.graph.node) == 1
    onnx.checker.check_model(chunked)
    rng = np.random.default_rng(0)
    feed = {"reference": rng.standard_normal(shape).astype(np.float32),
            "target": rng.standard_normal(shape).astype(np.float32)}
    assert np.abs(_run(chunked, feed) - _run(full, feed)).max() < 1e-5


def test_which_scales_are_chunked():
    from sgf_deploy.export.attention import scales_to_chunk
    from sgf_deploy.model.presets import PRESETS

    paper, lite = PRESETS["paper"], PRESETS["lite"]
    assert scales_to_chunk(paper.channels, paper.mcsd_scales, None) == [2, 1]  # dynamic: below the bottleneck
    assert scales_to_chunk(paper.channels, paper.mcsd_scales, (320, 320)) == [2, 1]
    assert scales_to_chunk(paper.channels, paper.mcsd_scales, (32, 40)) == []  # few positions: plain attention
    assert scales_to_chunk(lite.channels, lite.mcsd_scales, None) == []


def test_paper_chunked_equals_full_and_undoes(paper_export):
    import onnx

    from sgf_deploy.export.attention import unchunk_attention
    from sgf_deploy.model.presets import PRESETS

    full = onnx.load(str(paper_export.path))
    assert not any(n.op_type == "Loop" for n in full.graph.node)  # static 32x40: nothing to chunk
    chunked = onnx.load(str(paper_export.path))
    cfg = PRESETS["paper"]
    assert chunk_attention(chunked, {cfg.channels[2], cfg.channels[1]}, chunk=48) == 2  # the 1/4 and 1/2 scales
    assert len(find_attention(chunked.graph)) == 1  # the bottleneck stays plain
    rng = np.random.default_rng(2)
    feed = {k: rng.standard_normal((2, 1, 32, 40)).astype(np.float32) for k in ("reference", "target")}
    expected = _run(full, feed)
    assert np.abs(_run(chunked, feed) - expected).max() < 1e-5
    assert unchunk_attention(chunked) == 2 and len(find_attention(chunked.graph)) == 3
    assert np.abs(_run(chunked, feed) - expected).max() < 1e-6


def test_pytorch_attention_contiguous_equals_math():
    import torch
    import torch.nn.functional as F

    from sgf_deploy.model.blocks import SFA

    torch.manual_seed(0)
    sfa = SFA(squeeze_dim=8, channels=16, attn_dim=8).eval()
    sq, enc = torch.randn(2, 8, 6, 5), torch.randn(2, 16, 6, 5)
    with torch.no_grad():
        out = sfa(sq, enc)
        q = sfa.q(sq).flatten(2).transpose(1, 2)
        k = sfa.k(enc).flatten(2).transpose(1, 2)
        v = sfa.v(enc).flatten(2).transpose(1, 2)
        att = F.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1) @ v
        expected = sfa.out(att.transpose(1, 2).reshape(2, 16, 6, 5))
    assert torch.allclose(out, expected, atol=1e-5)
