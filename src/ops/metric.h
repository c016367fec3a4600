/* Aggregating the metric ops' per-batch statistics over an evaluation set (header-only:
* the op files of src/ops are compiled once per instruction set, so a helper lives here).
 *
 * Each metric op (ops/accuracy.c, ops/reg_metric.c) outputs a small float32 vector of
 * sufficient statistics for its batch, computed in double:
 *     accuracy, topk_accuracy: (correct, count)
 *     mae:  (sum |pred - target|, count)
 *     rmse: (sum (pred - target)^2, count)
 *     r2:   (SSE, count, mean(target), M2 = sum (target - mean)^2)
 * An evaluation loop keeps one double acc[KN_METRIC_NACC] per metric, zeroed by
 * kn_metric_reset, calls kn_metric_add after every batch with the op's output, and
 * kn_metric_finish at the end:
 *     accuracy = correct / count,  MAE = sum / count,  RMSE = sqrt(sum / count),
 *     R^2 = 1 - SSE / SST,
 * SST being the target's sum of squared deviations about the mean of the whole set
 * (sum y^2 - (sum y)^2 / n): kn_metric_add merges the batches' (count, mean, M2) with
 * Chan et al.'s exact pairwise update instead of summing raw y^2, which would cancel.
 * The result is the metric of the whole set, the same as one batch holding all of it
 * up to the float32 rounding of each batch's statistics. Finishing after one batch gives
 * that batch's value. With no element counted the value is NaN; R^2 of a constant target
 * divides by SST = 0 (-inf, or NaN when SSE = 0 too). */
#ifndef KN_OPS_METRIC_H
#define KN_OPS_METRIC_H

#include <math.h>
#include <string.h>

#include "graph/graph.h"

typedef enum {
    KN_METRIC_NONE = -1,
    KN_METRIC_ACCURACY = 0, /* accuracy and topk_accuracy */
    KN_METRIC_MAE,
    KN_METRIC_RMSE,
    KN_METRIC_R2
} kn_metric_kind;

#define KN_METRIC_NACC 4 /* doubles of accumulated state per metric */

/* The kind of a metric op, KN_METRIC_NONE for any other op. */
static inline kn_metric_kind kn_metric_kind_of(const kn_op *op) {
    if (!op) return KN_METRIC_NONE;
    if (op->id == KN_OP_ACCURACY || op->id == KN_OP_TOPK_ACCURACY) return KN_METRIC_ACCURACY;
    if (op->id == KN_OP_MAE) return KN_METRIC_MAE;
    if (op->id == KN_OP_RMSE) return KN_METRIC_RMSE;
    if (op->id == KN_OP_R2) return KN_METRIC_R2;
    return KN_METRIC_NONE;
}

/* The number of float32 statistics the op outputs (its output's numel): 2, or 4 for r2. */
static inline int kn_metric_nstats(kn_metric_kind kind) { return kind == KN_METRIC_R2 ? 4 : 2; }

static inline void kn_metric_reset(double acc[KN_METRIC_NACC]) { memset(acc, 0, KN_METRIC_NACC * sizeof *acc); }

/* Fold one batch's statistics (the metric op's output) into acc. */
static inline void kn_metric_add(kn_metric_kind kind, double acc[KN_METRIC_NACC], const float *stats) {
    if (kind != KN_METRIC_R2) {
        acc[0] += (double)stats[0];
        acc[1] += (double)stats[1];
        return;
    }
    const double nb = (double)stats[1], na = acc[1], n = na + nb;
    if (nb <= 0) return;
    const double mb = (double)stats[2], delta = mb - acc[2];
    acc[0] += (double)stats[0];
    acc[3] += (double)stats[3] + (na > 0 ? delta * delta * (na * nb / n) : 0.0);
    acc[2] = na > 0 ? acc[2] + delta * (nb / n) : mb;
    acc[1] = n;
}

/* The metric over everything added since the reset. */
static inline double kn_metric_finish(kn_metric_kind kind, const double acc[KN_METRIC_NACC]) {
    if (!(acc[1] > 0)) return NAN;
    switch (kind) {
    case KN_METRIC_ACCURACY:
    case KN_METRIC_MAE: return acc[0] / acc[1];
    case KN_METRIC_RMSE: return sqrt(acc[0] / acc[1]);
    case KN_METRIC_R2: return 1.0 - acc[0] / acc[3];
    default: return NAN;
    }
}

#endif
