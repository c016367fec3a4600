/* kiln — normalisation statistics of a float32 field, fitted on the training split,
 * saved to and read from checkpoint metadata as text that round-trips exactly. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/source.h"

const char *kn_norm_kind_name(kn_norm_kind k) {
    switch (k) {
    case KN_NORM_NONE: return "none";
    case KN_NORM_PER_FEATURE: return "per_feature";
    case KN_NORM_PER_CHANNEL: return "per_channel";
    case KN_NORM_GLOBAL: return "global";
    }
    return "unknown";
}

void kn_norm_free(kn_norm *z) {
    if (!z) return;
    free(z->mean);
    free(z->std);
    memset(z, 0, sizeof *z);
}

/* count pairs of inner elements each, for a sample of `numel` elements */
static int norm_layout(kn_ctx *ctx, kn_norm_kind kind, const kn_shape *s, int64_t numel, int64_t *count, int64_t *inner) {
    switch (kind) {
    case KN_NORM_PER_FEATURE: *count = numel; *inner = 1; return KN_OK;
    case KN_NORM_GLOBAL: *count = 1; *inner = numel; return KN_OK;
    case KN_NORM_PER_CHANNEL:
        if (s->nd < 1)
            return kn_err(ctx, KN_ERR_SHAPE, "per-channel normalisation needs samples with a channel axis (shape (C, ...)); "
                                             "these are scalars: use per_feature");
        *count = s->d[0];
        *inner = numel / s->d[0];
        return KN_OK;
    default: return kn_err(ctx, KN_ERR_INVALID, "normalisation kind %d is not one kiln knows", (int)kind);
    }
}

int kn_norm_fit(kn_ctx *ctx, const kn_field *f, const int64_t *idx, int64_t n, kn_norm_kind kind, kn_norm *out,
                char *note, size_t note_size) {
    memset(out, 0, sizeof *out);
    if (note && note_size) note[0] = 0;
    if (f->dtype != KN_F32)
        return kn_err(ctx, KN_ERR_INVALID, "field '%s' holds integers (class labels); only float32 fields are normalised",
                      f->name);
    if (n < 1) return kn_err(ctx, KN_ERR_INVALID, "field '%s': no training samples to compute normalisation from", f->name);
    int64_t count = 0, inner = 1;
    int rc = norm_layout(ctx, kind, &f->sample_shape, f->sample_numel, &count, &inner);
    if (rc) return rc;
    out->mean = calloc((size_t)count, sizeof(double));
    out->std = calloc((size_t)count, sizeof(double));
    if (!out->mean || !out->std) {
        kn_norm_free(out);
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory for %lld normalisation statistics", (long long)count);
    }
    out->kind = kind;
    out->count = count;
    out->inner = inner;
    const float *x = f->data;
    const int64_t E = f->sample_numel;
    const double total = (double)n * (double)inner;
    /* two passes in double, fixed order: the mean, then the squared deviations */
    for (int64_t i = 0; i < n; i++) {
        const float *s = x + (idx ? idx[i] : i) * E; /* (E,) one sample */
        for (int64_t e = 0; e < E; e++) out->mean[e / inner] += s[e];
    }
    for (int64_t c = 0; c < count; c++) out->mean[c] /= total;
    for (int64_t i = 0; i < n; i++) {
        const float *s = x + (idx ? idx[i] : i) * E;
        for (int64_t e = 0; e < E; e++) {
            double d = s[e] - out->mean[e / inner];
            out->std[e / inner] += d * d;
        }
    }
    int64_t nconst = 0, first = -1;
    for (int64_t c = 0; c < count; c++) {
        out->std[c] = sqrt(out->std[c] / total);
        if (!(out->std[c] > 0.0) || !isfinite(out->std[c])) {
            if (first < 0) first = c;
            nconst++;
            out->std[c] = 1.0;
        }
    }
    if (nconst && note && note_size) {
        const char *unit = kind == KN_NORM_PER_CHANNEL ? "channel" : kind == KN_NORM_GLOBAL ? "value" : "feature";
        char nm[80] = "";
        if (kind == KN_NORM_PER_FEATURE && f->column_names && f->column_names[first])
            snprintf(nm, sizeof nm, " ('%.60s')", f->column_names[first]);
        snprintf(note, note_size,
                 "%s: %lld %s%s constant over the training split (the first: %s %lld%s): standard deviation 0, "
                 "taken as 1 (only the mean is subtracted)",
                 f->name, (long long)nconst, unit, nconst == 1 ? " is" : "s are", unit, (long long)first, nm);
    }
    return KN_OK;
}

