/* softmax: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/softmax.c. */
#include <math.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

static int sm_axis(const kn_shape *s, int64_t a) { return (int)(a < 0 ? a + s->nd : a); }

/* x as [outer, A, inner]: a line is A elements of stride inner */
static void sm_geom(const kn_graph *g, const kn_node *n, int64_t *outer, int64_t *A, int64_t *inner) {
    const kn_shape *s = kn_shp(g, n->in[0]);
    const int ax = sm_axis(s, n->a.i[0]);
    *outer = *inner = 1;
    for (int k = 0; k < ax; k++) *outer *= s->d[k];
    for (int k = ax + 1; k < s->nd; k++) *inner *= s->d[k];
    *A = s->d[ax];
}

static void sm_forward(int logsm, const kn_node *n, kn_rt *rt) {
    int64_t outer, A, inner;
    sm_geom(rt->g, n, &outer, &A, &inner);
    const float *x = kn_ptr(rt->g, n->in[0]); // (outer, A, inner)
    float *y = kn_ptr(rt->g, n->out[0]);      // (outer, A, inner)
    const int64_t lines = outer * inner;
#pragma omp parallel for schedule(static) if (lines * A > 16384 && lines > 1)
    for (int64_t l = 0; l < lines; l++) {
        const int64_t o = l / inner, i = l % inner;
        const float *xl = x + o * A * inner + i;
        float *yl = y + o * A * inner + i;
        float mx = xl[0];
        for (int64_t a = 1; a < A; a++)
            if (xl[a * inner] > mx) mx = xl[a * inner];
        double s = 0.0;
        if (logsm) {
            for (int64_t a = 0; a < A; a++) s += (double)expf(xl[a * inner] - mx);
            const double lse = (double)mx + log(s);
            for (int64_t a = 0; a < A; a++) yl[a * inner] = (float)((double)xl[a * inner] - lse);
        } else {
            for (int64_t a = 0; a < A; a++) {
                const float e = expf(xl[a * inner] - mx);
                yl[a * inner] = e;
                s += (double)e;
            }
            const float r = (float)(1.0 / s);
            for (int64_t a = 0; a < A; a++) yl[a * inner] *= r;
        }
    }
}

static void sm_backward(int logsm, const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    if (!din[0]) return;
    int64_t outer, A, inner;
    sm_geom(rt->g, n, &outer, &A, &inner);
    const float *y = kn_ptr(rt->g, n->out[0]); // (outer, A, inner)
    const float *dy = dout[0];                 // (outer, A, inner)
    float *dx = din[0];                        // (outer, A, inner), may be dy's buffer
    const int64_t lines = outer * inner;
#pragma omp parallel for schedule(static) if (lines * A > 16384 && lines > 1)
    for (int64_t l = 0; l < lines; l++) {
        const int64_t off = (l / inner) * A * inner + l % inner;
        const float *yl = y + off, *dl = dy + off;
        float *xl = dx + off;
        double s = 0.0;
        if (logsm) {
            for (int64_t a = 0; a < A; a++) s += (double)dl[a * inner];
            for (int64_t a = 0; a < A; a++)
                xl[a * inner] = (float)((double)dl[a * inner] - (double)expf(yl[a * inner]) * s);
        } else {
            for (int64_t a = 0; a < A; a++) s += (double)dl[a * inner] * (double)yl[a * inner];
            for (int64_t a = 0; a < A; a++)
                xl[a * inner] = (float)((double)yl[a * inner] * ((double)dl[a * inner] - s));
        }
    }
}

static void softmax_forward(const kn_node *n, kn_rt *rt) { sm_forward(0, n, rt); }
static void softmax_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    sm_backward(0, n, rt, din, dout);
}
static void logsm_forward(const kn_node *n, kn_rt *rt) { sm_forward(1, n, rt); }
static void logsm_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    sm_backward(1, n, rt, din, dout);
}

KN_ISA_KERNELS(softmax, softmax_forward, softmax_backward)
KN_ISA_KERNELS(logsm, logsm_forward, logsm_backward)

KN_CPU_OP(softmax, softmax, NULL, NULL)
KN_CPU_OP(log_softmax, logsm, NULL, NULL)
