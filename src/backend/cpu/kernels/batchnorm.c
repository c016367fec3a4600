/* batchnorm: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/batchnorm.c. */
#include <math.h>

#include "backend/cpu/kernels.h"
#include "backend/cpu/layout.h"
#include "ops/fused.h"

/* Layout: element (b, c, s) of x sits at b*C*S + c*S + s, with S = H*W (1 for 1d). */
typedef struct { int64_t N, C, S; } bn_dims;
static bn_dims bn_dims_of(const kn_graph *g, const kn_node *n) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    bn_dims d = {x->d[0], x->d[1], x->nd == 4 ? x->d[2] * x->d[3] : 1};
    return d;
}

static void bn_forward_blocked(const kn_node *n, kn_rt *rt, int B, int relu);
static void bn_backward_blocked(const kn_node *n, kn_rt *rt, int B, int relu, float *const *din,
                                const float *const *dout);

static void bn_forward(const kn_node *n, kn_rt *rt) {
    const int relu = n->op->id == KN_OP_BATCHNORM_RELU;
    const int B = (int)n->a.i[KN_ATTR_LAYOUT];
    if (B) { bn_forward_blocked(n, rt, B, relu); return; }
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, m = N * S;
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]), *beta = kn_ptr(g, n->in[2]);
    float *rmean = kn_ptr(g, n->in[3]), *rvar = kn_ptr(g, n->in[4]);
    float *y = kn_ptr(g, n->out[0]), *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const double mom = n->a.f[0], eps = n->a.f[1];
    const int training = rt->training;
#pragma omp parallel for schedule(static) if (N * C * S > 16384)
    for (int64_t c = 0; c < C; c++) {
        double mean, invstd;
        if (training) {
            double s = 0.0;
            for (int64_t b = 0; b < N; b++) {
                const float *xp = x + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) s += xp[k];
            }
            mean = s / (double)m;
            double v = 0.0;
            for (int64_t b = 0; b < N; b++) {
                const float *xp = x + (b * C + c) * S;
                for (int64_t k = 0; k < S; k++) {
                    double t = (double)xp[k] - mean;
                    v += t * t;
                }
            }
            double var = v / (double)m;
            double unbiased = m > 1 ? v / (double)(m - 1) : var;
            invstd = 1.0 / sqrt(var + eps);
            rmean[c] = (float)((1.0 - mom) * (double)rmean[c] + mom * mean);
            rvar[c] = (float)((1.0 - mom) * (double)rvar[c] + mom * unbiased);
        } else {
            mean = rmean[c];
            invstd = 1.0 / sqrt((double)rvar[c] + eps);
        }
        smean[c] = (float)mean;
        sinv[c] = (float)invstd;
        /* in double: no cancellation when |mean| >> std; from the saved (float) statistics,
         * which the backward of batchnorm_relu uses to recompute these values exactly */
        const double mr = smean[c], scale = (double)gamma[c] * (double)sinv[c], shift = beta[c];
        for (int64_t b = 0; b < N; b++) {
            const float *xp = x + (b * C + c) * S;
            float *yp = y + (b * C + c) * S;
            for (int64_t k = 0; k < S; k++) yp[k] = (float)(((double)xp[k] - mr) * scale + shift);
            if (relu)
                for (int64_t k = 0; k < S; k++) yp[k] = yp[k] > 0.0f ? yp[k] : 0.0f;
        }
    }
}

static void bn_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    const int relu = n->op->id == KN_OP_BATCHNORM_RELU;
    const int B = (int)n->a.i[KN_ATTR_LAYOUT];
    if (B) { bn_backward_blocked(n, rt, B, relu, din, dout); return; }
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, m = N * S;
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]), *beta = kn_ptr(g, n->in[2]);
    const float *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const float *dy = dout[0];
    float *dx = din[0], *dgamma = din[1], *dbeta = din[2];
    const int training = rt->training;
/* the gradient that reaches the normalisation: through the fused ReLU's mask, the
 * forward's output recomputed as the forward computed it */
