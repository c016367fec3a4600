/* kiln — graph passes that run on a built graph before planning (kn_g_plan).
 *
 * ReLU fusion: a relu node that directly follows the node producing its input, where
 * that op has a fused variant (kn_op.fused_relu: linear -> linear_relu, batchnorm ->
 * batchnorm_relu) and the relu is the only reader of that input, which is not kept
 * for the caller, is folded into the producer: the producer becomes the fused op, its
 * output takes the relu's place (readers, keep flag, loss), and the relu node and its
 * output are removed. One pass over the activations instead of two, one tensor fewer;
 * the same kernels run as when the model builder fused while building. */
#ifndef KN_GRAPH_FUSE_H
#define KN_GRAPH_FUSE_H

#include "graph/graph.h"

typedef struct {
    int relu; /* 1: fold relus into their producers (the default); 0: no fusion (tests compare) */
    /* Values that the caller's later layers read by name (the model builder: the results
     * of the layers a config's `input = ...` lists), or NULL. A relu is not folded into
     * a producer whose layer's result is one of them, even where the graph would allow
     * it: the rule the model builder applied when it fused while building, kept so that
     * plans stay as they were. */
    const int *named;
    int nnamed;
} kn_fuse_opts;

/* The default options (every fusion on). */
kn_fuse_opts kn_fuse_defaults(void);

/* Run the fusion pass on g (built, not planned). vids[0..nvids) are value ids the
 * caller holds (its inputs, outputs, loss); they are rewritten to the ids after the
 * pass (-1 stays -1). opts NULL: kn_fuse_defaults(). Returns the number of nodes
 * fused, or -1 with an error in ctx. */
int kn_g_fuse(kn_ctx *ctx, kn_graph *g, const kn_fuse_opts *opts, int *vids, int nvids);

#endif
