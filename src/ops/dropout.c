/* dropout: attrs f[0]=p in [0, 1). outputs: y; out1 the keep mask (u8, same shape).
 * Training: element k is kept iff
 *   kn_hash_uniform(seed ^ (0x9E37 * (node index + 1)), step * numel + k) >= p,
 * and y = x * mask / (1 - p). The mask depends only on (seed, node, step, k), never
 * on the thread count. Evaluation: y = x.
 * Backward reads the mask: dx = dy * mask / (1 - p). */
#include "graph/graph.h"

static int dropout_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "dropout takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "dropout expects a float32 input, got an integer tensor");
    double p = n->a.f[0];
    if (!(p >= 0.0 && p < 1.0))
        return kn_err(ctx, KN_ERR_SHAPE, "dropout probability must be in [0, 1), got %g", p);
    if (kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 || kn_g_declare_out(g, n, 1, KN_U8, x->shape) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double dropout_flops(const kn_graph *g, const kn_node *n) {
    return (g->training ? 10.0 : 0.0) * (double)kn_numel(g, n->in[0]);
}
static double dropout_flops_bwd(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_dropout = {
    .id = KN_OP_DROPOUT,
    .name = "dropout",
    .infer = dropout_infer,
    .flops_fwd = dropout_flops,
    .flops_bwd = dropout_flops_bwd,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x2, /* mask */
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
};
