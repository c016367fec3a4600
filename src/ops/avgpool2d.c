/* avgpool2d: y[N,C,OH,OW] = mean over kh x kw windows of x[N,C,H,W].
 * attrs: i[0]=kh i[1]=kw i[2]=sh i[3]=sw i[4]=ph i[5]=pw i[6]=count_include_pad
 * (nonzero: divide by the window size clipped to the padded input, PyTorch's
 * default; zero: divide by the number of real elements in the window).
 * PyTorch semantics: floor mode, OH = (H + 2 ph - kh) / sh + 1, padding at most half
 * the kernel. Backward spreads dy / divisor over each window (reads nothing). */
#include "graph/graph.h"
#include "ops/pool.h"

static int avgpool_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    kn_shape ys;
    int rc = kn_pool_shape(g, n, ctx, "avgpool2d", &ys);
    if (rc) return rc;
    return kn_g_declare_out(g, n, 0, KN_F32, ys) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double avgpool_flops(const kn_graph *g, const kn_node *n) {
    return (double)kn_numel(g, n->out[0]) * (double)(n->a.i[0] * n->a.i[1] + 1);
}

const kn_op kn_op_avgpool2d = {
    .id = KN_OP_AVGPOOL2D,
    .name = "avgpool2d",
    .infer = avgpool_infer,
    .flops_fwd = avgpool_flops,
    .flops_bwd = avgpool_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
};
