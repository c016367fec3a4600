/* slice: y = x[start:stop:step] on every axis (Python's rules, step >= 1).
 *   input x float32, rank d <= 5; attrs per axis k: i[3k] = start, i[3k+1] = stop,
 *   i[3k+2] = step; step 0 takes the axis whole (so all-zero attributes are the
 *   identity and slicing one axis sets only its three slots). Negative start/stop count
 *   from the end; both are clamped to [0, dim] as in Python. Every output axis must
 *   keep at least one element.
 * Backward: dx = 0 with dy written at the sliced positions. */
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

/* ======================= (1) definition ======================= */

/* first index, step and count of axis k */
static void sl_axis(const kn_shape *x, const kn_attrs *a, int k, int64_t *first, int64_t *step, int64_t *count) {
    const int64_t D = x->d[k];
    int64_t st = a->i[3 * k + 2];
    if (st == 0) {
        *first = 0, *step = 1, *count = D;
        return;
    }
    int64_t s = a->i[3 * k], e = a->i[3 * k + 1];
    if (s < 0) s += D;
    if (e < 0) e += D;
    s = s < 0 ? 0 : s > D ? D : s;
    e = e < 0 ? 0 : e > D ? D : e;
    *first = s, *step = st;
    *count = e > s ? (e - s - 1) / st + 1 : 0; /* (no overflow for any step) */
}

static int sl_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "slice takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "slice expects a float32 input, got an integer tensor");
    kn_shape y = x->shape;
    for (int k = 0; k < x->shape.nd; k++) {
        int64_t f, s, c;
        if (n->a.i[3 * k + 2] < 0)
            return kn_err(ctx, KN_ERR_SHAPE, "slice: the step of axis %d must be >= 1 (0: the whole axis), got %lld", k,
                          (long long)n->a.i[3 * k + 2]);
        sl_axis(&x->shape, &n->a, k, &f, &s, &c);
        if (c < 1)
            return kn_err(ctx, KN_ERR_SHAPE, "slice of input %s: axis %d [%lld:%lld:%lld] is empty",
                          kn_shape_str(&x->shape, a, sizeof a), k, (long long)n->a.i[3 * k], (long long)n->a.i[3 * k + 1],
                          (long long)n->a.i[3 * k + 2]);
        y.d[k] = c;
    }
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double sl_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

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

/* ============ (1, continued) the op: the definition as a struct; only its .kernels entry names section 2 ============ */
KN_OP_DEF(kn_op_slice) = {
    .name = "slice",
    .infer = sl_infer,
    .flops_fwd = sl_flops,
    .flops_bwd = sl_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(slice), KN_ISA_BWD(slice)}},
};
