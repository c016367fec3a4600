/* kiln — the activations (ops/activation.c) as the model builder sees them: one row per
 * activation op, in the order of the config's `activation = ...` values. */
#ifndef KN_OPS_ACTIVATION_H
#define KN_OPS_ACTIVATION_H

#include "graph/graph.h"

typedef struct {
    const char *name;  /* the op's name, the config's activation and layer type */
    const kn_op *op;
    int has_slope;     /* attribute f[0] is a negative slope: the layer's `slope` key */
} kn_activation;

/* relu, leaky_relu, gelu, silu, tanh, sigmoid; ends with a row whose name is NULL. */
extern const kn_activation kn_activations[];

/* The row of the activation op named `name`, or NULL. */
const kn_activation *kn_activation_find(const char *name);

#endif
