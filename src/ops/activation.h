/* kiln — the activations (ops/activation.c) as the model builder sees them: one row per
 * activation op, in the order of the config's `activation = ...` values. */
#ifndef KN_OPS_ACTIVATION_H
#define KN_OPS_ACTIVATION_H

#include "graph/graph.h"

/* The table (ops/activation.c defines the ops from it, backend/cpu/kernels/activation.c
 * their kernels). ID: the op id's suffix (KN_OP_*); READS: IN (x) or OUT (y), what the backward reads; FF, FB: FLOPs per
 * element forward and backward; PF, PB: element counts above which the forward and the
 * backward loops run in parallel; SLOPE: attribute f[0] is a negative slope (the
 * layers take a `slope` key). */
#define KN_ACTIVATIONS(X)                                                                  \
    /* tag     ID          op name     READS FF    FB    PF     PB     SLOPE flags */                                \
    X(relu,    RELU,       relu,       OUT,  1.0,  1.0,  32768, 32768, 0,    KN_OPF_LAYOUT_PRESERVING | KN_OPF_RELU | KN_OPF_RELU_OUT) \
    X(lrelu,   LEAKY_RELU, leaky_relu, IN,   1.0,  1.0,  32768, 32768, 1,    0)                                      \
    X(gelu,    GELU,       gelu,       IN,   20.0, 30.0, 16384, 16384, 0,    0)                                      \
    X(silu,    SILU,       silu,       IN,   5.0,  8.0,  16384, 16384, 0,    0)                                      \
    X(tanh,    TANH,       tanh,       OUT,  10.0, 3.0,  16384, 32768, 0,    0)                                      \
    X(sigmoid, SIGMOID,    sigmoid,    OUT,  4.0,  3.0,  16384, 32768, 0,    0)

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
