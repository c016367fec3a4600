/* kiln — a neural-network training engine in C.
 * Public API. Every function returns a kn_status (KN_OK == 0) and, on error,
 * leaves a message in the context: kn_ctx_message(ctx). The library never exits. */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION "0.1.0"

/* What the shared library exports: only these declarations (it is built with
 * -fvisibility=hidden, so kiln's internals stay private to it). */
#if defined(__GNUC__)
#define KN_API __attribute__((visibility("default")))
#else
#define KN_API
#endif

typedef enum {
    KN_OK = 0,
    KN_ERR_INVALID = 1, /* bad argument or value */
    KN_ERR_CONFIG = 2,  /* config file: unknown key, bad value, unknown layer */
    KN_ERR_SHAPE = 3,   /* shapes that do not fit together */
    KN_ERR_IO = 4,      /* missing / unreadable / unwritable file */
    KN_ERR_FORMAT = 5,  /* corrupt or unexpected file content */
    KN_ERR_NOMEM = 6,   /* allocation failed */
    KN_ERR_INTERNAL = 7,
    KN_ERR_INTERRUPTED = 8
} kn_status;

typedef struct kn_ctx kn_ctx;

KN_API kn_ctx *kn_ctx_new(void);
KN_API void kn_ctx_free(kn_ctx *ctx);
KN_API const char *kn_ctx_message(const kn_ctx *ctx);
KN_API int kn_ctx_code(const kn_ctx *ctx);
KN_API void kn_ctx_clear(kn_ctx *ctx);

/* ---- configs ---- */
typedef struct kn_config kn_config;
/* Parse an INI model/run file. */
KN_API int kn_config_load(kn_ctx *ctx, const char *path, kn_config **out);
/* Parse INI text held in memory; `name` is used in messages in place of a path. */
KN_API int kn_config_parse_string(kn_ctx *ctx, const char *name, const char *text, kn_config **out);
/* Apply "section.key=value" (an override from the command line). The value is taken
 * as it is (blanks around it dropped); one that starts with '"' is a quoted string,
 * read as in a file (docs/CONFIG.md, "Long values and quoting"). */
KN_API int kn_config_set(kn_ctx *ctx, kn_config *cfg, const char *assignment);
KN_API void kn_config_free(kn_config *cfg);

/* ---- training ---- */
typedef struct {
    const char *run_dir; /* NULL: runs/<config name> */
    int threads;         /* 0: all cores */
    int64_t seed;        /* <0: from config (train.seed) */
    int progress;        /* -1 auto (terminal?), 0 plain lines, 1 progress bar */
    int quiet;           /* 1: print nothing but errors */
    int resume_only;     /* 1: the run directory must hold a checkpoint to continue from */
    int allow_config_change; /* 1: resume even if the config differs from the checkpoint's */
    const char *init_from;   /* "RUN_DIR[:first|best|last|STEP]" or a checkpoint file: start from its weights */
    const char *budget;      /* kn_resume: memory budget ("512M"), as train.budget; NULL: the run's config */
    int fit;                 /* kn_resume: 1: train.fit = true */
    /* Test hook (for kill tests; NULL in normal use): called at fixed points of the run
     * with where = "step" (after each update, before the checkpoint decision; step = steps
     * done), "eval" / "eval_done" (around each validation pass), "test" (before the final
     * test pass) and "model" (before model.safetensors is written). */
    void (*hook)(void *arg, const char *where, int64_t step);
    void *hook_arg;
} kn_train_options;

typedef struct {
    double final_train_loss;
    double val_loss, val_accuracy;   /* last validation pass */
    double test_loss, test_accuracy; /* final pass over the test set */
    int64_t steps;
    double seconds;
    int stopped_by_signal;           /* SIGINT/SIGTERM number if the run stopped on request, else 0 */
    int resumed;                     /* 1 if it continued from a checkpoint */
    /* real-valued targets (regression; the accuracies are then NaN): R^2 = 1 - SSE/SST of
     * the last validation pass and of the test pass, the test's mean absolute error and
     * root mean squared error; NaN for class labels */
    double val_r2, test_r2, test_mae, test_rmse;
    int64_t test_samples;            /* samples in the test pass */
} kn_train_result;

KN_API void kn_train_options_init(kn_train_options *o);
KN_API int kn_train(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, kn_train_result *res);

/* Ask a running kn_train to stop after the current step, write a checkpoint and
 * return KN_ERR_INTERRUPTED. Async-signal-safe: call it from a signal handler. */
KN_API void kn_request_stop(int signo);
KN_API int kn_stop_requested(void);

/* Train from the run directory's own config.ini and newest good checkpoint. */
KN_API int kn_resume(kn_ctx *ctx, const char *run_dir, const kn_train_options *opt, kn_train_result *res);

/* Print a checkpoint's tensors, shapes and metadata and verify its checksum. With
 * dump != NULL, print every value of that tensor (one per line, %.9g) instead. */
KN_API int kn_inspect(kn_ctx *ctx, const char *path, const char *dump, FILE *out);

/* Evaluate a run directory (or a checkpoint file inside one) on its test set. */
KN_API int kn_eval(kn_ctx *ctx, const char *run_dir_or_ckpt, int threads, kn_train_result *res);