#define BN_DY(off, k)                                                                                     \
    (relu ? ((float)(((double)x[(off) + (k)] - mean) * rscale + rshift) > 0.0f ? dy[(off) + (k)] : 0.0f) \
          : dy[(off) + (k)])
#pragma omp parallel for schedule(static) if (N * C * S > 16384)
    for (int64_t c = 0; c < C; c++) {
        const double mean = smean[c], invstd = sinv[c];
        const double rscale = (double)gamma[c] * (double)sinv[c], rshift = beta[c];
        double sdy = 0.0, sdyxh = 0.0;
        for (int64_t b = 0; b < N; b++) {
            const int64_t off = (b * C + c) * S;
            const float *xp = x + off;
            for (int64_t k = 0; k < S; k++) {
                const float gk = BN_DY(off, k);
                sdy += gk;
                sdyxh += (double)gk * (((double)xp[k] - mean) * invstd);
            }
        }
        if (dgamma) dgamma[c] = (float)sdyxh;
        if (dbeta) dbeta[c] = (float)sdy;
        if (!dx) continue;
        const double gi = (double)gamma[c] * invstd;
        if (training) {
            /* dx = gi * (dy - sdy/m - xh * sdyxh/m) */
            const double a = sdy / (double)m, bcoef = sdyxh / (double)m;
            for (int64_t b = 0; b < N; b++) {
                const int64_t off = (b * C + c) * S;
                const float *xp = x + off;
                float *dxp = dx + off;
                for (int64_t k = 0; k < S; k++) {
                    double xh = ((double)xp[k] - mean) * invstd;
                    dxp[k] = (float)(gi * ((double)BN_DY(off, k) - a - xh * bcoef));
                }
            }
        } else {
            const float fgi = (float)gi;
            for (int64_t b = 0; b < N; b++) {
                const int64_t off = (b * C + c) * S;
                float *dxp = dx + off;
                for (int64_t k = 0; k < S; k++) dxp[k] = BN_DY(off, k) * fgi;
            }
        }
    }
#undef BN_DY
}

/* ---------------- channel-blocked kernels ----------------
 * x[n][c/B][s][c%B]; scratch: per-sample partial sums [N][C][2] (double), then the
 * per-channel coefficients [3][C] (float). B is 8 or 16: one or two 8-lane vectors. */
static size_t bn_scratch_bytes(int64_t N, int64_t C) {
    return (size_t)(N * C * 2) * sizeof(double) + (size_t)(4 * C) * sizeof(float) + 64;
}

static void bn_forward_blocked(const kn_node *n, kn_rt *rt, int B, int relu) {
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, CB = C / B, m = N * S;
    const int Q = B / 8; /* 8-lane vectors per block */
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]), *beta = kn_ptr(g, n->in[2]);
    float *rmean = kn_ptr(g, n->in[3]), *rvar = kn_ptr(g, n->in[4]);
    float *y = kn_ptr(g, n->out[0]), *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const double mom = n->a.f[0], eps = n->a.f[1];
    double *part = rt->scratch;
    float *cm = (float *)(void *)(part + N * C * 2), *cs = cm + C, *cb_ = cs + C;
    if (rt->training) {
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 32768)
        for (int64_t b = 0; b < N; b++)
            for (int64_t cb = 0; cb < CB; cb++) {
                const float *xp = x + (b * CB + cb) * S * B, *k0 = x + cb * S * B;
                kn_v8d a1[2] = {0}, a2[2] = {0}, K[2];
                for (int q = 0; q < Q; q++) K[q] = kn_cvt8(kn_ld8(k0 + 8 * q));
                for (int64_t k = 0; k < S; k++)
                    for (int q = 0; q < Q; q++) {
                        const kn_v8d t = kn_cvt8(kn_ld8(xp + k * B + 8 * q)) - K[q];
                        a1[q] += t;
                        a2[q] += t * t;
                    }
                double *pp = part + (b * C + cb * B) * 2;
                for (int l = 0; l < B; l++) {
                    pp[2 * l] = a1[l / 8][l % 8];
                    pp[2 * l + 1] = a2[l / 8][l % 8];
                }
            }
