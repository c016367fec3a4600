/* kiln — a [data] section that names a typed source (`source = csv | npy | idx`), read
 * into a kn_source_spec with every key checked, and the loading of what it describes
 * into tables (docs/DATA.md). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "data/source.h"

void kn_source_spec_default(kn_source_spec *s, kn_source_kind kind) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->csv.delimiter = ',';
    s->csv.header = 1;
    s->target_kind = KN_TARGET_CLASS;
    s->test_split = 0.0;
    s->validation_split = 0.1;
    s->split_seed = 1;
    s->normalize = kind == KN_SRC_IDX ? KN_NORM_GLOBAL : KN_NORM_PER_FEATURE;
    kn_strlcpy(s->input_name, kind == KN_SRC_IDX ? "image" : "features", sizeof s->input_name);
    kn_strlcpy(s->target_name, "label", sizeof s->target_name);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int get_path(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key, const char *base,
                    char *out, size_t n) {
    const char *v = NULL;
    int rc = kn_cfg_str(ctx, cfg, sec, key, NULL, &v);
    if (rc || !v) return rc;
    char where[256];
    if (!*v)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s = '': expected a file path", kn_cfg_where(cfg, sec, key, where, sizeof where),
                      sec->name, key);
    int k = (base && *base && v[0] != '/') ? snprintf(out, n, "%s/%s", base, v) : snprintf(out, n, "%s", v);
    if (k < 0 || (size_t)k >= n)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s: the path is longer than %zu characters",
                      kn_cfg_where(cfg, sec, key, where, sizeof where), sec->name, key, n - 1);
    return KN_OK;
}

static int get_text(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key, char *out, size_t n) {
    const char *v = NULL;
    int rc = kn_cfg_str(ctx, cfg, sec, key, NULL, &v);
    if (rc || !v) return rc;
    char where[256];
    if (strlen(v) >= n)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s: the value is longer than %zu characters",
                      kn_cfg_where(cfg, sec, key, where, sizeof where), sec->name, key, n - 1);
    kn_strlcpy(out, v, n);
    return KN_OK;
}

static int get_name(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key, char *out, size_t n) {
    char tmp[KN_FIELD_NAME * 2] = "";
    int rc = get_text(ctx, cfg, sec, key, tmp, sizeof tmp);
    if (rc || !tmp[0]) return rc;
    int ok = strlen(tmp) < n;
    for (const char *p = tmp; *p && ok; p++) ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_';
    char where[256];
    if (!ok)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s = '%s': expected a name of letters, digits and '_' (at most %zu characters)",
                      kn_cfg_where(cfg, sec, key, where, sizeof where), sec->name, key, tmp, n - 1);
    kn_strlcpy(out, tmp, n);
    return KN_OK;
}

int kn_source_spec_read(kn_ctx *ctx, const kn_config *cfg, const char *section, const char *base_dir,
                        kn_source_spec *out) {
    static const char *const sources[] = {"idx", "csv", "npy", NULL};
    kn_cfg_section *sec = kn_cfg_find(cfg, section);
    if (!sec) return kn_err(ctx, KN_ERR_CONFIG, "%s: no [%s] section", cfg->path, section);
    int kind = 0;
    int rc = kn_cfg_enum(ctx, cfg, sec, "source", sources, -1, &kind);
    if (rc) return rc;
    kn_source_spec_default(out, (kn_source_kind)kind);
    static const char *const common[] = {"source", "path", "targets_path", "test_path", "test_targets_path", "target_type",
                                         "test_split", "validation_split", "split_seed", "normalize", "input_name",
                                         "target_name",
                                         /* the loader's keys (read by the trainer) */
                                         "batch_size", "eval_batch_size", "shuffle", "prefetch", "limit_train", "limit_test",
                                         NULL};
    static const char *const csv_only[] = {"delimiter", "header", "skip_lines", "features", "target", NULL};
    const char *allowed[64];
    int na = 0;
    for (int i = 0; common[i]; i++) allowed[na++] = common[i];
    if (kind == KN_SRC_CSV)
        for (int i = 0; csv_only[i]; i++) allowed[na++] = csv_only[i];
    allowed[na] = NULL;
    char where[256];
    if (kind != KN_SRC_CSV)
        for (int i = 0; csv_only[i]; i++)
            if (kn_cfg_get(sec, csv_only[i]))
                return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s applies to source = csv only (this section has source = %s); remove it",
                              kn_cfg_where(cfg, sec, csv_only[i], where, sizeof where), section, csv_only[i], sources[kind]);
    rc = kn_cfg_check_keys(ctx, cfg, sec, allowed, kind == KN_SRC_CSV ? "a [data] section with source = csv" : "a [data] section with a typed source");
    if (rc) return rc;

    if ((rc = get_path(ctx, cfg, sec, "path", base_dir, out->path, sizeof out->path))) return rc;
    if (!out->path[0])
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] needs path = FILE (the %s file to read)", kn_cfg_where(cfg, sec, NULL, where, sizeof where),
                      section, sources[kind]);
    if ((rc = get_path(ctx, cfg, sec, "targets_path", base_dir, out->targets_path, sizeof out->targets_path))) return rc;
    if ((rc = get_path(ctx, cfg, sec, "test_path", base_dir, out->test_path, sizeof out->test_path))) return rc;
    if ((rc = get_path(ctx, cfg, sec, "test_targets_path", base_dir, out->test_targets_path, sizeof out->test_targets_path)))
        return rc;
    if (kind != KN_SRC_CSV && !out->targets_path[0])
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] source = %s needs targets_path = FILE (the labels or targets, paired with path row by row)",
                      kn_cfg_where(cfg, sec, "path", where, sizeof where), section, sources[kind]);
    if (out->test_targets_path[0] && !out->test_path[0])
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] test_targets_path needs test_path", kn_cfg_where(cfg, sec, "test_targets_path", where, sizeof where), section);
    if (out->test_path[0] && (out->targets_path[0] != 0) != (out->test_targets_path[0] != 0))
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] the test set must come like the training set: %s",
                      kn_cfg_where(cfg, sec, "test_path", where, sizeof where), section,
                      out->targets_path[0] ? "targets_path is given, so give test_targets_path too" : "remove test_targets_path (the targets are in the same file)");

    static const char *const ttypes[] = {"class", "real", NULL};
    int tt = 0;
    if ((rc = kn_cfg_enum(ctx, cfg, sec, "target_type", ttypes, 0, &tt))) return rc;
    out->target_kind = (kn_target_kind)tt;
    kn_strlcpy(out->target_name, tt == KN_TARGET_CLASS ? "label" : "target", sizeof out->target_name);

    double ts = 0;
    if (out->test_path[0] && kn_cfg_get(sec, "test_split"))
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] test_split with test_path: the test set is either a file or split off, not both",
                      kn_cfg_where(cfg, sec, "test_split", where, sizeof where), section);
    if ((rc = kn_cfg_float(ctx, cfg, sec, "test_split", 0.0, 0.0, 0.9, &ts))) return rc;
    out->test_split = ts;
    if ((rc = kn_cfg_float(ctx, cfg, sec, "validation_split", 0.1, 0.0, 0.9, &out->validation_split))) return rc;
    int64_t seed = 1;
    if ((rc = kn_cfg_int(ctx, cfg, sec, "split_seed", 1, 0, INT64_MAX, &seed))) return rc;
    out->split_seed = (uint64_t)seed;
    static const char *const norms[] = {"none", "per_feature", "per_channel", "global", NULL};
    int nz = (int)out->normalize;
    if ((rc = kn_cfg_enum(ctx, cfg, sec, "normalize", norms, nz, &nz))) return rc;
    out->normalize = (kn_norm_kind)nz;
    if ((rc = get_name(ctx, cfg, sec, "input_name", out->input_name, sizeof out->input_name))) return rc;
    if ((rc = get_name(ctx, cfg, sec, "target_name", out->target_name, sizeof out->target_name))) return rc;
    if (!strcmp(out->input_name, out->target_name))
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] input_name and target_name are both '%s'; they must differ",
                      kn_cfg_where(cfg, sec, "input_name", where, sizeof where), section, out->input_name);

    if (kind == KN_SRC_CSV) {
        const kn_cfg_kv *d = kn_cfg_get(sec, "delimiter");
        if (!d && (ends_with(out->path, ".tsv") || ends_with(out->path, ".tsv.gz"))) out->csv.delimiter = '\t';
        if (d) {
            static const struct { const char *name; char c; } delims[] = {
                {"comma", ','}, {"tab", '\t'}, {"semicolon", ';'}, {"whitespace", 0}, {"space", ' '}, {"pipe", '|'}};
            int found = 0;
            for (size_t i = 0; i < sizeof delims / sizeof delims[0]; i++)
                if (!strcmp(d->value, delims[i].name)) { out->csv.delimiter = delims[i].c; found = 1; }
            if (!found && strlen(d->value) == 1 && d->value[0] != '"' && d->value[0] > ' ' && d->value[0] < 127) {
                out->csv.delimiter = d->value[0];
                found = 1;
            }
            if (!found)
                return kn_err(ctx, KN_ERR_CONFIG,
                              "%s: [%s] delimiter = '%s': expected comma, tab, semicolon, pipe, space, whitespace (runs of "
                              "blanks and tabs) or a single printable character",
                              kn_cfg_where(cfg, sec, "delimiter", where, sizeof where), section, d->value);
        }
        if ((rc = kn_cfg_bool(ctx, cfg, sec, "header", 1, &out->csv.header))) return rc;
        if ((rc = kn_cfg_int(ctx, cfg, sec, "skip_lines", 0, 0, 1000000, &out->csv.skip_lines))) return rc;
        if ((rc = get_text(ctx, cfg, sec, "features", out->features, sizeof out->features))) return rc;
        if ((rc = get_text(ctx, cfg, sec, "target", out->target, sizeof out->target))) return rc;
    }
    return KN_OK;
}

