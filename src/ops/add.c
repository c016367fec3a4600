/* add: y = a + b, two float32 tensors of the same shape (a residual connection).
 * Backward: da = dy, db = dy. */
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int add_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "add takes two inputs, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]], *z = &g->v[n->in[1]];
    if (!kn_shape_eq(&x->shape, &z->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "add expects two inputs of the same shape, got %s and %s",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    if (x->dtype != KN_F32 || z->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "add expects float32 inputs, got an integer tensor");
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double add_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

static void add_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *a = kn_ptr(g, n->in[0]), *b = kn_ptr(g, n->in[1]);
    float *y = kn_ptr(g, n->out[0]);
    const int64_t m = kn_numel(g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) y[k] = a[k] + b[k];
}

static void add_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    const size_t bytes = (size_t)kn_numel(rt->g, n->in[0]) * sizeof(float);
    for (int i = 0; i < 2; i++)
        if (din[i] && din[i] != dout[0]) memcpy(din[i], dout[0], bytes);
}

KN_ISA_KERNELS(add, add_forward, add_backward)

KN_OP_DEF(kn_op_add) = {
    .name = "add",
    .infer = add_infer,
    .flops_fwd = add_flops,
    .flops_bwd = add_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(add), KN_ISA_BWD(add)}},
};
