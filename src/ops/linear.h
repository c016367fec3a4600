/* kiln — what the definition of linear (ops/linear.c) and its kernels share. */
#ifndef KN_OPS_LINEAR_H
#define KN_OPS_LINEAR_H

#include "graph/graph.h"

/* rows of the GEMM: the product of every dim of x but the last */
static inline int64_t linear_rows(const kn_graph *g, const kn_node *n) {
    const kn_shape *x = kn_shp(g, n->in[0]);
    return kn_numel(g, n->in[0]) / x->d[x->nd - 1];
}

#endif
