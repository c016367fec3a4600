/* kiln — the non-finite guard: cheap per-step checks (loss and global gradient norm),
 * an explanation of a failure by replaying the step op by op (diagnose mode), and a
 * gradient-norm spike detector against the running median. Recovery policies (skip,
 * rollback with a smaller learning rate, stop) live in the training loop (run.c). */
#ifndef KN_GUARD_H
#define KN_GUARD_H

#include "graph/graph.h"

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

/* Is every value finite? */
int kn_all_finite(const float *x, int64_t n);

#endif