/* ---------------- loading ---------------- */
static int load_csv_pair(kn_ctx *ctx, const kn_source_spec *s, const char *path, const char *tpath, kn_table *out) {
    memset(out, 0, sizeof *out);
    kn_csv a, b;
    int rc = kn_csv_read(ctx, path, &s->csv, &a);
    if (rc) return rc;
    const kn_csv *tc = &a;
    if (tpath) {
        if ((rc = kn_csv_read(ctx, tpath, &s->csv, &b))) {
            kn_csv_free(&a);
            return rc;
        }
        tc = &b;
        if (b.nrows != a.nrows) {
            rc = kn_err(ctx, KN_ERR_FORMAT,
                        "%s has %lld rows but %s has %lld; features and targets are paired row by row, so the two files must "
                        "have the same number of rows",
                        path, (long long)a.nrows, tpath, (long long)b.nrows);
            kn_csv_free(&a);
            kn_csv_free(&b);
            return rc;
        }
    }
    int *tcols = NULL, *fcols = NULL, ntc = 0, nfc = 0;
    float *x = NULL, *yr = NULL;
    int32_t *yc = NULL;
    kn_classmap map = {0};
    rc = kn_csv_select(ctx, tc, s->target[0] ? s->target : "-1", NULL, 0, "target", &tcols, &ntc);
    if (rc) kn_err_prefix(ctx, "%s: ", tc->path);
    if (!rc && (rc = kn_csv_select(ctx, &a, s->features[0] ? s->features : "all", tpath ? NULL : tcols, tpath ? 0 : ntc, "features",
                                   &fcols, &nfc)))
        kn_err_prefix(ctx, "%s: ", path);
    if (!rc && s->target_kind == KN_TARGET_CLASS && ntc != 1)
        rc = kn_err(ctx, KN_ERR_CONFIG, "%s: target = '%s' selects %d columns; class labels come from one column (or use target_type = real)",
                    tc->path, s->target, ntc);
    if (!rc) rc = kn_csv_numbers(ctx, &a, fcols, nfc, &x);
    if (!rc) {
        kn_shape fs = kn_shape1(nfc);
        rc = kn_table_add(ctx, out, s->input_name, KN_FIELD_INPUT, KN_F32, &fs, a.nrows, x);
        x = NULL;
    }
    if (!rc && a.header) {
        kn_field *f = &out->fields[0];
        f->column_names = calloc((size_t)nfc, sizeof *f->column_names);
        for (int j = 0; f->column_names && j < nfc; j++) f->column_names[j] = strdup(a.header[fcols[j]]);
    }
    if (!rc && s->target_kind == KN_TARGET_CLASS) {
        rc = kn_csv_labels(ctx, tc, tcols[0], &yc, &map);
        if (!rc) {
            kn_shape sc = {0, {0}};
            rc = kn_table_add(ctx, out, s->target_name, KN_FIELD_CLASS, KN_I32, &sc, tc->nrows, yc);
            yc = NULL;
        }
        if (!rc) {
            kn_field *f = kn_table_field(out, s->target_name);
            f->classes = map;
            f->nclasses = map.n;
            memset(&map, 0, sizeof map);
        }
    } else if (!rc) {
        rc = kn_csv_numbers(ctx, tc, tcols, ntc, &yr);
        if (!rc) {
            kn_shape ts = kn_shape1(ntc);
            rc = kn_table_add(ctx, out, s->target_name, KN_FIELD_REAL, KN_F32, &ts, tc->nrows, yr);
            yr = NULL;
        }
    }
    kn_classmap_free(&map);
    free(tcols);
    free(fcols);
    free(x);
    free(yr);
    free(yc);
    kn_csv_free(&a);
    if (tpath) kn_csv_free(&b);
    if (rc) kn_table_free(out);
    return rc;
}

