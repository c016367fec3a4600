/* reshape: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/reshape.c. */
#include <string.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/layout.h"

static int reshape_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    n->a.i[KN_ATTR_LAYOUT] = kn_layout(g, n->in[0]);
    return KN_OK;
}

static void blocked_dims(const kn_graph *g, const kn_node *n, int64_t *N, int64_t *C, int64_t *S) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    *N = x->d[0];
    *C = x->d[1];
    *S = x->d[2] * x->d[3];
}

static void reshape_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    if (n->a.i[KN_ATTR_LAYOUT]) {
        int64_t N, C, S;
        blocked_dims(g, n, &N, &C, &S);
        kn_from_blocked(kn_ptr(g, n->out[0]), kn_ptr(g, n->in[0]), N, C, S, (int)n->a.i[KN_ATTR_LAYOUT]);
        return;
    }
    const void *x = kn_ptr(g, n->in[0]);
    void *y = kn_ptr(g, n->out[0]);
    size_t bytes = (size_t)kn_numel(g, n->in[0]) * kn_dtype_size(g->v[n->in[0]].dtype);
    if (x != y) memcpy(y, x, bytes);
}

static void reshape_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    if (n->a.i[KN_ATTR_LAYOUT]) {
        int64_t N, C, S;
        blocked_dims(rt->g, n, &N, &C, &S);
        kn_to_blocked(din[0], dout[0], N, C, S, (int)n->a.i[KN_ATTR_LAYOUT]);
        return;
    }
    if (din[0] == dout[0]) return;
    memcpy(din[0], dout[0], (size_t)kn_numel(rt->g, n->in[0]) * sizeof(float));
}

KN_ISA_KERNELS(reshape, reshape_forward, reshape_backward)

KN_CPU_OP(reshape, reshape, reshape_prepare, NULL)
