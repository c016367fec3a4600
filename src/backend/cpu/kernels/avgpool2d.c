/* avgpool2d: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/avgpool2d.c. */
#include <string.h>

#include "backend/cpu/kernels.h"
#include "ops/pool.h"

/* The window [h0,h1) x [w0,w1) of output (oh, ow), clipped to the input, and its divisor. */
typedef struct { int64_t h0, h1, w0, w1; float inv; } avg_win;

static inline avg_win avg_window(const kn_node *n, int64_t H, int64_t W, int64_t oh, int64_t ow) {
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    avg_win r;
    const int64_t h0 = kn_pool_span(oh, sh, ph, kh, H, &r.h0, &r.h1), w0 = kn_pool_span(ow, sw, pw, kw, W, &r.w0, &r.w1);
    const int64_t h1 = h0 + kh, w1 = w0 + kw;
    /* PyTorch: the window clipped to the padded input counts when padding is included */
    int64_t ph1 = h1 < H + ph ? h1 : H + ph, pw1 = w1 < W + pw ? w1 : W + pw;
    int64_t padded = (ph1 - h0) * (pw1 - w0);
    int64_t div = n->a.i[6] ? padded : (r.h1 - r.h0) * (r.w1 - r.w0);
    r.inv = 1.0f / (float)(div > 0 ? div : 1);
    return r;
}

static void avgpool_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t H = xs->d[2], W = xs->d[3], OH = ys->d[2], OW = ys->d[3];
    const int64_t planes = xs->d[0] * xs->d[1];
    const float *x = kn_ptr(g, n->in[0]);
    float *y = kn_ptr(g, n->out[0]);
#pragma omp parallel for schedule(static) if (planes * OH * OW * n->a.i[0] * n->a.i[1] > 32768)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * H * W;
        float *yp = y + p * OH * OW;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                avg_win r = avg_window(n, H, W, oh, ow);
                float s = 0.0f;
                for (int64_t h = r.h0; h < r.h1; h++)
                    for (int64_t w = r.w0; w < r.w1; w++) s += xp[h * W + w];
                yp[oh * OW + ow] = s * r.inv;
            }
    }
}

static void avgpool_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    const int64_t H = xs->d[2], W = xs->d[3], OH = ys->d[2], OW = ys->d[3];
    const int64_t planes = xs->d[0] * xs->d[1];
    const float *dy = dout[0];
    float *dx = din[0];
#pragma omp parallel for schedule(static) if (planes * OH * OW * n->a.i[0] * n->a.i[1] > 32768)
    for (int64_t p = 0; p < planes; p++) {
        float *dxp = dx + p * H * W;
        const float *dyp = dy + p * OH * OW;
        memset(dxp, 0, (size_t)(H * W) * sizeof(float));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                avg_win r = avg_window(n, H, W, oh, ow);
                float v = dyp[oh * OW + ow] * r.inv;
                for (int64_t h = r.h0; h < r.h1; h++)
                    for (int64_t w = r.w0; w < r.w1; w++) dxp[h * W + w] += v;
            }
    }
}

KN_ISA_KERNELS(avgpool, avgpool_forward, avgpool_backward)

KN_CPU_OP(avgpool2d, avgpool, NULL, NULL)
