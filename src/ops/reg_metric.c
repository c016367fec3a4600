/* Regression metrics (forward only: no gradient flows through them): mae, rmse, r2
 * (one table).
 *   inputs: pred, target float32 of the same shape (any rank, non-empty).
 *   output: per-batch sufficient statistics, float32, computed in double (d = pred -
 *           target, y = target, n = numel):
 *     mae:  stats[2] = (sum |d|, n)       batch MAE  = sum |d| / n
 *     rmse: stats[2] = (sum d^2, n)       batch RMSE = sqrt(sum d^2 / n)
 *     r2:   stats[4] = (SSE = sum d^2, n, mean(y), M2 = sum (y - mean(y))^2)
 *                                         batch R^2  = 1 - SSE / M2
 *   Over an evaluation set, MAE and RMSE sum both statistics over batches (in double)
 *   and divide at the end (RMSE = sqrt(sum SSE / sum n): not a mean of batch RMSEs). R^2
 *   cannot be averaged over batches either: it is 1 - SSE / SST with SST the target's
 *   sum of squared deviations about the mean of the whole set; the batches' (n, mean,
 *   M2) are merged exactly (Chan et al.'s pairwise update, in double: with
 *   delta = mean_b - mean_a, M2 = M2_a + M2_b + delta^2 n_a n_b / n), which is
 *   SST = sum y^2 - (sum y)^2 / n without its cancellation (raw sums of y^2 in float32
 *   would lose the variance of a target far from 0). ops/metric.h does all of this:
 *   kn_metric_add(kind, acc, stats) per batch, kn_metric_finish(kind, acc) at the end.
 *   n is exact in float32 up to 2^24 elements per batch.
 * Sums run over fixed blocks of RM_BLOCK elements (partials in double, in a scratch
 * buffer) added in block order (r2: a second pass for M2 about the batch mean): the
 * statistics do not depend on the thread count. */
#include "graph/graph.h"

static int rm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    const char *nm = n->op->name;
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "%s takes a prediction and a target (2 inputs), got %d", nm, n->nin);
    const kn_value *p = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&p->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a prediction and a target of the same shape, got %s and %s", nm,
                      kn_shape_str(&p->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (p->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects float32 inputs, got an integer tensor", nm);
    if (kn_shape_numel(&p->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a non-empty prediction", nm);
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(n->op->id == KN_OP_R2 ? 4 : 2)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double rm_flops(const kn_graph *g, const kn_node *n) {
    return (n->op->id == KN_OP_R2 ? 7.0 : 3.0) * (double)kn_numel(g, n->in[0]);
}
static double rm_flops_bwd(const kn_graph *g, const kn_node *n) {
    (void)g, (void)n;
    return 0.0;
}
#define RM_DEF(sym, ID, nm)                                                                 \
    const kn_op sym = {                                                                     \
        .id = ID,                                                                           \
        .name = nm,                                                                         \
        .infer = rm_infer,                                                                  \
        .flops_fwd = rm_flops,                                                              \
        .flops_bwd = rm_flops_bwd,                                                          \
        .diff_inputs = 0,                                                                   \
    };

RM_DEF(kn_op_mae, KN_OP_MAE, "mae")
RM_DEF(kn_op_rmse, KN_OP_RMSE, "rmse")
RM_DEF(kn_op_r2, KN_OP_R2, "r2")
