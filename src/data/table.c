/* kiln — tables of named per-sample tensors, arrays, class mappings, seeded splits. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "data/data.h"
#include "data/source.h"

const char *kn_eltype_name(kn_eltype t) {
    switch (t) {
    case KN_EL_U8: return "uint8";
    case KN_EL_I8: return "int8";
    case KN_EL_I16: return "int16";
    case KN_EL_I32: return "int32";
    case KN_EL_I64: return "int64";
    case KN_EL_F32: return "float32";
    case KN_EL_F64: return "float64";
    }
    return "unknown";
}

size_t kn_eltype_size(kn_eltype t) {
    switch (t) {
    case KN_EL_U8: case KN_EL_I8: return 1;
    case KN_EL_I16: return 2;
    case KN_EL_I32: case KN_EL_F32: return 4;
    case KN_EL_I64: case KN_EL_F64: return 8;
    }
    return 0;
}

void kn_array_free(kn_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* ---------------- class mapping ---------------- */
void kn_classmap_free(kn_classmap *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->names[i]);
    free(m->names);
    memset(m, 0, sizeof *m);
}

int kn_classmap_find(const kn_classmap *m, const char *label) {
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->names[i], label)) return i;
    return -1;
}

char *kn_classmap_to_string(const kn_classmap *m) {
    cJSON *a = cJSON_CreateArray();
    if (!a) return NULL;
    for (int i = 0; i < m->n; i++) {
        cJSON *s = cJSON_CreateString(m->names[i]);
        if (!s) { cJSON_Delete(a); return NULL; }
        cJSON_AddItemToArray(a, s);
    }
    char *txt = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return txt;
}

int kn_classmap_from_string(kn_ctx *ctx, const char *s, kn_classmap *out) {
    memset(out, 0, sizeof *out);
    cJSON *a = cJSON_Parse(s ? s : "");
    if (!a || !cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return kn_err(ctx, KN_ERR_FORMAT, "class mapping '%.80s' is not a JSON array of class names", s ? s : "");
    }
    int n = cJSON_GetArraySize(a);
    if (n < 1) {
        cJSON_Delete(a);
        return kn_err(ctx, KN_ERR_FORMAT, "class mapping is empty (expected at least one class name)");
    }
    out->names = calloc((size_t)n, sizeof *out->names);
    if (!out->names) { cJSON_Delete(a); return kn_err(ctx, KN_ERR_NOMEM, "out of memory reading a class mapping"); }
    int i = 0;
    for (cJSON *e = a->child; e; e = e->next, i++) {
        if (!cJSON_IsString(e)) {
            out->n = i;
            kn_classmap_free(out);
            cJSON_Delete(a);
            return kn_err(ctx, KN_ERR_FORMAT, "class mapping: entry %d is not a string", i);
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(out->names[j], e->valuestring)) {
                kn_err(ctx, KN_ERR_FORMAT, "class mapping: class name '%.80s' appears twice (entries %d and %d)",
                       e->valuestring, j, i);
                out->n = i;
                kn_classmap_free(out);
                cJSON_Delete(a);
                return KN_ERR_FORMAT;
            }
        out->names[i] = strdup(e->valuestring);
        if (!out->names[i]) {
            out->n = i;
            kn_classmap_free(out);
            cJSON_Delete(a);
            return kn_err(ctx, KN_ERR_NOMEM, "out of memory reading a class mapping");
        }
    }
    out->n = n;
    cJSON_Delete(a);
    return KN_OK;
}

static int classmap_copy(const kn_classmap *a, kn_classmap *b) {
    memset(b, 0, sizeof *b);
    if (!a->n) return KN_OK;
    b->names = calloc((size_t)a->n, sizeof *b->names);
    if (!b->names) return KN_ERR_NOMEM;
    for (int i = 0; i < a->n; i++) {
        b->names[i] = strdup(a->names[i]);
        b->n = i + 1;
        if (!b->names[i]) { b->n = i; kn_classmap_free(b); return KN_ERR_NOMEM; }
    }
    return KN_OK;
}

/* ---------------- tables ---------------- */
static void field_free(kn_field *f) {
    free(f->data);
    kn_classmap_free(&f->classes);
    if (f->column_names) {
        for (int64_t i = 0; i < f->sample_numel; i++) free(f->column_names[i]);
        free(f->column_names);
    }
    memset(f, 0, sizeof *f);
}

void kn_table_free(kn_table *t) {
    if (!t) return;
    for (int i = 0; i < t->nfields; i++) field_free(&t->fields[i]);
    memset(t, 0, sizeof *t);
}

kn_field *kn_table_field(kn_table *t, const char *name) {
    for (int i = 0; i < t->nfields; i++)
        if (!strcmp(t->fields[i].name, name)) return &t->fields[i];
    return NULL;
}

