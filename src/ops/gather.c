/* gather: embedding lookup, y[p, :] = table[idx[p], :].
 *   inputs: table float32 (V, D); indices int32 of any shape S (rank <= 4).
 *   output: (S..., D).
 * An index outside [0, V) cannot be reported at run time: its output row is NaN and it
 * adds nothing to the gradient (as softmax_ce does with a bad label).
 * Backward (to the table only): dtable = 0, then dy's rows are added into the rows they
 * were read from, in index order (a scatter-add). Threads split the columns, so every
 * element's sum runs in the same order whatever the thread count: the same bits. */
#include "graph/graph.h"
#include "ops/nd.h"

static int gather_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "gather takes a table and indices (2 inputs), got %d", n->nin);
    const kn_value *t = &g->v[n->in[0]], *ix = &g->v[n->in[1]];
    if (t->dtype != KN_F32 || t->shape.nd != 2)
        return kn_err(ctx, KN_ERR_SHAPE, "gather expects a float32 table [rows, dim], got %s%s",
                      kn_shape_str(&t->shape, a, sizeof a), t->dtype != KN_F32 ? " of integers" : "");
    if (ix->dtype != KN_I32)
        return kn_err(ctx, KN_ERR_SHAPE, "gather expects int32 indices, got %s",
                      ix->dtype == KN_F32 ? "float32" : "uint8");
    if (ix->shape.nd > KN_MAX_DIMS - 1)
        return kn_err(ctx, KN_ERR_SHAPE, "gather: indices %s have more than %d dims (the output adds one)",
                      kn_shape_str(&ix->shape, b, sizeof b), KN_MAX_DIMS - 1);
    kn_shape y = ix->shape;
    y.d[y.nd++] = t->shape.d[1];
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double gather_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}
static double gather_flops_bwd(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->out[0]); }

const kn_op kn_op_gather = {
    .id = KN_OP_GATHER,
    .name = "gather",
    .infer = gather_infer,
    .flops_fwd = gather_flops,
    .flops_bwd = gather_flops_bwd,
    .bwd_reads_in = 0x2, /* the indices */
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,  /* the table only */
};
