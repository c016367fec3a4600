/* The six activations, any rank, one float32 input, output of the same shape, from one
 * table (KN_ACTIVATIONS, ops/activation.h): each row is the scalar forward y = f(x), the scalar
 * backward dx = f'(dy, v) with v the input x or the output y (whichever the backward
 * reads), the FLOP counts per element, the sizes above which a loop runs in parallel,
 * and the op's flags.
 *   relu:       y = max(x, 0).                       dx = dy where y > 0, else 0 (reads y)
 *   leaky_relu: y = x if x > 0 else slope * x;       attrs: f[0] = negative slope (the
 *               layer's default is 0.01). dx = dy or slope * dy (reads x: slope may be <= 0)
 *   gelu:       y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form (PyTorch's
 *               default).                            dx = dy (Phi(x) + x phi(x)) (reads x)
 *   silu:       y = x sigmoid(x).   with s = sigmoid(x), dx = dy s (1 + x (1 - s)) (reads x)
 *   tanh:       y = tanh(x).                         dx = dy (1 - y^2) (reads y)
 *   sigmoid:    y = 1 / (1 + exp(-x)).               dx = dy y (1 - y) (reads y)
 * Every backward may write dx over dy (bwd_inplace: elementwise). The model builder's
 * table of activations (`activation = ...` and the activation layers) is
 * kn_activations (ops/activation.h). */
#include <string.h>

#include "graph/graph.h"
#include "ops/activation.h"

#define ACT_READS_IN_IN 0x1
#define ACT_READS_IN_OUT 0
#define ACT_READS_OUT_IN 0
#define ACT_READS_OUT_OUT 0x1

static int act_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", n->op->name, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", n->op->name);
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

#define ACT_DEFINE(tag, ID, opname, READS, FF, FB, PF, PB, SLOPE, FLAGS)                                        \
    static double tag##_flops(const kn_graph *g, const kn_node *n) { return FF * (double)kn_numel(g, n->in[0]); } \
    static double tag##_flops_bwd(const kn_graph *g, const kn_node *n) { return FB * (double)kn_numel(g, n->in[0]); } \
    const kn_op kn_op_##opname = {                                                                       \
        .id = KN_OP_##ID,                                                                                \
        .name = #opname,                                                                                 \
        .flags = FLAGS,                                                                                  \
        .infer = act_infer,                                                                              \
        .flops_fwd = tag##_flops,                                                                        \
        .flops_bwd = tag##_flops_bwd,                                                                    \
        .bwd_reads_in = ACT_READS_IN_##READS,                                                            \
        .bwd_reads_out = ACT_READS_OUT_##READS,                                                          \
        .diff_inputs = 0x1,                                                                              \
        .bwd_inplace = 0x1,                                                                              \
    };

KN_ACTIVATIONS(ACT_DEFINE)

#define ACT_ROW(tag, ID, opname, READS, FF, FB, PF, PB, SLOPE, FLAGS) {#opname, &kn_op_##opname, SLOPE},
const kn_activation kn_activations[] = {KN_ACTIVATIONS(ACT_ROW){NULL, NULL, 0}};

const kn_activation *kn_activation_find(const char *name) {
    for (const kn_activation *a = kn_activations; a->name; a++)
        if (!strcmp(a->name, name)) return a;
    return NULL;
}
