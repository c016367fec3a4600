/* kiln — fused ops of the CPU backend that are not in graph.h's registry: the fusion
 * pass (graph/fuse.c) puts them in place of an op followed by a relu (kn_op.fused_relu). */
#ifndef KN_OPS_FUSED_H
#define KN_OPS_FUSED_H

#include "graph/graph.h"

/* batchnorm followed by ReLU in one pass (ops/batchnorm.c). */
extern const kn_op kn_op_batchnorm_relu;
/* linear with its ReLU applied by the GEMM (ops/linear.c). */
extern const kn_op kn_op_linear_relu;

#endif
