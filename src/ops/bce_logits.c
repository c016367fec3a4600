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
#include "graph/graph.h"

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

static double bce_flops(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_bce_logits = {
    .id = KN_OP_BCE_LOGITS,
    .name = "bce_logits",
    .infer = bce_infer,
    .flops_fwd = bce_flops,
    .flops_bwd = bce_flops,
    .bwd_reads_in = 0x7, /* logits, targets, pos_weight */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,  /* logits and targets */
};
