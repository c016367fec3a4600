/* Unary maths, one table: y = f(x) element-wise, float32, any rank.
 *   exp     y = e^x              dx = dy * y        (reads y)
 *   log     y = ln x             dx = dy / x        (reads x)
 *   sqrt    y = sqrt x           dx = dy * 0.5 / y  (reads y)
 *   rsqrt   y = 1 / sqrt x       dx = dy * -0.5 y^3 (reads y)
 *   neg     y = -x               dx = -dy
 *   square  y = x^2              dx = dy * 2x       (reads x)
 *   affine  y = f[0] * x + f[1]  dx = dy * f[0]     (scalar multiply and add)
 * Every backward is element-wise, so dx may overwrite dy (bwd_inplace). */
#include "graph/graph.h"

static int un_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", n->op->name, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", n->op->name);
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double un_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }
static double un_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * (double)kn_numel(g, n->in[0]); }

#define UNARY_DEF(ID, tag, reads_in, reads_out)                                                            \
    const kn_op kn_op_##tag = {                                                                            \
        .id = KN_OP_##ID,                                                                                  \
        .name = #tag,                                                                                      \
        .infer = un_infer,                                                                                 \
        .flops_fwd = un_flops,                                                                             \
        .flops_bwd = un_flops_bwd,                                                                         \
        .bwd_reads_in = reads_in,                                                                          \
        .bwd_reads_out = reads_out,                                                                        \
        .diff_inputs = 0x1,                                                                                \
        .bwd_inplace = 0x1,                                                                                \
    };

UNARY_DEF(EXP, exp, 0, 0x1)
UNARY_DEF(LOG, log, 0x1, 0)
UNARY_DEF(SQRT, sqrt, 0, 0x1)
UNARY_DEF(RSQRT, rsqrt, 0, 0x1)
UNARY_DEF(NEG, neg, 0, 0)
UNARY_DEF(SQUARE, square, 0x1, 0)
UNARY_DEF(AFFINE, affine, 0, 0)
