/* kiln — the checkpointer of a training run: when to write a checkpoint (every
 * checkpoint.every_steps steps or every_seconds seconds, at the end of every epoch, on
 * a stop request, at max_steps mid-epoch), what it holds (the store, the optimizer's
 * moments, the state record of state.h), the names it goes under (step-N, first, best as a
 * hard link, epoch-E with keep_epochs), pruning to keep_last, what a write error does
 * (checkpoint.on_error), and reading them back: the newest good one on resume (a damaged
 * one is skipped with a warning), the best weights for early stopping.
 * Checkpoint time is added to the step's timings (kn_step_times.checkpoint). */
#ifndef KN_CHECKPOINTER_H
#define KN_CHECKPOINTER_H

#include "train/rundir.h"
#include "train/sinks/sink.h"
#include "train/state.h"
#include "train/step.h"
#include "train/trainer.h"

typedef struct {
    const char *ckpt_dir, *run_dir, *cfg_text;
    const kn_settings *st;
    kn_job *job;
    kn_optimizer *opt;
    kn_sinks *sinks;      /* metrics_bytes of a checkpoint: the sinks' mark */
    kn_step_times *times; /* NULL or where checkpoint time is added */
    double last_t;        /* time of the last scheduled checkpoint */
    double write_seconds; /* total time spent writing checkpoints */
    int nwrites;
} kn_checkpointer;

int kn_checkpointer_init(kn_ctx *ctx, kn_checkpointer *ck, const kn_rundir *rd, const kn_settings *st, kn_job *job,
                         kn_optimizer *opt, const char *cfg_text);
/* Continue from the newest good checkpoint (step-N, else first): *resumed = 1 and S its
 * state; with none, S is left as it is. A config mismatch is an error (KN_ERR_CONFIG),
 * unless allowed; when every checkpoint present is damaged, an error too. */
int kn_checkpointer_resume(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int allow_change, int resume_only, FILE *out,
                           int *resumed);
/* first.safetensors: the model before the first update. */
int kn_checkpointer_first(kn_ctx *ctx, kn_checkpointer *ck, const kn_train_state *S);
/* Is a scheduled checkpoint due after this step (not at the end of an epoch, which has its own)? */
int kn_checkpointer_due(const kn_checkpointer *ck, const kn_train_state *S, int64_t total_steps);
/* Write step-N (S->metrics_bytes set from the sinks first), prune; with best also link it
 * as best.safetensors. On a write error with on_error = continue: a warning, KN_OK. */
int kn_checkpointer_save(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int best);
/* The end of an epoch: kn_checkpointer_save, and epoch-E with keep_epochs. */
int kn_checkpointer_epoch(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int best);
/* After a guard rollback restored S: remove the checkpoints of the abandoned steps (past
 * S: step-N, epoch-E, best when it is one of them) and checkpoint S, so that a resume
 * never continues the abandoned trajectory. */
int kn_checkpointer_rollback(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, FILE *out);
/* Load the weights of best.safetensors into the store (early stopping). */
int kn_checkpointer_load_best(kn_ctx *ctx, kn_checkpointer *ck);
/* model.safetensors: the weights and the normalisation, for eval and predict. */
int kn_checkpointer_save_model(kn_ctx *ctx, kn_checkpointer *ck, int64_t step);

#endif
