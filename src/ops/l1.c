/* l1: loss[1] = mean |pred - target| over all elements (PyTorch's F.l1_loss, reduction
 * "mean"); pred and target float32 of the same shape.
 * Backward, g = dloss / numel: dpred = g sign(pred - target) (0 where they are equal, as
 * PyTorch's sign), dtarget = -dpred.
 * The sum runs over fixed blocks of L1_BLOCK elements (partials in double, in a scratch
 * buffer) added in block order: the loss does not depend on the thread count. */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

#define L1_BLOCK 4096

static int l1_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "l1 takes a prediction and a target (2 inputs), got %d", n->nin);
    const kn_value *p = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&p->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "l1 expects a prediction and a target of the same shape, got %s and %s",
                      kn_shape_str(&p->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (p->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "l1 expects float32 inputs, got an integer tensor");
    if (kn_shape_numel(&p->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "l1 expects a non-empty prediction");
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static int l1_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + L1_BLOCK - 1) / L1_BLOCK) * sizeof(double);
    return KN_OK;
}

static double l1_flops(const kn_graph *g, const kn_node *n) { return 3.0 * (double)kn_numel(g, n->in[0]); }

static void l1_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + L1_BLOCK - 1) / L1_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * L1_BLOCK < m ? (b + 1) * L1_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * L1_BLOCK; k < k1; k++) s += fabs((double)p[k] - (double)t[k]);
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void l1_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_numel(g, n->in[0]);
    const float scale = (float)((double)dout[0][0] / (double)m);
    float *dp = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const float d = p[k] - t[k];
        const float v = d > 0 ? scale : d < 0 ? -scale : d == 0 ? 0.0f : NAN;
        if (dp) dp[k] = v;
        if (dt) dt[k] = -v;
    }
}

KN_ISA_KERNELS(l1, l1_forward, l1_backward)

KN_OP_DEF(kn_op_l1) = {
    .name = "l1",
    .infer = l1_infer,
    .flops_fwd = l1_flops,
    .flops_bwd = l1_flops,
    .bwd_reads_in = 0x3, /* pred, target */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
    .kernels = {[KN_BACKEND_CPU] = {l1_prepare, NULL, KN_ISA_FWD(l1), KN_ISA_BWD(l1)}},
};
