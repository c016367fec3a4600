/* gather: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/gather.c. */
#include <math.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

static void gather_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const int64_t V = kn_shp(g, n->in[0])->d[0], D = kn_shp(g, n->in[0])->d[1], P = kn_numel(g, n->in[1]);
    const float *T = kn_ptr(g, n->in[0]);   // (V, D)
    const int32_t *ix = kn_iptr(g, n->in[1]); // (S...) = (P)
    float *y = kn_ptr(g, n->out[0]);        // (S..., D) = (P, D)
#pragma omp parallel for schedule(static) if (P * D > KN_ND_PAR && P > 1)
    for (int64_t p = 0; p < P; p++) {
        const int32_t r = ix[p];
        if (r >= 0 && r < V) memcpy(y + p * D, T + (int64_t)r * D, (size_t)D * sizeof(float));
        else
            for (int64_t j = 0; j < D; j++) y[p * D + j] = NAN;
    }
}

static void gather_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const int64_t V = kn_shp(g, n->in[0])->d[0], D = kn_shp(g, n->in[0])->d[1], P = kn_numel(g, n->in[1]);
    const int32_t *ix = kn_iptr(g, n->in[1]); // (P)
    const float *dy = dout[0];                // (P, D)
    float *dT = din[0];                       // (V, D)
    const int64_t CB = 64, ncb = (D + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (P * D > KN_ND_PAR && ncb > 1)
    for (int64_t cb = 0; cb < ncb; cb++) {
        const int64_t c0 = cb * CB, c1 = c0 + CB < D ? c0 + CB : D;
        for (int64_t r = 0; r < V; r++)
            for (int64_t j = c0; j < c1; j++) dT[r * D + j] = 0.0f;
        for (int64_t p = 0; p < P; p++) {
            const int32_t r = ix[p];
            if (r < 0 || r >= V) continue;
            float *t = dT + (int64_t)r * D;
            const float *d = dy + p * D;
            for (int64_t j = c0; j < c1; j++) t[j] += d[j];
        }
    }
}

KN_ISA_KERNELS(gather, gather_forward, gather_backward)

KN_CPU_OP(gather, gather, NULL, NULL)
