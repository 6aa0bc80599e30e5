// sgf::MCNS fused forward kernel (DESIGN.md section 2), written for this project.
//
// One thread per output pixel (b, y, x). For that pixel it computes
//   1. sigma^2 of both maps: for every channel the 3x3 window mean and mean of squares with the
//      zero padding counted (always divided by 9, avg_pool2d's count_include_pad), the variance
//      clamped at 0, then averaged over the C channels;
//   2. per group g, the 4 x 8 squared distances of the group's C/G channels between the pixel of
//      the first map and the 8 clamped (edge-replicated) neighbours of the second map;
//   3. out[b, p*8G + k*G + g, y, x] = exp(-d / (sigma_a^2 + eps)) * sal[b, g, y, x] with pairs
//      p = (tar,tar)*s_tar, (tar,ref)*s_ref, (ref,tar)*s_tar, (ref,ref)*s_ref; the variance comes
//      from the FIRST map of the pair and the saliency of group g multiplies every neighbour k
//      (tiled along channels, never repeat_interleave).
// Neighbour k at offset (dy, dx) of (y, x) is f(clamp(y - dy), clamp(x - dx)).
//
// Inputs are read in their storage type (float or IEEE half) and everything is accumulated in
// float32; the output has the storage type of the inputs. Layout: contiguous NCHW.
// The kernel needs no header (NVRTC compiles it with no include path): half <-> float go through
// the PTX cvt instructions on the raw 16-bit pattern.
//
// sgf_deploy/kernels/emulate.py transliterates this file loop for loop (the CPU check of the
// index arithmetic); keep the two in step.

#define SGF_MCNS_N_OFF 8

__device__ __forceinline__ float sgf_load(const float* p, long long i) { return p[i]; }

__device__ __forceinline__ float sgf_load(const unsigned short* p, long long i)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p[i]));
    return f;
}

__device__ __forceinline__ void sgf_store(float* p, long long i, float v) { p[i] = v; }

__device__ __forceinline__ void sgf_store(unsigned short* p, long long i, float v)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p[i] = h;
}

