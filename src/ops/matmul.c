/* matmul: batched matrix product with optional transposes and broadcast batch dims.
 *   inputs A float32 (..., M, K) — or (..., K, M) when i[0] = 1 (A transposed) —
 *          B float32 (..., K, N) — or (..., N, K) when i[1] = 1 (B transposed);
 *   both of rank >= 2; the batch dims (all but the last two) broadcast (NumPy rule).
 *   output C (batch..., M, N), C = op(A) @ op(B) per batch matrix.
 * Backward: dA = dC @ op(B)^T, dB = op(A)^T @ dC (each stored in its input's layout),
 * summed over the batch matrices that a broadcast operand fed, in batch order.
 * Kernel: register blocks of 4 x 16 elements of C over the whole inner dimension (in
 * order), so every element of C is the sum over k in order from 0, computed the same
 * way whatever the blocking and the thread count: the same bits for any thread count.
 * An operand whose columns are not contiguous is transposed into scratch first. */
#include <string.h>

#include "backend/cpu/isa.h"
#include "graph/graph.h"
#include "ops/nd.h"

/* ======================= (1) definition ======================= */

typedef struct {
    int ta, tb;
    int64_t M, N, K;
    int nbd;                      /* batch dims of C */
    int64_t bd[KN_MAX_DIMS];
    int64_t nbo;                  /* batch matrices of C */
    int64_t abs_[KN_MAX_DIMS], bbs[KN_MAX_DIMS], cbs[KN_MAX_DIMS]; /* matrix-index strides over bd */
} mm_geom;

static kn_shape mm_batch(const kn_shape *s) {
    kn_shape b = {s->nd - 2, {0}};
    for (int k = 0; k < s->nd - 2; k++) b.d[k] = s->d[k];
    return b;
}

static int mm_geom_make(const kn_shape *a, const kn_shape *b, int ta, int tb, mm_geom *G, kn_shape *cshape) {
    G->ta = ta, G->tb = tb;
    const int64_t ar = a->d[a->nd - 2], ac = a->d[a->nd - 1], br = b->d[b->nd - 2], bc = b->d[b->nd - 1];
    G->M = ta ? ac : ar;
    G->K = ta ? ar : ac;
    G->N = tb ? br : bc;
    if ((tb ? bc : br) != G->K) return 1;
    kn_shape ab = mm_batch(a), bb = mm_batch(b), cb;
    if (!nd_bcast_shape(&ab, &bb, &cb)) return 2;
    G->nbd = cb.nd;
    G->nbo = 1;
    for (int k = 0; k < cb.nd; k++) G->bd[k] = cb.d[k], G->nbo *= cb.d[k];
    nd_bcast_strides(&ab, cb.nd, cb.d, G->abs_);
    nd_bcast_strides(&bb, cb.nd, cb.d, G->bbs);
    nd_strides(cb.nd, cb.d, G->cbs);
    *cshape = cb;
    cshape->nd = cb.nd + 2;
    cshape->d[cb.nd] = G->M;
    cshape->d[cb.nd + 1] = G->N;
    return 0;
}

static int mm_infer(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    char a[64], b[64];
    if (n->nin != 2) return kn_err(ctx, KN_ERR_SHAPE, "matmul takes two inputs (A, B), got %d", n->nin);
    const kn_value *x = &g->v[n->in[0]], *z = &g->v[n->in[1]];
    if (x->dtype != KN_F32 || z->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_SHAPE, "matmul expects float32 inputs, got an integer tensor");
    if ((n->a.i[0] != 0 && n->a.i[0] != 1) || (n->a.i[1] != 0 && n->a.i[1] != 1))
        return kn_err(ctx, KN_ERR_SHAPE, "matmul: the transpose flags (attributes 0 and 1) are 0 or 1, got %lld and %lld",
                      (long long)n->a.i[0], (long long)n->a.i[1]);
    if (x->shape.nd < 2 || z->shape.nd < 2)
        return kn_err(ctx, KN_ERR_SHAPE, "matmul expects inputs of rank >= 2 ([..., M, K] and [..., K, N]), got %s and %s",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    mm_geom G;
    kn_shape c;
    int rc = mm_geom_make(&x->shape, &z->shape, (int)n->a.i[0], (int)n->a.i[1], &G, &c);
    if (rc == 1)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "matmul: the inner dims do not match: A %s%s has K = %lld, B %s%s has K = %lld", kn_shape_str(&x->shape, a, sizeof a),
                      G.ta ? " (transposed)" : "", (long long)G.K, kn_shape_str(&z->shape, b, sizeof b),
                      G.tb ? " (transposed)" : "", (long long)(G.tb ? z->shape.d[z->shape.nd - 1] : z->shape.d[z->shape.nd - 2]));
    if (rc == 2)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "matmul: the batch dims (all but the last two) of A %s and B %s do not broadcast (equal or 1, "
                      "aligned from the right)",
                      kn_shape_str(&x->shape, a, sizeof a), kn_shape_str(&z->shape, b, sizeof b));
    return kn_g_declare_out(g, n, 0, KN_F32, c) < 0 ? KN_ERR_NOMEM : KN_OK;
}

