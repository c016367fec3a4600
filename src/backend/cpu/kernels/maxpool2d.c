/* maxpool2d: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/maxpool2d.c. */
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/layout.h"
#include "ops/pool.h"
#include "ops/maxpool2d.h"

static inline void put_index(void *arg, int64_t i, int32_t r, int narrow) {
    if (narrow) ((uint8_t *)arg)[i] = (uint8_t)r;
    else ((int32_t *)arg)[i] = r;
}
static inline int32_t get_index(const void *arg, int64_t i, int narrow) {
    return narrow ? ((const uint8_t *)arg)[i] : ((const int32_t *)arg)[i];
}

typedef uint8_t kn_v8u8 __attribute__((vector_size(8)));

static inline __attribute__((always_inline)) void maxpool_fwd_blk(const kn_node *n, kn_rt *rt, const int B,
                                                                 const int narrow) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t H = xs->d[2], W = xs->d[3], OH = ys->d[2], OW = ys->d[3];
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    const int64_t planes = xs->d[0] * (xs->d[1] / B);
    const int Q = B / 8;
    const float *x = kn_ptr(g, n->in[0]);
    float *y = kn_ptr(g, n->out[0]);
    void *arg = g->v[n->out[1]].data;
#pragma omp parallel for collapse(2) schedule(static) if (planes * OH * OW * B * kh * kw > 32768)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < OH; oh++) {
            const float *xp = x + p * H * W * B;
            float *yp = y + (p * OH + oh) * OW * B;
            const int64_t a0 = (p * OH + oh) * OW * B;
            int64_t h0, h1, w0, w1;
            const int64_t hs = kn_pool_span(oh, sh, ph, kh, H, &h0, &h1);
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t ws = kn_pool_span(ow, sw, pw, kw, W, &w0, &w1);
                for (int q = 0; q < Q; q++) {
                    kn_v8f best = kn_splat8(-INFINITY);
                    const int32_t i0 = (int32_t)((h0 - hs) * kw + (w0 - ws));
                    kn_v8i bi = {i0, i0, i0, i0, i0, i0, i0, i0};
                    for (int64_t h = h0; h < h1; h++)
                        for (int64_t w = w0; w < w1; w++) {
                            const kn_v8f v = kn_ld8(xp + (h * W + w) * B + 8 * q);
                            const int32_t ix = (int32_t)((h - hs) * kw + (w - ws));
                            /* a larger value, or the first NaN, takes the place */
                            const kn_v8i take = (v > best) | ((v != v) & (best == best));
                            best = kn_sel8(take, v, best);
                            bi = (take & (kn_v8i){ix, ix, ix, ix, ix, ix, ix, ix}) | (~take & bi);
                        }
                    kn_st8(yp + ow * B + 8 * q, best);
                    if (narrow) {
                        const kn_v8u8 b8 = __builtin_convertvector(bi, kn_v8u8);
                        __builtin_memcpy((uint8_t *)arg + a0 + ow * B + 8 * q, &b8, sizeof b8);
                    } else {
                        kn_st8i((int32_t *)arg + a0 + ow * B + 8 * q, bi);
                    }
                }
            }
        }
}

/* Offsets in the input plane (in elements) of the kh*kw window positions: r -> (r/kw)*W + r%kw */
static void window_offsets(int32_t *off, int64_t kh, int64_t kw, int64_t W) {
    for (int64_t r = 0; r < kh * kw; r++) off[r] = (int32_t)((r / kw) * W + r % kw);
}

static inline __attribute__((always_inline)) void maxpool_bwd_blk(const kn_node *n, kn_rt *rt, const int B,
                                                                 const int narrow, float *dx, const float *dy) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t W = xs->d[3], HW = xs->d[2] * W, OH = ys->d[2], OW = ys->d[3], OHW = OH * OW;
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    const int64_t planes = xs->d[0] * (xs->d[1] / B);
    const void *arg = g->v[n->out[1]].data;
    int32_t off[256];
    if (narrow) window_offsets(off, kh, kw, W);