__device__ __forceinline__ int sgf_clamp(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

template <typename T>
__device__ void sgf_mcns_body(
    const T* __restrict__ ft, const T* __restrict__ fr, const T* __restrict__ st,
    const T* __restrict__ sr, T* __restrict__ out, int B, int C, int G, int H, int W, float eps)
{
    const long long hw = (long long)H * W;
    const long long n_pix = (long long)B * hw;
    const int cg = C / G;
        for (long long pix = (long long)blockIdx.x * blockDim.x + threadIdx.x; pix < n_pix;
         pix += (long long)gridDim.x * blockDim.x) {
        const int x = (int)(pix % W);
        const int y = (int)((pix / W) % H);
        const int b = (int)(pix / hw);
        const long long here = (long long)y * W + x;
        const T* ft_b = ft + (long long)b * C * hw;
        const T* fr_b = fr + (long long)b * C * hw;

        // 1. channel-averaged 3x3 variance of both maps (zero padding counted: always / 9).
        float var_t = 0.0f, var_r = 0.0f;
        for (int c = 0; c < C; ++c) {
            const long long plane = (long long)c * hw;
            float s_t = 0.0f, q_t = 0.0f, s_r = 0.0f, q_r = 0.0f;
            for (int wy = y - 1; wy <= y + 1; ++wy) {
                if (wy < 0 || wy >= H) continue;  // a zero of the padding: adds nothing
                for (int wx = x - 1; wx <= x + 1; ++wx) {
                    if (wx < 0 || wx >= W) continue;
                    const long long i = plane + (long long)wy * W + wx;
                    const float a = sgf_load(ft_b, i);
                    const float r = sgf_load(fr_b, i);
                    s_t += a; q_t += a * a;
                    s_r += r; q_r += r * r;
                }
            }
            const float m_t = s_t / 9.0f, m_r = s_r / 9.0f;
            var_t += fmaxf(q_t / 9.0f - m_t * m_t, 0.0f);
            var_r += fmaxf(q_r / 9.0f - m_r * m_r, 0.0f);
        }
        const float den_t = var_t / (float)C + eps;  // sigma^2 of the first map of the pair + eps
        const float den_r = var_r / (float)C + eps;

        // Neighbour positions (clamped: edge replication), shared by every channel. Offsets in the
        // order of NEIGHBOUR_OFFSETS: (-1,0), (-2,0), (1,0), (2,0), (0,-1), (0,-2), (0,1), (0,2).
        const int dy[SGF_MCNS_N_OFF] = {-1, -2, 1, 2, 0, 0, 0, 0};
        const int dx[SGF_MCNS_N_OFF] = {0, 0, 0, 0, -1, -2, 1, 2};
        long long nb[SGF_MCNS_N_OFF];
#pragma unroll
        for (int k = 0; k < SGF_MCNS_N_OFF; ++k) {
            nb[k] = (long long)sgf_clamp(y - dy[k], H - 1) * W + sgf_clamp(x - dx[k], W - 1);
        }

        // 2./3. per group: 4 pairs x 8 neighbours of squared distances, then exp and saliency.
        for (int g = 0; g < G; ++g) {
            float d_tt[SGF_MCNS_N_OFF], d_tr[SGF_MCNS_N_OFF], d_rt[SGF_MCNS_N_OFF], d_rr[SGF_MCNS_N_OFF];
#pragma unroll
            for (int k = 0; k < SGF_MCNS_N_OFF; ++k) { d_tt[k] = d_tr[k] = d_rt[k] = d_rr[k] = 0.0f; }
            for (int c = g * cg; c < (g + 1) * cg; ++c) {
                const long long plane = (long long)c * hw;
                const float a_t = sgf_load(ft_b, plane + here);
                const float a_r = sgf_load(fr_b, plane + here);
#pragma unroll
                for (int k = 0; k < SGF_MCNS_N_OFF; ++k) {
                    const float n_t = sgf_load(ft_b, plane + nb[k]);
                    const float n_r = sgf_load(fr_b, plane + nb[k]);
                    float d;
                    d = a_t - n_t; d_tt[k] += d * d;
                    d = a_t - n_r; d_tr[k] += d * d;
                    d = a_r - n_t; d_rt[k] += d * d;
                    d = a_r - n_r; d_rr[k] += d * d;
                }
            }
            const long long sal_i = ((long long)b * G + g) * hw + here;
            const float w_t = sgf_load(st, sal_i);
            const float w_r = sgf_load(sr, sal_i);
            const long long out_b = (long long)b * (4 * SGF_MCNS_N_OFF) * G * hw;
#pragma unroll
            for (int k = 0; k < SGF_MCNS_N_OFF; ++k) {
                // channel p*8G + k*G + g
                const long long ch0 = (long long)(0 * SGF_MCNS_N_OFF * G + k * G + g);
                const long long ch1 = (long long)(1 * SGF_MCNS_N_OFF * G + k * G + g);
                const long long ch2 = (long long)(2 * SGF_MCNS_N_OFF * G + k * G + g);
                const long long ch3 = (long long)(3 * SGF_MCNS_N_OFF * G + k * G + g);
                sgf_store(out, out_b + ch0 * hw + here, expf(-d_tt[k] / den_t) * w_t);
                sgf_store(out, out_b + ch1 * hw + here, expf(-d_tr[k] / den_t) * w_r);
                sgf_store(out, out_b + ch2 * hw + here, expf(-d_rt[k] / den_r) * w_t);
                sgf_store(out, out_b + ch3 * hw + here, expf(-d_rr[k] / den_r) * w_r);
            }
        }
    }
}

extern "C" __global__ void sgf_mcns_f32(
    const float* ft, const float* fr, const float* st, const float* sr, float* out,
    int B, int C, int G, int H, int W, float eps)
{
    sgf_mcns_body<float>(ft, fr, st, sr, out, B, C, G, H, W, eps);
}

extern "C" __global__ void sgf_mcns_f16(
    const unsigned short* ft, const unsigned short* fr, const unsigned short* st,
    const unsigned short* sr, unsigned short* out, int B, int C, int G, int H, int W, float eps)
{
    sgf_mcns_body<unsigned short>(ft, fr, st, sr, out, B, C, G, H, W, eps);
}