#pragma omp parallel for schedule(static) if (N * C > 4096)
        for (int64_t c = 0; c < C; c++) {
            double s1 = 0.0, s2 = 0.0;
            for (int64_t b = 0; b < N; b++) {
                s1 += part[(b * C + c) * 2];
                s2 += part[(b * C + c) * 2 + 1];
            }
            const double K = x[(c / B) * S * B + c % B], d1 = s1 / (double)m;
            const double mean = K + d1;
            double var = s2 / (double)m - d1 * d1;
            if (var < 0.0) var = 0.0;
            const double unbiased = m > 1 ? var * (double)m / (double)(m - 1) : var;
            const double invstd = 1.0 / sqrt(var + eps);
            rmean[c] = (float)((1.0 - mom) * (double)rmean[c] + mom * mean);
            rvar[c] = (float)((1.0 - mom) * (double)rvar[c] + mom * unbiased);
            smean[c] = (float)mean;
            sinv[c] = (float)invstd;
            cm[c] = (float)mean;
            cs[c] = (float)((double)gamma[c] * (double)sinv[c]); /* the backward recomputes it */
            cb_[c] = beta[c];
        }
    } else {
        for (int64_t c = 0; c < C; c++) {
            const double invstd = 1.0 / sqrt((double)rvar[c] + eps);
            smean[c] = rmean[c];
            sinv[c] = (float)invstd;
            cm[c] = rmean[c];
            cs[c] = (float)((double)gamma[c] * (double)sinv[c]);
            cb_[c] = beta[c];
        }
    }
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 32768)
    for (int64_t b = 0; b < N; b++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *xp = x + (b * CB + cb) * S * B;
            float *yp = y + (b * CB + cb) * S * B;
            kn_v8f mu[2], sc[2], be[2];
            for (int q = 0; q < Q; q++) {
                mu[q] = kn_ld8(cm + cb * B + 8 * q);
                sc[q] = kn_ld8(cs + cb * B + 8 * q);
                be[q] = kn_ld8(cb_ + cb * B + 8 * q);
            }
            for (int64_t k = 0; k < S; k++)
                for (int q = 0; q < Q; q++) {
                    kn_v8f v = (kn_ld8(xp + k * B + 8 * q) - mu[q]) * sc[q] + be[q];
                    kn_st8(yp + k * B + 8 * q, relu ? kn_relu8(v) : v);
                }
        }
}

static void bn_backward_blocked(const kn_node *n, kn_rt *rt, int B, int relu, float *const *din,
                                const float *const *dout) {
    kn_graph *g = rt->g;
    const bn_dims d = bn_dims_of(g, n);
    const int64_t N = d.N, C = d.C, S = d.S, CB = C / B, m = N * S;
    const int Q = B / 8;
    const float *x = kn_ptr(g, n->in[0]), *gamma = kn_ptr(g, n->in[1]), *beta = kn_ptr(g, n->in[2]);
    const float *smean = kn_ptr(g, n->out[1]), *sinv = kn_ptr(g, n->out[2]);
    const float *dy = dout[0];
    float *dx = din[0], *dgamma = din[1], *dbeta = din[2];
    double *part = rt->scratch;
    float *k1 = (float *)(void *)(part + N * C * 2), *k2 = k1 + C, *k0 = k2 + C;
    const kn_v8f zero = kn_splat8(0.0f);
    /* the ReLU mask: the forward's output, recomputed exactly as the forward did */
    float *rs = k0 + C;
    for (int64_t c = 0; c < C; c++) rs[c] = (float)((double)gamma[c] * (double)sinv[c]);
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 32768)
    for (int64_t b = 0; b < N; b++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const int64_t off = (b * CB + cb) * S * B;
            const float *xp = x + off, *dyp = dy + off;
            kn_v8d a1[2] = {0}, a2[2] = {0}, mu[2];
            kn_v8f muf[2], sc[2], be[2];
            for (int q = 0; q < Q; q++) {
                muf[q] = kn_ld8(smean + cb * B + 8 * q);
                mu[q] = kn_cvt8(muf[q]);
                sc[q] = kn_ld8(rs + cb * B + 8 * q);
                be[q] = kn_ld8(beta + cb * B + 8 * q);
            }
            for (int64_t k = 0; k < S; k++)
                for (int q = 0; q < Q; q++) {
                    const kn_v8f xv = kn_ld8(xp + k * B + 8 * q);
                    kn_v8f gk = kn_ld8(dyp + k * B + 8 * q);
                    if (relu) gk = kn_sel8((xv - muf[q]) * sc[q] + be[q] > zero, gk, zero);
                    const kn_v8d gd = kn_cvt8(gk);
                    a1[q] += gd;
                    a2[q] += gd * (kn_cvt8(xv) - mu[q]);
                }
            double *pp = part + (b * C + cb * B) * 2;
            for (int l = 0; l < B; l++) {
                pp[2 * l] = a1[l / 8][l % 8];
                pp[2 * l + 1] = a2[l / 8][l % 8];
            }
        }
    const int training = rt->training;
