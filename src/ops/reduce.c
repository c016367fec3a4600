/* Reductions over a set of axes: sum, mean, max.
 *   input x float32, any rank; attrs: i[0] = the axes as a bitmask (bit k: axis k;
 *   0: every axis), i[1] = keepdim (1: reduced axes stay as size 1; 0: they are dropped,
 *   and a reduction over every axis gives shape [1]).
 *   sum:  y = sum over the axes (in double, row-major order)   dx = dy broadcast
 *   mean: y = sum / count                                       dx = dy / count broadcast
 *   max:  y = the largest element (NaN if any is NaN); saved output 1 (int32, y's shape)
 *         is its position among the reduced elements, the first of equal maxima, and
 *         dx = dy there, 0 elsewhere (PyTorch's max(dim) routes the gradient to one
 *         index; amax would share it between ties). */
#include <stdint.h>

#include "graph/graph.h"
#include "ops/nd.h"

static int red_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    const char *nm = n->op->name;
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", nm, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", nm);
    const int nd = x->shape.nd;
    if (n->a.i[0] < 0 || n->a.i[0] >= (1ll << nd))
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s: the axes (attribute 0) are a bitmask of the %d axes of input %s (1 to %lld, or 0 for all), "
                      "got %lld",
                      nm, nd, kn_shape_str(&x->shape, a, sizeof a), (1ll << nd) - 1, (long long)n->a.i[0]);
    if (n->a.i[1] != 0 && n->a.i[1] != 1)
        return kn_err(ctx, KN_ERR_SHAPE, "%s: keepdim (attribute 1) is 0 or 1, got %lld", nm, (long long)n->a.i[1]);
    const unsigned mask = n->a.i[0] ? (unsigned)n->a.i[0] : (1u << nd) - 1u;
    kn_shape y = {0, {0}};
    for (int k = 0; k < nd; k++) {
        if (!(mask >> k & 1u)) y.d[y.nd++] = x->shape.d[k];
        else if (n->a.i[1]) y.d[y.nd++] = 1;
    }
    if (y.nd == 0) y = kn_shape1(1);
    if (n->op->id == KN_OP_MAX && kn_shape_numel(&x->shape) / kn_shape_numel(&y) > INT32_MAX)
        return kn_err(ctx, KN_ERR_SHAPE, "max over more than 2^31 - 1 elements per result (input %s): its argmax is int32",
                      kn_shape_str(&x->shape, a, sizeof a));
    if (kn_g_declare_out(g, n, 0, KN_F32, y) < 0) return KN_ERR_NOMEM;
    if (n->op->id == KN_OP_MAX && kn_g_declare_out(g, n, 1, KN_I32, y) < 0) return KN_ERR_NOMEM;
    return KN_OK;
}

static double red_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

#define RED_DEF(sym, ID, nm, reads_out)                                                                    \
    const kn_op sym = {                                                                                    \
        .id = ID,                                                                                          \
        .name = nm,                                                                                        \
        .infer = red_infer,                                                                                \
        .flops_fwd = red_flops,                                                                            \
        .flops_bwd = red_flops,                                                                            \
        .bwd_reads_in = 0,                                                                                 \
        .bwd_reads_out = reads_out,                                                                        \
        .diff_inputs = 0x1,                                                                                \
    };

RED_DEF(kn_op_sum, KN_OP_SUM, "sum", 0)
RED_DEF(kn_op_mean, KN_OP_MEAN, "mean", 0)
RED_DEF(kn_op_max, KN_OP_MAX, "max", 0x2) /* the argmax */
