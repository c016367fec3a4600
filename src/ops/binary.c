/* Binary element-wise ops with NumPy broadcasting: add, sub, mul, div.
 *   y = a OP b, a and b float32 of any rank (<= 5) whose shapes broadcast (aligned from
 *   the right, each dim equal or 1); y has the broadcast shape.
 * One op per function, one table: the same shape rule, FLOP count and kernels.
 * `add` is also the residual connection of the model builder (nn/model.c): with equal
 * shapes its forward and backward are the loops it always had (same bits).
 * Backward (gradients are reduced, in double and a fixed order, over the axes along
 * which an input was broadcast):
 *   add: da = dy, db = dy        sub: da = dy, db = -dy
 *   mul: da = dy * b, db = dy * a
 *   div: da = dy / b, db = -dy * a / b^2
 * An input with the output's shape gets its gradient element-wise; a broadcast one from
 * the element-wise product in backward scratch (mul, div) or dy itself (add, sub). */
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

enum { BIN_ADD = 0, BIN_SUB, BIN_MUL, BIN_DIV };

/* ======================= (1) definition ======================= */

static int bin_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    const char *nm = n->op->name;
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "%s takes two inputs, got %d", nm, n->nin);
    const kn_value *x = &g->v[n->in[0]], *z = &g->v[n->in[1]];
    if (x->dtype != KN_F32 || z->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "%s expects float32 inputs, got an integer tensor", nm);
    kn_shape out;
    if (!nd_bcast_shape(&x->shape, &z->shape, &out))
        return kn_err(ctx, KN_ERR_SHAPE,
                      "%s expects two inputs of the same shape or shapes that broadcast (dims equal or 1, aligned "
                      "from the right), got %s and %s",
                      nm, kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    return kn_g_declare_out(g, n, 0, KN_F32, out) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static double bin_flops(const kn_graph *g, const kn_node *n) { return (double)kn_numel(g, n->out[0]); }
static double bin_flops_bwd(const kn_graph *g, const kn_node *n) { return 3.0 * (double)kn_numel(g, n->out[0]); }

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

/* Output dims and the broadcast strides of a and b, collapsed. */
typedef struct {
    int nd;
    int64_t d[KN_MAX_DIMS];
    int64_t st[3][KN_MAX_DIMS]; /* y (contiguous), a, b */
} bin_geom;

static void bin_geom_make(const kn_graph *g, const kn_node *n, bin_geom *G) {
    const kn_shape *y = kn_shp(g, n->out[0]);
    G->nd = y->nd;
    memcpy(G->d, y->d, sizeof G->d);
    nd_strides(y->nd, y->d, G->st[0]);
    nd_bcast_strides(kn_shp(g, n->in[0]), y->nd, y->d, G->st[1]);
    nd_bcast_strides(kn_shp(g, n->in[1]), y->nd, y->d, G->st[2]);
    G->nd = nd_collapse(G->nd, G->d, 3, G->st);
}

static inline float bin_apply(int op, float a, float b) {
    switch (op) {
    case BIN_ADD: return a + b;
    case BIN_SUB: return a - b;
    case BIN_MUL: return a * b;
    default: return a / b;
    }
}

/* y = a OP b over collapsed geometry: rows of the last dim, each input's last stride 0 or 1 */
static void bin_run(int op, const bin_geom *G, const float *a /* (...) a's shape */, const float *b /* (...) b's shape */,
                    float *y /* (...) the broadcast shape */) {
    const int nd = G->nd;
    const int64_t L = G->d[nd - 1], sa = G->st[1][nd - 1], sb = G->st[2][nd - 1];
    int64_t rows = 1;
    for (int k = 0; k < nd - 1; k++) rows *= G->d[k];
    if (rows == 1) { /* one run (equal shapes, or a scalar operand): a flat parallel loop */
#pragma omp parallel for schedule(static) if (L > KN_ND_PAR)
        for (int64_t j = 0; j < L; j++) y[j] = bin_apply(op, a[j * sa], b[j * sb]);
        return;
    }
#pragma omp parallel for schedule(static) if (rows * L > KN_ND_PAR)
    for (int64_t r = 0; r < rows; r++) {
        const float *ar = a + nd_offset(r, nd - 1, G->d, G->st[1]);
        const float *br = b + nd_offset(r, nd - 1, G->d, G->st[2]);
        float *yr = y + r * L;
        if (sa && sb)
            for (int64_t j = 0; j < L; j++) yr[j] = bin_apply(op, ar[j], br[j]);
        else if (sa)
            for (int64_t j = 0; j < L; j++) yr[j] = bin_apply(op, ar[j], br[0]);
        else if (sb)
            for (int64_t j = 0; j < L; j++) yr[j] = bin_apply(op, ar[0], br[j]);
        else
            for (int64_t j = 0; j < L; j++) yr[j] = bin_apply(op, ar[0], br[0]);
    }
}

static void bin_forward(int op, const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    const float *a = kn_ptr(g, n->in[0]), *b = kn_ptr(g, n->in[1]);  // (...) broadcast to y
    float *y = kn_ptr(g, n->out[0]);                                 // (...) broadcast shape
    if (op == BIN_ADD && kn_shape_eq(kn_shp(g, n->in[0]), kn_shp(g, n->in[1]))) {
        /* the residual add: one flat loop, as before */
        const int64_t m = kn_numel(g, n->in[0]);
#pragma omp parallel for schedule(static) if (m > 32768)
        for (int64_t k = 0; k < m; k++) y[k] = a[k] + b[k];
        return;
    }
    bin_geom G;
    bin_geom_make(g, n, &G);
    bin_run(op, &G, a, b, y);
}

/* the element-wise factor of input i's gradient: t = dy * dOP/dinput_i (output shape) */
static void bin_grad_full(int op, int i, const kn_graph *g, const kn_node *n, const float *dy /* (...) output shape */,
                          float *t /* (...) output shape */) {
    const float *a = kn_ptr(g, n->in[0]), *b = kn_ptr(g, n->in[1]); // a's shape, b's shape
    bin_geom G;
    bin_geom_make(g, n, &G);
    const int nd = G.nd;
    const int64_t L = G.d[nd - 1];
    const int64_t sa = G.st[1][nd - 1], sb = G.st[2][nd - 1];
    int64_t rows = 1;
    for (int k = 0; k < nd - 1; k++) rows *= G.d[k];
#pragma omp parallel for schedule(static) if (rows * L > KN_ND_PAR && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const float *ar = a + nd_offset(r, nd - 1, G.d, G.st[1]);
        const float *br = b + nd_offset(r, nd - 1, G.d, G.st[2]);
        const float *dr = dy + r * L;
        float *tr = t + r * L;
        /* the four stride cases as separate loops, so that each vectorises */
#define BIN_GRAD_LOOP(AV, BV)                                                                              \
    do {                                                                                                   \
        if (op == BIN_MUL && i == 0)                                                                       \
            for (int64_t j = 0; j < L; j++) tr[j] = dr[j] * (BV);                                          \
        else if (op == BIN_MUL)                                                                            \
            for (int64_t j = 0; j < L; j++) tr[j] = dr[j] * (AV);                                          \
        else if (i == 0)                                                                                   \
            for (int64_t j = 0; j < L; j++) tr[j] = dr[j] / (BV);                                          \
        else                                                                                               \
            for (int64_t j = 0; j < L; j++) tr[j] = -dr[j] * (AV) / ((BV) * (BV));                         \
    } while (0)
        if (sa && sb) BIN_GRAD_LOOP(ar[j], br[j]);
        else if (sa) BIN_GRAD_LOOP(ar[j], br[0]);
        else if (sb) BIN_GRAD_LOOP(ar[0], br[j]);
        else BIN_GRAD_LOOP(ar[0], br[0]);
#undef BIN_GRAD_LOOP
    }
}

