/* kiln — what the definition of maxpool2d (ops/maxpool2d.c) and its kernels share. */
#ifndef KN_OPS_MAXPOOL2D_H
#define KN_OPS_MAXPOOL2D_H

#include "graph/graph.h"

/* argmax as uint8 (window positions fit in a byte) or int32 */
static inline int narrow_index(const kn_node *n) { return n->a.i[0] * n->a.i[1] <= 256; }

#endif
