/* softmax and log_softmax over one axis.
 *   input x float32, any rank; attrs: i[0] = the axis (negative: from the end, -1 the last).
 *   softmax:     y = e / sum(e), e = exp(x - max)   dx = y * (dy - sum(dy * y))
 *   log_softmax: y = x - lse                        dx = dy - exp(y) * sum(dy)
 * with lse = max + log(sum(exp(x - max))) over the axis; exp in float, the sums and the
 * log in double. Backward reads
 * y only; dx may overwrite dy (each line's sum is taken before it is written). */
#include "graph/graph.h"
#include "ops/nd.h"

static int sm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char b[64];
    const char *nm = n->op->name;
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", nm, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", nm);
    const int64_t a = n->a.i[0];
    if (a < -x->shape.nd || a >= x->shape.nd)
        return kn_err(ctx, KN_ERR_SHAPE, "%s: axis must be between %d and %d for input %s, got %lld", nm, -x->shape.nd,
                      x->shape.nd - 1, kn_shape_str(&x->shape, b, sizeof b), (long long)a);
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double sm_flops(const kn_graph *g, const kn_node *n) { return 5.0 * (double)kn_numel(g, n->in[0]); }
static double sm_flops_bwd(const kn_graph *g, const kn_node *n) { return 4.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_softmax = {
    .id = KN_OP_SOFTMAX,
    .name = "softmax",
    .infer = sm_infer,
    .flops_fwd = sm_flops,
    .flops_bwd = sm_flops_bwd,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x1, /* y */
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,
};

const kn_op kn_op_log_softmax = {
    .id = KN_OP_LOG_SOFTMAX,
    .name = "log_softmax",
    .infer = sm_infer,
    .flops_fwd = sm_flops,
    .flops_bwd = sm_flops_bwd,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x1, /* y */
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,
};
