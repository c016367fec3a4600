/* kiln — image-classification datasets from IDX pairs; statistics; seeded splits. */
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int kn_dataset_load(kn_ctx *ctx, const char *images_path, const char *labels_path,
                    kn_dataset *out) {
    memset(out, 0, sizeof *out);
    kn_idx im, lb;
    int rc = kn_idx_load(ctx, images_path, &im);
    if (rc) return rc;
    if (im.nd != 3 && im.nd != 4) {
        kn_idx_free(&im);
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: images IDX file has %d dimensions; expected 3 (N,rows,cols) or 4 "
                      "(N,C,H,W)",
                      images_path, im.nd);
    }
    rc = kn_idx_load(ctx, labels_path, &lb);
    if (rc) {
        kn_idx_free(&im);
        return rc;
    }
    if (lb.nd != 1) {
        int nd = lb.nd;
        kn_idx_free(&im);
        kn_idx_free(&lb);
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: labels IDX file has %d dimensions; expected 1 (one label per sample)",
                      labels_path, nd);
    }
    if (im.dims[0] != lb.dims[0]) {
        long long ni = (long long)im.dims[0], nl = (long long)lb.dims[0];
        kn_idx_free(&im);
        kn_idx_free(&lb);
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s: images file has %lld samples but labels file has %lld (%s); the two "
                      "files do not belong together",
                      images_path, ni, nl, labels_path);
    }
    out->n = im.dims[0];
    if (im.nd == 3) {
        out->channels = 1;
        out->rows = (int)im.dims[1];
        out->cols = (int)im.dims[2];
    } else {
        out->channels = (int)im.dims[1];
        out->rows = (int)im.dims[2];
        out->cols = (int)im.dims[3];
    }
    int maxl = 0;
    for (int64_t i = 0; i < out->n; i++)
        if (lb.data[i] > maxl) maxl = lb.data[i];
    out->nclasses = maxl + 1;
    out->images = im.data;
    out->labels = lb.data;
    return KN_OK;
}

int kn_labels_check(kn_ctx *ctx, const char *path, const uint8_t *labels, int64_t n, int nclasses) {
    int64_t bad = 0, first = -1;
    int maxl = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] > maxl) maxl = labels[i];
        if (labels[i] >= nclasses) {
            if (first < 0) first = i;
            bad++;
        }
    }
    if (!bad) return KN_OK;
    return kn_err(ctx, KN_ERR_FORMAT,
                  "%s: sample %lld has label %d, but the model has %d classes (labels 0 to %d: its last layer has out = "
                  "%d); %lld of the %lld labels are %d or more. The labels file is damaged or belongs to other data; if "
                  "the data really has %d classes, set out = %d on the last layer",
                  path, (long long)first, labels[first], nclasses, nclasses - 1, nclasses, (long long)bad, (long long)n,
                  nclasses, maxl + 1, maxl + 1);
}

int kn_dataset_check_labels(kn_ctx *ctx, kn_dataset *d, const char *labels_path, int nclasses) {
    int rc = kn_labels_check(ctx, labels_path, d->labels, d->n, nclasses);
    if (rc == KN_OK) d->nclasses = nclasses;
    return rc;
}

void kn_dataset_free(kn_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void kn_dataset_stats(const kn_dataset *d, double *mean, double *std) {
    kn_dataset_stats_subset(d, NULL, d ? d->n : 0, mean, std);
}

void kn_dataset_stats_subset(const kn_dataset *d, const int64_t *idx, int64_t n, double *mean, double *std) {
    /* A histogram of byte values gives exact sums whatever the size. */
    uint64_t hist[256] = {0};
    const int64_t E = d ? (int64_t)d->channels * d->rows * d->cols : 0;
    if (!d || !d->images || E <= 0 || n <= 0) {
        if (mean) *mean = 0.0;
        if (std) *std = 0.0;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *img = d->images + (idx ? idx[i] : i) * E; /* (E,) one sample */
        for (int64_t k = 0; k < E; k++) hist[img[k]]++;
    }
    const double total = (double)n * (double)E;
    double s = 0.0;
    for (int v = 0; v < 256; v++) s += (double)hist[v] * (v / 255.0);
    double m = s / total, ss = 0.0;
    for (int v = 0; v < 256; v++) {
        double dv = v / 255.0 - m;
        ss += (double)hist[v] * dv * dv;
    }
    if (mean) *mean = m;
    if (std) *std = sqrt(ss / total);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int kn_dataset_split(kn_ctx *ctx, int64_t n, int64_t nval, uint64_t seed, int64_t **train_idx,
                     int64_t *ntrain, int64_t **val_idx, int64_t *nval_out) {
    *train_idx = NULL;
    *val_idx = NULL;
    *ntrain = 0;
    *nval_out = 0;
    if (n < 0 || nval < 0 || nval > n)
        return kn_err(ctx, KN_ERR_INVALID,
                      "cannot split %lld samples with %lld for validation (need 0 <= validation "
                      "<= samples)",
                      (long long)n, (long long)nval);
    int64_t nt = n - nval;
    int64_t *perm = malloc((size_t)(n > 0 ? n : 1) * sizeof *perm);
    int64_t *tr = malloc((size_t)(nt > 0 ? nt : 1) * sizeof *tr);
    int64_t *va = malloc((size_t)(nval > 0 ? nval : 1) * sizeof *va);
    if (!perm || !tr || !va) {
        free(perm);
        free(tr);
        free(va);
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory splitting %lld samples", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    kn_rng r;
    kn_rng_seed(&r, seed);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(&r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    if (nt) memcpy(tr, perm, (size_t)nt * sizeof *tr);
    if (nval) memcpy(va, perm + nt, (size_t)nval * sizeof *va);
    free(perm);
    qsort(tr, (size_t)nt, sizeof *tr, cmp_i64);
    qsort(va, (size_t)nval, sizeof *va, cmp_i64);
    *train_idx = tr;
    *val_idx = va;
    *ntrain = nt;
    *nval_out = nval;
    return KN_OK;
}
