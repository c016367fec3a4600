/* reshape: y = x with another shape of the same number of elements (any dtype).
 * attrs: i[0] = number of output dims d (1..5), i[1..d] = the dims; at most one may be
 * -1 and is inferred. Forward and backward are copies. When the input is stored
 * channel-blocked (backend/cpu/layout.h), the forward converts it to the plain order
 * (the output is always plain) and the backward converts the gradient back. */
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

const kn_op kn_op_reshape = {
    .id = KN_OP_RESHAPE,
    .name = "reshape",
    .flags = KN_OPF_BLOCKED_IN,
    .infer = reshape_infer,
    .flops_fwd = reshape_flops,
    .flops_bwd = reshape_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,
};
