/* permute: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/permute.c. */
#include "backend/cpu/kernels.h"
#include "ops/nd.h"

static void perm_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    int64_t xst[KN_MAX_DIMS], ss[KN_MAX_DIMS];
    nd_strides(xs->nd, xs->d, xst);
    for (int k = 0; k < xs->nd; k++) ss[k] = xst[n->a.i[k]];
    nd_copy_strided(kn_ptr(g, n->out[0]) /* y: (x.shape[p[k]]...) */, kn_ptr(g, n->in[0]) /* x */, ys->nd, ys->d, ss, 0);
}

static void perm_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]), *ys = kn_shp(g, n->out[0]);
    int64_t yst[KN_MAX_DIMS], ss[KN_MAX_DIMS];
    nd_strides(ys->nd, ys->d, yst);
    for (int k = 0; k < ys->nd; k++) ss[n->a.i[k]] = yst[k]; /* input axis p[k] is output axis k */
    nd_copy_strided(din[0] /* dx: x's shape */, dout[0] /* dy: y's shape */, xs->nd, xs->d, ss, 0);
}

KN_ISA_KERNELS(permute, perm_forward, perm_backward)

KN_CPU_OP(permute, permute, NULL, NULL)
