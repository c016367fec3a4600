/* kiln — fused ops of the CPU backend that are not in graph.h's registry: the model
 * builder emits them in place of an op followed by an activation (see nn/model.c). */
#ifndef KN_OPS_FUSED_H
#define KN_OPS_FUSED_H

#include "graph/graph.h"

/* batchnorm followed by ReLU in one pass (ops/batchnorm.c). */
extern const kn_op kn_op_batchnorm_relu;
/* linear with its ReLU applied by the GEMM (ops/linear.c). */
extern const kn_op kn_op_linear_relu;

/* Whether the model builder fuses (default 1; tests compare with 0). */
int kn_fusion(void);
void kn_set_fusion(int on);

#endif
