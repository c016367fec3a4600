/* reduce: the CPU kernels of sum, mean and max over axes, forward and backward side by
 * side, registered by op id (backend/cpu/registry.c). The definition and the maths are
 * in src/ops/reduce.c. */
#include <stdint.h>
#include <string.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

enum { RED_SUM = 0, RED_MEAN, RED_MAX };

static unsigned red_mask(const kn_graph *g, const kn_node *n) {
    const int nd = kn_shp(g, n->in[0])->nd;
    return n->a.i[0] ? (unsigned)n->a.i[0] : (1u << nd) - 1u;
}

static void red_geom(const kn_graph *g, const kn_node *n, nd_red *r) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    nd_red_init(r, x->nd, x->d, red_mask(g, n));
}

static void red_forward(int op, const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    nd_red r;
    red_geom(g, n, &r);
    const float *x = kn_ptr(g, n->in[0]); // (...) input
    float *y = kn_ptr(g, n->out[0]);      // (kept dims) output
    if (op == RED_MAX) nd_reduce_max(&r, x, y, kn_iptr(g, n->out[1])); // argmax: (kept dims) int32
    else nd_reduce_sum(&r, x, y, op == RED_MEAN ? 1.0 / (double)r.nred : 1.0);
}

static void red_backward(int op, const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    nd_red r;
    red_geom(g, n, &r);
    const float *dy = dout[0]; // (kept dims)
    float *dx = din[0];        // (...) input shape
    const int64_t nout = r.nout, nred = r.nred;
    if (op == RED_MAX) {
        const int32_t *arg = kn_iptr(g, n->out[1]); // (kept dims)
        const int64_t m = kn_numel(g, n->in[0]);
        memset(dx, 0, (size_t)m * sizeof(float));
#pragma omp parallel for schedule(static) if (nout > KN_ND_PAR)
        for (int64_t o = 0; o < nout; o++)
            dx[nd_offset(o, r.nk, r.kd, r.ks) + nd_offset(arg[o], r.nr, r.rd, r.rs)] = dy[o];
        return;
    }
    const float s = op == RED_MEAN ? (float)(1.0 / (double)nred) : 1.0f;
    if (r.leading && r.nk > 0) {
        /* dx is [nred, nout]: every row is dy (times 1/count) */
#pragma omp parallel for schedule(static) if (nout * nred > KN_ND_PAR && nred > 1)
        for (int64_t i = 0; i < nred; i++) {
            float *xr = dx + i * nout;
            if (op == RED_MEAN)
                for (int64_t o = 0; o < nout; o++) xr[o] = dy[o] * s;
            else
                memcpy(xr, dy, (size_t)nout * sizeof(float));
        }
        return;
    }
    const int64_t last = r.nr ? r.rd[r.nr - 1] : 1, ls = r.nr ? r.rs[r.nr - 1] : 1, nrow = nred / last;
#pragma omp parallel for schedule(static) if (nout * nred > KN_ND_PAR && nout > 1)
    for (int64_t o = 0; o < nout; o++) {
        float *xo = dx + nd_offset(o, r.nk, r.kd, r.ks);
        const float v = op == RED_MEAN ? dy[o] * s : dy[o];
        for (int64_t i = 0; i < nrow; i++) {
            float *xr = xo + nd_offset(i, r.nr - 1, r.rd, r.rs);
            for (int64_t j = 0; j < last; j++) xr[j * ls] = v;
        }
    }
}

#define RED_KERNELS(tag, OP)                                                                               \
    static void tag##_forward(const kn_node *n, kn_rt *rt) { red_forward(OP, n, rt); }                    \
    static void tag##_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        red_backward(OP, n, rt, din, dout);                                                                \
    }                                                                                                      \
    KN_ISA_KERNELS(tag, tag##_forward, tag##_backward)

RED_KERNELS(rsum, RED_SUM)
RED_KERNELS(rmean, RED_MEAN)
RED_KERNELS(rmax, RED_MAX)

KN_CPU_OP(sum, rsum, NULL, NULL)
KN_CPU_OP(mean, rmean, NULL, NULL)
KN_CPU_OP(max, rmax, NULL, NULL)
