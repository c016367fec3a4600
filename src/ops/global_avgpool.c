/* global_avgpool: y[N,C] = mean of each H x W plane of x[N,C,H,W] (summed in double).
 * Backward: dx = dy / (H W) over the plane (reads nothing). */
#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int gap_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool takes one input, got %d", n->nin);
    const kn_value *xv = &g->v[n->in[0]];
    const kn_shape *x = &xv->shape;
    if (x->nd != 4)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "global_avgpool expects a 4-D input [batch, channels, height, width], got %s",
                      kn_shape_str(x, a, sizeof a));
    if (xv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool expects a float32 input, got an integer tensor");
    if (x->d[2] * x->d[3] < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "global_avgpool expects a non-empty image, got %s",
                      kn_shape_str(x, a, sizeof a));
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape2(x->d[0], x->d[1])) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double gap_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

static void gap_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]);
    const int64_t planes = xs->d[0] * xs->d[1], HW = xs->d[2] * xs->d[3];
    const float *x = kn_ptr(g, n->in[0]);
    float *y = kn_ptr(g, n->out[0]);
    const double inv = 1.0 / (double)HW;
#pragma omp parallel for schedule(static) if (planes * HW > 32768)
    for (int64_t p = 0; p < planes; p++) {
        const float *xp = x + p * HW;
        double s = 0.0;
        for (int64_t k = 0; k < HW; k++) s += xp[k];
        y[p] = (float)(s * inv);
    }
}

static void gap_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]);
    const int64_t planes = xs->d[0] * xs->d[1], HW = xs->d[2] * xs->d[3];
    const float *dy = dout[0];
    float *dx = din[0];
    const float inv = (float)(1.0 / (double)HW);
#pragma omp parallel for schedule(static) if (planes * HW > 32768)
    for (int64_t p = 0; p < planes; p++) {
        float v = dy[p] * inv;
        float *dxp = dx + p * HW;
        for (int64_t k = 0; k < HW; k++) dxp[k] = v;
    }
}

KN_ISA_KERNELS(gap, gap_forward, gap_backward)

KN_OP_DEF(kn_op_global_avgpool) = {
    .name = "global_avgpool",
    .infer = gap_infer,
    .flops_fwd = gap_flops,
    .flops_bwd = gap_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(gap), KN_ISA_BWD(gap)}},
};
