/* reshape: y = x with another shape of the same number of elements (any dtype).
 * attrs: i[0] = number of output dims d (1..5), i[1..d] = the dims; at most one may be
 * -1 and is inferred. Forward and backward are copies. When the input is stored
 * channel-blocked (backend/cpu/layout.h), the forward converts it to the plain order
 * (the output is always plain) and the backward converts the gradient back. */
#include <string.h>

#include "backend/cpu/layout.h"
#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int reshape_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "reshape takes one input, got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    int64_t d = n->a.i[0];
    if (d < 1 || d > KN_MAX_DIMS)
        return kn_err(ctx, KN_ERR_SHAPE, "reshape expects 1 to %d output dims, got %lld", KN_MAX_DIMS, (long long)d);
    kn_shape s = {(int)d, {0}};
    int infer_at = -1;
    int64_t known = 1;
    for (int k = 0; k < d; k++) {
        int64_t v = n->a.i[1 + k];
        s.d[k] = v;
        if (v == -1) {
            if (infer_at >= 0)
                return kn_err(ctx, KN_ERR_SHAPE, "reshape allows at most one -1 dim, got dims %lld and %d",
                              (long long)infer_at, k);
            infer_at = k;
        } else if (v < 1) {
            return kn_err(ctx, KN_ERR_SHAPE, "reshape dims must be >= 1 (or -1 once), got %lld at dim %d",
                          (long long)v, k);
        } else if (kn_mul_ovf(known, v, &known) || known > KN_MAX_BYTES) {
            return kn_err(ctx, KN_ERR_SHAPE, "reshape: the dims given multiply to more than 2^48 elements (at dim %d = %lld); "
                          "input %s has %lld", k, (long long)v, kn_shape_str(&x->shape, a, sizeof a),
                          (long long)kn_shape_numel(&x->shape));
        }
    }
    int64_t numel = kn_shape_numel(&x->shape);
    if (infer_at >= 0) {
        if (numel % known)
            return kn_err(ctx, KN_ERR_SHAPE, "reshape cannot fit input %s (%lld elements) into %s with one dim -1",
                          kn_shape_str(&x->shape, a, sizeof a), (long long)numel, kn_shape_str(&s, b, sizeof b));
        s.d[infer_at] = numel / known;
    }
    if (kn_shape_numel(&s) != numel)
        return kn_err(ctx, KN_ERR_SHAPE, "reshape must keep the number of elements: input %s has %lld, %s has %lld",
                      kn_shape_str(&x->shape, a, sizeof a), (long long)numel, kn_shape_str(&s, b, sizeof b),
                      (long long)kn_shape_numel(&s));
    return kn_g_declare_out(g, n, 0, x->dtype, s) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double reshape_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}

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

KN_OP_DEF(kn_op_reshape) = {
    .name = "reshape",
    .flags = KN_OPF_BLOCKED_IN,
    .infer = reshape_infer,
    .flops_fwd = reshape_flops,
    .flops_bwd = reshape_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
    .kernels = {[KN_BACKEND_CPU] = {reshape_prepare, NULL, KN_ISA_FWD(reshape), KN_ISA_BWD(reshape)}},
};
