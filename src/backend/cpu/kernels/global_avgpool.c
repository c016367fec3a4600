/* global_avgpool: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/global_avgpool.c. */
#include "backend/cpu/kernels.h"

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

KN_CPU_OP(global_avgpool, gap, NULL, NULL)
