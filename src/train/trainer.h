/* kiln — trainer internals shared by the CLI, tests and benchmarks. */
#ifndef KN_TRAINER_H
#define KN_TRAINER_H

#include "data/data.h"
#include "data/source.h"
#include "nn/model.h"
#include "optim/optim.h"

/* Everything read from [data], [train], [optimizer]. */
typedef struct {
    /* paths up to PATH_MAX (4096) and a file name */
    char train_images[4160], train_labels[4160], test_images[4160], test_labels[4160];
    int dataset; /* data.dataset: -1 not given, 0 fashion-mnist, 1 mnist, 2 idx */
    /* data.source = idx | csv | npy: a typed source (data/source.h) read into tables of
     * named fields instead of the image files above */
    int typed;
    kn_source_spec src;
    int64_t batch, eval_batch, limit_train, limit_test;
    double val_split, mean, std; /* mean, std: NAN = from the training set */
    int prefetch, shuffle;
    int64_t epochs, log_every, max_steps;
    uint64_t seed;
    int threads;
    char run_dir[1024];
    /* train.init_from (or --init-from, resolved to a file when the run starts): the
     * weights a new run starts from; "" none */
    char init_from[4200];
    kn_opt_config opt;
    /* memory (train/plan.c): train.budget in bytes (0: what is available), train.fit,
     * train.micro_batch (0: the batch; set by kn_plan_for_training) */
    size_t mem_budget;
    int mem_fit;
    int64_t micro_batch;
    /* [checkpoint] */
    int64_t ckpt_every_steps;
    double ckpt_every_seconds;
    int ckpt_keep_last, ckpt_keep_epochs, ckpt_on_error; /* on_error: 0 stop, 1 continue */
    /* [guard] */
    int guard_enabled, guard_policy, guard_auto_clip; /* policy: 0 skip, 1 rollback, 2 stop */
    double guard_lr_factor, guard_spike_factor, guard_explode_factor;
    int64_t guard_max_retries, guard_snapshot_every, guard_trust_steps, guard_collapse_checks;
    /* [health], early stopping */
    int64_t health_every, early_stopping, warn_worse_epochs;
    int leakage_check;
} kn_settings;

int kn_settings_read(kn_ctx *ctx, const kn_config *cfg, kn_settings *st);

/* Data sets, loaders and model of one run: the image files (train_ds, test_ds) or, with a
 * typed source, tables (train_t holds the training and validation rows, test_t the test
 * rows; the input field is normalised in place with `norm`, fitted on the training rows). */
typedef struct {
    kn_dataset train_ds, test_ds;
    int typed;
    kn_table train_t, test_t;
    int x_field, y_field; /* in both tables */
    kn_norm norm;
    char *norm_text, *classes_text; /* for checkpoint metadata (malloc'ed; NULL for images) */
    kn_data_desc desc;
    int64_t ntest;
    const char *test_name; /* the test set's file, for messages */
    int64_t *train_idx, *val_idx, ntrain, nval;
    kn_loader *train_loader, *val_loader, *test_loader;
    kn_model model;
    float mean, std;
} kn_job;

int kn_job_open(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int want_train, kn_job *j);
/* A typed source with the normalisation of a saved model (`given`, copied). */
int kn_job_open_norm(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int want_train, const kn_norm *given,
                     kn_job *j);
void kn_job_close(kn_job *j);
/* What an evaluation pass measures: the mean loss and, for class labels, the accuracy;
 * for real targets the mean absolute error, root mean squared error and R^2 (1 - SSE/SST
 * over the whole set, SST about the set's own mean; NaN for one sample), accuracy NaN. */
typedef struct {
    double loss, accuracy, mae, rmse, r2;
    int64_t n;
    int nmetrics;            /* every metric of train.metrics, in order */
    char names[8][32];
    double values[8];
} kn_eval_metrics;
int kn_evaluate_metrics(kn_model *m, kn_loader *L, uint64_t seed, kn_eval_metrics *out);
/* Mean loss and accuracy of the eval graph over a loader (kn_evaluate_metrics). */
int kn_evaluate(kn_model *m, kn_loader *L, uint64_t seed, double *loss, double *acc);

/* The model file of a run directory: model.safetensors, else checkpoints/best.safetensors,
 * else the newest checkpoints/step-N.safetensors (a note on stderr says which); a file
 * is taken as it is. `what` names the use in the message when there is none ("evaluate"). */
int kn_model_file(kn_ctx *ctx, const char *run_dir_or_ckpt, const char *what, char *path, size_t size);

#endif
