/* kiln — the non-finite guard: cheap per-step checks (loss and global gradient norm),
 * an explanation of a failure by replaying the step op by op (diagnose mode), and a
 * gradient-norm spike detector against the running median. Recovery policies (skip,
 * rollback with a smaller learning rate, stop) live in guard_policy.c, the step's gate. */
#ifndef KN_GUARD_H
#define KN_GUARD_H

#include "graph/graph.h"
#include "train/health.h"

typedef struct {
    char name[96];
    int64_t count, nonfinite;
    double min, max, mean;
} kn_tensor_stats;

typedef struct {
    int found;           /* 1 if a non-finite value was located */
    int backward;        /* 0: in the forward, 1: in the backward */
    char op[32], layer[64], tensor[96];
    int64_t step;
    int64_t bad, total;  /* non-finite values in that tensor */
    kn_tensor_stats in[KN_MAX_IN + KN_MAX_OUT];
    int nin;
} kn_diag_report;

/* Statistics of a float tensor. */
void kn_tensor_stats_of(const float *x, int64_t n, const char *name, kn_tensor_stats *s);

/* Replay forward and backward of a training graph one op at a time (inputs must
 * already hold the failing batch, the store the state before the step) and report the
 * first op whose output (forward) or input gradient (backward) holds a non-finite
 * value. Running statistics of BatchNorm are modified: the caller restores them. */
void kn_diagnose(kn_graph *g, kn_rt *rt, kn_diag_report *r);
/* One plain-language paragraph. */
void kn_diag_format(const kn_diag_report *r, char *buf, size_t n);

/* Running median of recent gradient norms. */
#define KN_SPIKE_WINDOW 64
typedef struct {
    double v[KN_SPIKE_WINDOW];
    int n, pos;
} kn_spike;
void kn_spike_add(kn_spike *s, double x);
double kn_spike_median(const kn_spike *s); /* NAN when empty */

/* ---- collapse: a run that stopped learning for good ----
 * Judged on each health check (the per-layer statistics of kn_health; no health checks,
 * no collapse detection). A check is COLLAPSED when both hold:
 *   - the loss is at chance level: the mean training loss over the steps since the
 *     previous check (and this one) is at least KN_COLLAPSE_CHANCE (98%) of the loss of
 *     the best constant prediction, the entropy of the training labels (ln 10 for ten
 *     balanced classes); cross-entropy only (chance NAN: never collapsed);
 *   - the gradient no longer flows, judged over the layers with parameters that a
 *     gradient reaches by design (a layer with no path to the loss is left out):
 *       a) a ReLU layer is entirely dead (every unit 0 for every sample of the batch)
 *          and every such layer before it has a vanished gradient, or
 *       b) every such layer except the last one (the head, whose bias always learns)
 *          has a vanished gradient, or
 *       c) the loss has been at chance level for KN_COLLAPSE_STUCK (5) checks in a row
 *          and a ReLU layer has at least 90% of its units dead (on the batch, or
 *          sustained over the last checks): a network nearly dead and stuck;
 *     vanished: gradient norm <= KN_COLLAPSE_VANISH (1e-7) x the layer's weight norm.
 * A branch that a learned gate switched off (its gradient ~0 while the rest learns) and
 * a layer without gradient by design never make a check collapsed: the loss is not at
 * chance, or the gradient still reaches the other layers. The run has collapsed after
 * `need` consecutive collapsed checks (guard.collapse_checks). A check is healthy unless
 * its loss is at chance and a), b) or a layer >= 90% dead holds; the rollback target
 * must be no later than the last healthy check. */
#define KN_COLLAPSE_STUCK 5
#define KN_COLLAPSE_DEAD 0.9
#define KN_COLLAPSE_CHANCE 0.98
#define KN_COLLAPSE_VANISH 1e-7
typedef struct {
    double chance;        /* loss of the best constant prediction; NAN: not judged */
    int64_t need;         /* consecutive collapsed checks that make a collapse (>= 1) */
    int64_t streak;       /* consecutive collapsed checks so far */
    int64_t first_step;   /* step of the first check of the streak */
    int64_t last_healthy; /* step of the latest check that was not collapsed; -1: none */
    double loss_sum;      /* losses of the steps since the last check */
    int64_t loss_n;
    int64_t chance_streak; /* consecutive checks with the loss at chance */
} kn_collapse;
void kn_collapse_init(kn_collapse *c, double chance, int64_t need);
/* Every step that updated the model (not the health steps: kn_collapse_check takes theirs). */
void kn_collapse_add_loss(kn_collapse *c, double loss);
/* On a health step, after kn_health_forward_backward (before the update): judge it.
 * Returns 1 when the run has collapsed, with the explanation in msg. */
int kn_collapse_check(kn_collapse *c, const kn_health *h, int64_t step, double loss, char *msg, size_t n);
/* After a rollback to a state of step `step` that was healthy. */
void kn_collapse_reset(kn_collapse *c, int64_t step);
/* Entropy (natural log) of labels[idx[i]] (idx NULL: the first n), classes 0..nclasses-1:
 * the cross-entropy of the best constant prediction. */
double kn_label_entropy(const uint8_t *labels, const int64_t *idx, int64_t n, int nclasses);
/* The same for int32 labels 0..nclasses-1 (a typed source's class field). */
double kn_label_entropy_i32(const int32_t *labels, const int64_t *idx, int64_t n, int nclasses);

/* Is every value finite? */
int kn_all_finite(const float *x, int64_t n);

#endif