static void mm_geom_of(const kn_graph *g, const kn_node *n, mm_geom *G) {
    kn_shape c;
    mm_geom_make(kn_shp(g, n->in[0]), kn_shp(g, n->in[1]), (int)n->a.i[0], (int)n->a.i[1], G, &c);
}

static double mm_flops(const kn_graph *g, const kn_node *n) {
    mm_geom G;
    mm_geom_of(g, n, &G);
    return 2.0 * (double)G.nbo * (double)G.M * (double)G.N * (double)G.K;
}
static double mm_flops_bwd(const kn_graph *g, const kn_node *n) { return 2.0 * mm_flops(g, n); }

/* ======================= (2) CPU kernels: forward and backward side by side ======================= */

/* An operand of T = X @ Y: X read as X[r * sr + i * si], Y as Y[i * si + c] (columns
 * contiguous); matrix index strides over the batch dims of C. */
typedef struct {
    const float *p;
    int64_t mat, sr, si;
    const int64_t *bs;
} mm_opnd;

/* 8 floats; unaligned loads and stores through a may_alias type (no function takes or
 * returns one by value, so no vector-ABI question arises on any of the three compiles) */
typedef float mm_v8 __attribute__((vector_size(32)));
typedef float mm_v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define MM_LD(p) (*(const mm_v8u *)(const void *)(p))
#define MM_ST(p, v) ((void)(*(mm_v8u *)(void *)(p) = (v)))
#define MM_SPLAT(x) ((mm_v8){(x), (x), (x), (x), (x), (x), (x), (x)})

/* rows [r0, r1) of T (R x Cc, contiguous) (+)= X @ Y, inner dimension I.
 * Register blocks of 4 rows x 16 columns (8 accumulators) run over the whole inner
 * dimension; the column remainder runs one element at a time. Either way an element is
 * t = (...((t0 + x0 y0) + x1 y1) + ...) with i in order and t0 = 0 (or T's value when
 * acc): the same bits whatever the blocking. */
static void mm_rows(int64_t r0, int64_t r1, int64_t Cc, int64_t I, const float *X /* (R, I) by strides sr, si */,
                    int64_t sr, int64_t si, const float *Y /* (I, Cc), rows syi apart */, int64_t syi,
                    float *T /* (R, Cc) */, int acc) {
    const int64_t C16 = Cc / 16 * 16;
    for (int64_t c = 0; c < C16; c += 16) {
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            float *t = T + r * Cc + c;
            const mm_v8 z = MM_SPLAT(0.0f);
            mm_v8 c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
            if (acc) {
                c00 = MM_LD(t), c01 = MM_LD(t + 8), c10 = MM_LD(t + Cc), c11 = MM_LD(t + Cc + 8);
                c20 = MM_LD(t + 2 * Cc), c21 = MM_LD(t + 2 * Cc + 8), c30 = MM_LD(t + 3 * Cc), c31 = MM_LD(t + 3 * Cc + 8);
            }
            const float *x = X + r * sr, *y = Y + c;
            for (int64_t i = 0; i < I; i++, x += si, y += syi) {
                const mm_v8 y0 = MM_LD(y), y1 = MM_LD(y + 8);
                const mm_v8 a0 = MM_SPLAT(x[0]), a1 = MM_SPLAT(x[sr]), a2 = MM_SPLAT(x[2 * sr]), a3 = MM_SPLAT(x[3 * sr]);
                c00 += a0 * y0, c01 += a0 * y1, c10 += a1 * y0, c11 += a1 * y1;
                c20 += a2 * y0, c21 += a2 * y1, c30 += a3 * y0, c31 += a3 * y1;
            }
            MM_ST(t, c00), MM_ST(t + 8, c01), MM_ST(t + Cc, c10), MM_ST(t + Cc + 8, c11);
            MM_ST(t + 2 * Cc, c20), MM_ST(t + 2 * Cc + 8, c21), MM_ST(t + 3 * Cc, c30), MM_ST(t + 3 * Cc + 8, c31);
        }
        for (; r < r1; r++) {
            float *t = T + r * Cc + c;
            mm_v8 c0 = MM_SPLAT(0.0f), c1 = c0;
            if (acc) c0 = MM_LD(t), c1 = MM_LD(t + 8);
            const float *x = X + r * sr, *y = Y + c;
            for (int64_t i = 0; i < I; i++, x += si, y += syi) {
                const mm_v8 a = MM_SPLAT(x[0]);
                c0 += a * MM_LD(y), c1 += a * MM_LD(y + 8);
            }
            MM_ST(t, c0), MM_ST(t + 8, c1);
        }
    }
    for (int64_t r = r0; r < r1 && C16 < Cc; r++)
        for (int64_t c = C16; c < Cc; c++) {
            float v = acc ? T[r * Cc + c] : 0.0f;
            const float *x = X + r * sr;
            for (int64_t i = 0; i < I; i++) v += x[i * si] * Y[i * syi + c];
            T[r * Cc + c] = v;
        }
}

