/* kiln — training health: per-layer statistics every K steps (activation mean/std,
 * dead ReLU fraction, gradient norm, weight norm, update-to-weight ratio, drift of the
 * activation distribution over training), warnings for vanishing/exploding gradients,
 * and the `kiln health RUN_DIR` report. Also: train/test leakage (exact duplicates). */
#ifndef KN_HEALTH_H
#define KN_HEALTH_H

#include <stdio.h>

#include "data/data.h"
#include "nn/model.h"

typedef struct kn_health kn_health;

/* every: steps between health checks (> 0). */
int kn_health_create(kn_ctx *ctx, kn_model *m, int64_t every, kn_health **out);
void kn_health_free(kn_health *h);
/* Is `step` (0-based index of the step about to run) a health step? */
int kn_health_due(const kn_health *h, int64_t step);
/* On a health step, in place of kn_model_forward_backward: runs the forward one node
 * at a time, recording each layer's output statistics while they are live, then the
 * backward; records gradient and weight norms and keeps a copy of the parameters.
 * Returns the loss. Results must equal kn_model_forward_backward bit for bit. */
float kn_health_forward_backward(kn_health *h, kn_model *m, kn_rt *rt);
/* After the optimizer update of a health step: update-to-weight ratios, drift; writes one
 * {"event":"health",...} line to metrics and {"event":"warning",...} lines for problems,
 * and prints warnings (one line each, "kiln: warning: ...") to warn (may be NULL). */
void kn_health_after_update(kn_health *h, kn_model *m, int64_t step, FILE *metrics, FILE *warn);
/* Mean over layers of the latest drift values (for tests and summaries); NAN before
 * two checks. */
double kn_health_mean_drift(const kn_health *h);
/* `kiln health RUN_DIR`: read RUN_DIR/metrics.jsonl, print the latest per-layer table,
 * the drift per layer, every warning and every guard event. */
int kn_health_print(kn_ctx *ctx, const char *run_dir, FILE *out);

/* Exact duplicates between two sample sets (images compared byte for byte, found by
 * hashing). a_idx/b_idx may be NULL (all samples). */
typedef struct {
    int64_t count;          /* samples of b that also appear in a */
    int64_t examples[5][2]; /* (index in a, index in b) of up to 5 of them */
    int nexamples;
} kn_leak_report;
int kn_leakage_check(kn_ctx *ctx, const kn_dataset *a, const int64_t *a_idx, int64_t na, const kn_dataset *b,
                     const int64_t *b_idx, int64_t nb, kn_leak_report *r);
/* The same on samples of sz bytes each (a table's rows): a_n / b_n samples in a / b. */
int kn_leakage_check_bytes(kn_ctx *ctx, const void *a_data, int64_t a_n, size_t sz, const int64_t *a_idx, int64_t na,
                           const void *b_data, int64_t b_n, size_t szb, const int64_t *b_idx, int64_t nb, kn_leak_report *r);

/* ---- added: per-layer results of the latest check (tests, summaries) ---- */
typedef struct {
    char layer[64];        /* layer (config section) name */
    const char *op;        /* op of the layer's last node (the one whose output is measured) */
    int64_t nparams;       /* trainable parameters of the layer (0: no gradient statistics) */
    double act_mean, act_std; /* of the layer's output (population std) */
    double dead_relu;      /* fraction of dead units when the last op is relu, else NAN */
    double grad_norm, weight_norm; /* L2 over all the layer's parameters; NAN if none */
    double update_ratio;   /* ||w_after - w_before|| / ||w_before||; NAN if none/undefined */
    double drift;          /* mean over consecutive checks (see health.c); NAN before two */
    double dead_sustained; /* fraction of units dead on each of the last KN_H_DEAD_CHECKS
                              checks' batches (relu layers), else NAN; NAN before that many */
    int no_flow;           /* 1: no gradient reaches any of its parameters by design (the
                              layer does not lead to the loss): no gradient statistics */
} kn_health_layer;
int kn_health_nlayers(const kn_health *h);
const kn_health_layer *kn_health_get_layer(const kn_health *h, int i);
/* Checks completed (kn_health_after_update calls that wrote an event). */
int64_t kn_health_nchecks(const kn_health *h);
/* Learning rate of the next update relative to the configured one (schedule and guard
 * included; default 1): the update-ratio threshold of the vanishing warning scales by it. */
void kn_health_set_lr_scale(kn_health *h, double s);
/* 1 when layer a's output reaches layer b through the graph (a == b included). */
int kn_health_feeds(const kn_health *h, int a, int b);
/* Drop the pending check of a health step whose update did not happen (a guard skipped
 * or rolled back the step): no event is written and the drift is not updated. */
void kn_health_discard(kn_health *h);
/* After a guard rollback: forget the history that belongs to the abandoned trajectory
 * (sustained-dead streaks, gradient averages, warning state); the drift is kept. */
void kn_health_reset_history(kn_health *h);

/* ---- the overfitting warning (one rule, a pure function of the epochs' losses) ----
 * After each epoch: the validation loss v, the training loss t, gap = v - t. Warn when
 *   - v has not improved on its best for `patience` epochs (train.warn_worse_epochs),
 *   - v is at least KN_OVERFIT_EXCESS (2%) above the best, and
 *   - the gap grew since the best epoch by at least KN_OVERFIT_EXCESS of the best loss;
 * warn once, and again only when v's excess over the best has doubled since the last
 * warning. A new best validation loss ends the episode. */
#define KN_OVERFIT_EXCESS 0.02
typedef struct {
    int64_t patience;      /* 0: never warn */
    int64_t epochs, bad;   /* epochs seen; epochs since the best */
    int64_t best_epoch;    /* 1-based epoch of the best validation loss */
    double best, best_gap; /* the best validation loss and the gap at that epoch */
    double warned_excess;  /* v - best at the last warning of this episode; 0: none */
} kn_overfit;
void kn_overfit_init(kn_overfit *o, int64_t patience);
/* Feed one epoch; returns 1 (and a message in msg) when the warning is due. */
int kn_overfit_epoch(kn_overfit *o, double train_loss, double val_loss, char *msg, size_t n);
/* Feed the "epoch" events of a metrics.jsonl (a resumed run) silently; a missing file
 * feeds nothing. Returns the number of epochs fed. */
int64_t kn_overfit_replay(kn_overfit *o, const char *metrics_path);

#endif
