/* matmul: batched matrix product with optional transposes and broadcast batch dims.
 *   inputs A float32 (..., M, K) — or (..., K, M) when i[0] = 1 (A transposed) —
 *          B float32 (..., K, N) — or (..., N, K) when i[1] = 1 (B transposed);
 *   both of rank >= 2; the batch dims (all but the last two) broadcast (NumPy rule).
 *   output C (batch..., M, N), C = op(A) @ op(B) per batch matrix.
 * Backward: dA = dC @ op(B)^T, dB = op(A)^T @ dC (each stored in its input's layout),
 * summed over the batch matrices that a broadcast operand fed, in batch order.
 * Kernel: register blocks of 4 x 16 elements of C over the whole inner dimension (in
 * order), so every element of C is the sum over k in order from 0, computed the same
 * way whatever the blocking and the thread count: the same bits for any thread count.
 * An operand whose columns are not contiguous is transposed into scratch first. */
#include "graph/graph.h"
#include "ops/nd.h"
#include "ops/matmul.h"

static int mm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "matmul takes two inputs (A, B), got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]], *z = &g->v[n->in[1]];
    if (x->dtype != KN_F32 || z->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "matmul expects float32 inputs, got an integer tensor");
    if ((n->a.i[0] != 0 && n->a.i[0] != 1) || (n->a.i[1] != 0 && n->a.i[1] != 1))
        return kn_err(ctx, KN_ERR_SHAPE, "matmul: the transpose flags (attributes 0 and 1) are 0 or 1, got %lld and %lld",
                      (long long)n->a.i[0], (long long)n->a.i[1]);
    if (x->shape.nd < 2 || z->shape.nd < 2)
        return kn_err(ctx, KN_ERR_SHAPE, "matmul expects inputs of rank >= 2 ([..., M, K] and [..., K, N]), got %s and %s",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    mm_geom G;
    kn_shape c;
    int rc = mm_geom_make(&x->shape, &z->shape, (int)n->a.i[0], (int)n->a.i[1], &G, &c);
    if (rc == 1)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "matmul: the inner dims do not match: A %s%s has K = %lld, B %s%s has K = %lld", kn_shape_str(&x->shape, a, sizeof a),
                      G.ta ? " (transposed)" : "", (long long)G.K, kn_shape_str(&z->shape, b, sizeof b),
                      G.tb ? " (transposed)" : "", (long long)(G.tb ? z->shape.d[z->shape.nd - 1] : z->shape.d[z->shape.nd - 2]));
    if (rc == 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "matmul: the batch dims (all but the last two) of A %s and B %s do not broadcast (equal or 1, "
                      "aligned from the right)",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    return kn_g_declare_out(g, n, 0, KN_F32, c) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double mm_flops(const kn_graph *g, const kn_node *n) {
    mm_geom G;
    mm_geom_of(g, n, &G);
    return 2.0 * (double)G.nbo * (double)G.M * (double)G.N * (double)G.K;
}
static double mm_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * mm_flops(g, n); }

const kn_op kn_op_matmul = {
    .id = KN_OP_MATMUL,
    .name = "matmul",
    .infer = mm_infer,
    .flops_fwd = mm_flops,
    .flops_bwd = mm_flops_bwd,
    .bwd_reads_in = 0x3, /* A, B */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
};
