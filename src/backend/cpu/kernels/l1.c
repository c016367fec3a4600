/* l1: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/l1.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

#define L1_BLOCK 4096

static int l1_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + L1_BLOCK - 1) / L1_BLOCK) * sizeof(double);
    return KN_OK;
}

static void l1_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + L1_BLOCK - 1) / L1_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * L1_BLOCK < m ? (b + 1) * L1_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * L1_BLOCK; k < k1; k++) s += fabs((double)p[k] - (double)t[k]);
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void l1_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_numel(g, n->in[0]);
    const float scale = (float)((double)dout[0][0] / (double)m);
    float *dp = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const float d = p[k] - t[k];
        const float v = d > 0 ? scale : d < 0 ? -scale : d == 0 ? 0.0f : NAN;
        if (dp) dp[k] = v;
        if (dt) dt[k] = -v;
    }
}

KN_ISA_KERNELS(l1, l1_forward, l1_backward)

KN_CPU_OP(l1, l1, l1_prepare, NULL)
