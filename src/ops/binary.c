/* Binary element-wise ops with NumPy broadcasting: add, sub, mul, div.
 *   y = a OP b, a and b float32 of any rank (<= 5) whose shapes broadcast (aligned from
 *   the right, each dim equal or 1); y has the broadcast shape.
 * One op per function, one table: the same shape rule, FLOP count and kernels.
 * `add` is also the residual connection of the model builder (nn/model.c): with equal
 * shapes its forward and backward are the loops it always had (same bits).
 * Backward (gradients are reduced, in double and a fixed order, over the axes along
 * which an input was broadcast):
 *   add: da = dy, db = dy        sub: da = dy, db = -dy
 *   mul: da = dy * b, db = dy * a
 *   div: da = dy / b, db = -dy * a / b^2
 * An input with the output's shape gets its gradient element-wise; a broadcast one from
 * the element-wise product in backward scratch (mul, div) or dy itself (add, sub). */
#include "graph/graph.h"
#include "ops/nd.h"

static int bin_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    const char *nm = n->op->name;
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "%s takes two inputs, got %d", nm, n->nin);
    const kn_value *x = &g->v[n->in[0]], *z = &g->v[n->in[1]];
    if (x->dtype != KN_F32 || z->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects float32 inputs, got an integer tensor", nm);
    kn_shape out;
    if (!nd_bcast_shape(&x->shape, &z->shape, &out))
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s expects two inputs of the same shape or shapes that broadcast (dims equal or 1, aligned "
                      "from the right), got %s and %s",
                      nm, kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    return kn_g_declare_out(g, n, 0, KN_F32, out) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double bin_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->out[0]); }
static double bin_flops_bwd(const kn_graph *g, const kn_node *n) { return 3.0 * (double)kn_numel(g, n->out[0]); }

#define BIN_DEF(sym, ID, tag, reads)                                                                       \
    const kn_op sym = {                                                                                    \
        .id = ID,                                                                                          \
        .name = #tag,                                                                                      \
        .infer = bin_infer,                                                                                \
        .flops_fwd = bin_flops,                                                                            \
        .flops_bwd = bin_flops_bwd,                                                                        \
        .bwd_reads_in = reads,                                                                             \
        .bwd_reads_out = 0,                                                                                \
        .diff_inputs = 0x3,                                                                                \
    };

BIN_DEF(kn_op_add, KN_OP_ADD, add, 0)
BIN_DEF(kn_op_sub, KN_OP_SUB, sub, 0)
BIN_DEF(kn_op_mul, KN_OP_MUL, mul, 0x3) /* a, b */
BIN_DEF(kn_op_div, KN_OP_DIV, div, 0x3) /* a, b */
