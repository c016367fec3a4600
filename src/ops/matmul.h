/* kiln — what the definition of matmul (ops/matmul.c) and its kernels share. */
#ifndef KN_OPS_MATMUL_H
#define KN_OPS_MATMUL_H

#include "graph/graph.h"

typedef struct {
    int ta, tb;
    int64_t M, N, K;
    int nbd;                      /* batch dims of C */
    int64_t bd[KN_MAX_DIMS];
    int64_t nbo;                  /* batch matrices of C */
    int64_t abs_[KN_MAX_DIMS], bbs[KN_MAX_DIMS], cbs[KN_MAX_DIMS]; /* matrix-index strides over bd */
} mm_geom;

static inline kn_shape mm_batch(const kn_shape *s) {
    kn_shape b = {s->nd - 2, {0}};
    for (int k = 0; k < s->nd - 2; k++) b.d[k] = s->d[k];
    return b;
}

static inline int mm_geom_make(const kn_shape *a, const kn_shape *b, int ta, int tb, mm_geom *G, kn_shape *cshape) {
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

static inline void mm_geom_of(const kn_graph *g, const kn_node *n, mm_geom *G) {
    kn_shape c;
    mm_geom_make(kn_shp(g, n->in[0]), kn_shp(g, n->in[1]), (int)n->a.i[0], (int)n->a.i[1], G, &c);
}

#endif
