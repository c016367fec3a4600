/* silu (swish): y = x * sigmoid(x), any rank.
 * Backward reads x: with s = sigmoid(x), dx = dy * s * (1 + x (1 - s)). */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int silu_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "silu takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "silu expects a float32 input, got an integer tensor");
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double silu_flops(const kn_graph *g, const kn_node *n) { return 5.0 * (double)kn_numel(g, n->in[0]); }
static double silu_flops_bwd(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }

static inline float silu_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

static void silu_forward(const kn_node *n, kn_rt *rt) {
    const float *x = kn_ptr(rt->g, n->in[0]);
    float *y = kn_ptr(rt->g, n->out[0]);
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 16384)
    for (int64_t k = 0; k < m; k++) y[k] = x[k] * silu_sigmoid(x[k]);
}

static void silu_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    const float *x = kn_ptr(rt->g, n->in[0]), *dy = dout[0];
    float *dx = din[0];
    int64_t m = kn_numel(rt->g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 16384)
    for (int64_t k = 0; k < m; k++) {
        float s = silu_sigmoid(x[k]);
        dx[k] = dy[k] * s * (1.0f + x[k] * (1.0f - s));
    }
}

KN_ISA_KERNELS(silu, silu_forward, silu_backward)

KN_OP_DEF(kn_op_silu) = {
    .name = "silu",
    .infer = silu_infer,
    .flops_fwd = silu_flops,
    .flops_bwd = silu_flops_bwd,
    .bwd_reads_in = 0x1, /* x */
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(silu), KN_ISA_BWD(silu)}},
};
