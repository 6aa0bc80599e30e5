"""CPU transliteration of ``mcns.cu``: the kernel's loops and index arithmetic, in numpy.

No GPU is needed to check that the kernel computes the right thing *if* it runs what it says:
this function executes the same loops over channels, window positions, groups and neighbours,
with the same flat NCHW index arithmetic, float32 accumulation and half <-> float conversions as
``sgf_mcns_body`` in ``mcns.cu``. The only difference is that the thread dimension -- one thread
per output pixel ``pix`` -- is a numpy vector instead of CUDA threads (every per-thread scalar of
the kernel is a vector over ``pix`` here). Tests compare it with ``torch.ops.sgf.mcns``.

Keep it in step with ``mcns.cu`` line for line; it imports only numpy.
"""

from __future__ import annotations

import numpy as np

N_OFF = 8
DY = (-1, -2, 1, 2, 0, 0, 0, 0)  # the kernel's dy[] / dx[]: NEIGHBOUR_OFFSETS
DX = (0, 0, 0, 0, -1, -2, 1, 2)


def _load(buf: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``sgf_load``: read storage (float32 or float16) and widen to float32."""
    return buf[idx].astype(np.float32)


def mcns_kernel_emulation(
    ft: np.ndarray, fr: np.ndarray, st: np.ndarray, sr: np.ndarray, groups: int, eps: float
) -> np.ndarray:
    """Run ``sgf_mcns_body`` for every thread ``pix`` in [0, B*H*W); returns (B, 32G, H, W)."""
    dtype = ft.dtype
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"the kernel has float32 and float16 variants only; got {dtype}")
    B, C, H, W = (int(v) for v in ft.shape)
    G = int(groups)
    f32 = np.float32
    eps32 = f32(eps)
    # The kernel sees flat, contiguous buffers.
    ft_f, fr_f = np.ascontiguousarray(ft).reshape(-1), np.ascontiguousarray(fr).reshape(-1)
    st_f, sr_f = np.ascontiguousarray(st).reshape(-1), np.ascontiguousarray(sr).reshape(-1)
    out = np.zeros(B * 4 * N_OFF * G * H * W, dtype=dtype)

    hw = H * W
    n_pix = B * hw
    cg = C // G
    pix = np.arange(n_pix, dtype=np.int64)  # one lane per CUDA thread
    x = pix % W
    y = (pix // W) % H
    b = pix // hw
    here = y * W + x
    ft_b = b * C * hw  # ft + b*C*hw: an offset per lane
    fr_b = b * C * hw

    # 1. channel-averaged 3x3 variance (zero padding counted: always / 9).
    var_t = np.zeros(n_pix, f32)
    var_r = np.zeros(n_pix, f32)
    for c in range(C):
        plane = c * hw
        s_t = np.zeros(n_pix, f32)
        q_t = np.zeros(n_pix, f32)
        s_r = np.zeros(n_pix, f32)
        q_r = np.zeros(n_pix, f32)
        for oy in (-1, 0, 1):
            wy = y + oy
            for ox in (-1, 0, 1):
                wx = x + ox
                inside = (wy >= 0) & (wy < H) & (wx >= 0) & (wx < W)  # `continue` outside
                i = plane + np.where(inside, wy * W + wx, 0)
                a = np.where(inside, _load(ft_f, ft_b + i), f32(0))
                r = np.where(inside, _load(fr_f, fr_b + i), f32(0))
                s_t += a
                q_t += a * a
                s_r += r
                q_r += r * r
        m_t = s_t / f32(9.0)
        m_r = s_r / f32(9.0)
        var_t += np.maximum(q_t / f32(9.0) - m_t * m_t, f32(0))
        var_r += np.maximum(q_r / f32(9.0) - m_r * m_r, f32(0))
    den_t = var_t / f32(C) + eps32
    den_r = var_r / f32(C) + eps32

    nb = [np.clip(y - DY[k], 0, H - 1) * W + np.clip(x - DX[k], 0, W - 1) for k in range(N_OFF)]

    # 2./3. per group: 4 pairs x 8 neighbours, exp, saliency; channel p*8G + k*G + g.
    for g in range(G):
        d_tt = [np.zeros(n_pix, f32) for _ in range(N_OFF)]
        d_tr = [np.zeros(n_pix, f32) for _ in range(N_OFF)]
        d_rt = [np.zeros(n_pix, f32) for _ in range(N_OFF)]
        d_rr = [np.zeros(n_pix, f32) for _ in range(N_OFF)]
        for c in range(g * cg, (g + 1) * cg):
            plane = c * hw
            a_t = _load(ft_f, ft_b + plane + here)
            a_r = _load(fr_f, fr_b + plane + here)
            for k in range(N_OFF):
                n_t = _load(ft_f, ft_b + plane + nb[k])
                n_r = _load(fr_f, fr_b + plane + nb[k])
                d = a_t - n_t
                d_tt[k] += d * d
                d = a_t - n_r
                d_tr[k] += d * d
                d = a_r - n_t
                d_rt[k] += d * d
                d = a_r - n_r
                d_rr[k] += d * d
        sal_i = (b * G + g) * hw + here
        w_t = _load(st_f, sal_i)
        w_r = _load(sr_f, sal_i)
        out_b = b * (4 * N_OFF) * G * hw
        for k in range(N_OFF):
            ch0 = 0 * N_OFF * G + k * G + g
            ch1 = 1 * N_OFF * G + k * G + g
            ch2 = 2 * N_OFF * G + k * G + g
            ch3 = 3 * N_OFF * G + k * G + g
            # sgf_store: float32 -> storage type (round to nearest even, as cvt.rn.f16.f32).
            out[out_b + ch0 * hw + here] = (np.exp(-d_tt[k] / den_t) * w_t).astype(dtype)
            out[out_b + ch1 * hw + here] = (np.exp(-d_tr[k] / den_t) * w_r).astype(dtype)
            out[out_b + ch2 * hw + here] = (np.exp(-d_rt[k] / den_r) * w_t).astype(dtype)
            out[out_b + ch3 * hw + here] = (np.exp(-d_rr[k] / den_r) * w_r).astype(dtype)
    return out.reshape(B, 4 * N_OFF * G, H, W)
