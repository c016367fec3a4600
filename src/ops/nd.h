/* kiln — N-d index helpers of the primitive ops (binary.c, reduce.c, matmul.c, ...).
 * Header-only and static: the op files are compiled once per instruction set.
 *
 * Shapes are row-major (the last dim contiguous). Broadcasting is NumPy's: shapes are
 * aligned from the right, a dim of 1 (or a missing leading dim) is repeated. A
 * "broadcast stride" is an input's element stride along an output dim: 0 where the
 * input is broadcast along it.
 *
 * nd_bcast_shape serves the shape rules; the rest serves the CPU kernels.
 * Reductions (sum, max) run per output element over the reduced elements in row-major
 * order, accumulated in double: every output element is computed the same way whatever
 * the thread count, so results are the same bits for any number of threads. */
#ifndef KN_OPS_ND_H
#define KN_OPS_ND_H

#include <string.h>

#include "core/core.h"

/* Elements per thread below which a loop stays serial. */
#define KN_ND_PAR 32768

/* Contiguous element strides of dims d[0..nd). */
static inline void nd_strides(int nd, const int64_t *d, int64_t *st) {
    int64_t s = 1;
    for (int k = nd - 1; k >= 0; k--) {
        st[k] = s;
        s *= d[k];
    }
}

/* Broadcast strides of `in` against output dims od[0..ond): in is right-aligned. */
static inline void nd_bcast_strides(const kn_shape *in, int ond, const int64_t *od, int64_t *st) {
    int64_t cs[KN_MAX_DIMS];
    nd_strides(in->nd, in->d, cs);
    for (int k = 0; k < ond; k++) {
        int j = k - (ond - in->nd);
        st[k] = (j < 0 || (in->d[j] == 1 && od[k] != 1)) ? 0 : cs[j];
    }
}

/* The broadcast of a and b (NumPy rule). Returns 0 if they do not broadcast. */
static inline int nd_bcast_shape(const kn_shape *a, const kn_shape *b, kn_shape *out) {
    int nd = a->nd > b->nd ? a->nd : b->nd;
    out->nd = nd;
    for (int k = 0; k < nd; k++) {
        int ja = k - (nd - a->nd), jb = k - (nd - b->nd);
        int64_t da = ja < 0 ? 1 : a->d[ja], db = jb < 0 ? 1 : b->d[jb];
        if (da != db && da != 1 && db != 1) return 0;
        out->d[k] = da == 1 ? db : da;
    }
    return 1;
}

/* Offset of flat index idx of dims d[0..nd) under strides st. */
static inline int64_t nd_offset(int64_t idx, int nd, const int64_t *d, const int64_t *st) {
    int64_t off = 0;
    for (int k = nd - 1; k >= 0; k--) {
        off += (idx % d[k]) * st[k];
        idx /= d[k];
    }
    return off;
}

/* Merge adjacent dims along which every one of `nops` stride sets is contiguous
 * (st[k] == st[k+1] * d[k+1]), and drop dims of 1. In place; returns the new rank (>= 1). */
static inline int nd_collapse(int nd, int64_t *d, int nops, int64_t (*st)[KN_MAX_DIMS]) {
    int m = 0;
    for (int k = 0; k < nd; k++) {
        if (d[k] == 1) continue;
        if (m > 0) {
            int ok = 1;
            for (int o = 0; o < nops; o++)
                if (st[o][m - 1] != st[o][k] * d[k]) ok = 0;
            if (ok) {
                d[m - 1] *= d[k];
                for (int o = 0; o < nops; o++) st[o][m - 1] = st[o][k];
                continue;
            }
        }
        d[m] = d[k];
        for (int o = 0; o < nops; o++) st[o][m] = st[o][k];
        m++;
    }
    if (m == 0) {
        d[0] = 1;
        for (int o = 0; o < nops; o++) st[o][0] = 0;
        m = 1;
    }
    return m;
}

/* Copy between a contiguous buffer and a strided view of dims d[0..nd): gather
 * (scatter == 0): dst (d...) contiguous <- src at strides ss; scatter: dst at strides ss
 * <- src (d...) contiguous. Rows of the innermost collapsed dim run in parallel. Used
 * by permute (both ways a gather) and slice (forward gather, backward scatter). */
static inline void nd_copy_strided(float *dst, const float *src, int nd, const int64_t *dims, const int64_t *ss,
                                   int scatter) {
    int64_t d[KN_MAX_DIMS], st[2][KN_MAX_DIMS]; /* st[0]: the contiguous side; st[1]: the strided side */
    memcpy(d, dims, (size_t)nd * sizeof d[0]);
    nd_strides(nd, d, st[0]);
    memcpy(st[1], ss, (size_t)nd * sizeof st[1][0]);
    const int m = nd_collapse(nd, d, 2, st);
    const int64_t L = d[m - 1], ls = st[1][m - 1];
    int64_t rows = 1;
    for (int k = 0; k < m - 1; k++) rows *= d[k];
#pragma omp parallel for schedule(static) if (rows * L > KN_ND_PAR && rows > 1)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t off = nd_offset(r, m - 1, d, st[1]);
        if (scatter) {
            float *o = dst + off;
            const float *s = src + r * L;
            for (int64_t j = 0; j < L; j++) o[j * ls] = s[j];
        } else {
            const float *s = src + off;
            float *o = dst + r * L;
            for (int64_t j = 0; j < L; j++) o[j] = s[j * ls];
        }
    }
}

