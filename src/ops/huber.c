/* huber: loss[1] = mean over all elements of PyTorch's F.huber_loss(pred, target,
 * delta=f[0]) (reduction "mean"); pred and target float32 of the same shape.
 * attrs: f[0] = delta (> 0; PyTorch's default is 1).
 * With d = pred - target (in double): l = d^2 / 2 where |d| < delta, else
 * delta (|d| - delta / 2).
 * Backward, g = dloss / numel: dpred = g d where |d| <= delta, else g delta sign(d)
 * (the two agree at |d| = delta); dtarget = -dpred.
 * The sum runs over fixed blocks of HUBER_BLOCK elements (partials in double, in a
 * scratch buffer) added in block order: the loss does not depend on the thread count. */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

#define HUBER_BLOCK 4096

static int huber_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "huber takes a prediction and a target (2 inputs), got %d", n->nin);
    const kn_value *p = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&p->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "huber expects a prediction and a target of the same shape, got %s and %s",
                      kn_shape_str(&p->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (p->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "huber expects float32 inputs, got an integer tensor");
    if (kn_shape_numel(&p->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "huber expects a non-empty prediction");
    if (!(n->a.f[0] > 0.0 && isfinite(n->a.f[0])))
        return kn_err(ctx, KN_ERR_SHAPE, "huber: delta (float attribute 0) must be > 0 (PyTorch's default is 1), got %g",
                      n->a.f[0]);
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static int huber_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + HUBER_BLOCK - 1) / HUBER_BLOCK) * sizeof(double);
    return KN_OK;
}

static double huber_flops(const kn_graph *g, const kn_node *n) { return 4.0 * (double)kn_numel(g, n->in[0]); }

static void huber_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const double delta = n->a.f[0];
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + HUBER_BLOCK - 1) / HUBER_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * HUBER_BLOCK < m ? (b + 1) * HUBER_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * HUBER_BLOCK; k < k1; k++) {
            const double d = (double)p[k] - (double)t[k], z = fabs(d);
            s += z < delta ? 0.5 * d * d : delta * (z - 0.5 * delta);
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void huber_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const double delta = n->a.f[0];
    const int64_t m = kn_numel(g, n->in[0]);
    const double gs = (double)dout[0][0] / (double)m;
    float *dp = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const double d = (double)p[k] - (double)t[k];
        const double c = d > delta ? delta : d < -delta ? -delta : d;
        const float v = (float)(gs * c);
        if (dp) dp[k] = v;
        if (dt) dt[k] = -v;
    }
}

KN_ISA_KERNELS(huber, huber_forward, huber_backward)

KN_OP_DEF(kn_op_huber) = {
    .name = "huber",
    .infer = huber_infer,
    .flops_fwd = huber_flops,
    .flops_bwd = huber_flops,
    .bwd_reads_in = 0x3, /* pred, target */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
    .kernels = {[KN_BACKEND_CPU] = {huber_prepare, NULL, KN_ISA_FWD(huber), KN_ISA_BWD(huber)}},
};
