/* slice: y = x[start:stop:step] on every axis (Python's rules, step >= 1).
 *   input x float32, rank d <= 5; attrs per axis k: i[3k] = start, i[3k+1] = stop,
 *   i[3k+2] = step; step 0 takes the axis whole (so all-zero attributes are the
 *   identity and slicing one axis sets only its three slots). Negative start/stop count
 *   from the end; both are clamped to [0, dim] as in Python. Every output axis must
 *   keep at least one element.
 * Backward: dx = 0 with dy written at the sliced positions. */
#include "graph/graph.h"
#include "ops/nd.h"
#include "ops/slice.h"

static int sl_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "slice takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "slice expects a float32 input, got an integer tensor");
    kn_shape y = x->shape;
    for (int k = 0; k < x->shape.nd; k++) {
        int64_t f, s, c;
        if (n->a.i[3 * k + 2] < 0)
            return kn_err(ctx, KN_ERR_SHAPE, "slice: the step of axis %d must be >= 1 (0: the whole axis), got %lld", k,
                          (long long)n->a.i[3 * k + 2]);
        sl_axis(&x->shape, &n->a, k, &f, &s, &c);
        if (c < 1)
            return kn_err(ctx, KN_ERR_SHAPE, "slice of input %s: axis %d [%lld:%lld:%lld] is empty",
                          kn_shape_str(&x->shape, a, sizeof a), k, (long long)n->a.i[3 * k], (long long)n->a.i[3 * k + 1],
                          (long long)n->a.i[3 * k + 2]);
        y.d[k] = c;
    }
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double sl_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}

const kn_op kn_op_slice = {
    .id = KN_OP_SLICE,
    .name = "slice",
    .infer = sl_infer,
    .flops_fwd = sl_flops,
    .flops_bwd = sl_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
};