static int load_array_pair(kn_ctx *ctx, const kn_source_spec *s, const char *path, const char *tpath, kn_table *out) {
    memset(out, 0, sizeof *out);
    kn_array xa, ya;
    kn_table tt = {0};
    int (*rd)(kn_ctx *, const char *, kn_array *) = s->kind == KN_SRC_NPY ? kn_npy_read : kn_idx_read;
    int rc = rd(ctx, path, &xa);
    if (rc) return rc;
    if (s->kind == KN_SRC_IDX && xa.nd == 3) { /* (N, rows, cols) images: one channel, as kn_dataset_load */
        xa.dims[3] = xa.dims[2];
        xa.dims[2] = xa.dims[1];
        xa.dims[1] = 1;
        xa.nd = 4;
    }
    rc = kn_table_add_array(ctx, out, path, s->input_name, KN_FIELD_INPUT, KN_F32, &xa);
    if (!rc) rc = rd(ctx, tpath, &ya);
    if (!rc) {
        if (s->target_kind == KN_TARGET_CLASS)
            rc = kn_table_add_array(ctx, &tt, tpath, s->target_name, KN_FIELD_CLASS, KN_I32, &ya);
        else
            rc = kn_table_add_array(ctx, &tt, tpath, s->target_name, KN_FIELD_REAL, KN_F32, &ya);
        if (!rc) return kn_table_pair(ctx, out, path, &tt, tpath);
    }
    kn_table_free(out);
    kn_table_free(&tt);
    return rc;
}

