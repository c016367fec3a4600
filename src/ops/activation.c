/* The six activations, any rank, one float32 input, output of the same shape, from one
 * table (ACTIVATIONS below): each row is the scalar forward y = f(x), the scalar
 * backward dx = f'(dy, v) with v the input x or the output y (whichever the backward
 * reads), the FLOP counts per element, the sizes above which a loop runs in parallel,
 * and the op's flags.
 *   relu:       y = max(x, 0).                       dx = dy where y > 0, else 0 (reads y)
 *   leaky_relu: y = x if x > 0 else slope * x;       attrs: f[0] = negative slope (the
 *               layer's default is 0.01). dx = dy or slope * dy (reads x: slope may be <= 0)
 *   gelu:       y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), the exact form (PyTorch's
 *               default).                            dx = dy (Phi(x) + x phi(x)) (reads x)
 *   silu:       y = x sigmoid(x).   with s = sigmoid(x), dx = dy s (1 + x (1 - s)) (reads x)
 *   tanh:       y = tanh(x).                         dx = dy (1 - y^2) (reads y)
 *   sigmoid:    y = 1 / (1 + exp(-x)).               dx = dy y (1 - y) (reads y)
 * Every backward may write dx over dy (bwd_inplace: elementwise). The model builder's
 * table of activations (`activation = ...` and the activation layers) is
 * kn_activations (ops/activation.h). */
#include <math.h>
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
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

/* The table. READS: IN (x) or OUT (y), what the backward reads; FF, FB: FLOPs per
 * element forward and backward; PF, PB: element counts above which the forward and the
 * backward loops run in parallel; SLOPE: attribute f[0] is a negative slope (the
 * layers take a `slope` key). */
#define ACTIVATIONS(X)                                                                  \
    /* tag     op name     READS FF    FB    PF     PB     SLOPE flags */                                \
    X(relu,    relu,       OUT,  1.0,  1.0,  32768, 32768, 0,    KN_OPF_LAYOUT_PRESERVING | KN_OPF_RELU | KN_OPF_RELU_OUT) \
    X(lrelu,   leaky_relu, IN,   1.0,  1.0,  32768, 32768, 1,    0)                                      \
    X(gelu,    gelu,       IN,   20.0, 30.0, 16384, 16384, 0,    0)                                      \
    X(silu,    silu,       IN,   5.0,  8.0,  16384, 16384, 0,    0)                                      \
    X(tanh,    tanh,       OUT,  10.0, 3.0,  16384, 32768, 0,    0)                                      \
    X(sigmoid, sigmoid,    OUT,  4.0,  3.0,  16384, 32768, 0,    0)

#define ACT_PRAGMA(x) _Pragma(#x)
#define ACT_SRC_IN in
#define ACT_SRC_OUT out
#define ACT_READS_IN_IN 0x1
#define ACT_READS_IN_OUT 0
#define ACT_READS_OUT_IN 0
#define ACT_READS_OUT_OUT 0x1
#define ACT_SLOPE_0
#define ACT_SLOPE_1 const float s = (float)n->a.f[0];

static int act_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", n->op->name, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", n->op->name);
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

#define ACT_DEFINE(tag, opname, READS, FF, FB, PF, PB, SLOPE, FLAGS)                                            \
    static double tag##_flops(const kn_graph *g, const kn_node *n) { return FF * (double)kn_numel(g, n->in[0]); } \
    static double tag##_flops_bwd(const kn_graph *g, const kn_node *n) { return FB * (double)kn_numel(g, n->in[0]); } \
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
    KN_OP_DEF(kn_op_##opname) = {                                                                        \
        .name = #opname,                                                                                 \
        .flags = FLAGS,                                                                                  \
        .infer = act_infer,                                                                              \
        .flops_fwd = tag##_flops,                                                                        \
        .flops_bwd = tag##_flops_bwd,                                                                    \
        .bwd_reads_in = ACT_READS_IN_##READS,                                                            \
        .bwd_reads_out = ACT_READS_OUT_##READS,                                                          \
        .diff_inputs = 0x1,                                                                              \
        .bwd_inplace = 0x1,                                                                              \
        .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(tag), KN_ISA_BWD(tag)}},                  \
    };

ACTIVATIONS(ACT_DEFINE)

#ifndef KN_ISA_SUFFIX /* the baseline compile only: the variants define no ops */
#define ACT_ROW(tag, opname, READS, FF, FB, PF, PB, SLOPE, FLAGS) {#opname, &kn_op_##opname, SLOPE},
const kn_activation kn_activations[] = {ACTIVATIONS(ACT_ROW){NULL, NULL, 0}};
#endif

#ifndef KN_ISA_SUFFIX
const kn_activation *kn_activation_find(const char *name) {
    for (const kn_activation *a = kn_activations; a->name; a++)
        if (!strcmp(a->name, name)) return a;
    return NULL;
}
#endif