static void bin_backward(int op, const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    const kn_shape *ys = kn_shp(g, n->out[0]);
    const float *dy = dout[0];   // (...) output shape
    float *t = rt->scratch;      // (...) output shape: mul/div with a broadcast input
    const int64_t ny = kn_numel(g, n->out[0]);
    for (int i = 0; i < 2; i++) {
        float *dx = din[i];      // (...) shape of input i
        if (!dx) continue;
        const kn_shape *xs = kn_shp(g, n->in[i]);
        const int full = kn_numel(g, n->in[i]) == ny;
        const double sign = (op == BIN_SUB && i == 1) ? -1.0 : 1.0;
        if (op == BIN_ADD || op == BIN_SUB) {
            if (full) {
                if (sign > 0) {
                    if (dx != dy) memcpy(dx, dy, (size_t)ny * sizeof(float));
                } else {
#pragma omp parallel for schedule(static) if (ny > KN_ND_PAR)
                    for (int64_t k = 0; k < ny; k++) dx[k] = -dy[k];
                }
                continue;
            }
        } else if (full) {
            bin_grad_full(op, i, g, n, dy, dx);
            continue;
        } else {
            bin_grad_full(op, i, g, n, dy, t);
        }
        /* reduce over the output dims along which input i is broadcast */
        unsigned mask = 0;
        for (int k = 0; k < ys->nd; k++) {
            int j = k - (ys->nd - xs->nd);
            if (j < 0 || xs->d[j] == 1) mask |= 1u << k;
        }
        nd_red r;
        nd_red_init(&r, ys->nd, ys->d, mask);
        nd_reduce_sum(&r, (op == BIN_ADD || op == BIN_SUB) ? dy : t, dx, sign);
    }
}

