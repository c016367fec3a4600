/* softmax_ce: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/softmax_ce.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

/* positions (rows) and classes */
static void sce_dims(const kn_graph *g, const kn_node *n, int64_t *R, int64_t *K) {
    const kn_shape *l = kn_shp(g, n->in[0]);
    *K = l->d[l->nd - 1];
    *R = kn_shape_numel(l) / *K;
}

static int sce_plain(const kn_node *n) { return n->nin == 2 && n->a.f[0] == 0.0; }

static int sce_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    int64_t R, K;
    sce_dims(g, n, &R, &K);
    n->scratch_fwd = (size_t)R * sizeof(double); /* per-row losses */
    return KN_OK;
}

/* the denominator sum_r w[y_r] (R without weights), NaN if a label is out of range;
 * rows in order, in double */
static double sce_wsum(const float *w, const int32_t *lab, int64_t R, int64_t K) {
    if (!w) return (double)R;
    double s = 0.0;
    for (int64_t r = 0; r < R; r++) s += (lab[r] >= 0 && lab[r] < K) ? (double)w[lab[r]] : NAN;
    return s;
}

static void sce_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    int64_t N, K;
    sce_dims(g, n, &N, &K);
    N = kn_valid_numel(rt, g, n->in[1]); /* label positions of the valid samples */
    const float *x = kn_ptr(g, n->in[0]);
    const int32_t *lab = kn_iptr(g, n->in[1]);
    const float *w = n->nin == 3 ? kn_ptr(g, n->in[2]) : NULL;
    const double eps = n->a.f[0];
    const int plain = sce_plain(n);
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
        if (plain) {
            rows[r] = (c >= 0 && c < K) ? lse - (double)xr[c] : NAN;
            continue;
        }
        if (c < 0 || c >= K) {
            rows[r] = NAN;
            continue;
        }
        const double wc = w ? (double)w[c] : 1.0;
        double sm = 0.0; /* sum_k w[k] (lse - x_k) */
        if (eps != 0.0)
            for (int64_t k = 0; k < K; k++) sm += (w ? (double)w[k] : 1.0) * (lse - (double)xr[k]);
        rows[r] = (1.0 - eps) * wc * (lse - (double)xr[c]) + eps / (double)K * sm;
    }
    double t = 0.0;
    for (int64_t r = 0; r < N; r++) t += rows[r];
    loss[0] = (float)(t / sce_wsum(w, lab, N, K));
}

static void sce_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    kn_graph *g = rt->g;
    int64_t N, K;
    sce_dims(g, n, &N, &K);
    const int32_t *lab = kn_iptr(g, n->in[1]);
    const float *probs = kn_ptr(g, n->out[1]);
    float *dx = din[0];
    if (sce_plain(n)) {
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
        return;
    }
    const float *w = n->nin == 3 ? kn_ptr(g, n->in[2]) : NULL;
    const double eps = n->a.f[0], s = (double)dout[0][0] / sce_wsum(w, lab, N, K), ek = eps / (double)K;
    double S = (double)K;
    if (w) {
        S = 0.0;
        for (int64_t k = 0; k < K; k++) S += (double)w[k];
    }
#pragma omp parallel for schedule(static) if (N * K > 32768)
    for (int64_t r = 0; r < N; r++) {
        const float *pr = probs + r * K;
        float *dr = dx + r * K;
        const int32_t c = lab[r];
        if (c < 0 || c >= K) {
            for (int64_t k = 0; k < K; k++) dr[k] = NAN;
            continue;
        }
        const double a = (1.0 - eps) * (w ? (double)w[c] : 1.0);
        for (int64_t k = 0; k < K; k++) {
            const double p = (double)pr[k];
            dr[k] = (float)(s * (a * (p - (k == c ? 1.0 : 0.0)) + ek * (S * p - (w ? (double)w[k] : 1.0))));
        }
    }
}

KN_ISA_KERNELS(sce, sce_forward, sce_backward)

KN_CPU_OP(softmax_ce, sce, sce_prepare, NULL)
