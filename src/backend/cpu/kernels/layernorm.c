/* layernorm: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/layernorm.c. */
#include <math.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

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

KN_CPU_OP(layernorm, layernorm, NULL, NULL)
