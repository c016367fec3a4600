/* kiln — optimizers (SGD with momentum / Nesterov, Adam, AdamW), weight decay,
 * gradient clipping by global norm, learning-rate schedules.
 * They work on the parameter store's packed param/grad blocks in one pass. */
#ifndef KN_OPTIM_H
#define KN_OPTIM_H

#include "core/core.h"

typedef enum { KN_OPT_SGD = 0, KN_OPT_ADAM, KN_OPT_ADAMW } kn_opt_kind;
typedef enum { KN_SCHED_CONSTANT = 0, KN_SCHED_STEP, KN_SCHED_COSINE } kn_sched_kind;

typedef struct {
    kn_opt_kind kind;
    double lr;
    double momentum;     /* SGD */
    int nesterov;        /* SGD */
    double beta1, beta2, eps; /* Adam/AdamW */
    double weight_decay; /* SGD/Adam: L2 added to the gradient; AdamW: decoupled */
    double clip_norm;    /* > 0: clip gradients to this global L2 norm */
    /* schedule */
    kn_sched_kind schedule;
    int64_t warmup_steps;   /* linear warm-up: lr * (step + 1) / warmup_steps for step < warmup_steps */
    int64_t step_size;      /* STEP: multiply by gamma every step_size steps */
    double gamma;
    double min_lr;          /* COSINE: floor */
    int64_t total_steps;    /* COSINE: length of the decay (set by the trainer) */
} kn_opt_config;

typedef struct {
    kn_opt_config c;
    int64_t n;      /* number of floats */
    float *m, *v;   /* moments (SGD uses m as the momentum buffer) */
    int64_t t;      /* updates done */
} kn_optimizer;

void kn_opt_defaults(kn_opt_config *c);
int kn_opt_init(kn_ctx *ctx, kn_optimizer *o, const kn_opt_config *c, int64_t n);
void kn_opt_free(kn_optimizer *o);
/* Learning rate for update number `step` (0-based); the formulas are in optim.c and
 * docs/CONFIG.md (warm-up, step, cosine reaching min_lr at the last step). */
double kn_opt_lr(const kn_opt_config *c, int64_t step);
/* Global L2 norm of g (deterministic for a fixed thread count). */
double kn_global_norm(const float *g, int64_t n);
/* Gradient clipping by global norm, the one implementation (the trainer's
 * optimizer.clip_norm and the guard's auto-clip both call it). `norm` is the global
 * norm of g, already known (kn_global_norm). With coef = max_norm / (norm + 1e-6), as in
 * PyTorch's clip_grad_norm_: if coef < 1, every element is multiplied by (float)coef.
 * Returns the norm after clipping as the trainer counts it: max_norm when g was scaled,
 * else norm. */
double kn_clip_grad_norm(float *g, int64_t n, double norm, double max_norm);
/* The same with the norm computed first; returns the norm before clipping. */
double kn_clip_grad(float *g, int64_t n, double max_norm);
/* One update of all parameters with learning rate lr. */
void kn_opt_step(kn_optimizer *o, float *param, const float *grad, double lr);

#endif