int kn_table_add(kn_ctx *ctx, kn_table *t, const char *name, kn_field_kind kind, kn_dtype dtype,
                 const kn_shape *sample_shape, int64_t n, void *data) {
    int64_t numel = 0, total = 0;
    char what[96];
    snprintf(what, sizeof what, "field '%.40s' (per sample)", name);
    if (dtype != KN_F32 && dtype != KN_I32) {
        free(data);
        return kn_err(ctx, KN_ERR_INVALID, "field '%s': dtype must be float32 or int32", name);
    }
    if (strlen(name) == 0 || strlen(name) >= KN_FIELD_NAME) {
        free(data);
        return kn_err(ctx, KN_ERR_INVALID, "field name '%.40s': 1 to %d characters", name, KN_FIELD_NAME - 1);
    }
    if (kn_table_field(t, name)) {
        free(data);
        return kn_err(ctx, KN_ERR_INVALID, "field '%s' is given twice", name);
    }
    if (t->nfields >= KN_MAX_FIELDS) {
        free(data);
        return kn_err(ctx, KN_ERR_INVALID, "field '%s': a table holds at most %d fields", name, KN_MAX_FIELDS);
    }
    int rc = kn_shape_check(ctx, sample_shape, 1, kn_dtype_size(dtype), what, &numel);
    if (!rc && (n < 0 || kn_mul_ovf(n, numel, &total) || total > KN_MAX_BYTES / 4))
        rc = kn_err(ctx, KN_ERR_SHAPE, "field '%s': %lld samples of %lld elements is more than kiln holds", name,
                    (long long)n, (long long)numel);
    if (!rc && t->nfields > 0 && n != t->n)
        rc = kn_err(ctx, KN_ERR_SHAPE, "field '%s' has %lld samples but field '%s' has %lld; they do not belong together",
                    name, (long long)n, t->fields[0].name, (long long)t->n);
    if (rc) {
        free(data);
        return rc;
    }
    kn_field *f = &t->fields[t->nfields++];
    memset(f, 0, sizeof *f);
    kn_strlcpy(f->name, name, sizeof f->name);
    f->kind = kind;
    f->dtype = dtype;
    f->sample_shape = *sample_shape;
    f->sample_numel = numel;
    f->data = data;
    t->n = n;
    if (kind == KN_FIELD_CLASS && dtype == KN_I32) {
        int32_t mx = -1;
        const int32_t *y = data;
        for (int64_t i = 0; i < total; i++) {
            if (y[i] < 0) {
                kn_err(ctx, KN_ERR_FORMAT, "field '%s': sample %lld has class label %d; labels must be 0 or more", name,
                       (long long)(i / numel), (int)y[i]);
                t->nfields--;
                field_free(f);
                return KN_ERR_FORMAT;
            }
            if (y[i] >= KN_MAX_CLASSES) {
                kn_err(ctx, KN_ERR_FORMAT, "field '%s': sample %lld has class label %d; kiln handles at most %d classes (labels "
                       "0 to %d): are these class labels?", name, (long long)(i / numel), (int)y[i], KN_MAX_CLASSES, KN_MAX_CLASSES - 1);
                t->nfields--;
                field_free(f);
                return KN_ERR_FORMAT;
            }
            if (y[i] > mx) mx = y[i];
        }
        f->nclasses = mx + 1;
    }
    return KN_OK;
}

int kn_table_add_array(kn_ctx *ctx, kn_table *t, const char *path, const char *name, kn_field_kind kind,
                       kn_dtype dtype, kn_array *a) {
    const int64_t n = a->nd > 0 ? a->dims[0] : 0, m = a->numel;
    kn_shape s = {a->nd - 1, {0}};
    for (int i = 1; i < a->nd; i++) s.d[i - 1] = a->dims[i];
    const int isint = a->type != KN_EL_F32 && a->type != KN_EL_F64;
    if (dtype == KN_I32 && !isint) {
        kn_err(ctx, KN_ERR_FORMAT, "%s: %s holds %s values, but %s needs integers (class labels)", path, name,
               kn_eltype_name(a->type), name);
        kn_array_free(a);
        return KN_ERR_FORMAT;
    }
    void *dst = malloc((size_t)(m > 0 ? m : 1) * 4);
    if (!dst) {
        kn_array_free(a);
        return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld elements", path, (long long)m);
    }
    int32_t *di = dst;
    float *df = dst;
    for (int64_t i = 0; i < m; i++) {
        int64_t iv = 0;
        double dv = 0;
        switch (a->type) {
        case KN_EL_U8: iv = ((const uint8_t *)a->data)[i]; break;
        case KN_EL_I8: iv = ((const int8_t *)a->data)[i]; break;
        case KN_EL_I16: iv = ((const int16_t *)a->data)[i]; break;
        case KN_EL_I32: iv = ((const int32_t *)a->data)[i]; break;
        case KN_EL_I64: iv = ((const int64_t *)a->data)[i]; break;
        case KN_EL_F32: dv = ((const float *)a->data)[i]; break;
        case KN_EL_F64: dv = ((const double *)a->data)[i]; break;
        }
        if (dtype == KN_I32) {
            if (iv < INT32_MIN || iv > INT32_MAX) {
                free(dst);
                int rc = kn_err(ctx, KN_ERR_FORMAT, "%s: element %lld (sample %lld) is %lld, outside the int32 range kiln uses for %s",
                                path, (long long)i, (long long)(m && n ? i / (m / n) : 0), (long long)iv, name);
                kn_array_free(a);
                return rc;
            }
            di[i] = (int32_t)iv;
        } else {
            if (isint) dv = (double)iv;
            if (!isfinite(dv) || fabs(dv) > 3.4028234663852886e38) {
                free(dst);
                int rc = kn_err(ctx, KN_ERR_FORMAT, "%s: element %lld (sample %lld) is %g, which is %s; kiln needs finite float32 values in %s",
                                path, (long long)i, (long long)(m && n ? i / (m / n) : 0), dv,
                                isfinite(dv) ? "too large for float32" : "not finite", name);
                kn_array_free(a);
                return rc;
            }
            df[i] = (float)dv;
        }
    }
    kn_array_free(a);
    int rc = kn_table_add(ctx, t, name, kind, dtype, &s, n, dst);
    if (rc) kn_err_prefix(ctx, "%s: ", path);
    return rc;
}

