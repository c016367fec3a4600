/* huber: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/huber.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

#define HUBER_BLOCK 4096

static int huber_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + HUBER_BLOCK - 1) / HUBER_BLOCK) * sizeof(double);
    return KN_OK;
}

static void huber_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const double delta = n->a.f[0];
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + HUBER_BLOCK - 1) / HUBER_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * HUBER_BLOCK < m ? (b + 1) * HUBER_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * HUBER_BLOCK; k < k1; k++) {
            const double d = (double)p[k] - (double)t[k], z = fabs(d);
            s += z < delta ? 0.5 * d * d : delta * (z - 0.5 * delta);
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void huber_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const double delta = n->a.f[0];
    const int64_t m = kn_numel(g, n->in[0]);
    const double gs = (double)dout[0][0] / (double)m;
    float *dp = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const double d = (double)p[k] - (double)t[k];
        const double c = d > delta ? delta : d < -delta ? -delta : d;
        const float v = (float)(gs * c);
        if (dp) dp[k] = v;
        if (dt) dt[k] = -v;
    }
}

KN_ISA_KERNELS(huber, huber_forward, huber_backward)

KN_CPU_OP(huber, huber, huber_prepare, NULL)