#pragma omp parallel for schedule(static) if (N * C > 4096)
    for (int64_t c = 0; c < C; c++) {
        double sdy = 0.0, sdyxm = 0.0;
        for (int64_t b = 0; b < N; b++) {
            sdy += part[(b * C + c) * 2];
            sdyxm += part[(b * C + c) * 2 + 1];
        }
        const double invstd = sinv[c], sdyxh = sdyxm * invstd, gi = (double)gamma[c] * invstd;
        if (dgamma) dgamma[c] = (float)sdyxh;
        if (dbeta) dbeta[c] = (float)sdy;
        /* dx = gi * (dy - sdy/m - xh * sdyxh/m) = k1 dy - k2 (x - mean) - k0 */
        k1[c] = (float)gi;
        k2[c] = training ? (float)(gi * invstd * sdyxh / (double)m) : 0.0f;
        k0[c] = training ? (float)(gi * sdy / (double)m) : 0.0f;
    }
    if (!dx) return;
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 32768)
    for (int64_t b = 0; b < N; b++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const int64_t off = (b * CB + cb) * S * B;
            const float *xp = x + off, *dyp = dy + off;
            float *dxp = dx + off;
            kn_v8f mu[2], c1[2], c2[2], c0[2], sc[2], be[2];
            for (int q = 0; q < Q; q++) {
                mu[q] = kn_ld8(smean + cb * B + 8 * q);
                c1[q] = kn_ld8(k1 + cb * B + 8 * q);
                c2[q] = kn_ld8(k2 + cb * B + 8 * q);
                c0[q] = kn_ld8(k0 + cb * B + 8 * q);
                sc[q] = kn_ld8(rs + cb * B + 8 * q);
                be[q] = kn_ld8(beta + cb * B + 8 * q);
            }
            for (int64_t k = 0; k < S; k++)
                for (int q = 0; q < Q; q++) {
                    const kn_v8f xv = kn_ld8(xp + k * B + 8 * q);
                    kn_v8f gk = kn_ld8(dyp + k * B + 8 * q);
                    if (relu) gk = kn_sel8((xv - mu[q]) * sc[q] + be[q] > zero, gk, zero);
                    kn_st8(dxp + k * B + 8 * q, c1[q] * gk - c2[q] * (xv - mu[q]) - c0[q]);
                }
        }
}

static int bn_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int B = kn_layout(g, n->in[0]);
    n->a.i[KN_ATTR_LAYOUT] = B;
    if (B) {
        const bn_dims d = bn_dims_of(g, n);
        n->scratch_fwd = n->scratch_bwd = bn_scratch_bytes(d.N, d.C);
    }
    return KN_OK;
}

KN_ISA_KERNELS(bn, bn_forward, bn_backward)

KN_CPU_OP(batchnorm, bn, bn_prepare, NULL)
KN_CPU_OP(batchnorm_relu, bn, bn_prepare, NULL)
