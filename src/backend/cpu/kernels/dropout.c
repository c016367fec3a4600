/* dropout: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/dropout.c. */
#include <string.h>

#include "backend/cpu/kernels.h"

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

KN_CPU_OP(dropout, dropout, NULL, NULL)
