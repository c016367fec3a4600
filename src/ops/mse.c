/* mse: loss[1] = mean((pred - target)^2) over all elements; pred and target float32
 * of the same shape. Backward: dpred = 2 (pred - target) dloss / numel, dtarget = -dpred.
 * The sum runs over fixed blocks of MSE_BLOCK elements (partials in double, in a
 * scratch buffer) added in block order: the loss does not depend on the thread count. */
#include "graph/graph.h"

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

static double mse_flops(const kn_graph *g, const kn_node *n) { return 3.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_mse = {
    .id = KN_OP_MSE,
    .name = "mse",
    .infer = mse_infer,
    .flops_fwd = mse_flops,
    .flops_bwd = mse_flops,
    .bwd_reads_in = 0x3, /* pred, target */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
};
