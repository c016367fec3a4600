/* layernorm: layer normalisation over the last axis.
 *   inputs: x float32 (..., D); optional gamma (D) and beta (D) (give both or neither);
 *   attrs: f[0] = eps (> 0; PyTorch's default is 1e-5).
 *   outputs: y (..., D) = (x - mean) * rstd * gamma + beta, per row of D elements;
 *            saved: mean (rows), rstd (rows) = 1 / sqrt(var + eps), var the biased
 *            variance (both in double, two passes).
 * Backward, with xhat = (x - mean) * rstd and g = dy * gamma:
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (row sums in double)
 *   dgamma = sum over rows of dy * xhat, dbeta = sum over rows of dy (double, rows in
 *   order, threads split the columns: the same bits for any thread count).
 * dgamma and dbeta are made first, then dx row by row, so dx may overwrite dy. */
#include "graph/graph.h"
#include "ops/nd.h"

static int ln_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 1 && n->nin != 3)
        return kn_err(ctx, KN_ERR_SHAPE, "layernorm takes x, or x, gamma and beta (1 or 3 inputs), got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32) return kn_err(ctx, KN_ERR_SHAPE, "layernorm expects a float32 input, got an integer tensor");
    const int64_t D = x->shape.d[x->shape.nd - 1];
    for (int i = 1; i < n->nin; i++) {
        const kn_value *p = &g->v[n->in[i]];
        if (p->dtype != KN_F32 || p->shape.nd != 1 || p->shape.d[0] != D)
            return kn_err(ctx, KN_ERR_SHAPE, "layernorm %s must be a float32 [%lld] for input %s, got %s",
                          i == 1 ? "gamma" : "beta", (long long)D, kn_shape_str(&x->shape, a, sizeof a),
                          kn_shape_str(&p->shape, b, sizeof b));
    }
    if (!(n->a.f[0] > 0.0))
        return kn_err(ctx, KN_ERR_SHAPE, "layernorm: eps (float attribute 0) must be > 0, got %g", n->a.f[0]);
    const int64_t rows = kn_shape_numel(&x->shape) / D;
    if (kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 || kn_g_declare_out(g, n, 1, KN_F32, kn_shape1(rows)) < 0 ||
        kn_g_declare_out(g, n, 2, KN_F32, kn_shape1(rows)) < 0)
        return KN_ERR_NOMEM;
    return KN_OK;
}

static double ln_flops(const kn_graph *g, const kn_node *n) { return 8.0 * (double)kn_numel(g, n->in[0]); }
static double ln_flops_bwd(const kn_graph *g, const kn_node *n) { return 12.0 * (double)kn_numel(g, n->in[0]); }

const kn_op kn_op_layernorm = {
    .id = KN_OP_LAYERNORM,
    .name = "layernorm",
    .infer = ln_infer,
    .flops_fwd = ln_flops,
    .flops_bwd = ln_flops_bwd,
    .bwd_reads_in = 0x3,  /* x, gamma */
    .bwd_reads_out = 0x6, /* mean, rstd */
    .diff_inputs = 0x7,
    .bwd_inplace = 0x1,   /* dx over dy */
};
