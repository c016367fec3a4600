/* softmax_ce: softmax cross-entropy loss.
 * inputs: logits[N,K] float32, labels[N] int32.
 * outputs: loss[1] = mean over the batch of -log softmax(logits)[label] (computed with
 *          a numerically stable log-sum-exp, in double); out1 probs[N,K] (saved).
 * A label outside [0, K) cannot be reported at run time: its sample's loss (and so the
 * mean) is NaN, and so is its gradient row.
 * Backward (to the logits only): dlogits = (probs - onehot(label)) * dloss / N.
 * Per-row losses go to a scratch buffer and are summed in row order, so the loss does
 * not depend on the thread count. */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

static int sce_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce takes logits and labels (2 inputs), got %d", n->nin);
    const kn_value *lv = &g->v[n->in[0]], *yv = &g->v[n->in[1]];
    const kn_shape *l = &lv->shape, *y = &yv->shape;
    if (l->nd != 2 || l->d[1] < 1)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects 2-D logits [batch, classes], got %s",
                      kn_shape_str(l, a, sizeof a));
    if (lv->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects float32 logits, got an integer tensor");
    if (y->nd != 1 || y->d[0] != l->d[0])
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects labels [%lld] for logits %s, got %s",
                      (long long)l->d[0], kn_shape_str(l, a, sizeof a), kn_shape_str(y, b, sizeof b));
    if (yv->dtype != KN_I32)
        return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects int32 labels, got %s",
                      yv->dtype == KN_F32 ? "float32" : "uint8");
    if (l->d[0] < 1) return kn_err(ctx, KN_ERR_SHAPE, "softmax_ce expects a batch of at least one sample");
    if (kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(1)) < 0 || kn_g_declare_out(g, n, 1, KN_F32, *l) < 0)
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    return KN_OK;
}

static int sce_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    n->scratch_fwd = (size_t)kn_shp(g, n->in[0])->d[0] * sizeof(double); /* per-row losses */
    return KN_OK;
}

static double sce_flops(const kn_graph *g, const kn_node *n) { return 6.0 * (double)kn_numel(g, n->in[0]); }
static double sce_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * (double)kn_numel(g, n->in[0]); }

static void sce_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const int64_t N = kn_shp(g, n->in[0])->d[0], K = kn_shp(g, n->in[0])->d[1];
    const float *x = kn_ptr(g, n->in[0]);
    const int32_t *lab = kn_iptr(g, n->in[1]);
    float *loss = kn_ptr(g, n->out[0]), *probs = kn_ptr(g, n->out[1]);
    double *rows = rt->scratch;
#pragma omp parallel for schedule(static) if (N * K > 16384)
    for (int64_t r = 0; r < N; r++) {
        const float *xr = x + r * K;
        float *pr = probs + r * K;
        float mx = xr[0];
        for (int64_t k = 1; k < K; k++)
            if (xr[k] > mx) mx = xr[k];
        double s = 0.0;
        for (int64_t k = 0; k < K; k++) s += exp((double)xr[k] - (double)mx);
        const double lse = (double)mx + log(s);
        for (int64_t k = 0; k < K; k++) pr[k] = (float)exp((double)xr[k] - lse);
        const int32_t c = lab[r];
        rows[r] = (c >= 0 && c < K) ? lse - (double)xr[c] : NAN;
    }
    double t = 0.0;
    for (int64_t r = 0; r < N; r++) t += rows[r];
    loss[0] = (float)(t / (double)N);
}

static void sce_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    const int64_t N = kn_shp(g, n->in[0])->d[0], K = kn_shp(g, n->in[0])->d[1];
    const int32_t *lab = kn_iptr(g, n->in[1]);
    const float *probs = kn_ptr(g, n->out[1]);
    float *dx = din[0];
    const float scale = (float)((double)dout[0][0] / (double)N);
#pragma omp parallel for schedule(static) if (N * K > 32768)
    for (int64_t r = 0; r < N; r++) {
        const float *pr = probs + r * K;
        float *dr = dx + r * K;
        const int32_t c = lab[r];
        if (c < 0 || c >= K) {
            for (int64_t k = 0; k < K; k++) dr[k] = NAN;
            continue;
        }
        for (int64_t k = 0; k < K; k++) dr[k] = pr[k] * scale;
        dr[c] = (pr[c] - 1.0f) * scale;
    }
}

KN_ISA_KERNELS(sce, sce_forward, sce_backward)

KN_OP_DEF(kn_op_softmax_ce) = {
    .name = "softmax_ce",
    .infer = sce_infer,
    .flops_fwd = sce_flops,
    .flops_bwd = sce_flops_bwd,
    .bwd_reads_in = 0x2,  /* labels */
    .bwd_reads_out = 0x2, /* probs */
    .diff_inputs = 0x1,   /* logits only */
    .kernels = {[KN_BACKEND_CPU] = {sce_prepare, NULL, KN_ISA_FWD(sce), KN_ISA_BWD(sce)}},
};