static int load_one(kn_ctx *ctx, const kn_source_spec *s, const char *path, const char *tpath, kn_table *out) {
    return s->kind == KN_SRC_CSV ? load_csv_pair(ctx, s, path, tpath && *tpath ? tpath : NULL, out)
                                 : load_array_pair(ctx, s, path, tpath, out);
}

/* test labels in the training set's class order */
static int remap_classes(kn_ctx *ctx, const kn_field *tr, kn_field *te, int64_t n, const char *test_path) {
    if (!tr->classes.n || !te->classes.n) return KN_OK;
    int32_t *m = malloc((size_t)te->classes.n * sizeof *m);
    if (!m) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < te->classes.n; k++) {
        m[k] = kn_classmap_find(&tr->classes, te->classes.names[k]);
        if (m[k] < 0) {
            int rc = kn_err(ctx, KN_ERR_FORMAT, "%s: class label '%.60s' does not occur in the training data (%d classes there); the model cannot predict it",
                            test_path, te->classes.names[k], tr->classes.n);
            free(m);
            return rc;
        }
    }
    kn_classmap copy;
    char *txt = kn_classmap_to_string(&tr->classes);
    int rc = txt ? kn_classmap_from_string(ctx, txt, &copy) : kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    free(txt);
    if (rc) {
        free(m);
        return rc;
    }
    int32_t *y = te->data; /* n x sample_numel labels, each 0..te->classes.n-1 */
    for (int64_t i = 0; i < n * te->sample_numel; i++) y[i] = m[y[i]];
    free(m);
    kn_classmap_free(&te->classes);
    te->classes = copy;
    te->nclasses = tr->nclasses;
    return KN_OK;
}

int kn_source_load(kn_ctx *ctx, const kn_source_spec *s, kn_table *train, kn_table *test) {
    memset(train, 0, sizeof *train);
    if (test) memset(test, 0, sizeof *test);
    kn_table all;
    int rc = load_one(ctx, s, s->path, s->targets_path, &all);
    if (rc) return rc;
    if (!test) {
        *train = all;
        return KN_OK;
    }
    if (s->test_path[0]) {
        rc = load_one(ctx, s, s->test_path, s->test_targets_path, test);
        if (rc) {
            kn_table_free(&all);
            return rc;
        }
        kn_field *a = kn_table_field(&all, s->input_name), *b = kn_table_field(test, s->input_name);
        if (!kn_shape_eq(&a->sample_shape, &b->sample_shape)) {
            char sa[96], sb[96];
            rc = kn_err(ctx, KN_ERR_SHAPE, "%s: samples of shape %s, but the training data (%s) has %s", s->test_path,
                        kn_shape_str(&b->sample_shape, sb, sizeof sb), s->path, kn_shape_str(&a->sample_shape, sa, sizeof sa));
        }
        if (!rc) rc = remap_classes(ctx, kn_table_field(&all, s->target_name), kn_table_field(test, s->target_name), test->n, s->test_path);
        if (rc) {
            kn_table_free(&all);
            kn_table_free(test);
            return rc;
        }
        *train = all;
        return KN_OK;
    }
    if (s->test_split > 0) {
        rc = kn_table_split(ctx, &all, s->test_split, s->split_seed, train, test);
        kn_table_free(&all);
        return rc;
    }
    *train = all;
    return KN_OK;
}