#pragma omp parallel for schedule(static) if (planes * (HW + OHW) * B > 32768)
    for (int64_t p = 0; p < planes; p++) {
        float *dxp = dx + p * HW * B;
        const float *dyp = dy + p * OHW * B;
        memset(dxp, 0, (size_t)(HW * B) * sizeof(float));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t k = oh * OW + ow, corner = (oh * sh - ph) * W + (ow * sw - pw);
                for (int l = 0; l < B; l++) {
                    const int32_t r = get_index(arg, (p * OHW + k) * B + l, narrow);
                    const int64_t at = corner + (narrow ? off[r] : (r / kw) * W + r % kw);
                    dxp[at * B + l] += dyp[k * B + l];
                }
            }
    }
}

static int maxpool_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    n->a.i[KN_ATTR_LAYOUT] = kn_layout(g, n->in[0]);
    return KN_OK;
}

static void maxpool_forward(const kn_node *n, kn_rt *rt) {
    const int narrow = narrow_index(n);
    switch (n->a.i[KN_ATTR_LAYOUT] * 2 + narrow) {
    case 33: maxpool_fwd_blk(n, rt, 16, 1); return;
    case 32: maxpool_fwd_blk(n, rt, 16, 0); return;
    case 17: maxpool_fwd_blk(n, rt, 8, 1); return;
    case 16: maxpool_fwd_blk(n, rt, 8, 0); return;
    default: break;
    }
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t H = xs->d[2], W = xs->d[3], OH = ys->d[2], OW = ys->d[3];
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    const int64_t planes = xs->d[0] * xs->d[1];
    const float *x = kn_ptr(g, n->in[0]);
    float *y = kn_ptr(g, n->out[0]);
    void *arg = g->v[n->out[1]].data;
#pragma omp parallel for schedule(static) if (planes * OH * OW * kh * kw > 32768)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0, h1, w0, w1;
            const int64_t hs = kn_pool_span(oh, sh, ph, kh, H, &h0, &h1);
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t ws = kn_pool_span(ow, sw, pw, kw, W, &w0, &w1);
                float best = -INFINITY;
                int64_t bh = h0, bw = w0;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) {
                        float v = xp[h * W + w];
                        if (v > best || isnan(v)) {
                            best = v;
                            bh = h, bw = w;
                            if (isnan(v)) goto done;
                        }
                    }
            done:
                yp[oh * OW + ow] = best;
                put_index(arg, p * OH * OW + oh * OW + ow, (int32_t)((bh - hs) * kw + (bw - ws)), narrow);
            }
        }
    }
}

static void maxpool_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    const int narrow = narrow_index(n);
    switch (n->a.i[KN_ATTR_LAYOUT] * 2 + narrow) {
    case 33: maxpool_bwd_blk(n, rt, 16, 1, din[0], dout[0]); return;
    case 32: maxpool_bwd_blk(n, rt, 16, 0, din[0], dout[0]); return;
    case 17: maxpool_bwd_blk(n, rt, 8, 1, din[0], dout[0]); return;
    case 16: maxpool_bwd_blk(n, rt, 8, 0, din[0], dout[0]); return;
    default: break;
    }
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t W = xs->d[3], HW = xs->d[2] * W, OH = ys->d[2], OW = ys->d[3], OHW = OH * OW;
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    const int64_t planes = xs->d[0] * xs->d[1];
    const void *arg = g->v[n->out[1]].data;
    const float *dy = dout[0];
    float *dx = din[0];
    int32_t off[256];
    if (narrow) window_offsets(off, kh, kw, W);
#pragma omp parallel for schedule(static) if (planes * (HW + OHW) > 32768)
    for (int64_t p = 0; p < planes; p++) {
        float *dxp = dx + p * HW;
        const float *dyp = dy + p * OHW;
        memset(dxp, 0, (size_t)HW * sizeof(float));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t k = oh * OW + ow, corner = (oh * sh - ph) * W + (ow * sw - pw);
                const int32_t r = get_index(arg, p * OHW + k, narrow);
                dxp[corner + (narrow ? off[r] : (r / kw) * W + r % kw)] += dyp[k];
            }
    }
}

KN_ISA_KERNELS(maxpool, maxpool_forward, maxpool_backward)

KN_CPU_OP(maxpool2d, maxpool, maxpool_prepare, NULL)
