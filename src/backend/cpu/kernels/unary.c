/* unary: the CPU kernels of the unary maths (exp, log, sqrt, rsqrt, neg, square,
 * affine), forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition and the maths are in src/ops/unary.c. */
#include <math.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

/* FWD(x) and BWD(x, y, dy) are expressions; a and c are f[0] and f[1]. */
#define UNARY_KERNELS(tag, FWD, BWD)                                                                       \
    static void tag##_forward(const kn_node *n, kn_rt *rt) {                                               \
        const float *x = kn_ptr(rt->g, n->in[0]); /* (...) */                                              \
        float *y = kn_ptr(rt->g, n->out[0]);      /* (...) */                                              \
        const int64_t m = kn_numel(rt->g, n->in[0]);                                                       \
        const float a = (float)n->a.f[0], c = (float)n->a.f[1];                                            \
        (void)a, (void)c;                                                                                  \
        _Pragma("omp parallel for schedule(static) if (m > KN_ND_PAR)")                                    \
        for (int64_t k = 0; k < m; k++) y[k] = FWD(x[k]);                                                  \
    }                                                                                                      \
    static void tag##_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        if (!din[0]) return;                                                                               \
        const float *x = kn_ptr(rt->g, n->in[0]);  /* (...) valid only where the op reads it */           \
        const float *y = kn_ptr(rt->g, n->out[0]); /* (...) likewise */                                   \
        const float *dy = dout[0];                 /* (...) */                                             \
        float *dx = din[0];                        /* (...) may be dy's buffer */                          \
        const int64_t m = kn_numel(rt->g, n->in[0]);                                                       \
        const float a = (float)n->a.f[0];                                                                  \
        (void)a, (void)x, (void)y;                                                                         \
        _Pragma("omp parallel for schedule(static) if (m > KN_ND_PAR)")                                    \
        for (int64_t k = 0; k < m; k++) dx[k] = BWD(x[k], y[k], dy[k]);                                    \
    }                                                                                                      \
    KN_ISA_KERNELS(tag, tag##_forward, tag##_backward)

#define EXP_F(x) expf(x)
#define EXP_B(x, y, d) ((d) * (y))
#define LOG_F(x) logf(x)
#define LOG_B(x, y, d) ((d) / (x))
#define SQRT_F(x) sqrtf(x)
#define SQRT_B(x, y, d) ((d) * 0.5f / (y))
#define RSQRT_F(x) (1.0f / sqrtf(x))
#define RSQRT_B(x, y, d) ((d) * -0.5f * (y) * (y) * (y))
#define NEG_F(x) (-(x))
#define NEG_B(x, y, d) (-(d))
#define SQUARE_F(x) ((x) * (x))
#define SQUARE_B(x, y, d) ((d) * 2.0f * (x))
#define AFFINE_F(x) (a * (x) + c)
#define AFFINE_B(x, y, d) ((d) * a)

UNARY_KERNELS(exp, EXP_F, EXP_B)
UNARY_KERNELS(log, LOG_F, LOG_B)
UNARY_KERNELS(sqrt, SQRT_F, SQRT_B)
UNARY_KERNELS(rsqrt, RSQRT_F, RSQRT_B)
UNARY_KERNELS(neg, NEG_F, NEG_B)
UNARY_KERNELS(square, SQUARE_F, SQUARE_B)
UNARY_KERNELS(affine, AFFINE_F, AFFINE_B)

KN_CPU_OP(exp, exp, NULL, NULL)
KN_CPU_OP(log, log, NULL, NULL)
KN_CPU_OP(sqrt, sqrt, NULL, NULL)
KN_CPU_OP(rsqrt, rsqrt, NULL, NULL)
KN_CPU_OP(neg, neg, NULL, NULL)
KN_CPU_OP(square, square, NULL, NULL)
KN_CPU_OP(affine, affine, NULL, NULL)
