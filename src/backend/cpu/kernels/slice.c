/* slice: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/slice.c. */
#include <string.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"
#include "ops/slice.h"

/* the output's dims, x's strides per output step, and the offset of y[0] in x */
static int64_t sl_geom(const kn_graph *g, const kn_node *n, int64_t *d, int64_t *xs_) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    int64_t cs[KN_MAX_DIMS], base = 0;
    nd_strides(x->nd, x->d, cs);
    for (int k = 0; k < x->nd; k++) {
        int64_t f, s, c;
        sl_axis(x, &n->a, k, &f, &s, &c);
        d[k] = c;
        xs_[k] = cs[k] * s;
        base += f * cs[k];
    }
    return base;
}

static void sl_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    int64_t d[KN_MAX_DIMS], ss[KN_MAX_DIMS];
    const int64_t base = sl_geom(g, n, d, ss); /* the slice's dims; its strides in x */
    const float *x = kn_ptr(g, n->in[0]) + base; // (...) at the first sliced element
    float *y = kn_ptr(g, n->out[0]);             // (...) the slice
    nd_copy_strided(y, x, kn_shp(g, n->in[0])->nd, d, ss, 0);
}

static void sl_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    int64_t d[KN_MAX_DIMS], ss[KN_MAX_DIMS];
    const int64_t base = sl_geom(g, n, d, ss);
    memset(din[0], 0, (size_t)kn_numel(g, n->in[0]) * sizeof(float));
    float *dx = din[0] + base;  // (...) x's shape, at the first sliced element
    const float *dy = dout[0];  // (...) the slice
    nd_copy_strided(dx, dy, kn_shp(g, n->in[0])->nd, d, ss, 1);
}

KN_ISA_KERNELS(slice, sl_forward, sl_backward)

KN_CPU_OP(slice, slice, NULL, NULL)
