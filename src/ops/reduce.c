/* Reductions over a set of axes: sum, mean, max.
 *   input x float32, any rank; attrs: i[0] = the axes as a bitmask (bit k: axis k;
 *   0: every axis), i[1] = keepdim (1: reduced axes stay as size 1; 0: they are dropped,
 *   and a reduction over every axis gives shape [1]).
 *   sum:  y = sum over the axes (in double, row-major order)   dx = dy broadcast
 *   mean: y = sum / count                                       dx = dy / count broadcast
 *   max:  y = the largest element (NaN if any is NaN); saved output 1 (int32, y's shape)
 *         is its position among the reduced elements, the first of equal maxima, and
 *         dx = dy there, 0 elsewhere (PyTorch's max(dim) routes the gradient to one
 *         index; amax would share it between ties). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

enum { RED_SUM = 0, RED_MEAN, RED_MAX };

/* ======================= (1) definition ======================= */

static unsigned red_mask(const kn_graph *g, const kn_node *n) {
    const int nd = kn_shp(g, n->in[0])->nd;
    return n->a.i[0] ? (unsigned)n->a.i[0] : (1u << nd) - 1u;
}

static int red_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    const char *nm = n->op->name;
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", nm, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", nm);
    const int nd = x->shape.nd;
    if (n->a.i[0] < 0 || n->a.i[0] >= (1ll << nd))
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s: the axes (attribute 0) are a bitmask of the %d axes of input %s (1 to %lld, or 0 for all), "
                      "got %lld",
                      nm, nd, kn_shape_str(&x->shape, a, sizeof a), (1ll << nd) - 1, (long long)n->a.i[0]);
    if (n->a.i[1] != 0 && n->a.i[1] != 1)
        return kn_err(ctx, KN_ERR_SHAPE, "%s: keepdim (attribute 1) is 0 or 1, got %lld", nm, (long long)n->a.i[1]);
    const unsigned mask = n->a.i[0] ? (unsigned)n->a.i[0] : (1u << nd) - 1u;
    kn_shape y = {0, {0}};
    for (int k = 0; k < nd; k++) {
        if (!(mask >> k & 1u)) y.d[y.nd++] = x->shape.d[k];
        else if (n->a.i[1]) y.d[y.nd++] = 1;
    }
    if (y.nd == 0) y = kn_shape1(1);
    if (n->op == &kn_op_max && kn_shape_numel(&x->shape) / kn_shape_numel(&y) > INT32_MAX)
        return kn_err(ctx, KN_ERR_SHAPE, "max over more than 2^31 - 1 elements per result (input %s): its argmax is int32",
                      kn_shape_str(&x->shape, a, sizeof a));
    if (kn_g_declare_out(g, n, 0, KN_F32, y) < 0) return KN_ERR_NOMEM;
    if (n->op == &kn_op_max && kn_g_declare_out(g, n, 1, KN_I32, y) < 0) return KN_ERR_NOMEM;
    return KN_OK;
}

static double red_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

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

/* ============ (1, continued) the op table: the definition as a struct; only its .kernels entry names section 2 ============ */
#define RED_DEF(sym, nm, tag, reads_out)                                                                   \
    KN_OP_DEF(sym) = {                                                                                     \
        .name = nm,                                                                                        \
        .infer = red_infer,                                                                                \
        .flops_fwd = red_flops,                                                                            \
        .flops_bwd = red_flops,                                                                            \
        .bwd_reads_in = 0,                                                                                 \
        .bwd_reads_out = reads_out,                                                                        \
        .diff_inputs = 0x1,                                                                                \
        .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(tag), KN_ISA_BWD(tag)}},                    \
    };

RED_DEF(kn_op_sum, "sum", rsum, 0)
RED_DEF(kn_op_mean, "mean", rmean, 0)
RED_DEF(kn_op_max, "max", rmax, 0x2) /* the argmax */
