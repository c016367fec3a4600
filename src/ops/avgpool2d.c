/* avgpool2d: y[N,C,OH,OW] = mean over kh x kw windows of x[N,C,H,W].
 * attrs: i[0]=kh i[1]=kw i[2]=sh i[3]=sw i[4]=ph i[5]=pw i[6]=count_include_pad
 * (nonzero: divide by the window size clipped to the padded input, PyTorch's
 * default; zero: divide by the number of real elements in the window).
 * PyTorch semantics: floor mode, OH = (H + 2 ph - kh) / sh + 1, padding at most half
 * the kernel. Backward spreads dy / divisor over each window (reads nothing). */
#include <string.h>

#include "graph/graph.h"

static int avgpool_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "avgpool2d takes one input, got %d", n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE, "avgpool2d expects a 4-D input [batch, channels, height, width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "avgpool2d expects a float32 input, got an integer tensor");
    int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    if (kh < 1 || kw < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "avgpool2d expects a kernel size >= 1, got %lldx%lld", (long long)kh,
                      (long long)kw);
    if (sh < 1 || sw < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "avgpool2d expects a stride >= 1, got %lldx%lld", (long long)sh,
                      (long long)sw);
    if (ph < 0 || pw < 0 || ph > kh / 2 || pw > kw / 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "avgpool2d padding must be between 0 and half the kernel size (at most %lldx%lld for a "
                      "%lldx%lld kernel), got %lldx%lld",
                      (long long)(kh / 2), (long long)(kw / 2), (long long)kh, (long long)kw, (long long)ph,
                      (long long)pw);
    int64_t H = x->d[2], W = x->d[3];
    if (H + 2 * ph < kh || W + 2 * pw < kw)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "avgpool2d kernel %lldx%lld is larger than the padded input %lldx%lld (input %s); the "
                      "output would be empty",
                      (long long)kh, (long long)kw, (long long)(H + 2 * ph), (long long)(W + 2 * pw),
                      kn_shape_str(x, a, sizeof a));
    int64_t OH = (H + 2 * ph - kh) / sh + 1, OW = (W + 2 * pw - kw) / sw + 1;
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape4(x->d[0], x->d[1], OH, OW)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double avgpool_flops(const kn_graph *g, const kn_node *n) {
    return (double)kn_numel(g, n->out[0]) * (double)(n->a.i[0] * n->a.i[1] + 1);
}

/* The window [h0,h1) x [w0,w1) of output (oh, ow), clipped to the input, and its divisor. */
typedef struct { int64_t h0, h1, w0, w1; float inv; } avg_win;

static inline avg_win avg_window(const kn_node *n, int64_t H, int64_t W, int64_t oh, int64_t ow) {
    const int64_t kh = n->a.i[0], kw = n->a.i[1], sh = n->a.i[2], sw = n->a.i[3], ph = n->a.i[4], pw = n->a.i[5];
    avg_win r;
    int64_t h0 = oh * sh - ph, w0 = ow * sw - pw;
    int64_t h1 = h0 + kh, w1 = w0 + kw;
    /* PyTorch: the window clipped to the padded input counts when padding is included */
    int64_t ph1 = h1 < H + ph ? h1 : H + ph, pw1 = w1 < W + pw ? w1 : W + pw;
    int64_t padded = (ph1 - h0) * (pw1 - w0);
    r.h0 = h0 < 0 ? 0 : h0;
    r.w0 = w0 < 0 ? 0 : w0;
    r.h1 = h1 > H ? H : h1;
    r.w1 = w1 > W ? W : w1;
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

const kn_op kn_op_avgpool2d = {
    .name = "avgpool2d",
    .infer = avgpool_infer,
    .flops_fwd = avgpool_flops,
    .flops_bwd = avgpool_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, avgpool_forward, avgpool_backward}},
};
