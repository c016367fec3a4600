/* concat: y = x0 ++ x1 ++ ... along axis i[0], any axis: 0 to rank-1, or negative
 * from the end (-1: the last). (The model builder's concat layer asks for 1 to 4: it
 * never joins along the batch axis.)
 * 2 to 8 float32 inputs with the same rank and the same dims except on the axis.
 * Backward: each input's gradient is its slice of dy. */
#include "graph/graph.h"

static int concat_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin < 2 || n->nin > KN_MAX_IN)
        return kn_err(ctx, KN_ERR_SHAPE, "concat takes 2 to %d inputs, got %d", KN_MAX_IN, n->nin);
    const kn_shape *s0 = kn_shp(g, n->in[0]);
    int64_t axis = n->a.i[0];
    if (axis < -s0->nd || axis >= s0->nd)
        return kn_err(ctx, KN_ERR_SHAPE, "concat axis must be between %d and %d for input %s, got %lld", -s0->nd,
                      s0->nd - 1, kn_shape_str(s0, a, sizeof a), (long long)axis);
    if (axis < 0) axis += s0->nd;
    kn_shape out = *s0;
    out.d[axis] = 0;
    for (int i = 0; i < n->nin; i++) {
        const kn_value *v = &g->v[n->in[i]];
        if (v->dtype != KN_F32)
            return kn_err(ctx, KN_ERR_SHAPE, "concat expects float32 inputs, input %d is an integer tensor", i);
        int ok = v->shape.nd == s0->nd;
        for (int k = 0; ok && k < s0->nd; k++)
            if (k != axis && v->shape.d[k] != s0->d[k]) ok = 0;
        if (!ok)
            return kn_err(ctx, KN_ERR_SHAPE,
                          "concat along axis %lld expects inputs that match on every other dim, got %s (input 0) "
                          "and %s (input %d)",
                          (long long)axis, kn_shape_str(s0, a, sizeof a), kn_shape_str(&v->shape, b, sizeof b), i);
        out.d[axis] += v->shape.d[axis];
    }
    return kn_g_declare_out(g, n, 0, KN_F32, out) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double concat_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}

const kn_op kn_op_concat = {
    .id = KN_OP_CONCAT,
    .name = "concat",
    .infer = concat_infer,
    .flops_fwd = concat_flops,
    .flops_bwd = concat_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0xff,
};
