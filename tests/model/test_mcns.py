"""The sgf::mcns op against an explicit per-pixel loop written straight from the spec."""

import numpy as np
import pytest
import torch

from sgf_deploy.model.mcns import mcns_reference  # registers torch.ops.sgf.mcns

OFFSETS = [(-1, 0), (-2, 0), (1, 0), (2, 0), (0, -1), (0, -2), (0, 1), (0, 2)]


def loop_mcns(ft, fr, st, sr, groups, eps):
    """Per-pixel transcription of DESIGN.md section 2 (float64, no vectorisation)."""
    b, c, h, w = ft.shape
    cg = c // groups

    def var(f, bi, y, x):
        vals = []
        for ch in range(c):
            win = []
            for yy in range(y - 1, y + 2):
                for xx in range(x - 1, x + 2):
                    win.append(f[bi, ch, yy, xx] if 0 <= yy < h and 0 <= xx < w else 0.0)
            win = np.array(win)
            vals.append(max((win**2).mean() - win.mean() ** 2, 0.0))
        return float(np.mean(vals))

    def pair(fa, fb, sal):
        out = np.zeros((b, 8 * groups, h, w))
        for bi in range(b):
            for y in range(h):
                for x in range(w):
                    va = var(fa, bi, y, x)
                    for k, (dy, dx) in enumerate(OFFSETS):
                        ny = min(max(y - dy, 0), h - 1)
                        nx = min(max(x - dx, 0), w - 1)
                        for g in range(groups):
                            sl = slice(g * cg, (g + 1) * cg)
                            d = ((fa[bi, sl, y, x] - fb[bi, sl, ny, nx]) ** 2).sum()
                            out[bi, k * groups + g, y, x] = np.exp(-d / (va + eps)) * sal[bi, g, y, x]
        return out

    return np.concatenate([pair(ft, ft, st), pair(ft, fr, sr), pair(fr, ft, st), pair(fr, fr, sr)], axis=1)


@pytest.mark.parametrize("shape,groups", [((1, 4, 5, 7), 2), ((2, 6, 3, 4), 3), ((1, 8, 6, 1), 8)])
def test_matches_per_pixel_loop(shape, groups):
    g = torch.Generator().manual_seed(sum(shape) + groups)
    b, c, h, w = shape
    ft, fr = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    st, sr = torch.rand((b, groups, h, w), generator=g), torch.rand((b, groups, h, w), generator=g)
    got = torch.ops.sgf.mcns(ft, fr, st, sr, groups, 1e-6).double().numpy()
    want = loop_mcns(*(t.double().numpy() for t in (ft, fr, st, sr)), groups, 1e-6)
    assert got.shape == (b, 32 * groups, h, w)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_saliency_is_tiled_not_interleaved():
    """Channel k*G+g must carry the saliency of group g (repeat_interleave would pair wrongly)."""
    b, c, h, w, groups = 1, 4, 4, 4, 2
    ft = torch.zeros(b, c, h, w)
    st = torch.stack([torch.full((h, w), 0.25), torch.full((h, w), 0.75)])[None]
    out = torch.ops.sgf.mcns(ft, ft, st, st, groups, 1e-6)
    # constant features: every similarity is exp(0) = 1, so out equals the applied saliency
    first_pair = out[0, : 8 * groups, 0, 0]
    assert torch.allclose(first_pair, torch.tensor([0.25, 0.75] * 8))


def test_gradients_flow_and_match_composite():
    g = torch.Generator().manual_seed(0)
    shape = (2, 4, 5, 6)
    inputs = [torch.randn(shape, generator=g), torch.randn(shape, generator=g),
              torch.rand((2, 2, 5, 6), generator=g), torch.rand((2, 2, 5, 6), generator=g)]
    a = [t.clone().double().requires_grad_() for t in inputs]
    b = [t.clone().double().requires_grad_() for t in inputs]
    weights = torch.randn(2, 64, 5, 6, generator=g).double()
    (torch.ops.sgf.mcns(*a, 2, 1e-6) * weights).sum().backward()
    (mcns_reference(*b, 2, 1e-6) * weights).sum().backward()
    for x, y in zip(a, b):
        assert x.grad is not None and torch.isfinite(x.grad).all()
        torch.testing.assert_close(x.grad, y.grad)


def test_gradcheck():
    g = torch.Generator().manual_seed(1)
    args = [torch.randn(1, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    args += [torch.rand(1, 1, 3, 4, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda *t: torch.ops.sgf.mcns(*t, 1, 1e-6), args)


def test_fake_tensor_shape_and_opcheck():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        ft = torch.empty(2, 16, 9, 11)
        out = torch.ops.sgf.mcns(ft, ft, torch.empty(2, 8, 9, 11), torch.empty(2, 8, 9, 11), 8, 1e-6)
        assert tuple(out.shape) == (2, 256, 9, 11)
    g = torch.Generator().manual_seed(2)
    args = (torch.randn(1, 4, 5, 5, generator=g, requires_grad=True), torch.randn(1, 4, 5, 5, generator=g),
            torch.rand(1, 2, 5, 5, generator=g), torch.rand(1, 2, 5, 5, generator=g), 2, 1e-6)
    torch.library.opcheck(torch.ops.sgf.mcns.default, args)


def test_bad_shapes_raise():
    x = torch.randn(1, 6, 4, 4)
    with pytest.raises(ValueError, match="divisible"):
        torch.ops.sgf.mcns(x, x, torch.rand(1, 4, 4, 4), torch.rand(1, 4, 4, 4), 4, 1e-6)
    with pytest.raises(ValueError, match="sal_ref"):
        torch.ops.sgf.mcns(x, x, torch.rand(1, 3, 4, 4), torch.rand(1, 2, 4, 4), 3, 1e-6)
