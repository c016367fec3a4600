/* relu: y = max(x, 0), any rank.
 * Backward reads the output: dx = dy where y > 0 (same as x > 0), else 0. */
#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int relu_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "relu takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "relu expects a float32 input, got an integer tensor");
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double relu_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

static void relu_forward(const kn_node *n, kn_rt *rt) {
    const float *x = kn_ptr(rt->g, n->in[0]);
    float *y = kn_ptr(rt->g, n->out[0]);
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) y[k] = x[k] > 0.0f ? x[k] : 0.0f;
}

static void relu_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    const float *y = kn_ptr(rt->g, n->out[0]), *dy = dout[0];
    float *dx = din[0];
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) dx[k] = y[k] > 0.0f ? dy[k] : 0.0f;
}

KN_ISA_KERNELS(relu, relu_forward, relu_backward)

KN_OP_DEF(kn_op_relu) = {
    .name = "relu",
    .infer = relu_infer,
    .flops_fwd = relu_flops,
    .flops_bwd = relu_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x1, /* y */
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(relu), KN_ISA_BWD(relu)}},
};