/* A reduction of x (dims d[0..nd), contiguous) over the dims in `mask` (bit k: dim k):
 * the kept dims in order, and the reduced ones, with x's strides. */
typedef struct {
    int nk, nr;
    int64_t kd[KN_MAX_DIMS], ks[KN_MAX_DIMS]; /* kept dims, their strides in x */
    int64_t rd[KN_MAX_DIMS], rs[KN_MAX_DIMS]; /* reduced dims, their strides in x */
    int64_t nout, nred;
    int leading; /* the reduced dims are exactly dims 0..nr-1 (a column reduction) */
} nd_red;

static inline void nd_red_init(nd_red *r, int nd, const int64_t *d, unsigned mask) {
    int64_t st[KN_MAX_DIMS];
    nd_strides(nd, d, st);
    r->nk = r->nr = 0;
    r->nout = r->nred = 1;
    r->leading = 1;
    for (int k = 0; k < nd; k++) {
        if (mask >> k & 1u) {
            if (r->nk) r->leading = 0;
            r->rd[r->nr] = d[k], r->rs[r->nr] = st[k], r->nr++;
            r->nred *= d[k];
        } else {
            r->kd[r->nk] = d[k], r->ks[r->nk] = st[k], r->nk++;
            r->nout *= d[k];
        }
    }
}

/* y[o] = scale * sum of x over the reduced elements of output element o (double, in
 * row-major order of the reduced dims). */
static inline void nd_reduce_sum(const nd_red *r, const float *x /* (dims) */, float *y /* (kept dims) */, double scale) {
    const int64_t nout = r->nout, nred = r->nred;
    if (r->leading && r->nk > 0) {
        /* x is [nred, nout]: rows added in order, a block of columns at a time */
        const int64_t nblk = (nout + 255) / 256;
#pragma omp parallel for schedule(static) if (nout * nred > KN_ND_PAR && nblk > 1)
        for (int64_t b = 0; b < nblk; b++) {
            double acc[256];
            const int64_t o0 = b * 256, o1 = o0 + 256 < nout ? o0 + 256 : nout;
            for (int64_t o = o0; o < o1; o++) acc[o - o0] = 0.0;
            for (int64_t i = 0; i < nred; i++) {
                const float *xr = x + i * nout;
                for (int64_t o = o0; o < o1; o++) acc[o - o0] += (double)xr[o];
            }
            for (int64_t o = o0; o < o1; o++) y[o] = (float)(acc[o - o0] * scale);
        }
        return;
    }
    const int64_t last = r->nr ? r->rd[r->nr - 1] : 1, ls = r->nr ? r->rs[r->nr - 1] : 1;
    const int64_t nrow = nred / last;
#pragma omp parallel for schedule(static) if (nout * nred > KN_ND_PAR && nout > 1)
    for (int64_t o = 0; o < nout; o++) {
        const float *xo = x + nd_offset(o, r->nk, r->kd, r->ks);
        double acc = 0.0;
        for (int64_t i = 0; i < nrow; i++) {
            const float *xr = xo + nd_offset(i, r->nr - 1, r->rd, r->rs);
            for (int64_t j = 0; j < last; j++) acc += (double)xr[j * ls];
        }
        y[o] = (float)(acc * scale);
    }
}

/* y[o] = the largest x over output element o's reduced elements (NaN if any is NaN),
 * arg[o] = its position among them (row-major; the first of equal maxima). */
static inline void nd_reduce_max(const nd_red *r, const float *x /* (dims) */, float *y /* (kept dims) */,
                                 int32_t *arg /* (kept dims) */) {
    const int64_t nout = r->nout, nred = r->nred;
    const int64_t last = r->nr ? r->rd[r->nr - 1] : 1, ls = r->nr ? r->rs[r->nr - 1] : 1;
    const int64_t nrow = nred / last;
#pragma omp parallel for schedule(static) if (nout * nred > KN_ND_PAR && nout > 1)
    for (int64_t o = 0; o < nout; o++) {
        const float *xo = x + nd_offset(o, r->nk, r->kd, r->ks);
        float m = xo[0];
        int64_t at = 0;
        for (int64_t i = 0; i < nrow; i++) {
            const float *xr = xo + nd_offset(i, r->nr - 1, r->rd, r->rs);
            for (int64_t j = 0; j < last; j++) {
                const float v = xr[j * ls];
                if (v > m || (v != v && m == m)) m = v, at = i * last + j;
            }
        }
        y[o] = m;
        arg[o] = (int32_t)at;
    }
}

#endif
