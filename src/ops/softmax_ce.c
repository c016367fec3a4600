/* softmax_ce: softmax cross-entropy loss, with optional class weights and label
 * smoothing (PyTorch's F.cross_entropy(logits, labels, weight=w, label_smoothing=eps),
 * reduction "mean", no ignore_index).
 * inputs: logits (..., K) float32 of rank >= 2, labels (...) int32 = logits.shape[:-1]
 *         (one label per position: [N] for [N,K], [N,T] for [N,T,K]), optional
 *         weight [K] float32 (a constant: no gradient flows to it).
 *         The class axis is the LAST one (PyTorch's is axis 1: kiln's (N,T,K) logits
 *         are PyTorch's logits.permute(0,2,1) of shape (N,K,T)).
 * attrs:  f[0] = label smoothing eps, in [0, 1] (0: none).
 * outputs: loss[1]; out1 probs (..., K) = softmax over the last axis (saved).
 * With R positions r (the product of the leading dims), lse_r = log sum_k exp(x_rk)
 * (numerically stable, in double) and w = 1 when there is no weight input:
 *     l_r  = (1 - eps) w[y_r] (lse_r - x_r,y_r) + (eps / K) sum_k w[k] (lse_r - x_rk)
 *     loss = sum_r l_r / sum_r w[y_r]
 * which is PyTorch's: its weighted mean divides by sum_r w[y_r], and its smoothing term
 * (the weighted sum of -log p over the classes) is divided by the same sum when a weight
 * is given (by R without one, the same thing with w = 1).
 * Without weight and smoothing the loss is mean_r (lse_r - x_r,y_r), computed exactly as
 * before both existed (the same bits).
 * A label outside [0, K) cannot be reported at run time: its position's loss (and so the
 * mean) is NaN, and so is its gradient row.
 * Backward (to the logits only), with s = dloss / sum_r w[y_r] and S = sum_k w[k]:
 *     dx_rk = s ((1 - eps) w[y_r] (p_rk - [k = y_r]) + (eps / K) (S p_rk - w[k]))
 * (without weight and smoothing: (p_rk - [k = y_r]) dloss / R in float, as before).
 * Per-position losses go to a scratch buffer and are summed in position
 * order, so the loss does not depend on the thread count. */
#include "graph/graph.h"

static int sce_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64], c[64];
    if (n->nin != 2 && n->nin != 3)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce takes logits, labels and an optional class weight (2 or 3 inputs), got %d",
                      n->nin);
    const kn_value *lv = &g->v[n->in[0]], *yv = &g->v[n->in[1]];
    const kn_shape *l = &lv->shape, *y = &yv->shape;
    if (l->nd < 2 || l->d[l->nd - 1] < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects logits [..., classes] of rank >= 2 (class axis last), got %s",
                      kn_shape_str(l, a, sizeof a));
    if (lv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects float32 logits, got an integer tensor");
    int same = y->nd == l->nd - 1;
    for (int k = 0; same && k < y->nd; k++) same = y->d[k] == l->d[k];
    if (!same) {
        kn_shape want = *l;
        want.nd--;
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects labels %s (the logits' shape without the class axis) for logits %s, got %s",
                      kn_shape_str(&want, b, sizeof b), kn_shape_str(l, a, sizeof a), kn_shape_str(y, c, sizeof c));
    }
    if (yv->dtype != KN_I32)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects int32 labels, got %s",
                      yv->dtype == KN_F32 ? "float32" : "uint8");
    if (kn_shape_numel(y) < 1) return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects a batch of at least one sample");
    const int64_t K = l->d[l->nd - 1];
    if (n->nin == 3) {
        const kn_value *wv = &g->v[n->in[2]];
        if (wv->dtype != KN_F32 || wv->shape.nd != 1 || wv->shape.d[0] != K)
            return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce: the class weight (input 2) must be a float32 [%lld], got %s%s",
                          (long long)K, wv->dtype == KN_F32 ? "" : "an integer ", kn_shape_str(&wv->shape, a, sizeof a));
    }
    if (!(n->a.f[0] >= 0.0 && n->a.f[0] <= 1.0))
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce: label smoothing (float attribute 0) must be in [0, 1], got %g", n->a.f[0]);
    if (kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 || kn_g_declare_out(g, n, 1, KN_F32, *l) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double sce_flops(const kn_graph *g, const kn_node *n) { return 6.0 * (double)kn_numel(g, n->in[0]); }
static double sce_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_softmax_ce = {
    .id = KN_OP_SOFTMAX_CE,
    .name = "softmax_ce",
    .infer = sce_infer,
    .flops_fwd = sce_flops,
    .flops_bwd = sce_flops_bwd,
    .bwd_reads_in = 0x6,  /* labels, weight */
    .bwd_reads_out = 0x2, /* probs */
    .diff_inputs = 0x1,   /* logits only */
};
