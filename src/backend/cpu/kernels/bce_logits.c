/* bce_logits: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/bce_logits.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

#define BCE_BLOCK 4096

static int bce_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t m = kn_numel(g, n->in[0]);
    n->scratch_fwd = (size_t)((m + BCE_BLOCK - 1) / BCE_BLOCK) * sizeof(double);
    return KN_OK;
}

static inline double bce_softplus(double z) { return (z > 0 ? z : 0.0) + log1p(exp(-fabs(z))); }
static inline double bce_sigmoid(double z) {
    if (z >= 0) return 1.0 / (1.0 + exp(-z));
    const double e = exp(z);
    return e / (1.0 + e);
}

/* the positive weight of element k: pw[k % C] (C = 1 or the last dim), 1 without pw */
static const float *bce_pw(const kn_graph *g, const kn_node *n, int64_t *C) {
    if (n->nin < 3) {
        *C = 1;
        return NULL;
    }
    *C = kn_numel(g, n->in[2]);
    return kn_ptr(g, n->in[2]);
}

static void bce_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *x = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    int64_t C;
    const float *pw = bce_pw(g, n, &C);
    const int64_t m = kn_valid_numel(rt, g, n->in[0]), nb = (m + BCE_BLOCK - 1) / BCE_BLOCK;
    double *part = rt->scratch;
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t k1 = (b + 1) * BCE_BLOCK < m ? (b + 1) * BCE_BLOCK : m;
        double s = 0.0;
        for (int64_t k = b * BCE_BLOCK; k < k1; k++) {
            const double xk = (double)x[k], tk = (double)t[k];
            const double lw = pw ? 1.0 + ((double)pw[k % C] - 1.0) * tk : 1.0;
            s += (1.0 - tk) * xk + lw * bce_softplus(-xk);
        }
        part[b] = s;
    }
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    kn_ptr(g, n->out[0])[0] = (float)(s / (double)m);
}

static void bce_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const float *x = kn_ptr(g, n->in[0]), *t = kn_ptr(g, n->in[1]);
    int64_t C;
    const float *pw = bce_pw(g, n, &C);
    const int64_t m = kn_numel(g, n->in[0]);
    const double gs = (double)dout[0][0] / (double)m;
    float *dx = din[0], *dt = din[1];
#pragma omp parallel for schedule(static) if (m > 32768)
    for (int64_t k = 0; k < m; k++) {
        const double xk = (double)x[k], tk = (double)t[k], p = pw ? (double)pw[k % C] : 1.0;
        if (dx) dx[k] = (float)(gs * ((1.0 - tk) - (1.0 + (p - 1.0) * tk) * (1.0 - bce_sigmoid(xk))));
        if (dt) dt[k] = (float)(gs * ((p - 1.0) * bce_softplus(-xk) - xk));
    }
}

KN_ISA_KERNELS(bce, bce_forward, bce_backward)

KN_CPU_OP(bce_logits, bce, bce_prepare, NULL)
