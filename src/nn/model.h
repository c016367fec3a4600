/* kiln — layers and models. A layer is a config section whose `type` names one of
 * the layer builders below; each builder is a small composition of ops. The model
 * builder turns a config into a training graph (with loss) and an evaluation graph
 * sharing one parameter store. The trainer sees only the result: named inputs, a
 * loss, logits and the store. */
#ifndef KN_MODEL_H
#define KN_MODEL_H

#include "config/config.h"
#include "graph/graph.h"

typedef enum { KN_LOSS_CE = 0, KN_LOSS_MSE = 1 } kn_loss_kind;

typedef struct {
    kn_store store;
    kn_graph *train;   /* NULL when built for evaluation only */
    kn_graph *eval;
    int x_train, y_train, loss;  /* value ids in train: input, targets, loss */
    int x_eval, out_eval;        /* value ids in eval: input, model output */
    int out_train;               /* model output in the train graph */
    int64_t batch, eval_batch;
    int channels, height, width, nclasses;
    kn_loss_kind loss_kind;
    /* One arena lent to both graphs (they never run at the same time, and nothing in
     * it outlives a step or an evaluation pass): max of the two planned peaks. */
    void *arena;
    size_t arena_bytes;
} kn_model;

/* Names of the sections that are not layers. */
int kn_is_reserved_section(const char *name);

/* The model's class count when its last layer is `type = linear` with an `out` of 1 to
 * 256 (labels are bytes), else 0 (unknown: the data's max label + 1 is used). */
int kn_model_classes(const kn_config *cfg);

/* Check layer types and keys without building (no data needed). */
int kn_model_check_config(kn_ctx *ctx, const kn_config *cfg);

/* How a model is built: the defaults (kn_model_defaults) are what the trainer uses;
 * tests turn parts off to compare. Per model, not per process: two models built with
 * different options can train at the same time. */
typedef struct {
    int fuse;            /* 1: the fusion pass (graph/fuse.h) runs on both graphs */
    int blocked_layout;  /* 1: channel-blocked activation layouts where the CPU path has them
                          * (backend/cpu/layout.h); 0: every activation plain */
} kn_model_opts;
kn_model_opts kn_model_defaults(void);

/* Build and plan from cfg without allocating tensor memory (store, arena): the
 * plan (arena_bytes of both graphs, store sizes) is known afterwards. batch == 0:
 * evaluation graph only. kn_model_free releases it. */
int kn_model_plan(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                  int width, int nclasses, kn_model *m);
/* The same with options (NULL: kn_model_defaults()). */
int kn_model_plan_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                       int width, int nclasses, const kn_model_opts *opts, kn_model *m);
/* Allocate the store and the shared arena of a planned model. */
int kn_model_alloc(kn_ctx *ctx, kn_model *m);
/* kn_model_plan + kn_model_alloc. Does not initialise parameter values (kn_model_init). */
int kn_model_build(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                   int width, int nclasses, kn_model *m);
int kn_model_build_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                        int width, int nclasses, const kn_model_opts *opts, kn_model *m);
void kn_model_free(kn_model *m);
/* Initialise parameters and states from their initialisers with a seeded RNG. */
void kn_model_init(kn_model *m, uint64_t seed);

/* Copy a batch of targets into the train graph's target input (labels for
 * cross-entropy, one-hot rows for MSE). */
void kn_model_set_targets(kn_model *m, const int32_t *labels);

/* Forward + backward of one batch already placed in the train graph's inputs.
 * Returns the loss. */
float kn_model_forward_backward(kn_model *m, kn_rt *rt);

#endif
