"""The kernel's loops and index arithmetic (numpy transliteration of mcns.cu) vs torch.ops.sgf.mcns.

No GPU here: this checks everything about the kernel except that CUDA executes it. The source
check below keeps the transliteration's offset table and channel formula tied to mcns.cu.
"""

import re

import numpy as np
import pytest
import torch

from sgf_deploy.kernels.emulate import DX, DY, mcns_kernel_emulation
from sgf_deploy.kernels.nvrtc import kernel_source
from sgf_deploy.model.mcns import NEIGHBOUR_OFFSETS  # registers torch.ops.sgf.mcns

CASES = [
    # (B, C, H, W, G): odd sizes, 1-pixel and 2-pixel images (every neighbour clamped), G = 1 and C/G = 1
    ((1, 8, 5, 7), 2),
    ((4, 16, 9, 11), 8),
    ((1, 6, 1, 3), 3),
    ((2, 4, 2, 1), 4),
    ((1, 8, 1, 1), 1),
    ((4, 12, 13, 6), 4),
]


def _inputs(shape, groups, seed):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    ft = torch.randn(shape, generator=g) * 2
    fr = torch.randn(shape, generator=g)
    st = torch.rand((b, groups, h, w), generator=g)
    sr = torch.rand((b, groups, h, w), generator=g)
    return ft, fr, st, sr


@pytest.mark.parametrize("shape,groups", CASES)
def test_float32_matches_op(shape, groups):
    ft, fr, st, sr = _inputs(shape, groups, seed=sum(shape) * 7 + groups)
    want = torch.ops.sgf.mcns(ft, fr, st, sr, groups, 1e-6).numpy()
    got = mcns_kernel_emulation(*(t.numpy() for t in (ft, fr, st, sr)), groups, 1e-6)
    assert got.dtype == np.float32 and got.shape == (shape[0], 32 * groups, *shape[2:])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("shape,groups", CASES[:4])
def test_float16_storage_float32_accumulation(shape, groups):
    """Half inputs and output, float32 inside: within half rounding of the float32 op on the same values."""
    halves = [t.half() for t in _inputs(shape, groups, seed=sum(shape) + 11 * groups)]
    want = torch.ops.sgf.mcns(*(t.float() for t in halves), groups, 1e-6).numpy()
    got = mcns_kernel_emulation(*(t.numpy() for t in halves), groups, 1e-6)
    assert got.dtype == np.float16
    # one half ulp of values in [0, 1] is at most 2**-11 ~ 4.9e-4
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=5e-4)


def test_flat_field_gives_saliency_and_constant_saliency_tiles():
    """A constant map has zero variance and zero distances: every output is its saliency, tiled."""
    b, c, h, w, groups = 1, 4, 3, 5, 2
    ft = np.full((b, c, h, w), 0.5, np.float32)
    st = np.random.default_rng(0).random((b, groups, h, w), dtype=np.float32)
    sr = np.random.default_rng(1).random((b, groups, h, w), dtype=np.float32)
    out = mcns_kernel_emulation(ft, ft.copy(), st, sr, groups, 1e-6)
    for p, sal in enumerate((st, sr, st, sr)):
        for k in range(8):
            for g in range(groups):
                np.testing.assert_array_equal(out[0, p * 8 * groups + k * groups + g], sal[0, g])


def test_offsets_and_channel_formula_match_the_cuda_source():
    src = kernel_source()
    dy = re.search(r"const int dy\[SGF_MCNS_N_OFF\] = \{([^}]*)\}", src)
    dx = re.search(r"const int dx\[SGF_MCNS_N_OFF\] = \{([^}]*)\}", src)
    assert dy and dx, "mcns.cu no longer declares its dy/dx tables as expected"
    cu_offsets = list(zip((int(v) for v in dy.group(1).split(",")), (int(v) for v in dx.group(1).split(","))))
    assert cu_offsets == list(zip(DY, DX)) == list(NEIGHBOUR_OFFSETS)
    # channel p*8G + k*G + g for the four pairs, in order
    for p in range(4):
        assert f"({p} * SGF_MCNS_N_OFF * G + k * G + g)" in src
    # variance from the first map of each pair, saliency tiled by group
    for line in ("expf(-d_tt[k] / den_t) * w_t", "expf(-d_tr[k] / den_t) * w_r",
                 "expf(-d_rt[k] / den_r) * w_t", "expf(-d_rr[k] / den_r) * w_r"):
        assert line in src
    assert "/ 9.0f" in src  # zero padding counted: always divided by 9


def test_rejects_other_dtypes():
    x = np.zeros((1, 2, 2, 2), np.float64)
    with pytest.raises(ValueError, match="float32 and float16"):
        mcns_kernel_emulation(x, x, x[:, :1], x[:, :1], 1, 1e-6)
