/* gelu: y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form (PyTorch's
 * default), any rank. Backward reads x: dx = dy * (Phi(x) + x * phi(x)). */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int gelu_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "gelu takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "gelu expects a float32 input, got an integer tensor");
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double gelu_flops(const kn_graph *g, const kn_node *n) { return 20.0 * (double)kn_numel(g, n->in[0]); }
static double gelu_flops_bwd(const kn_graph *g, const kn_node *n) { return 30.0 * (double)kn_numel(g, n->in[0]); }

#define GELU_RSQRT2 0.70710678118654752440f
#define GELU_RSQRT2PI 0.39894228040143267794f

static void gelu_forward(const kn_node *n, kn_rt *rt) {
    const float *x = kn_ptr(rt->g, n->in[0]);
    float *y = kn_ptr(rt->g, n->out[0]);
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 16384)
    for (int64_t k = 0; k < m; k++) y[k] = 0.5f * x[k] * (1.0f + erff(x[k] * GELU_RSQRT2));
}

static void gelu_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    const float *x = kn_ptr(rt->g, n->in[0]), *dy = dout[0];
    float *dx = din[0];
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 16384)
    for (int64_t k = 0; k < m; k++) {
        float v = x[k];
        float cdf = 0.5f * (1.0f + erff(v * GELU_RSQRT2));
        float pdf = GELU_RSQRT2PI * expf(-0.5f * v * v);
        dx[k] = dy[k] * (cdf + v * pdf);
    }
}

KN_ISA_KERNELS(gelu, gelu_forward, gelu_backward)

KN_OP_DEF(kn_op_gelu) = {
    .name = "gelu",
    .infer = gelu_infer,
    .flops_fwd = gelu_flops,
    .flops_bwd = gelu_flops_bwd,
    .bwd_reads_in = 0x1, /* x */
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(gelu), KN_ISA_BWD(gelu)}},
};