/* The batch matrix of C whose target coordinates are t (over the dims along which
 * the target is not broadcast) and whose other coordinates are j (row-major). */
static int64_t mm_compose(int64_t t, int64_t j, const mm_geom *G, const int64_t *tbs) {
    int64_t bo = 0, mul = 1;
    for (int k = G->nbd - 1; k >= 0; k--) {
        int64_t c;
        if (tbs[k] == 0 && G->bd[k] > 1) c = j % G->bd[k], j /= G->bd[k];
        else c = t % G->bd[k], t /= G->bd[k];
        bo += c * mul;
        mul *= G->bd[k];
    }
    return bo;
}

/* T[t] = sum over the batch matrices bo of C that map to target matrix t (in order) of
 * X[bo] @ Y[bo]; T has nt matrices of R x Cc; tbs: the target's matrix strides. */
static void mm_drive(const mm_geom *G, float *T, int64_t nt, const int64_t *tbs, int64_t R, int64_t Cc, int64_t I,
                     const mm_opnd *X, const mm_opnd *Y) {
    const int64_t RB = 16, nrb = (R + RB - 1) / RB, ntask = nt * nrb, nc = G->nbo / nt;
    const double work = (double)G->nbo * (double)R * (double)Cc * (double)I;
#pragma omp parallel for schedule(static) if (work > 262144.0 && ntask > 1)
    for (int64_t task = 0; task < ntask; task++) {
        const int64_t t = task / nrb, r0 = (task % nrb) * RB, r1 = r0 + RB < R ? r0 + RB : R;
        for (int64_t j = 0; j < nc; j++) {
            const int64_t bo = mm_compose(t, j, G, tbs);
            const float *x = X->p + nd_offset(bo, G->nbd, G->bd, X->bs) * X->mat;
            const float *y = Y->p + nd_offset(bo, G->nbd, G->bd, Y->bs) * Y->mat;
            mm_rows(r0, r1, Cc, I, x, X->sr, X->si, y, Y->si, T + t * R * Cc, j > 0);
        }
    }
}

/* dst[b] = src[b]^T for nmat matrices of R x Cc */
static void mm_transpose(const float *src /* (nmat, R, Cc) */, int64_t nmat, int64_t R, int64_t Cc, float *dst /* (nmat, Cc, R) */) {
    const int64_t cb = (Cc + 31) / 32, ntask = nmat * cb;
#pragma omp parallel for schedule(static) if (nmat * R * Cc > KN_ND_PAR && ntask > 1)
    for (int64_t task = 0; task < ntask; task++) {
        const int64_t b = task / cb, c0 = (task % cb) * 32, c1 = c0 + 32 < Cc ? c0 + 32 : Cc;
        const float *s = src + b * R * Cc;
        float *d = dst + b * R * Cc;
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = c0; c < c1; c++) d[c * R + r] = s[r * Cc + c];
    }
}

static int mm_prepare(kn_graph *g, kn_node *n, kn_ctx *ctx) {
    (void)ctx;
    mm_geom G;
    mm_geom_of(g, n, &G);
    const size_t na = (size_t)kn_numel(g, n->in[0]), nb = (size_t)kn_numel(g, n->in[1]);
    const size_t nc = (size_t)kn_numel(g, n->out[0]);
    n->scratch_fwd = G.tb ? nb * sizeof(float) : 0;
    /* backward: [B^T (ta = tb = 0) | dC^T (ta) | A^T (ta and tb)] */
    n->scratch_bwd = ((!G.ta && !G.tb ? kn_align_up(nb * sizeof(float), 64) : 0) +
                      (G.ta ? kn_align_up(nc * sizeof(float), 64) : 0) + (G.ta && G.tb ? na * sizeof(float) : 0));
    return KN_OK;
}

