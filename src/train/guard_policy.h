/* kiln — the guard's policies, one part of the trainer: what happens when a step fails
 * the guard's checks (guard.c): a non-finite loss or gradient norm (explained by
 * replaying the step op by op), exploding gradients (norm far above its running
 * median) or a collapse (judged on health steps). guard.policy: skip the batch, roll back
 * to an in-memory snapshot with a smaller learning rate (guard.lr_factor, up to
 * guard.max_retries), or stop. Gradient-norm spikes are warned about, or clipped
 * (guard.auto_clip). It is the step's gate (kn_trainer.gate): it sees the gradients
 * before the update and decides whether the update runs.
 *
 * Snapshots: `anchor`, where the current learning-rate phase began (the start of the run
 * or the last rollback target), and `recent`, the newest one taken after a quiet
 * stretch (every guard.snapshot_every steps). A failure soon after the anchor
 * (guard.trust_steps) goes back to the anchor: the states between were produced by a
 * learning rate that has just proved too large. */
#ifndef KN_GUARD_POLICY_H
#define KN_GUARD_POLICY_H

#include "train/guard.h"
#include "train/progress.h"
#include "train/sinks/sink.h"
#include "train/state.h"
#include "train/step.h"
#include "train/trainer.h"

typedef struct {
    float *param, *state, *m, *v;
    int64_t t;
    kn_train_state S;
    int valid;
} kn_snapshot;

typedef struct {
    kn_ctx *ctx;                 /* where a stop leaves its message */
    const kn_settings *st;
    kn_model *m;
    kn_optimizer *o;
    kn_loader *loader;           /* the training loader (to replay a failing batch) */
    kn_health *health;           /* NULL: no health checks, no collapse detection */
    kn_sinks *sinks;
    const kn_progress *progress;
    const char *ckpt_dir;        /* named in the stop message */
    kn_train_state *S;           /* the run's state */
    float *state_before;         /* BatchNorm statistics before the step */
    kn_snapshot anchor, recent;
    int64_t nparam, nstate;
    kn_spike spike;
    kn_collapse collapse;
    int64_t retries, spikes_since_snapshot;
} kn_guard_policy;

/* NULL in *out when guard.enabled is false (the step then has no gate). chance: the loss
 * of the best constant prediction (collapse detection), NAN: none. */
int kn_guard_policy_create(kn_ctx *ctx, const kn_settings *st, kn_model *m, kn_optimizer *o, kn_loader *loader,
                           kn_health *health, kn_sinks *sinks, const kn_progress *progress, const char *ckpt_dir,
                           kn_train_state *S, double chance, kn_guard_policy **out);
void kn_guard_policy_free(kn_guard_policy *g);
/* Before the loop: the anchor is the state the run starts from. */
void kn_guard_policy_begin(kn_guard_policy *g);
/* Before each step: keep what a failed step must restore. */
void kn_guard_policy_before_step(kn_guard_policy *g);
/* The gate of the step (kn_step_gate): KN_STEP_UPDATED lets the update run; SKIPPED (S
 * moved past the batch), ROLLBACK (S restored, restart the epoch at S), STOP (error in ctx). */
int kn_guard_policy_gate(void *g, kn_trainer *t);
/* After an update (S advanced), and after an epoch's checkpoint: a recent snapshot when due. */
void kn_guard_policy_after_update(kn_guard_policy *g);
void kn_guard_policy_after_epoch(kn_guard_policy *g);

#endif