/* ---- building a config from code ----
 * A config is sections of key = value pairs, as in an INI file (docs/CONFIG.md). Start
 * from an empty one and add keys with kn_config_set ("section.key=value"): a section is
 * created by its first key, and layer sections are built in the order they were created.
 *     kn_config *cfg;
 *     kn_config_new(ctx, "mlp", &cfg);
 *     kn_config_set(ctx, cfg, "data.source=csv");  ...
 *     kn_config_set(ctx, cfg, "fc1.type=linear");  kn_config_set(ctx, cfg, "fc1.out=16");
 *     kn_config_set(ctx, cfg, "act1.type=relu");   ... */
KN_API int kn_config_new(kn_ctx *ctx, const char *name, kn_config **out);
/* The config as INI text (what a run directory and a saved model record): malloc'ed,
 * release it with free(); NULL when out of memory. */
KN_API char *kn_config_to_text(const kn_config *cfg);

/* ---- sessions: a model with its data, trained and used step by step ----
 * A session holds what a run holds without the run directory: the data the config's
 * [data] names (split and normalised as `kiln train` does), the model built and
 * initialised from train.seed, the optimizer and its learning-rate schedule. Every
 * session function reports errors, as return codes with a message, into the context
 * the session was created with (it must outlive the session); a session is used by one
 * thread at a time. */
typedef struct kn_session kn_session;

typedef struct {
    int threads;  /* 0: train.threads of the config (0 there: all cores) */
    int64_t seed; /* <0: train.seed of the config */
} kn_session_options;
KN_API void kn_session_options_init(kn_session_options *o);

/* Load the data, build and initialise the model and the optimizer. o may be NULL. The
 * config is copied: it can be freed afterwards. */
KN_API int kn_session_new(kn_ctx *ctx, const kn_config *cfg, const kn_session_options *o, kn_session **out);
/* A session from a model file written by kn_session_save or `kiln train`
 * (model.safetensors): its config, its normalisation of the input and its weights; the
 * data are loaded again from the paths in its config. */
KN_API int kn_session_open(kn_ctx *ctx, const char *path, const kn_session_options *o, kn_session **out);
KN_API void kn_session_free(kn_session *s);

/* One optimizer update on the next training batch (epochs wrap: a new epoch reshuffles as
 * `kiln train` does), with the learning rate of the schedule at this step. *loss (may be
 * NULL) gets the batch's loss before the update. */
KN_API int kn_session_train_step(kn_session *s, double *loss);
/* Steps up to the end of the current epoch (a whole epoch when one has just ended);
 * *mean_loss (may be NULL) gets the mean of their losses. */
KN_API int kn_session_train_epoch(kn_session *s, double *mean_loss);
KN_API int64_t kn_session_steps_per_epoch(const kn_session *s);
KN_API int64_t kn_session_steps_done(const kn_session *s); /* updates so far */
KN_API int64_t kn_session_epoch(const kn_session *s);      /* epochs completed */
KN_API int64_t kn_session_epochs(const kn_session *s);     /* train.epochs of the config */
/* The learning rate the next step will use. */
KN_API double kn_session_lr(const kn_session *s);

typedef enum { KN_SPLIT_VALIDATION = 1, KN_SPLIT_TEST = 2 } kn_split;
/* What an evaluation pass measures: mean loss; accuracy for class labels (else NaN);
 * R^2, MAE and RMSE for real targets (else NaN); n samples. */
typedef struct {
    double loss, accuracy, r2, mae, rmse;
    int64_t n;
} kn_metrics;
/* The validation split (data.validation_split > 0) or the test set. */
KN_API int kn_session_evaluate(kn_session *s, kn_split which, kn_metrics *out);

/* Floats per sample of the model's input (raw features: normalised inside as in
 * training; image data: pixel values 0..255) and of its output (logits for classes,
 * values for real targets). */
KN_API int64_t kn_session_input_size(const kn_session *s);
KN_API int64_t kn_session_output_size(const kn_session *s);
/* The model's output for n samples: x holds n * features floats with features ==
 * kn_session_input_size, out has room for out_capacity floats, at least
 * n * kn_session_output_size. Sizes that do not fit are an error (KN_ERR_SHAPE). */
KN_API int kn_session_predict(kn_session *s, const float *x, int64_t n, int64_t features, float *out, int64_t out_capacity);

/* Write the model as `kiln train` writes model.safetensors (weights, config,
 * normalisation and class names in the metadata): `kiln eval PATH`, kn_eval and
 * kn_session_open read it. Atomic: the file is complete or absent. */
KN_API int kn_session_save(kn_session *s, const char *path);
/* Weights from a model or checkpoint file into this session's model: tensor names and
 * shapes must match, and so must the input normalisation when the file records one. */
KN_API int kn_session_load_weights(kn_session *s, const char *path);

/* Predictions of a run directory's model (or a checkpoint file) for every sample of INPUT
 * (IDX, CSV or .npy, read as the run's training data was), as CSV to `output` (written
 * atomically; NULL: stdout): index,class,prob_<class>... (logits: logit_<class>...) or
 * index,value... for real-valued targets. */
KN_API int kn_predict(kn_ctx *ctx, const char *run_dir_or_ckpt, const char *input, const char *output, int logits,
                      int threads);

#ifdef __cplusplus
}
#endif
#endif
