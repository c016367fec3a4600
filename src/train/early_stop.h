/* kiln — the end of an epoch's validation: the best validation loss so far (which
 * checkpoint becomes best.safetensors), the epochs since it, early stopping after
 * train.early_stopping such epochs, and the overfitting warning (kn_overfit, health.c).
 * Its state lives in the training state (best_val, best_step, bad_epochs: checkpointed),
 * the warning's is rebuilt from metrics.jsonl on resume. */
#ifndef KN_EARLY_STOP_H
#define KN_EARLY_STOP_H

#include "train/health.h"
#include "train/sinks/sink.h"
#include "train/state.h"

typedef struct {
    int64_t patience; /* train.early_stopping; 0: off */
    int64_t epochs;
    kn_overfit of;
} kn_early_stop;

/* metrics_path: the resumed run's metrics.jsonl (NULL: a new run). */
void kn_early_stop_init(kn_early_stop *e, int64_t patience, int64_t warn_worse_epochs, int64_t epochs, const char *metrics_path);
/* After validation of epoch S->epoch (0-based, not yet advanced): update the best and
 * the count of bad epochs in S, warn about overfitting (stderr and a record). Returns 1
 * when this epoch is the best so far. */
int kn_early_stop_epoch(kn_early_stop *e, kn_train_state *S, double train_loss, double val_loss, kn_sinks *sinks);
/* After the epoch's checkpoint (S->epoch advanced): stop now? */
int kn_early_stop_due(const kn_early_stop *e, const kn_train_state *S);
/* Report the stop (stdout and a record); the caller has restored the best weights. */
void kn_early_stop_report(const kn_train_state *S, FILE *out, kn_sinks *sinks);

#endif
