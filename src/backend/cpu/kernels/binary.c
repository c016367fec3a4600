/* binary: the CPU kernels of add, sub, mul and div, forward and backward side by side,
 * registered by op id (backend/cpu/registry.c). The definition (shape rule, FLOPs, what
 * the backward reads) and the maths are in src/ops/binary.c. */
#include <string.h>

#include "backend/cpu/kernels.h"
#include "ops/nd.h"

enum { BIN_ADD = 0, BIN_SUB, BIN_MUL, BIN_DIV };

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
    if (broadcast && n->op->id != KN_OP_ADD && n->op->id != KN_OP_SUB) n->scratch_bwd = (size_t)ny * sizeof(float);
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

KN_CPU_OP(add, add, bin_prepare, NULL)
KN_CPU_OP(sub, sub, bin_prepare, NULL)
KN_CPU_OP(mul, mul, bin_prepare, NULL)
KN_CPU_OP(div, div, bin_prepare, NULL)
