/* permute: y = x with its axes reordered (a transpose is a permute that swaps two axes).
 *   input x float32, rank d; attrs: i[0..d) = the permutation: output axis k is input
 *   axis i[k]. y.shape[k] = x.shape[i[k]].
 * Backward: dx = dy permuted back (the inverse permutation). */
#include "graph/graph.h"
#include "ops/nd.h"

static int perm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "permute takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "permute expects a float32 input, got an integer tensor");
    const int nd = x->shape.nd;
    unsigned seen = 0;
    kn_shape y = {nd, {0}};
    for (int k = 0; k < nd; k++) {
        const int64_t p = n->a.i[k];
        if (p < 0 || p >= nd || (seen >> p & 1u))
            return kn_err(ctx, KN_ERR_SHAPE,
                          "permute expects attributes 0..%d to be a permutation of the axes 0..%d of input %s; "
                          "attribute %d is %lld",
                          nd - 1, nd - 1, kn_shape_str(&x->shape, a, sizeof a), k, (long long)p);
        seen |= 1u << p;
        y.d[k] = x->shape.d[p];
    }
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double perm_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}

const kn_op kn_op_permute = {
    .id = KN_OP_PERMUTE,
    .name = "permute",
    .infer = perm_infer,
    .flops_fwd = perm_flops,
    .flops_bwd = perm_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
};
