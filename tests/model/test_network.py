import dataclasses

import pytest
import torch

from sgf_deploy.model import PRESETS, SGFConfig, build_model, count_parameters


def test_preset_parameter_counts():
    assert count_parameters(build_model("lite")) < 1_000_000
    paper = count_parameters(build_model("paper"))
    assert 0.85 * 4_000_000 <= paper <= 1.15 * 4_000_000, paper
    assert PRESETS["paper"].groups == 8 and PRESETS["paper"].squeeze_dim == 64
    assert PRESETS["paper"].mcsd_scales == (3, 2, 1) and PRESETS["lite"].mcsd_scales == (3,)


@pytest.mark.parametrize("n,h,w", [(1, 16, 16), (3, 217, 181), (2, 40, 57), (1, 9, 13)])
def test_lite_shapes_any_size(n, h, w, torch_threads):
    model = build_model("lite").eval()
    ref, tar = torch.randn(n, 1, h, w), torch.randn(n, 1, h, w)
    with torch.no_grad():
        out = model(ref, tar)
    assert out.shape == (n, 1, h, w) and torch.isfinite(out).all()


def test_paper_forward_small(torch_threads):
    model = build_model("paper").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 36, 44), torch.randn(2, 1, 36, 44))
    assert out.shape == (2, 1, 36, 44)


def test_decoder_shares_encoder_weights():
    model = build_model("lite")
    names = [n for n, _ in model.named_parameters()]
    # one block per scale: no separate decoder block parameters exist
    assert not any("decoder" in n for n in names)
    assert sum(1 for n in names if n.startswith("blocks.") and n.endswith("conv1.weight")) == 4


def test_residual_and_reference_matter(torch_threads):
    torch.manual_seed(0)
    model = build_model("lite").eval()
    ref, tar = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a = model(ref, tar)
        b = model(torch.randn(1, 1, 32, 32), tar)
    assert not torch.allclose(a, b), "the reference must influence the output"
    ctrl = build_model(dataclasses.replace(PRESETS["lite"], use_reference=False)).eval()
    with torch.no_grad():
        assert torch.allclose(ctrl(ref, tar), ctrl(torch.randn_like(ref), tar))


def test_padding_crops_back_consistently(torch_threads):
    """A size that needs padding gives the same result as padding by hand and cropping."""
    model = build_model("lite").eval()
    ref, tar = torch.randn(1, 1, 21, 27), torch.randn(1, 1, 21, 27)
    pad = torch.nn.functional.pad
    with torch.no_grad():
        manual = model.forward_core(pad(ref, (0, 5, 0, 3), mode="replicate"), pad(tar, (0, 5, 0, 3), mode="replicate"))
        assert torch.allclose(model(ref, tar), manual[..., :21, :27])


def test_config_validation():
    with pytest.raises(ValueError):
        SGFConfig(channels=(16, 30), groups=8, mcsd_scales=(1,))
    with pytest.raises(ValueError):
        SGFConfig(mcsd_scales=(7,))


def test_trains_one_step(torch_threads):
    model = build_model("lite")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.randn(2, 1, 24, 24)
    loss = (model(x, x) - x).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.mcsd["3"].san_ref.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    opt.step()
