/* batchnorm: y = gamma * (x - mean) * invstd + beta, per channel, for x[N,C] (1d) or
 * x[N,C,H,W] (2d). inputs: x, gamma[C], beta[C], running_mean[C], running_var[C]
 * (the last two are persistent state, updated in place).
 * attrs: f[0]=momentum (PyTorch convention: running = (1-m) running + m batch),
 *        f[1]=eps.
 * outputs: y; out1 saved mean[C]; out2 saved invstd[C].
 * Training: batch statistics (biased variance for the normalisation; the running
 * variance is updated with the unbiased one, n/(n-1), like PyTorch). Evaluation: the
 * running statistics. Statistics are computed in double, one channel per iteration
 * of a parallel loop, so the result does not depend on the thread count.
 * Backward (training), per channel with m = N*H*W and xh = (x - mean) * invstd:
 *   dbeta = sum dy, dgamma = sum dy xh,
 *   dx = gamma invstd / m * (m dy - dbeta - xh dgamma). */
#include <math.h>

#include "graph/graph.h"

static int bn_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 5)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm takes x, gamma, beta, running_mean and running_var (5 inputs), got %d", n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 2 && x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm expects a 2-D input [batch, features] or a 4-D input [batch, channels, height, "
                      "width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "batchnorm expects a float32 input, got an integer tensor");
    int64_t C = x->d[1];
    static const char *const names[5] = {"x", "gamma", "beta", "running_mean", "running_var"};
    for (int i = 1; i < 5; i++) {
        const kn_value *p = &g->v[n->in[i]];
        if (p->shape.nd != 1 || p->shape.d[0] != C || p->dtype != KN_F32)
            return kn_err(ctx, KN_ERR_SHAPE, "batchnorm %s must be a float32 [%lld] for input %s, got %s", names[i],
                          (long long)C, kn_shape_str(x, a, sizeof a), kn_shape_str(&p->shape, b, sizeof b));
    }
    double mom = n->a.f[0], eps = n->a.f[1];
    if (!(mom >= 0.0 && mom <= 1.0))
        return kn_err(ctx, KN_ERR_SHAPE, "batchnorm momentum must be in [0, 1], got %g", mom);
    if (!(eps > 0.0)) return kn_err(ctx, KN_ERR_SHAPE, "batchnorm eps must be > 0, got %g", eps);
    int64_t m = kn_shape_numel(x) / (C > 0 ? C : 1);
    if (g->training && m < 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "batchnorm needs more than one value per channel when training, got input %s "
                      "(use a batch size > 1)",
                      kn_shape_str(x, a, sizeof a));
    if (kn_g_declare_out(g, n, 0, KN_F32, *x) < 0 || kn_g_declare_out(g, n, 1, KN_F32, kn_shape1(C)) < 0 ||
        kn_g_declare_out(g, n, 2, KN_F32, kn_shape1(C)) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double bn_flops(const kn_graph *g, const kn_node *n) {
    return (g->training ? 7.0 : 2.0) * (double)kn_numel(g, n->in[0]);
}
static double bn_flops_bwd(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }

/* Layout: element (b, c, s) of x sits at b*C*S + c*S + s, with S = H*W (1 for 1d). */
typedef struct { int64_t N, C, S; } bn_dims;
static bn_dims bn_dims_of(const kn_graph *g, const kn_node *n) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    bn_dims d = {x->d[0], x->d[1], x->nd == 4 ? x->d[2] * x->d[3] : 1};
    return d;
}

static void bn_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, m = N * S;
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]), *beta = kn_ptr(g, n->in[2]);
    float *rmean = kn_ptr(g, n->in[3]), *rvar = kn_ptr(g, n->in[4]);
    float *y = kn_ptr(g, n->out[0]), *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const double mom = n->a.f[0], eps = n->a.f[1];
    const int training = rt->training;
#pragma omp parallel for schedule(static) if (N * C * S > 16384)
    for (int64_t c = 0; c < C; c++) {
        double mean, invstd;
        if (training) {
            double s = 0.0;
            for (int64_t b = 0; b < N; b++) {
                const float *xp = x + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) s += xp[k];
            }
            mean = s / (double)m;
            double v = 0.0;
            for (int64_t b = 0; b < N; b++) {
                const float *xp = x + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) {
                    double t = (double)xp[k] - mean;
                    v += t * t;
                }
            }
            double var = v / (double)m;
            double unbiased = m > 1 ? v / (double)(m - 1) : var;
            invstd = 1.0 / sqrt(var + eps);
            rmean[c] = (float)((1.0 - mom) * (double)rmean[c] + mom * mean);
            rvar[c] = (float)((1.0 - mom) * (double)rvar[c] + mom * unbiased);
        } else {
            mean = rmean[c];
            invstd = 1.0 / sqrt((double)rvar[c] + eps);
        }
        smean[c] = (float)mean;
        sinv[c] = (float)invstd;
        /* in double: no cancellation when |mean| >> std */
        const double scale = (double)gamma[c] * invstd, shift = beta[c];
        for (int64_t b = 0; b < N; b++) {
            const float *xp = x + (b * C + c) * S;
            float *yp = y + (b * C + c) * S;
            for (int64_t k = 0; k < S; k++) yp[k] = (float)(((double)xp[k] - mean) * scale + shift);
        }
    }
}

static void bn_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, m = N * S;
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]);
    const float *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const float *dy = dout[0];
    float *dx = din[0], *dgamma = din[1], *dbeta = din[2];
    const int training = rt->training;
#pragma omp parallel for schedule(static) if (N * C * S > 16384)
    for (int64_t c = 0; c < C; c++) {
        const double mean = smean[c], invstd = sinv[c];
        double sdy = 0.0, sdyxh = 0.0;
        for (int64_t b = 0; b < N; b++) {
            const float *xp = x + (b * C + c) * S, *dyp = dy + (b * C + c) * S;
            for (int64_t k = 0; k < S; k++) {
                sdy += dyp[k];
                sdyxh += (double)dyp[k] * (((double)xp[k] - mean) * invstd);
            }
        }
        if (dgamma) dgamma[c] = (float)sdyxh;
        if (dbeta) dbeta[c] = (float)sdy;
        if (!dx) continue;
        const double gi = (double)gamma[c] * invstd;
        if (training) {
            /* dx = gi * (dy - sdy/m - xh * sdyxh/m) */
            const double a = sdy / (double)m, bcoef = sdyxh / (double)m;
            for (int64_t b = 0; b < N; b++) {
                const float *xp = x + (b * C + c) * S, *dyp = dy + (b * C + c) * S;
                float *dxp = dx + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) {
                    double xh = ((double)xp[k] - mean) * invstd;
                    dxp[k] = (float)(gi * ((double)dyp[k] - a - xh * bcoef));
                }
            }
        } else {
            const float fgi = (float)gi;
            for (int64_t b = 0; b < N; b++) {
                const float *dyp = dy + (b * C + c) * S;
                float *dxp = dx + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) dxp[k] = dyp[k] * fgi;
            }
        }
    }
}

const kn_op kn_op_batchnorm = {
    .name = "batchnorm",
    .infer = bn_infer,
    .flops_fwd = bn_flops,
    .flops_bwd = bn_flops_bwd,
    .bwd_reads_in = 0x3,  /* x, gamma */
    .bwd_reads_out = 0x6, /* saved mean, invstd */
    .diff_inputs = 0x7,   /* x, gamma, beta */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, bn_forward, bn_backward}},
};
