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
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

/* ======================= (1) definition ======================= */

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

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

static void ln_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]);
    const int64_t D = xs->d[xs->nd - 1], R = kn_numel(g, n->in[0]) / D;
    const float *x = kn_ptr(g, n->in[0]);                       // (R, D)
    const float *ga = n->nin == 3 ? kn_ptr(g, n->in[1]) : NULL; // (D)
    const float *be = n->nin == 3 ? kn_ptr(g, n->in[2]) : NULL; // (D)
    float *y = kn_ptr(g, n->out[0]);                            // (R, D)
    float *mean = kn_ptr(g, n->out[1]), *rstd = kn_ptr(g, n->out[2]); // (R), (R)
    const double eps = n->a.f[0];
#pragma omp parallel for schedule(static) if (R * D > 16384 && R > 1)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * D;
        float *yr = y + r * D;
        double s = 0.0;
        for (int64_t j = 0; j < D; j++) s += (double)xr[j];
        const double m = s / (double)D;
        double v = 0.0;
        for (int64_t j = 0; j < D; j++) v += ((double)xr[j] - m) * ((double)xr[j] - m);
        const double rs = 1.0 / sqrt(v / (double)D + eps);
        mean[r] = (float)m;
        rstd[r] = (float)rs;
        const float mf = (float)m, rf = (float)rs;
        for (int64_t j = 0; j < D; j++) {
            const float h = (xr[j] - mf) * rf;
            yr[j] = ga ? h * ga[j] + be[j] : h;
        }
    }
}

static void ln_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const kn_shape *xs = kn_shp(g, n->in[0]);
    const int64_t D = xs->d[xs->nd - 1], R = kn_numel(g, n->in[0]) / D;
    const float *x = kn_ptr(g, n->in[0]);                       // (R, D)
    const float *ga = n->nin == 3 ? kn_ptr(g, n->in[1]) : NULL; // (D)
    const float *mean = kn_ptr(g, n->out[1]), *rstd = kn_ptr(g, n->out[2]); // (R), (R)
    const float *dy = dout[0];                                  // (R, D)
    float *dx = din[0];                                         // (R, D), may be dy's buffer
    float *dga = n->nin == 3 ? din[1] : NULL, *dbe = n->nin == 3 ? din[2] : NULL; // (D), (D)
    if (dga || dbe) {
        const int64_t CB = 64, ncb = (D + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (R * D > KN_ND_PAR && ncb > 1)
        for (int64_t cb = 0; cb < ncb; cb++) {
            double sg[64], sb[64];
            const int64_t c0 = cb * CB, c1 = c0 + CB < D ? c0 + CB : D;
            for (int64_t j = c0; j < c1; j++) sg[j - c0] = sb[j - c0] = 0.0;
            for (int64_t r = 0; r < R; r++) {
                const float *xr = x + r * D, *dr = dy + r * D;
                const float mf = mean[r], rf = rstd[r];
                for (int64_t j = c0; j < c1; j++) {
                    sg[j - c0] += (double)dr[j] * (double)((xr[j] - mf) * rf);
                    sb[j - c0] += (double)dr[j];
                }
            }
            for (int64_t j = c0; j < c1; j++) {
                if (dga) dga[j] = (float)sg[j - c0];
                if (dbe) dbe[j] = (float)sb[j - c0];
            }
        }
    }
    if (!dx) return;
#pragma omp parallel for schedule(static) if (R * D > 16384 && R > 1)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * D, *dr = dy + r * D;
        float *xo = dx + r * D;
        const float mf = mean[r], rf = rstd[r];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t j = 0; j < D; j++) {
            const double gj = (double)dr[j] * (ga ? (double)ga[j] : 1.0);
            s1 += gj;
            s2 += gj * (double)((xr[j] - mf) * rf);
        }
        const double m1 = s1 / (double)D, m2 = s2 / (double)D;
        for (int64_t j = 0; j < D; j++) {
            const double gj = (double)dr[j] * (ga ? (double)ga[j] : 1.0);
            const double h = (double)((xr[j] - mf) * rf);
            xo[j] = (float)((double)rf * (gj - m1 - h * m2));
        }
    }
}

KN_ISA_KERNELS(layernorm, ln_forward, ln_backward)

/* ============ (1, continued) the op: the definition as a struct; only its .kernels entry names section 2 ============ */
KN_OP_DEF(kn_op_layernorm) = {
    .name = "layernorm",
    .infer = ln_infer,
    .flops_fwd = ln_flops,
    .flops_bwd = ln_flops_bwd,
    .bwd_reads_in = 0x3,  /* x, gamma */
    .bwd_reads_out = 0x6, /* mean, rstd */
    .diff_inputs = 0x7,
    .bwd_inplace = 0x1,   /* dx over dy */
    .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(layernorm), KN_ISA_BWD(layernorm)}},
};
