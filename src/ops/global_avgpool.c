/* global_avgpool: y[N,C] = mean of each H x W plane of x[N,C,H,W] (summed in double).
 * Backward: dx = dy / (H W) over the plane (reads nothing). */
#include "graph/graph.h"

static int gap_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool takes one input, got %d", n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "global_avgpool expects a 4-D input [batch, channels, height, width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool expects a float32 input, got an integer tensor");
    if (x->d[2] * x->d[3] < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool expects a non-empty image, got %s",
                      kn_shape_str(x, a, sizeof a));
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape2(x->d[0], x->d[1])) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double gap_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_global_avgpool = {
    .id = KN_OP_GLOBAL_AVGPOOL,
    .name = "global_avgpool",
    .infer = gap_infer,
    .flops_fwd = gap_flops,
    .flops_bwd = gap_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
};
