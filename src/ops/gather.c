/* gather: embedding lookup, y[p, :] = table[idx[p], :].
 *   inputs: table float32 (V, D); indices int32 of any shape S (rank <= 4).
 *   output: (S..., D).
 * An index outside [0, V) cannot be reported at run time: its output row is NaN and it
 * adds nothing to the gradient (as softmax_ce does with a bad label).
 * Backward (to the table only): dtable = 0, then dy's rows are added into the rows they
 * were read from, in index order (a scatter-add). Threads split the columns, so every
 * element's sum runs in the same order whatever the thread count: the same bits. */
#include <math.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

/* ======================= (1) definition ======================= */

static int gather_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "gather takes a table and indices (2 inputs), got %d", n->nin);
    const kn_value *t = &g->v[n->in[0]], *ix = &g->v[n->in[1]];
    if (t->dtype != KN_F32 || t->shape.nd != 2)
        return kn_err(ctx, KN_ERR_SHAPE, "gather expects a float32 table [rows, dim], got %s%s",
                      kn_shape_str(&t->shape, a, sizeof a), t->dtype != KN_F32 ? " of integers" : "");
    if (ix->dtype != KN_I32)
        return kn_err(ctx, KN_ERR_SHAPE, "gather expects int32 indices, got %s",
                      ix->dtype == KN_F32 ? "float32" : "uint8");
    if (ix->shape.nd > KN_MAX_DIMS - 1)
        return kn_err(ctx, KN_ERR_SHAPE, "gather: indices %s have more than %d dims (the output adds one)",
                      kn_shape_str(&ix->shape, b, sizeof b), KN_MAX_DIMS - 1);
    kn_shape y = ix->shape;
    y.d[y.nd++] = t->shape.d[1];
    return kn_g_declare_out(g, n, 0, KN_F32, y) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double gather_flops(const kn_graph *g, const kn_node *n) {
    (void)g;
    (void)n;
    return 0.0;
}
static double gather_flops_bwd(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->out[0]); }

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

static void gather_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const int64_t V = kn_shp(g, n->in[0])->d[0], D = kn_shp(g, n->in[0])->d[1], P = kn_numel(g, n->in[1]);
    const float *T = kn_ptr(g, n->in[0]);   // (V, D)
    const int32_t *ix = kn_iptr(g, n->in[1]); // (S...) = (P)
    float *y = kn_ptr(g, n->out[0]);        // (S..., D) = (P, D)
#pragma omp parallel for schedule(static) if (P * D > KN_ND_PAR && P > 1)
    for (int64_t p = 0; p < P; p++) {
        const int32_t r = ix[p];
        if (r >= 0 && r < V) memcpy(y + p * D, T + (int64_t)r * D, (size_t)D * sizeof(float));
        else
            for (int64_t j = 0; j < D; j++) y[p * D + j] = NAN;
    }
}

static void gather_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const int64_t V = kn_shp(g, n->in[0])->d[0], D = kn_shp(g, n->in[0])->d[1], P = kn_numel(g, n->in[1]);
    const int32_t *ix = kn_iptr(g, n->in[1]); // (P)
    const float *dy = dout[0];                // (P, D)
    float *dT = din[0];                       // (V, D)
    const int64_t CB = 64, ncb = (D + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (P * D > KN_ND_PAR && ncb > 1)
    for (int64_t cb = 0; cb < ncb; cb++) {
        const int64_t c0 = cb * CB, c1 = c0 + CB < D ? c0 + CB : D;
        for (int64_t r = 0; r < V; r++)
            for (int64_t j = c0; j < c1; j++) dT[r * D + j] = 0.0f;
        for (int64_t p = 0; p < P; p++) {
            const int32_t r = ix[p];
            if (r < 0 || r >= V) continue;
            float *t = dT + (int64_t)r * D;
            const float *d = dy + p * D;
            for (int64_t j = c0; j < c1; j++) t[j] += d[j];
        }
    }
}

KN_ISA_KERNELS(gather, gather_forward, gather_backward)

/* ============ (1, continued) the op: the definition as a struct; only its .kernels entry names section 2 ============ */
KN_OP_DEF(kn_op_gather) = {
    .name = "gather",
    .infer = gather_infer,
    .flops_fwd = gather_flops,
    .flops_bwd = gather_flops_bwd,
    .bwd_reads_in = 0x2, /* the indices */
    .bwd_reads_out = 0,
    .diff_inputs = 0x1,  /* the table only */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(gather), KN_ISA_BWD(gather)}},
};