static void mm_forward(const kn_node *n, kn_rt *rt) {
    kn_graph *g = rt->g;
    mm_geom G;
    mm_geom_of(g, n, &G);
    const int64_t M = G.M, N = G.N, K = G.K;
    const float *A = kn_ptr(g, n->in[0]); // (..., M, K) or (..., K, M) if ta
    const float *B = kn_ptr(g, n->in[1]); // (..., K, N) or (..., N, K) if tb
    float *C = kn_ptr(g, n->out[0]);      // (batch..., M, N)
    const float *Bk = B;                  // (..., K, N)
    if (G.tb) {
        float *bt = rt->scratch;          // (..., K, N)
        mm_transpose(B, kn_numel(g, n->in[1]) / (N * K), N, K, bt);
        Bk = bt;
    }
    mm_opnd X = {A, M * K, G.ta ? 1 : K, G.ta ? M : 1, G.abs_};
    mm_opnd Y = {Bk, K * N, 0, N, G.bbs};
    mm_drive(&G, C, G.nbo, G.cbs, M, N, K, &X, &Y);
}

static void mm_backward(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) {
    kn_graph *g = rt->g;
    mm_geom G;
    mm_geom_of(g, n, &G);
    const int64_t M = G.M, N = G.N, K = G.K;
    const float *A = kn_ptr(g, n->in[0]); // (..., M, K) or (..., K, M) if ta
    const float *B = kn_ptr(g, n->in[1]); // (..., K, N) or (..., N, K) if tb
    const float *dC = dout[0];            // (batch..., M, N)
    const int64_t nA = kn_numel(g, n->in[0]) / (M * K), nB = kn_numel(g, n->in[1]) / (K * N);
    char *S = rt->scratch;
    float *Bt = NULL, *dCt = NULL, *At = NULL;
    if (!G.ta && !G.tb) Bt = (float *)(void *)S, S += kn_align_up((size_t)(nB * K * N) * sizeof(float), 64); // (..., N, K)
    if (G.ta) dCt = (float *)(void *)S, S += kn_align_up((size_t)(G.nbo * M * N) * sizeof(float), 64);       // (batch..., N, M)
    if (G.ta && G.tb) At = (float *)(void *)S;                                                               // (..., M, K)
    if (din[0]) {
        float *dA = din[0]; // A's layout
        if (!G.ta) {
            /* dA[m,k] = sum_n dC[m,n] op(B)[k,n]; Y[n,k] = op(B)[k,n]: B itself when tb */
            if (!G.tb) mm_transpose(B, nB, K, N, Bt);
            mm_opnd X = {dC, M * N, N, 1, G.cbs};
            mm_opnd Y = {G.tb ? B : Bt, K * N, 0, K, G.bbs};
            mm_drive(&G, dA, nA, G.abs_, M, K, N, &X, &Y);
        } else {
            /* dA[k,m] = sum_n op(B)[k,n] dC[m,n]; Y = dC^T */
            mm_transpose(dC, G.nbo, M, N, dCt);
            mm_opnd X = {B, K * N, G.tb ? 1 : N, G.tb ? K : 1, G.bbs};
            mm_opnd Y = {dCt, M * N, 0, M, G.cbs};
            mm_drive(&G, dA, nA, G.abs_, K, M, N, &X, &Y);
        }
    }
    if (din[1]) {
        float *dB = din[1]; // B's layout
        if (!G.tb) {
            /* dB[k,n] = sum_m op(A)[m,k] dC[m,n] */
            mm_opnd X = {A, M * K, G.ta ? M : 1, G.ta ? 1 : K, G.abs_};
            mm_opnd Y = {dC, M * N, 0, N, G.cbs};
            mm_drive(&G, dB, nB, G.bbs, K, N, M, &X, &Y);
        } else {
            /* dB[n,k] = sum_m dC[m,n] op(A)[m,k]; Y[m,k] = op(A)[m,k]: A itself unless ta */
            if (G.ta) mm_transpose(A, nA, K, M, At);
            mm_opnd X = {dC, M * N, 1, N, G.cbs};
            mm_opnd Y = {G.ta ? At : A, M * K, 0, K, G.abs_};
            mm_drive(&G, dB, nB, G.bbs, N, K, M, &X, &Y);
        }
    }
}

KN_ISA_KERNELS(matmul, mm_forward, mm_backward)

/* ============ (1, continued) the op: the definition as a struct; only its .kernels entry names section 2 ============ */
KN_OP_DEF(kn_op_matmul) = {
    .name = "matmul",
    .infer = mm_infer,
    .flops_fwd = mm_flops,
    .flops_bwd = mm_flops_bwd,
    .bwd_reads_in = 0x3, /* A, B */
    .bwd_reads_out = 0,
    .diff_inputs = 0x3,
    .kernels = {[KN_BACKEND_CPU] = {mm_prepare, NULL, KN_ISA_FWD(matmul), KN_ISA_BWD(matmul)}},
};
