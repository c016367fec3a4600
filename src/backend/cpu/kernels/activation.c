/* activation: the CPU kernels of the six activations (relu, leaky_relu, gelu, silu,
 * tanh, sigmoid), forward and backward side by side, from the table KN_ACTIVATIONS
 * (ops/activation.h) and the scalar forms below; registered by op id
 * (backend/cpu/registry.c). The definitions and the maths are in src/ops/activation.c. */
#include <math.h>

#include "backend/cpu/kernels.h"
#include "ops/activation.h"

#define GELU_RSQRT2 0.70710678118654752440f
#define GELU_RSQRT2PI 0.39894228040143267794f

/* scalar forward: element k of x (the negative slope s is leaky_relu's alone) */
#define relu_f(x, k) ((x)[k] > 0.0f ? (x)[k] : 0.0f)
#define lrelu_f(x, k) ((x)[k] > 0.0f ? (x)[k] : s * (x)[k])
#define gelu_f(x, k) (0.5f * (x)[k] * (1.0f + erff((x)[k] * GELU_RSQRT2)))
static inline float silu_sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }
#define silu_f(x, k) ((x)[k] * silu_sigmoid((x)[k]))
#define tanh_f(x, k) (tanhf((x)[k]))
#define sigmoid_f(x, k) (1.0f / (1.0f + expf(-(x)[k])))

/* scalar backward: dx[k] from dy and the value read (x or y, per the table) */
#define relu_b(dx, dy, y, k) ((dx)[k] = (y)[k] > 0.0f ? (dy)[k] : 0.0f)
#define lrelu_b(dx, dy, x, k) ((dx)[k] = (x)[k] > 0.0f ? (dy)[k] : s * (dy)[k])
#define gelu_b(dx, dy, x, k)                                     \
    do {                                                         \
        float v = (x)[k];                                        \
        float cdf = 0.5f * (1.0f + erff(v * GELU_RSQRT2));       \
        float pdf = GELU_RSQRT2PI * expf(-0.5f * v * v);         \
        (dx)[k] = (dy)[k] * (cdf + v * pdf);                     \
    } while (0)
#define silu_b(dx, dy, x, k)                                     \
    do {                                                         \
        float s = silu_sigmoid((x)[k]);                          \
        (dx)[k] = (dy)[k] * s * (1.0f + (x)[k] * (1.0f - s));    \
    } while (0)
#define tanh_b(dx, dy, y, k) ((dx)[k] = (dy)[k] * (1.0f - (y)[k] * (y)[k]))
#define sigmoid_b(dx, dy, y, k) ((dx)[k] = (dy)[k] * (y)[k] * (1.0f - (y)[k]))

#define ACT_PRAGMA(x) _Pragma(#x)
#define ACT_SRC_IN in
#define ACT_SRC_OUT out
#define ACT_SLOPE_0
#define ACT_SLOPE_1 const float s = (float)n->a.f[0];

#define ACT_KERNELS(tag, ID, opname, READS, FF, FB, PF, PB, SLOPE, FLAGS)                                       \
    static void tag##_forward(const kn_node *n, kn_rt *rt) {                                             \
        const float *x = kn_ptr(rt->g, n->in[0]);                                                        \
        float *y = kn_ptr(rt->g, n->out[0]);                                                             \
        ACT_SLOPE_##SLOPE                                                                                \
        int64_t m = kn_numel(rt->g, n->in[0]);                                                           \
        ACT_PRAGMA(omp parallel for schedule(static) if (m > PF))                                        \
        for (int64_t k = 0; k < m; k++) y[k] = tag##_f(x, k);                                            \
    }                                                                                                    \
    static void tag##_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        if (!din[0]) return;                                                                             \
        const float *xy = kn_ptr(rt->g, n->ACT_SRC_##READS[0]), *dy = dout[0];                          \
        float *dx = din[0];                                                                              \
        ACT_SLOPE_##SLOPE                                                                                \
        int64_t m = kn_numel(rt->g, n->in[0]);                                                           \
        ACT_PRAGMA(omp parallel for schedule(static) if (m > PB))                                        \
        for (int64_t k = 0; k < m; k++) tag##_b(dx, dy, xy, k);                                          \
    }                                                                                                    \
    KN_ISA_KERNELS(tag, tag##_forward, tag##_backward)                                                   \
    KN_CPU_OP(opname, tag, NULL, NULL)

KN_ACTIVATIONS(ACT_KERNELS)
