/* accuracy: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/accuracy.c. */
#include <math.h>

#include "backend/cpu/kernels.h"

/* a ranks above b: larger, or NaN against a number */
static inline int acc_gt(float a, float b) { return a > b || (isnan(a) && !isnan(b)); }
static inline int acc_eq(float a, float b) { return a == b || (isnan(a) && isnan(b)); }

static void acc_forward(int64_t k, const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const kn_shape *l = kn_shp(g, n->in[0]);
    const int64_t K = l->d[l->nd - 1], R = kn_valid_numel(rt, g, n->in[1]);
    const float *x = kn_ptr(g, n->in[0]);
    const int32_t *lab = kn_iptr(g, n->in[1]);
    int64_t correct = 0;
#pragma omp parallel for schedule(static) reduction(+ : correct) if (R * K > 65536)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * K;
        const int32_t c = lab[r];
        if (c < 0 || c >= K) continue;
        const float v = xr[c];
        int64_t rank = 0;
        for (int64_t j = 0; j < K && rank < k; j++) rank += acc_gt(xr[j], v) || (j < c && acc_eq(xr[j], v));
        correct += rank < k;
    }
    float *out = kn_ptr(g, n->out[0]);
    out[0] = (float)correct;
    out[1] = (float)R;
}

static void acc_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    (void)n, (void)rt, (void)din, (void)dout; /* no gradient (diff_inputs = 0) */
}

static void acc1_forward(const kn_node *n, kn_rt *rt) { acc_forward(1, n, rt); }
static void acck_forward(const kn_node *n, kn_rt *rt) { acc_forward(n->a.i[0], n, rt); }

KN_ISA_KERNELS(acc1, acc1_forward, acc_backward)
KN_ISA_KERNELS(acck, acck_forward, acc_backward)

KN_CPU_OP(accuracy, acc1, NULL, NULL)
KN_CPU_OP(topk_accuracy, acck, NULL, NULL)