static int bin_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    const int64_t ny = kn_numel(g, n->out[0]);
    const int broadcast = kn_numel(g, n->in[0]) != ny || kn_numel(g, n->in[1]) != ny;
    if (broadcast && n->op != &kn_op_add && n->op != &kn_op_sub) n->scratch_bwd = (size_t)ny * sizeof(float);
    return KN_OK;
}

#define BIN_KERNELS(tag, OP)                                                                               \
    static void tag##_forward(const kn_node *n, kn_rt *rt) { bin_forward(OP, n, rt); }                    \
    static void tag##_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        bin_backward(OP, n, rt, din, dout);                                                                \
    }                                                                                                      \
    KN_ISA_KERNELS(tag, tag##_forward, tag##_backward)

BIN_KERNELS(add, BIN_ADD)
BIN_KERNELS(sub, BIN_SUB)
BIN_KERNELS(mul, BIN_MUL)
BIN_KERNELS(div, BIN_DIV)

/* ============ (1, continued) the op table: the definition as a struct; only its .kernels entry names section 2 ============ */
#define BIN_DEF(sym, tag, reads)                                                                           \
    KN_OP_DEF(sym) = {                                                                                     \
        .name = #tag,                                                                                      \
        .infer = bin_infer,                                                                                \
        .flops_fwd = bin_flops,                                                                            \
        .flops_bwd = bin_flops_bwd,                                                                        \
        .bwd_reads_in = reads,                                                                             \
        .bwd_reads_out = 0,                                                                                \
        .diff_inputs = 0x3,                                                                                \
        .kernels = {[KN_BACKEND_CPU] = {bin_prepare, NULL, KN_ISA_FWD(tag), KN_ISA_BWD(tag)}},             \
    };

BIN_DEF(kn_op_add, add, 0)
BIN_DEF(kn_op_sub, sub, 0)
BIN_DEF(kn_op_mul, mul, 0x3) /* a, b */
BIN_DEF(kn_op_div, div, 0x3) /* a, b */
