/* kiln — what the definition of slice (ops/slice.c) and its kernels share. */
#ifndef KN_OPS_SLICE_H
#define KN_OPS_SLICE_H

#include "graph/graph.h"

/* first index, step and count of axis k */
static inline void sl_axis(const kn_shape *x, const kn_attrs *a, int k, int64_t *first, int64_t *step, int64_t *count) {
    const int64_t D = x->d[k];
    int64_t st = a->i[3 * k + 2];
    if (st == 0) {
        *first = 0, *step = 1, *count = D;
        return;
    }
    int64_t s = a->i[3 * k], e = a->i[3 * k + 1];
    if (s < 0) s += D;
    if (e < 0) e += D;
    s = s < 0 ? 0 : s > D ? D : s;
    e = e < 0 ? 0 : e > D ? D : e;
    *first = s, *step = st;
    *count = e > s ? (e - s - 1) / st + 1 : 0; /* (no overflow for any step) */
}

#endif
