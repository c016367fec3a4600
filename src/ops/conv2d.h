/* kiln — what the definition of conv2d (ops/conv2d.c) and its kernels share. */
#ifndef KN_OPS_CONV2D_H
#define KN_OPS_CONV2D_H

#include "graph/graph.h"

static inline int64_t groups_of(const kn_node *n) { return n->a.i[4] > 1 ? n->a.i[4] : 1; }

#endif
