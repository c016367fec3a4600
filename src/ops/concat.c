/* concat: y = x0 ++ x1 ++ ... along axis i[0], any axis: 0 to rank-1, or negative
 * from the end (-1: the last). (The model builder's concat layer asks for 1 to 4: it
 * never joins along the batch axis.)
 * 2 to 8 float32 inputs with the same rank and the same dims except on the axis.
 * Backward: each input's gradient is its slice of dy. */
#include <string.h>

#include "backend/cpu/isa.h"
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

KN_OP_DEF(kn_op_concat) = {
    .name = "concat",
    .infer = concat_infer,
    .flops_fwd = concat_flops,
    .flops_bwd = concat_flops,
    .bwd_reads_in = 0,
    .bwd_reads_out = 0,
    .diff_inputs = 0xff,
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(concat), KN_ISA_BWD(concat)}},
};
