/* Unary maths, one table: y = f(x) element-wise, float32, any rank.
 *   exp     y = e^x              dx = dy * y        (reads y)
 *   log     y = ln x             dx = dy / x        (reads x)
 *   sqrt    y = sqrt x           dx = dy * 0.5 / y  (reads y)
 *   rsqrt   y = 1 / sqrt x       dx = dy * -0.5 y^3 (reads y)
 *   neg     y = -x               dx = -dy
 *   square  y = x^2              dx = dy * 2x       (reads x)
 *   affine  y = f[0] * x + f[1]  dx = dy * f[0]     (scalar multiply and add)
 * Every backward is element-wise, so dx may overwrite dy (bwd_inplace). */
#include <math.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

/* ======================= (1) definition ======================= */

static int un_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    if (n->nin != 1) return kn_err(ctx, KN_ERR_SHAPE, "%s takes one input, got %d", n->op->name, n->nin);
    const kn_value *x = &g->v[n->in[0]];
    if (x->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects a float32 input, got an integer tensor", n->op->name);
    return kn_g_declare_out(g, n, 0, KN_F32, x->shape) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double un_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->in[0]); }
static double un_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * (double)kn_numel(g, n->in[0]); }

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */
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

/* ============ (1, continued) the op table: the definition as a struct; only its .kernels entry names section 2 ============ */
#define UNARY_DEF(tag, reads_in, reads_out)                                                                \
    KN_OP_DEF(kn_op_##tag) = {                                                                             \
        .name = #tag,                                                                                      \
        .infer = un_infer,                                                                                 \
        .flops_fwd = un_flops,                                                                             \
        .flops_bwd = un_flops_bwd,                                                                         \
        .bwd_reads_in = reads_in,                                                                          \
        .bwd_reads_out = reads_out,                                                                        \
        .diff_inputs = 0x1,                                                                                \
        .bwd_inplace = 0x1,                                                                                \
        .kernels = {[KN_BACKEND_CPU] = {NULL, NULL, KN_ISA_FWD(tag), KN_ISA_BWD(tag)}},                    \
    };

UNARY_DEF(exp, 0, 0x1)
UNARY_DEF(log, 0x1, 0)
UNARY_DEF(sqrt, 0, 0x1)
UNARY_DEF(rsqrt, 0, 0x1)
UNARY_DEF(neg, 0, 0)
UNARY_DEF(square, 0x1, 0)
UNARY_DEF(affine, 0, 0)
