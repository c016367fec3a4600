/* kiln — layers and models. A layer is a config section whose `type` names one of
 * the layer builders below; each builder is a small composition of ops. The model
 * builder turns a config into a training graph (with loss) and an evaluation graph
 * sharing one parameter store. The trainer sees only the result: named inputs, a
 * loss, logits and the store. */
#ifndef KN_MODEL_H
#define KN_MODEL_H

#include "config/config.h"
#include "graph/graph.h"

/* train.loss: cross_entropy (class labels; class_weights, label_smoothing), mse, l1,
 * huber (huber_delta), bce (binary cross-entropy with logits). With class labels the
 * losses other than cross_entropy compare the output with one-hot rows. */
typedef enum { KN_LOSS_CE = 0, KN_LOSS_MSE = 1, KN_LOSS_L1 = 2, KN_LOSS_HUBER = 3, KN_LOSS_BCE = 4 } kn_loss_kind;

/* A metric of the evaluation graph (train.metrics): a graph output of per-batch
 * statistics (ops/metric.h) that evaluation adds up over the whole set. */
#define KN_MAX_METRICS 8
typedef struct {
    char name[32]; /* "accuracy", "top5_accuracy", "mae", "rmse", "r2" */
    int kind;      /* kn_metric_kind (ops/metric.h) */
    int vid;       /* its output in the eval graph */
} kn_model_metric;

/* What one sample of the data is: named inputs (each a dtype and a per-sample shape) and
 * a target (class labels 0..nclasses-1 or real values). The model builder turns each input
 * into a graph input of shape (batch, shape...) that layers name with `input = NAME`; the
 * first input is also the default input of the first layer (and is called `input` too
 * when no data input has that name). */
#define KN_MAX_INPUTS 8
typedef struct {
    char name[32];
    kn_dtype dtype;
    kn_shape shape;  /* per sample (without the batch) */
} kn_input_desc;
typedef struct {
    int ninputs;
    kn_input_desc in[KN_MAX_INPUTS];
    int target_real; /* 0: class labels (int32), 1: real values (float32, regression) */
    kn_shape target; /* per sample: () one label or value per sample, (k,) k values */
    int nclasses;    /* class labels: how many classes */
} kn_data_desc;
/* The image classification sample of the IDX path: input "input" (C, H, W), one label. */
void kn_data_desc_image(kn_data_desc *d, int channels, int height, int width, int nclasses);

typedef struct {
    kn_store store;
    kn_graph *train;   /* NULL when built for evaluation only */
    kn_graph *eval;
    int x_train, y_train, loss;  /* value ids in train: input, targets, loss */
    int x_eval, out_eval;        /* value ids in eval: input, model output */
    int out_train;               /* model output in the train graph */
    int64_t batch, eval_batch;
    int channels, height, width, nclasses; /* image data: the first input's (C, H, W) */
    kn_data_desc desc;
    int64_t target_numel;        /* target elements per sample */
    kn_loss_kind loss_kind;
    double label_smoothing, huber_delta;
    float *class_weights;        /* NULL, or nclasses weights (train.class_weights) */
    /* the eval graph's loss, targets and metrics (graph outputs, found by name when built):
     * labels (int32; class data), targets (float32: real values or one-hot rows), class
     * weights; -1 where absent */
    int loss_eval, labels_eval, targets_eval, cw_eval, cw_train;
    int nmetrics;
    kn_model_metric metric[KN_MAX_METRICS];
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
int kn_model_plan_desc(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                       kn_model *m);
/* The same for image data (kn_data_desc_image). */
int kn_model_plan(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                  int width, int nclasses, kn_model *m);
/* The same with options (NULL: kn_model_defaults()). */
/* kn_model_plan_desc with options (NULL: kn_model_defaults()). */
int kn_model_plan_desc_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                            const kn_model_opts *opts, kn_model *m);
int kn_model_plan_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                       int width, int nclasses, const kn_model_opts *opts, kn_model *m);
/* Allocate the store and the shared arena of a planned model. */
int kn_model_alloc(kn_ctx *ctx, kn_model *m);
/* kn_model_plan + kn_model_alloc. Does not initialise parameter values (kn_model_init). */
int kn_model_build_desc(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, const kn_data_desc *desc,
                        kn_model *m);
int kn_model_build(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                   int width, int nclasses, kn_model *m);
int kn_model_build_opts(kn_ctx *ctx, const kn_config *cfg, int64_t batch, int64_t eval_batch, int channels, int height,
                        int width, int nclasses, const kn_model_opts *opts, kn_model *m);
void kn_model_free(kn_model *m);
/* Initialise parameters and states from their initialisers with a seeded RNG. */
void kn_model_init(kn_model *m, uint64_t seed);

/* Copy a batch of targets into the train graph's target input: class labels (int32) as
 * labels for cross-entropy or one-hot rows for MSE; real targets (float32) as they are. */
void kn_model_set_targets(kn_model *m, const void *targets);

/* The same for the eval graph (labels, one-hot or real targets, class weights), before a
 * forward whose loss and metrics are read. */
void kn_model_set_eval_targets(kn_model *m, const void *targets);
/* Value id of the output named `name` in g ("loss", "metric.accuracy", ...), -1 if none. */
int kn_model_output(const kn_graph *g, const char *name);

/* Forward + backward of one batch already placed in the train graph's inputs.
 * Returns the loss. */
float kn_model_forward_backward(kn_model *m, kn_rt *rt);

#endif
