/* mse: loss[1] = mean((pred - target)^2) over all elements; pred and target float32
 * of the same shape. Backward: dpred = 2 (pred - target) dloss / numel, dtarget = -dpred.
 * The sum runs over fixed blocks of MSE_BLOCK elements (partials in double, in a
 * scratch buffer) added in block order: the loss does not depend on the thread count. */
#include "backend/cpu/isa.h"
#include "graph/graph.h"

#define MSE_BLOCK 4096

static int mse_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "mse takes a prediction and a target (2 inputs), got %d", n->nin);
    const kn_value *p = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&p->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "mse expects a prediction and a target of the same shape, got %s and %s",
                      kn_shape_str(&p->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (p->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "mse expects float32 inputs, got an integer tensor");
    if (kn_shape_numel(&p->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "mse expects a non-empty prediction");
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static int mse_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + MSE_BLOCK - 1) / MSE_BLOCK) * sizeof(double);
    return KN_OK;
}

static double mse_flops(const kn_graph *g, const kn_node *n) { return 3.0 * (double)kn_numel(g, n->in[0]); }

static void mse_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + MSE_BLOCK - 1) / MSE_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * MSE_BLOCK < m ? (b + 1) * MSE_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * MSE_BLOCK; k < k1; k++) {
            double d = (double)p[k] - (double)t[k];
            s += d * d;
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void mse_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_numel(g, n->in[0]);
    const float scale = (float)(2.0 * (double)dout[0][0] / (double)m);
    float *dp = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        float v = (p[k] - t[k]) * scale;
        if (dp) dp[k] = v;
        if (dt) dt[k] = -v;
    }
}

KN_ISA_KERNELS(mse, mse_forward, mse_backward)

KN_OP_DEF(kn_op_mse) = {
    .name = "mse",
    .infer = mse_infer,
    .flops_fwd = mse_flops,
    .flops_bwd = mse_flops,
    .bwd_reads_in = 0x3, /* pred, target */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
    .kernels = {[KN_BACKEND_CPU] = {mse_prepare, NULL, KN_ISA_FWD(mse), KN_ISA_BWD(mse)}},
};
