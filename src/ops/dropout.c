/* dropout: attrs f[0]=p in [0, 1). outputs: y; out1 the keep mask (u8, same shape).
 * Training: element k is kept iff
 *   kn_hash_uniform(seed ^ (0x9E37 * (node index + 1)), step * numel + k) >= p,
 * and y = x * mask / (1 - p). The mask depends only on (seed, node, step, k), never
 * on the thread count. Evaluation: y = x.
 * Backward reads the mask: dx = dy * mask / (1 - p). */
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int dropout_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "dropout takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "dropout expects a float32 input, got an integer tensor");
    double p = n->a.f[0];
    if (!(p >= 0.0 && p < 1.0))
        return kn_err(ctx, KN_ERR_SHAPE, "dropout probability must be in [0, 1), got %g", p);
    if (kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 || kn_g_declare_out(g, n, 1, KN_U8, x->shape) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static double dropout_flops(const kn_graph *g, const kn_node *n) {
    return (g->training ? 10.0 : 0.0) * (double)kn_numel(g, n->in[0]);
}
static double dropout_flops_bwd(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

static void dropout_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *x = kn_ptr(g, n->in[0]);
    float *y = kn_ptr(g, n->out[0]);
    uint8_t *mask = (uint8_t *)(void *)kn_ptr(g, n->out[1]);
    const int64_t m = kn_numel(g, n->in[0]);
    if (!rt->training) {
        if (y != x) memcpy(y, x, (size_t)m * sizeof(float));
        memset(mask, 1, (size_t)m);
        return;
    }
    const double p = n->a.f[0];
    const float scale = (float)(1.0 / (1.0 - p));
    const uint64_t seed = rt->seed ^ (0x9E37ULL * (uint64_t)(n->index + 1));
    const uint64_t base = (uint64_t)rt->step * (uint64_t)m;
#pragma omp parallel for schedule(static) if (m > 16384)
    for (int64_t k = 0; k < m; k++) {
        uint8_t keep = (double)kn_hash_uniform(seed, base + (uint64_t)k) >= p;
        mask[k] = keep;
        y[k] = keep ? x[k] * scale : 0.0f;
    }
}

static void dropout_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const uint8_t *mask = (const uint8_t *)(const void *)kn_ptr(g, n->out[1]);
    const float *dy = dout[0];
    float *dx = din[0];
    const int64_t m = kn_numel(g, n->in[0]);
    const float scale = rt->training ? (float)(1.0 / (1.0 - n->a.f[0])) : 1.0f;
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) dx[k] = mask[k] ? dy[k] * scale : 0.0f;
}

KN_ISA_KERNELS(dropout, dropout_forward, dropout_backward)

KN_OP_DEF(kn_op_dropout) = {
    .name = "dropout",
    .infer = dropout_infer,
    .flops_fwd = dropout_flops,
    .flops_bwd = dropout_flops_bwd,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0x2, /* mask */
    .diff_inputs = 0x1,
    .bwd_inplace = 0x1,   /* dx may overwrite dy (elementwise; set by the memory planner work) */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(dropout), KN_ISA_BWD(dropout)}},
};
