/* maxpool2d: y[N,C,OH,OW] = max over kh x kw windows of x[N,C,H,W].
 * attrs: i[0]=kh i[1]=kw i[2]=sh i[3]=sw i[4]=ph i[5]=pw.
 * PyTorch semantics: floor mode, OH = (H + 2 ph - kh) / sh + 1, padding acts as -inf,
 * padding at most half the kernel (so every window holds a real element), the first
 * maximum of a window wins ties, NaN propagates.
 * out1 (same shape as y) is the argmax, saved for the backward, which scatters dy into
 * those positions: the index of the maximum inside its window, (h - h0)*kw + (w - w0)
 * with (h0, w0) = (oh*sh - ph, ow*sw - pw) the window's corner, stored as uint8 when a
 * window has at most 256 positions (every usual pooling: a quarter of the memory of an
 * int32 index), else as int32.
 * x, y, argmax and the gradients may be channel-blocked (backend/cpu/layout.h): the
 * blocked kernels do the same per channel, vectorised over the B channels of a block. */
#include "graph/graph.h"
#include "ops/pool.h"
#include "ops/maxpool2d.h"

static int maxpool_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    kn_shape ys;
    int rc = kn_pool_shape(g, n, ctx, "maxpool2d", &ys);
    if (rc) return rc;
    if (kn_g_declare_out(g, n, 0, KN_F32, ys) < 0 || kn_g_declare_out(g, n, 1, narrow_index(n) ? KN_U8 : KN_I32, ys) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double maxpool_flops(const kn_graph *g, const kn_node *n) {
    return (double)kn_numel(g, n->out[0]) * (double)(n->a.i[0] * n->a.i[1]);
}
static double maxpool_flops_bwd(const kn_graph *g, const kn_node *n) {
    return (double)kn_numel(g, n->out[0]) + (double)kn_numel(g, n->in[0]);
}

const kn_op kn_op_maxpool2d = {
    .id = KN_OP_MAXPOOL2D,
    .name = "maxpool2d",
    .flags = KN_OPF_LAYOUT_PRESERVING,
    .infer = maxpool_infer,
    .flops_fwd = maxpool_flops,
    .flops_bwd = maxpool_flops_bwd,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x2, /* argmax */
    .diff_inputs = 0x1,
};
