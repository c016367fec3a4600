/* leaky_relu: y = x if x > 0 else slope * x, any rank. attrs: f[0] = negative slope
 * (the layer's default is 0.01). Backward reads the input (the slope may be <= 0). */
#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int lrelu_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "leaky_relu takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "leaky_relu expects a float32 input, got an integer tensor");
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double lrelu_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

static void lrelu_forward(const kn_node *n, kn_rt *rt) {
    const float *x = kn_ptr(rt->g, n->in[0]);
    float *y = kn_ptr(rt->g, n->out[0]);
    const float s = (float)n->a.f[0];
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) y[k] = x[k] > 0.0f ? x[k] : s * x[k];
}

static void lrelu_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    const float *x = kn_ptr(rt->g, n->in[0]), *dy = dout[0];
    float *dx = din[0];
    const float s = (float)n->a.f[0];
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) dx[k] = x[k] > 0.0f ? dy[k] : s * dy[k];
}

KN_ISA_KERNELS(lrelu, lrelu_forward, lrelu_backward)

KN_OP_DEF(kn_op_leaky_relu) = {
    .name = "leaky_relu",
    .infer = lrelu_infer,
    .flops_fwd = lrelu_flops,
    .flops_bwd = lrelu_flops,
    .bwd_reads_in = 0x1, /* x */
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(lrelu), KN_ISA_BWD(lrelu)}},
};
