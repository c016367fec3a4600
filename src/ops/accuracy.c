/* Classification metrics (forward only: no gradient flows through them).
 * accuracy, topk_accuracy (one table):
 *   inputs: logits (..., K) float32 of rank >= 2, class axis last (as softmax_ce),
 *           labels (...) int32 = logits.shape[:-1].
 *   attrs:  topk_accuracy: i[0] = k, 1 <= k <= K. (accuracy is k = 1; it reads no attribute.)
 *   output: stats[2] float32 = (correct, count) over the R positions of this batch: count
 *           = R, correct = the positions whose label is among the k best classes. Batch
 *           accuracy = correct / count; over an evaluation set sum both over batches (in
 *           double: ops/metric.h, kn_metric_add / kn_metric_finish) and divide. Both are
 *           integers, exact in float32 up to 2^24 positions per batch.
 *   The rank of the label's class y in a row x is #{j : x_j > x_y} + #{j < y : x_j == x_y}
 *   (ties go to the lower class index, a NaN logit counts as larger than any number), and
 *   the position is correct when that rank is < k. For k = 1 that is argmax == label with
 *   torch.argmax's rule (the first of equal maxima; NaN is the maximum). For k > 1 it is
 *   label in torch.topk(x, k).indices whenever the k-th and (k+1)-th values differ
 *   (torch.topk's choice among ties is unspecified). A label outside [0, K) is never
 *   correct (softmax_ce makes the loss NaN for it instead).
 * Counts are integers summed exactly (int64), so the result does not depend on the
 * thread count. */
#include "graph/graph.h"

static int acc_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64], c[64];
    const char *nm = n->op->name;
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "%s takes logits and labels (2 inputs), got %d", nm, n->nin);
    const kn_value *lv = &g->v[n->in[0]], *yv = &g->v[n->in[1]];
    const kn_shape *l = &lv->shape, *y = &yv->shape;
    if (l->nd < 2 || l->d[l->nd - 1] < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects logits [..., classes] of rank >= 2 (class axis last), got %s", nm,
                      kn_shape_str(l, a, sizeof a));
    if (lv->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "%s expects float32 logits, got an integer tensor", nm);
    int same = y->nd == l->nd - 1;
    for (int k = 0; same && k < y->nd; k++) same = y->d[k] == l->d[k];
    if (!same) {
        kn_shape want = *l;
        want.nd--;
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects labels %s (the logits' shape without the class axis) for logits %s, got %s",
                      nm, kn_shape_str(&want, b, sizeof b), kn_shape_str(l, a, sizeof a), kn_shape_str(y, c, sizeof c));
    }
    if (yv->dtype != KN_I32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects int32 labels, got %s", nm, yv->dtype == KN_F32 ? "float32" : "uint8");
    if (kn_shape_numel(y) < 1) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a batch of at least one sample", nm);
    const int64_t K = l->d[l->nd - 1];
    if (n->op->id == KN_OP_TOPK_ACCURACY && (n->a.i[0] < 1 || n->a.i[0] > K))
        return kn_err(ctx, KN_ERR_SHAPE, "topk_accuracy: k (attribute 0) must be between 1 and the %lld classes, got %lld",
                      (long long)K, (long long)n->a.i[0]);
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(2)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double acc_flops(const kn_graph *g, const kn_node *n) { return 2.0 * (double)kn_numel(g, n->in[0]); }
static double acc_flops_bwd(const kn_graph *g, const kn_node *n) {
    (void)g, (void)n;
    return 0.0;
}

const kn_op kn_op_accuracy = {
    .id = KN_OP_ACCURACY,
    .name = "accuracy",
    .infer = acc_infer,
    .flops_fwd = acc_flops,
    .flops_bwd = acc_flops_bwd,
    .diff_inputs = 0,
};

const kn_op kn_op_topk_accuracy = {
    .id = KN_OP_TOPK_ACCURACY,
    .name = "topk_accuracy",
    .infer = acc_infer,
    .flops_fwd = acc_flops,
    .flops_bwd = acc_flops_bwd,
    .diff_inputs = 0,
};
