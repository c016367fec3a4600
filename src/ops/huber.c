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

#include "graph/graph.h"

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

static double huber_flops(const kn_graph *g, const kn_node *n) { return 4.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_huber = {
    .id = KN_OP_HUBER,
    .name = "huber",
    .infer = huber_infer,
    .flops_fwd = huber_flops,
    .flops_bwd = huber_flops,
    .bwd_reads_in = 0x3, /* pred, target */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
};
