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
