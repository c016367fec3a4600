/* kiln — one training step (kn_trainer_step), the only place the trainer runs the
 * graph for an update:
 *   1. forward and backward per micro-batch, gradients averaged over them (gradient
 *      accumulation, kn_accum: a batch larger than what fits runs as micro-batches);
 *      on a health step, the health checks' measuring forward and backward instead;
 *   2. the all-reduce hook (t->allreduce): where data parallelism sums the gradient
 *      over ranks; NULL (the default) does nothing;
 *   3. the global gradient norm, when clipping or the gate needs it;
 *   4. the gate (t->gate, the guard): sees loss and norm before anything is changed and
 *      may veto the update (skip, roll back, stop) or lower the norm (auto-clip);
 *   5. clipping to clip_norm (kn_clip_grad_norm, src/optim);
 *   6. the optimizer update with the learning rate the caller gives.
 * Each stage's time is recorded (kn_step_times). The loss comes from one place,
 * kn_trainer_loss: today the model's loss value; when losses and metrics become graph
 * outputs it reads them by name there, and nothing else changes.
 * The step allocates nothing. */
#ifndef KN_STEP_H
#define KN_STEP_H

#include "data/data.h"
#include "nn/model.h"
#include "optim/optim.h"

/* Gradient accumulation over micro-batches. With steps == 1 it is exactly
 * kn_model_set_targets + forward + backward on the graph's own input. */
typedef struct {
    int64_t batch, micro, steps;
    int64_t sample_floats;   /* floats per input sample */
    float *x;                /* where the loader writes a batch (the graph input when steps == 1) */
    float *gsum;             /* gradient sum (steps > 1) */
} kn_accum;

int kn_accum_init(kn_ctx *ctx, kn_accum *a, kn_model *m, int64_t batch);
/* Forward + backward of the batch in a->x with labels y (batch of them): leaves the
 * gradient of the mean loss over the whole batch in the store and returns that loss.
 * Micro-batch i runs with rt->step = step * steps + i (dropout masks differ between
 * micro-batches). Allocates nothing. */
float kn_accum_step(kn_accum *a, kn_model *m, kn_rt *rt, const int32_t *y);
/* Put micro-batch i of a->x and its labels into the train graph's inputs. */
void kn_accum_load(kn_accum *a, kn_model *m, const int32_t *y, int64_t i);
void kn_accum_free(kn_accum *a);

/* Seconds per stage (data: waiting for the loader's batch; checkpoint: added by the
 * checkpointer). On a health step forward holds the health checks' forward and backward. */
typedef struct {
    double data, forward, backward, optimizer, checkpoint;
} kn_step_times;

/* What the gate decides; kn_trainer_step returns it (KN_STEP_UPDATED: the update ran). */
typedef enum { KN_STEP_UPDATED = 0, KN_STEP_SKIPPED, KN_STEP_ROLLBACK, KN_STEP_STOP } kn_step_action;

typedef struct kn_trainer kn_trainer;
typedef int (*kn_step_gate)(void *arg, kn_trainer *t);
/* The all-reduce hook: grad holds this process's averaged gradient (n floats); the hook
 * replaces it by the average over all ranks, in a fixed order. */
typedef void (*kn_allreduce_fn)(void *arg, float *grad, int64_t n);

struct kn_health;
struct kn_trainer {
    kn_model *m;
    kn_optimizer *opt;
    kn_accum acc;
    int32_t *y;          /* labels of the batch */
    kn_rt rt;
    double clip_norm;    /* optimizer.clip_norm; 0: no clipping */
    kn_step_gate gate;   /* NULL: none */
    void *gate_arg;
    kn_allreduce_fn allreduce; /* NULL: one process */
    void *allreduce_arg;
    /* the last step */
    float loss;
    double gnorm;        /* global gradient norm (0 when nobody needed it), after the gate */
    int health_step;     /* the last step ran the health checks' forward and backward */
    kn_step_times last, total;
    int64_t steps;       /* updates done by this trainer */
};

int kn_trainer_init(kn_ctx *ctx, kn_trainer *t, kn_model *m, kn_optimizer *opt, int64_t batch, uint64_t seed, double clip_norm);
void kn_trainer_free(kn_trainer *t);
/* The next batch from the loader into the step's buffers (the loader's wait is the data
 * time of the coming step). Returns the samples read (0 at the end of the epoch). */
int kn_trainer_next_batch(kn_trainer *t, kn_loader *L);
/* One step at update number `step` with learning rate lr; health: the health checks
 * to measure this step with (NULL: a plain step). */
int kn_trainer_step(kn_trainer *t, int64_t step, double lr, struct kn_health *health);
/* The loss of the batch that just ran forward (the one place the loss is read). */
float kn_trainer_loss(const kn_model *m);

#endif
