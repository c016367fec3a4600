/* linear: y[N,O] = x[N,I] · W[O,I]^T + b[O]   (inputs: x, W, optional b)
 * x may have any rank >= 1: it is applied over the last axis, x (..., I) -> y (..., O),
 * with N the product of the other dims (the same GEMMs as a 2-D x of N rows, so a 2-D
 * input gives the numbers it always did).
 * Backward: dx = dy · W;  dW = dy^T · x;  db = column sums of dy (in double, rows in
 * order: the same for any thread count).
 * GEMMs run as oneDNN matmul primitives created once at plan time.
 *
 * linear_relu (kn_op_linear_relu, ops/fused.h): y = max(x · W^T + b, 0) with the bias
 * and the ReLU applied by the forward GEMM itself (a oneDNN post-op); the backward reads
 * y and uses dy * (y > 0), made in the same pass as the bias sums. The model builder
 * uses it for `activation = relu` on a linear layer and a relu layer that is the only
 * reader of a linear layer. (Unlike the relu op, a NaN pre-activation may stay NaN.) */
#include "graph/graph.h"
#include "ops/fused.h"
#include "ops/linear.h"

static int linear_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin < 2 || n->nin > 3) return kn_err(ctx, KN_ERR_SHAPE, "linear takes x, weight and an optional bias");
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]);
    if (x->nd < 1 || g->v[n->in[0]].dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "linear expects a float32 input [..., features], got %s",
                      kn_shape_str(x, a, sizeof a));
    const int64_t I = x->d[x->nd - 1];
    if (w->nd != 2 || w->d[1] != I)
        return kn_err(ctx, KN_ERR_SHAPE, "linear weight %s does not match input %s (expected [out, %lld]: linear acts on "
                      "the last axis%s)",
                      kn_shape_str(w, a, sizeof a), kn_shape_str(x, b, sizeof b), (long long)I,
                      x->nd == 4 ? "; for [batch, channels, height, width] put a flatten layer before it" : "");
    if (n->nin == 3) {
        const kn_shape *bs = kn_shp(g, n->in[2]);
        if (bs->nd != 1 || bs->d[0] != w->d[0])
            return kn_err(ctx, KN_ERR_SHAPE, "linear bias %s does not match %lld outputs", kn_shape_str(bs, a, sizeof a),
                          (long long)w->d[0]);
    }
    kn_shape y = *x;
    y.d[y.nd - 1] = w->d[0];
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double linear_flops(const kn_graph *g, const kn_node *n) {
    const kn_shape *x = kn_shp(g, n->in[0]), *w = kn_shp(g, n->in[1]);
    return 2.0 * (double)linear_rows(g, n) * (double)x->d[x->nd - 1] * (double)w->d[0];
}
static double linear_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * linear_flops(g, n); }

const kn_op kn_op_linear = {
    .id = KN_OP_LINEAR,
    .name = "linear",
    .fused_relu = &kn_op_linear_relu,
    .infer = linear_infer,
    .flops_fwd = linear_flops,
    .flops_bwd = linear_flops_bwd,
    .bwd_reads_in = 0x3, /* x, W */
    .bwd_reads_out = 0,
    .diff_inputs = 0x7,
};

const kn_op kn_op_linear_relu = {
    .id = KN_OP_LINEAR_RELU,
    .name = "linear_relu",
    .flags = KN_OPF_RELU_OUT,
    .infer = linear_infer,
    .flops_fwd = linear_flops,
    .flops_bwd = linear_flops_bwd,
    .bwd_reads_in = 0x3,  /* x, W */
    .bwd_reads_out = 0x1, /* y: the ReLU mask */
    .diff_inputs = 0x7,
};
