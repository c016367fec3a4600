/* concat: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/concat.c. */
#include <string.h>

#include "backend/cpu/kernels.h"

/* outer = prod(dims before the axis); each input is `outer` rows of `row_i` floats. */
static int64_t concat_outer(const kn_graph *g, const kn_node *n) {
    const kn_shape *s = kn_shp(g, n->out[0]);
    const int64_t axis = n->a.i[0] < 0 ? n->a.i[0] + s->nd : n->a.i[0];
    int64_t o = 1;
    for (int k = 0; k < axis; k++) o *= s->d[k];
    return o;
}

static void concat_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const int64_t outer = concat_outer(g, n);
    const int64_t yrow = kn_numel(g, n->out[0]) / (outer > 0 ? outer : 1);
    float *y = kn_ptr(g, n->out[0]);
    int64_t off = 0;
    for (int i = 0; i < n->nin; i++) {
        const float *x = kn_ptr(g, n->in[i]);
        const int64_t row = kn_numel(g, n->in[i]) / (outer > 0 ? outer : 1);
#pragma omp parallel for schedule(static) if (outer * row > 32768)
        for (int64_t r = 0; r < outer; r++) memcpy(y + r * yrow + off, x + r * row, (size_t)row * sizeof(float));
        off += row;
    }
}

static void concat_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const int64_t outer = concat_outer(g, n);
    const int64_t yrow = kn_numel(g, n->out[0]) / (outer > 0 ? outer : 1);
    const float *dy = dout[0];
    int64_t off = 0;
    for (int i = 0; i < n->nin; i++) {
        const int64_t row = kn_numel(g, n->in[i]) / (outer > 0 ? outer : 1);
        float *dx = din[i];
        if (dx) {
#pragma omp parallel for schedule(static) if (outer * row > 32768)
            for (int64_t r = 0; r < outer; r++) memcpy(dx + r * row, dy + r * yrow + off, (size_t)row * sizeof(float));
        }
        off += row;
    }
}

KN_ISA_KERNELS(concat, concat_forward, concat_backward)

KN_CPU_OP(concat, concat, NULL, NULL)
