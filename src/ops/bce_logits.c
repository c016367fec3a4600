/* bce_logits: binary cross-entropy with logits, mean over all elements (PyTorch's
 * F.binary_cross_entropy_with_logits(x, t, pos_weight=pw), reduction "mean").
 * inputs: logits x float32 (any shape), targets t float32 of the same shape (values in
 *         [0, 1]: hard 0/1 labels or probabilities; not checked), optional pos_weight
 *         float32 [C] (C = x's last dim, or 1), broadcast over the last axis: the weight
 *         of the positive term of class c (a constant: no gradient flows to it).
 * outputs: loss[1] = mean_k l_k with, numerically stable (softplus(z) = log(1 + e^z) as
 *          max(z, 0) + log1p(e^-|z|), in double; lw = 1 + (pw - 1) t, lw = 1 without pw):
 *              l = (1 - t) x + lw softplus(-x)      (= -[pw t log s(x) + (1 - t) log(1 - s(x))])
 * Backward, with g = dloss / numel:
 *     dx = g ((1 - t) - lw (1 - s(x)))    (= g (s(x) - t) without pw)
 *     dt = g ((pw - 1) softplus(-x) - x)  (= -g x without pw)
 * The sum runs over fixed blocks of BCE_BLOCK elements (partials in double, in a scratch
 * buffer) added in block order: the loss does not depend on the thread count. */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

#define BCE_BLOCK 4096

static int bce_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2 && n->nin != 3)
        return kn_err(ctx, KN_ERR_SHAPE, "bce_logits takes logits, targets and an optional pos_weight (2 or 3 inputs), got %d",
                      n->nin);
    const kn_value *x = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&x->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "bce_logits expects logits and targets of the same shape, got %s and %s",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (x->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "bce_logits expects float32 logits and targets (targets in [0, 1]), got an integer tensor");
    if (kn_shape_numel(&x->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "bce_logits expects non-empty logits");
    if (n->nin == 3) {
        const kn_value *w = &g->v[n->in[2]];
        const int64_t C = x->shape.d[x->shape.nd - 1];
        if (w->dtype != KN_F32 || w->shape.nd != 1 || (w->shape.d[0] != C && w->shape.d[0] != 1))
            return kn_err(ctx, KN_ERR_SHAPE, "bce_logits: pos_weight (input 2) must be a float32 [%lld] (the logits' last dim) or [1], got %s",
                          (long long)C, kn_shape_str(&w->shape, a, sizeof a));
    }
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static int bce_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + BCE_BLOCK - 1) / BCE_BLOCK) * sizeof(double);
    return KN_OK;
}

static double bce_flops(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }

static inline double bce_softplus(double z) { return (z > 0 ? z : 0.0) + log1p(exp(-fabs(z))); }
static inline double bce_sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    const double e = exp(z);
    return e / (1.0 + e);
}

/* the positive weight of element k: pw[k % C] (C = 1 or the last dim), 1 without pw */
static const float *bce_pw(const kn_graph *g, const kn_node *n, int64_t *C) {
    if (n->nin < 3) {
        *C = 1;
        return NULL;
    }
    *C = kn_numel(g, n->in[2]);
    return kn_ptr(g, n->in[2]);
}

static void bce_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *x = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    int64_t C;
    const float *pw = bce_pw(g, n, &C);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + BCE_BLOCK - 1) / BCE_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * BCE_BLOCK < m ? (b + 1) * BCE_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * BCE_BLOCK; k < k1; k++) {
            const double xk = (double)x[k], tk = (double)t[k];
            const double lw = pw ? 1.0 + ((double)pw[k % C] - 1.0) * tk : 1.0;
            s += (1.0 - tk) * xk + lw * bce_softplus(-xk);
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void bce_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *x = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    int64_t C;
    const float *pw = bce_pw(g, n, &C);
    const int64_t m = kn_numel(g, n->in[0]);
    const double gs = (double)dout[0][0] / (double)m;
    float *dx = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const double xk = (double)x[k], tk = (double)t[k], p = pw ? (double)pw[k % C] : 1.0;
        if (dx) dx[k] = (float)(gs * ((1.0 - tk) - (1.0 + (p - 1.0) * tk) * (1.0 - bce_sigmoid(xk))));
        if (dt) dt[k] = (float)(gs * ((p - 1.0) * bce_softplus(-xk) - xk));
    }
}

KN_ISA_KERNELS(bce, bce_forward, bce_backward)

KN_OP_DEF(kn_op_bce_logits) = {
    .name = "bce_logits",
    .infer = bce_infer,
    .flops_fwd = bce_flops,
    .flops_bwd = bce_flops,
    .bwd_reads_in = 0x7, /* logits, targets, pos_weight */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,  /* logits and targets */
    .kernels = {[KN_BACKEND_CPU] = {bce_prepare, NULL, KN_ISA_FWD(bce), KN_ISA_BWD(bce)}},
};