int kn_norm_apply(kn_ctx *ctx, const kn_norm *z, float *x, int64_t n, int64_t sample_numel) {
    if (z->kind == KN_NORM_NONE) return KN_OK;
    int64_t need;
    if (kn_mul_ovf(z->count, z->inner, &need) || need != sample_numel)
        return kn_err(ctx, KN_ERR_SHAPE,
                      "normalisation statistics are for samples of %lld elements (%lld x %lld), these have %lld; the data "
                      "does not match the model it was saved with",
                      (long long)need, (long long)z->count, (long long)z->inner, (long long)sample_numel);
    for (int64_t i = 0; i < n; i++) {
        float *s = x + i * sample_numel;
        for (int64_t e = 0; e < sample_numel; e++) {
            const int64_t c = e / z->inner;
            s[e] = (float)((s[e] - z->mean[c]) / z->std[c]);
        }
    }
    return KN_OK;
}

char *kn_norm_to_string(const kn_norm *z) {
    size_t cap = 64 + (size_t)z->count * 2 * 26, k = 0;
    char *s = malloc(cap);
    if (!s) return NULL;
    k += (size_t)snprintf(s + k, cap - k, "%s;%lld;%lld;", kn_norm_kind_name(z->kind), (long long)z->count, (long long)z->inner);
    for (int pass = 0; pass < 2; pass++) {
        const double *v = pass ? z->std : z->mean;
        for (int64_t i = 0; i < z->count; i++) k += (size_t)snprintf(s + k, cap - k, i ? ",%.17g" : "%.17g", v[i]);
        if (!pass) k += (size_t)snprintf(s + k, cap - k, ";");
    }
    return s;
}

static int parse_list(kn_ctx *ctx, const char **p, int64_t count, double *v, const char *what, char end) {
    for (int64_t i = 0; i < count; i++) {
        char *e;
        errno = 0;
        v[i] = strtod(*p, &e);
        if (e == *p || errno == ERANGE || !isfinite(v[i]) || (*e != (i + 1 < count ? ',' : end)))
            return kn_err(ctx, KN_ERR_FORMAT,
                          "normalisation statistics: %s %lld of %lld is not a finite decimal number followed by '%c' (at "
                          "'%.20s'); the checkpoint metadata is damaged",
                          what, (long long)i, (long long)count, i + 1 < count ? ',' : (end ? end : ' '), *p);
        *p = e + 1;
    }
    return KN_OK;
}

int kn_norm_from_string(kn_ctx *ctx, const char *s, kn_norm *out) {
    memset(out, 0, sizeof *out);
    static const kn_norm_kind kinds[] = {KN_NORM_NONE, KN_NORM_PER_FEATURE, KN_NORM_PER_CHANNEL, KN_NORM_GLOBAL};
    const char *semi = s ? strchr(s, ';') : NULL;
    int kind = -1;
    for (int i = 0; semi && i < 4; i++)
        if ((size_t)(semi - s) == strlen(kn_norm_kind_name(kinds[i])) && !strncmp(s, kn_norm_kind_name(kinds[i]), (size_t)(semi - s)))
            kind = (int)kinds[i];
    if (kind < 0)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "normalisation statistics '%.40s': expected 'KIND;COUNT;INNER;MEANS;STDS' with KIND one of none, "
                      "per_feature, per_channel, global",
                      s ? s : "");
    const char *p = semi + 1;
    char *e;
    errno = 0;
    long long count = strtoll(p, &e, 10);
    long long inner = 0;
    if (e != p && *e == ';') {
        p = e + 1;
        inner = strtoll(p, &e, 10);
    }
    if (e == p || *e != ';' || errno || count < 0 || inner < 0 || count > (1LL << 32) || inner > KN_MAX_BYTES ||
        (kind != KN_NORM_NONE && (count < 1 || inner < 1)))
        return kn_err(ctx, KN_ERR_FORMAT, "normalisation statistics '%.40s': bad COUNT or INNER (expected positive integers)", s);
    p = e + 1;
    /* every one of the COUNT means takes at least one character: a COUNT the text cannot
     * hold is damage, found before allocating for it (at most 16 bytes per character) */
    if (count > 0 && (size_t)count > strlen(p) + 1)
        return kn_err(ctx, KN_ERR_FORMAT,
                      "normalisation statistics '%.40s': COUNT %lld is more than the %zu characters after it can hold; "
                      "the checkpoint metadata is damaged",
                      s, count, strlen(p));
    out->kind = (kn_norm_kind)kind;
    out->count = count;
    out->inner = inner;
    if (count == 0) return KN_OK;
    out->mean = malloc((size_t)count * sizeof(double));
    out->std = malloc((size_t)count * sizeof(double));
    if (!out->mean || !out->std) {
        kn_norm_free(out);
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory for %lld normalisation statistics", count);
    }
    int rc = parse_list(ctx, &p, count, out->mean, "mean", ';');
    if (!rc) rc = parse_list(ctx, &p, count, out->std, "std", 0);
    for (int64_t i = 0; !rc && i < count; i++)
        if (!(out->std[i] > 0))
            rc = kn_err(ctx, KN_ERR_FORMAT, "normalisation statistics: std %lld is %g; it must be positive", (long long)i,
                        out->std[i]);
    if (rc) kn_norm_free(out);
    return rc;
}
