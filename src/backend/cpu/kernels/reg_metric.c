/* reg_metric: the CPU kernels of the regression metrics mae, rmse and r2 (forward only),
 * registered by op id (backend/cpu/registry.c). The definition, the statistics and how
 * they are merged are in src/ops/reg_metric.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

#define RM_BLOCK 4096

enum { RM_MAE = 0, RM_RMSE, RM_R2 };

static int rm_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + RM_BLOCK - 1) / RM_BLOCK) * 2 * sizeof(double);
    return KN_OK;
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

KN_CPU_OP(mae, rmae, rm_prepare, NULL)
KN_CPU_OP(rmse, rrmse, rm_prepare, NULL)
KN_CPU_OP(r2, rr2, rm_prepare, NULL)
