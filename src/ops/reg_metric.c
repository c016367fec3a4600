/* Regression metrics (forward only: no gradient flows through them): mae, rmse, r2
 * (one table).
 *   inputs: pred, target float32 of the same shape (any rank, non-empty).
 *   output: per-batch sufficient statistics, float32, computed in double (d = pred -
 *           target, y = target, n = numel):
 *     mae:  stats[2] = (sum |d|, n)       batch MAE  = sum |d| / n
 *     rmse: stats[2] = (sum d^2, n)       batch RMSE = sqrt(sum d^2 / n)
 *     r2:   stats[4] = (SSE = sum d^2, n, mean(y), M2 = sum (y - mean(y))^2)
 *                                         batch R^2  = 1 - SSE / M2
 *   Over an evaluation set, MAE and RMSE sum both statistics over batches (in double)
 *   and divide at the end (RMSE = sqrt(sum SSE / sum n): not a mean of batch RMSEs). R^2
 *   cannot be averaged over batches either: it is 1 - SSE / SST with SST the target's
 *   sum of squared deviations about the mean of the whole set; the batches' (n, mean,
 *   M2) are merged exactly (Chan et al.'s pairwise update, in double: with
 *   delta = mean_b - mean_a, M2 = M2_a + M2_b + delta^2 n_a n_b / n), which is
 *   SST = sum y^2 - (sum y)^2 / n without its cancellation (raw sums of y^2 in float32
 *   would lose the variance of a target far from 0). ops/metric.h does all of this:
 *   kn_metric_add(kind, acc, stats) per batch, kn_metric_finish(kind, acc) at the end.
 *   n is exact in float32 up to 2^24 elements per batch.
 * Sums run over fixed blocks of RM_BLOCK elements (partials in double, in a scratch
 * buffer) added in block order (r2: a second pass for M2 about the batch mean): the
 * statistics do not depend on the thread count. */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"

#define RM_BLOCK 4096

enum { RM_MAE = 0, RM_RMSE, RM_R2 };

static int rm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    const char *nm = n->op->name;
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "%s takes a prediction and a target (2 inputs), got %d", nm, n->nin);
    const kn_value *p = &g->v[n->in[0]], *t = &g->v[n->in[1]];
    if (!kn_shape_eq(&p->shape, &t->shape))
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a prediction and a target of the same shape, got %s and %s", nm,
                      kn_shape_str(&p->shape, a, sizeof a), kn_shape_str(&t->shape, b, sizeof b));
    if (p->dtype != KN_F32 || t->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects float32 inputs, got an integer tensor", nm);
    if (kn_shape_numel(&p->shape) < 1) return kn_err(ctx, KN_ERR_SHAPE, "%s expects a non-empty prediction", nm);
    return kn_g_declare_out(g, n, 0, KN_F32, kn_shape1(n->op == &kn_op_r2 ? 4 : 2)) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static int rm_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + RM_BLOCK - 1) / RM_BLOCK) * 2 * sizeof(double);
    return KN_OK;
}

static double rm_flops(const kn_graph *g, const kn_node *n) {
    return (n->op == &kn_op_r2 ? 7.0 : 3.0) * (double)kn_numel(g, n->in[0]);
}
static double rm_flops_bwd(const kn_graph *g, const kn_node *n) {
    (void)g, (void)n;
    return 0.0;
}

static void rm_forward(int kind, const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *p = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + RM_BLOCK - 1) / RM_BLOCK;
    double *part = rt->scratch, *party = part + nb; /* per block: the error sum; the target sum */
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * RM_BLOCK < m ? (b + 1) * RM_BLOCK : m;
        double s = 0.0, sy = 0.0;
        for (int64_t k = b * RM_BLOCK; k < k1; k++) {
            const double d = (double)p[k] - (double)t[k];
            s += kind == RM_MAE ? fabs(d) : d * d;
            sy += (double)t[k];
        }
        part[b] = s;
        party[b] = sy;
    }
    double s = 0.0, sy = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b], sy += party[b];
    float *out = kn_ptr(g, n->out[0]);
    out[0] = (float)s;
    out[1] = (float)m;
    if (kind != RM_R2) return;
    const double mean = sy / (double)m;
#pragma omp parallel for schedule(static) if (m > 65536)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * RM_BLOCK < m ? (b + 1) * RM_BLOCK : m;
        double s2 = 0.0;
        for (int64_t k = b * RM_BLOCK; k < k1; k++) {
            const double e = (double)t[k] - mean;
            s2 += e * e;
        }
        part[b] = s2;
    }
    double m2 = 0.0;
    for (int64_t b = 0; b < nb; b++) m2 += part[b];
    out[2] = (float)mean;
    out[3] = (float)m2;
}

static void rm_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    (void)n, (void)rt, (void)din, (void)dout; /* no gradient (diff_inputs = 0) */
}

#define RM_KERNELS(tag, KIND)                                                           \
    static void tag##_forward(const kn_node *n, kn_rt *rt) { rm_forward(KIND, n, rt); } \
    KN_ISA_KERNELS(tag, tag##_forward, rm_backward)

RM_KERNELS(rmae, RM_MAE)
RM_KERNELS(rrmse, RM_RMSE)
RM_KERNELS(rr2, RM_R2)

#define RM_DEF(sym, nm, tag)                                                                \
    KN_OP_DEF(sym) = {                                                                      \
        .name = nm,                                                                         \
        .infer = rm_infer,                                                                  \
        .flops_fwd = rm_flops,                                                              \
        .flops_bwd = rm_flops_bwd,                                                          \
        .diff_inputs = 0,                                                                   \
        .kernels = {[KN_BACKEND_CPU] = {rm_prepare, NULL, KN_ISA_FWD(tag), KN_ISA_BWD(tag)}}, \
    };

RM_DEF(kn_op_mae, "mae", rmae)
RM_DEF(kn_op_rmse, "rmse", rrmse)
RM_DEF(kn_op_r2, "r2", rr2)
