/* matmul: the CPU kernels, forward and backward side by side, registered by op id
 * (backend/cpu/registry.c). The definition (shape rule, FLOPs, what the backward reads)
 * and the maths are in src/ops/matmul.c. */
#include "backend/cpu/kernels.h"
#include "ops/nd.h"
#include "ops/matmul.h"

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

KN_CPU_OP(matmul, matmul, mm_prepare, NULL)