int kn_table_pair(kn_ctx *ctx, kn_table *a, const char *a_path, kn_table *b, const char *b_path) {
    if (a->n != b->n) {
        long long na = (long long)a->n, nb = (long long)b->n;
        kn_table_free(a);
        kn_table_free(b);
        return kn_err(ctx, KN_ERR_FORMAT,
                      "%s has %lld samples but %s has %lld; features and targets are paired row by row, so the two files "
                      "must have the same number of rows",
                      a_path, na, b_path, nb);
    }
    for (int i = 0; i < b->nfields; i++) {
        if (a->nfields >= KN_MAX_FIELDS || kn_table_field(a, b->fields[i].name)) {
            char nm[KN_FIELD_NAME];
            kn_strlcpy(nm, b->fields[i].name, sizeof nm);
            kn_table_free(a);
            kn_table_free(b);
            return kn_err(ctx, KN_ERR_INVALID, "%s and %s: field '%s' is in both (or too many fields)", a_path, b_path, nm);
        }
    }
    for (int i = 0; i < b->nfields; i++) a->fields[a->nfields++] = b->fields[i];
    memset(b, 0, sizeof *b);
    return KN_OK;
}

int kn_table_subset(kn_ctx *ctx, const kn_table *t, const int64_t *idx, int64_t n, kn_table *out) {
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= t->n)
            return kn_err(ctx, KN_ERR_INVALID, "subset: index %lld is outside 0..%lld", (long long)idx[i], (long long)t->n - 1);
    for (int k = 0; k < t->nfields; k++) {
        const kn_field *f = &t->fields[k];
        const size_t row = (size_t)f->sample_numel * 4;
        uint8_t *d = malloc(row * (size_t)(n > 0 ? n : 1));
        if (!d) {
            kn_table_free(out);
            return kn_err(ctx, KN_ERR_NOMEM, "out of memory for a subset of %lld samples", (long long)n);
        }
        for (int64_t i = 0; i < n; i++) memcpy(d + (size_t)i * row, (const uint8_t *)f->data + (size_t)idx[i] * row, row);
        kn_field *g = &out->fields[out->nfields++];
        *g = *f;
        g->data = d;
        g->column_names = NULL;
        memset(&g->classes, 0, sizeof g->classes);
        int bad = classmap_copy(&f->classes, &g->classes);
        if (!bad && f->column_names) {
            g->column_names = calloc((size_t)f->sample_numel, sizeof *g->column_names);
            bad = !g->column_names;
            for (int64_t c = 0; !bad && c < f->sample_numel; c++)
                bad = f->column_names[c] && !(g->column_names[c] = strdup(f->column_names[c]));
        }
        if (bad) {
            kn_table_free(out);
            return kn_err(ctx, KN_ERR_NOMEM, "out of memory for a subset of %lld samples", (long long)n);
        }
    }
    out->n = n;
    return KN_OK;
}

int kn_split_indices(kn_ctx *ctx, int64_t n, double fraction, uint64_t seed, int64_t **first, int64_t *nfirst,
                     int64_t **second, int64_t *nsecond) {
    *first = *second = NULL;
    *nfirst = *nsecond = 0;
    if (!(fraction >= 0.0 && fraction < 1.0))
        return kn_err(ctx, KN_ERR_INVALID, "split fraction %g: expected a number from 0 to less than 1 (e.g. 0.2)", fraction);
    const int64_t k = (int64_t)floor(fraction * (double)n);
    return kn_dataset_split(ctx, n, k, seed, first, nfirst, second, nsecond);
}

int kn_table_split(kn_ctx *ctx, const kn_table *t, double fraction, uint64_t seed, kn_table *first, kn_table *second) {
    memset(first, 0, sizeof *first);
    memset(second, 0, sizeof *second);
    int64_t *a, *b, na, nb;
    int rc = kn_split_indices(ctx, t->n, fraction, seed, &a, &na, &b, &nb);
    if (rc) return rc;
    rc = kn_table_subset(ctx, t, a, na, first);
    if (!rc) rc = kn_table_subset(ctx, t, b, nb, second);
    if (rc) {
        kn_table_free(first);
        kn_table_free(second);
    }
    free(a);
    free(b);
    return rc;
}
