/* kiln — predictions of a saved model for every sample of an input file (kiln predict).
 * The model is built from the checkpoint alone (its config, its normalisation, its
 * parameters' shapes): the training data is not needed. The input is read as the run's
 * training data was read (uint8 IDX images normalised with data_mean/data_std, or the
 * typed source's reader and its stored normalisation), run through the evaluation graph
 * in batches of eval_batch_size (the same batches `kiln eval` runs, so the outputs are
 * the same bits) and written as CSV. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "data/data.h"
#include "data/source.h"
#include "nn/model.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

/* Do the planned model's parameters and states have the checkpoint's shapes? If not,
 * `why` says which one differs. */
static int store_fits(const kn_ckpt *ck, const kn_store *s, char *why, size_t n) {
    kn_ctx *tmp = kn_ctx_new();
    if (!tmp) {
        snprintf(why, n, "out of memory");
        return 0;
    }
    int ok = 1;
    for (int i = 0; i < s->n && ok; i++) {
        const kn_store_entry *e = &s->e[i];
        const float *d;
        kn_shape sh;
        if (kn_ckpt_get(tmp, ck, e->name, &d, &sh) != KN_OK) {
            snprintf(why, n, "the checkpoint has no tensor '%s' (%s)", e->name, kn_ctx_message(tmp));
            ok = 0;
        } else if (!kn_shape_eq(&sh, &e->shape)) {
            char a[160], b[160];
            snprintf(why, n, "its tensor '%s' is %s, but these samples need %s", e->name, kn_shape_str(&sh, a, sizeof a),
                     kn_shape_str(&e->shape, b, sizeof b));
            ok = 0;
        }
    }
    kn_ctx_free(tmp);
    return ok;
}

/* Plan the evaluation graph for samples described by D; 1 and a planned model when it
 * fits the checkpoint, 0 (model freed, `why` filled) when it does not. */
static int plan_fit(kn_ctx *ctx, const kn_config *cfg, int64_t eval_batch, const kn_data_desc *D, const kn_ckpt *ck,
                    kn_model *m, char *why, size_t n) {
    if (kn_model_plan_desc(ctx, cfg, 0, eval_batch, D, m)) {
        snprintf(why, n, "%s", kn_ctx_message(ctx));
        kn_ctx_clear(ctx);
        kn_model_free(m);
        return 0;
    }
    if (!store_fits(ck, &m->store, why, n)) {
        kn_model_free(m);
        return 0;
    }
    return 1;
}

/* A CSV field: quoted when it holds a delimiter, a quote or a line break. */
static void put_field(FILE *f, const char *prefix, const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fprintf(f, "%s%s", prefix, s);
        return;
    }
    fputc('"', f);
    fputs(prefix, f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

typedef struct {
    float *x;           /* n * numel normalised samples (malloc'ed or owned by `table`) */
    int64_t n, numel;
    kn_shape shape;     /* per sample */
    kn_table table;
    kn_csv csv;
} pred_input;

static void input_free(pred_input *in) {
    if (!in->table.nfields) free(in->x);
    kn_table_free(&in->table);
    kn_csv_free(&in->csv);
    memset(in, 0, sizeof *in);
}

/* The image path: uint8 IDX images, (v / 255 - mean) / std in float32, as the loader. */
static int read_images(kn_ctx *ctx, const kn_settings *st, const kn_ckpt *ck, const char *ckpath, const char *input,
                       pred_input *in) {
    double mean = st->mean, sd = st->std;
    int rc;
    if (kn_ckpt_meta_get(ck, "data_mean") && kn_ckpt_meta_get(ck, "data_std") &&
        ((rc = kn_ckpt_meta_num(ctx, ck, "data_mean", &mean)) || (rc = kn_ckpt_meta_num(ctx, ck, "data_std", &sd))))
        return rc;
    if (isnan(mean) || isnan(sd))
        return kn_err(ctx, KN_ERR_FORMAT, "%s: the checkpoint holds no data_mean/data_std and its config sets no data.mean/data.std: "
                      "the normalisation of the training images is unknown", ckpath);
    kn_idx im;
    if ((rc = kn_idx_load(ctx, input, &im))) return rc;
    if (im.nd != 3 && im.nd != 4) {
        int nd = im.nd;
        kn_idx_free(&im);
        return kn_err(ctx, KN_ERR_FORMAT, "%s: images IDX file has %d dimensions; expected 3 (N,rows,cols) or 4 (N,C,H,W), "
                      "as the training images", input, nd);
    }
    int64_t c = im.nd == 3 ? 1 : im.dims[1], h = im.dims[im.nd - 2], w = im.dims[im.nd - 1];
    if ((st->dataset == 0 || st->dataset == 1) && (c != 1 || h != 28 || w != 28)) {
        kn_idx_free(&im);
        return kn_err(ctx, KN_ERR_SHAPE, "%s: images of %lldx%lldx%lld, but the model was trained on %s (28x28x1 images)", input,
                      (long long)c, (long long)h, (long long)w, st->dataset ? "MNIST" : "Fashion-MNIST");
    }
    in->n = im.dims[0];
    in->shape.nd = 3;
    in->shape.d[0] = c;
    in->shape.d[1] = h;
    in->shape.d[2] = w;
    in->numel = c * h * w;
    in->x = malloc((size_t)(in->n * in->numel) * sizeof(float));
    if (!in->x) {
        kn_idx_free(&im);
        return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld images", input, (long long)in->n);
    }
    const float fm = (float)mean, fs = (float)sd;
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = ((float)v / 255.0f - fm) / fs; /* the loader's expression */
    for (int64_t i = 0; i < in->n * in->numel; i++) in->x[i] = lut[im.data[i]];
    kn_idx_free(&im);
    return KN_OK;
}

/* A typed IDX or .npy source: the reader the run's data went through, as float32. */
static int read_array(kn_ctx *ctx, const kn_source_spec *sp, const char *input, pred_input *in) {
    kn_array a;
    int rc = sp->kind == KN_SRC_NPY ? kn_npy_read(ctx, input, &a) : kn_idx_read(ctx, input, &a);
    if (rc) return rc;
    if (sp->kind == KN_SRC_IDX && a.nd == 3) { /* (N, rows, cols) images: one channel, as in training */
        a.dims[3] = a.dims[2];
        a.dims[2] = a.dims[1];
        a.dims[1] = 1;
        a.nd = 4;
    }
    if ((rc = kn_table_add_array(ctx, &in->table, input, sp->input_name, KN_FIELD_INPUT, KN_F32, &a))) return rc;
    kn_field *f = &in->table.fields[0];
    in->x = f->data;
    in->n = in->table.n;
    in->numel = f->sample_numel;
    in->shape = f->sample_shape;
    return KN_OK;
}

static int pick_columns(kn_ctx *ctx, const kn_csv *c, const kn_source_spec *sp, int **cols, int *n) {
    int *tcols = NULL, ntc = 0, rc;
    *cols = NULL;
    *n = 0;
    if (!sp->targets_path[0] && (rc = kn_csv_select(ctx, c, sp->target[0] ? sp->target : "-1", NULL, 0, "target", &tcols, &ntc)))
        return rc;
    rc = kn_csv_select(ctx, c, sp->features[0] ? sp->features : "all", tcols, ntc, "features", cols, n);
    free(tcols);
    return rc;
}

int kn_predict(kn_ctx *ctx, const char *run_dir_or_ckpt, const char *input, const char *output, int logits, int threads) {
    char path[4096], why[700] = "", why2[700] = "";
    int rc = kn_model_file(ctx, run_dir_or_ckpt, "predict with", path, sizeof path);
    if (rc) return rc;
    struct stat sb;
    if (stat(input, &sb) != 0)
        return kn_err(ctx, KN_ERR_IO, "%s: %s (the file to predict on: IDX, CSV or .npy, as the training data)", input,
                      strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return kn_err(ctx, KN_ERR_IO, "%s is a directory; give the file to predict on (IDX, CSV or .npy, as the training data)",
                      input);
    kn_ckpt *ck = NULL;
    kn_config *cfg = NULL;
    kn_settings st;
    kn_norm norm;
    kn_classmap classes;
    kn_model m;
    pred_input in;
    memset(&norm, 0, sizeof norm);
    memset(&classes, 0, sizeof classes);
    memset(&m, 0, sizeof m);
    memset(&in, 0, sizeof in);
    int *cols = NULL, ncols = 0;
    FILE *f = NULL;
    char tmp[4200] = "";
    if ((rc = kn_ckpt_open(ctx, path, &ck))) return rc;
    const char *text = kn_ckpt_meta_get(ck, "config");
    if (!text) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: no kiln config in the checkpoint metadata", path);
        goto done;
    }
    char name[4200];
    snprintf(name, sizeof name, "%s[config]", path);
    if ((rc = kn_config_parse_string(ctx, name, text, &cfg))) goto done;
    if ((rc = kn_settings_read(ctx, cfg, &st))) goto done;
    if ((rc = kn_model_check_config(ctx, cfg))) goto done;
    kn_set_threads(threads > 0 ? threads : st.threads);
    const kn_source_spec *sp = &st.src;
    const char *ntext = kn_ckpt_meta_get(ck, "data_norm"), *ctext = kn_ckpt_meta_get(ck, "data_classes");
    char nm[4300];
    if (st.typed && ntext && (rc = kn_norm_from_string(ctx, ntext, &norm))) {
        snprintf(nm, sizeof nm, "%s: metadata data_norm: ", path);
        kn_err_prefix(ctx, "%s", nm);
        goto done;
    }
    if (st.typed && ctext && (rc = kn_classmap_from_string(ctx, ctext, &classes))) {
        snprintf(nm, sizeof nm, "%s: metadata data_classes: ", path);
        kn_err_prefix(ctx, "%s", nm);
        goto done;
    }

    /* what one sample is: from the input file, checked against the checkpoint */
    kn_data_desc D;
    memset(&D, 0, sizeof D);
    D.ninputs = 1;
    D.in[0].dtype = KN_F32;
    D.target_real = st.typed && sp->target_kind == KN_TARGET_REAL;
    D.target = kn_shape1(1);
    if (!D.target_real) {
        D.target.nd = 0;
        D.nclasses = kn_model_classes(cfg) > 0 ? kn_model_classes(cfg) : classes.n > 0 ? classes.n : 1;
    }
    kn_strlcpy(D.in[0].name, st.typed ? sp->input_name : "input", sizeof D.in[0].name);
    if (!st.typed) rc = read_images(ctx, &st, ck, path, input, &in);
    else if (sp->kind != KN_SRC_CSV) rc = read_array(ctx, sp, input, &in);
    else rc = kn_csv_read(ctx, input, &sp->csv, &in.csv);
    if (rc) goto done;

    int fits = 0;
    if (st.typed && sp->kind == KN_SRC_CSV) {
        /* the training file's columns (its features/target selection), else all columns
         * when there are as many as the model has features */
        const kn_csv *c = &in.csv;
        const int64_t want = norm.kind == KN_NORM_PER_FEATURE ? norm.count : -1;
        int picked = pick_columns(ctx, c, sp, &cols, &ncols) == KN_OK;
        if (!picked) {
            snprintf(why, sizeof why, "%s", kn_ctx_message(ctx));
            kn_ctx_clear(ctx);
        }
        if (picked && (want < 0 || ncols == want)) {
            D.in[0].shape = kn_shape1(ncols);
            fits = plan_fit(ctx, cfg, st.eval_batch, &D, ck, &m, why, sizeof why);
        } else if (picked) {
            snprintf(why, sizeof why, "%d feature column%s", ncols, ncols == 1 ? "" : "s");
        }
        if (!fits && (!picked || ncols != c->ncols) && (want < 0 || c->ncols == want)) {
            free(cols);
            cols = malloc((size_t)c->ncols * sizeof *cols);
            if (!cols) {
                rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory");
                goto done;
            }
            ncols = c->ncols;
            for (int j = 0; j < ncols; j++) cols[j] = j;
            D.in[0].shape = kn_shape1(ncols);
            fits = plan_fit(ctx, cfg, st.eval_batch, &D, ck, &m, why2, sizeof why2);
        }
        if (!fits) {
            char wants[96] = ", which do not fit the model in ", count[32] = "the model's";
            if (want >= 0) {
                snprintf(wants, sizeof wants, ", but the model in ");
                snprintf(count, sizeof count, "%lld", (long long)want);
            }
            char sel[KN_SPEC_SEL * 2 + 80];
            if (sp->targets_path[0]) snprintf(sel, sizeof sel, "features = '%s'", sp->features[0] ? sp->features : "all");
            else
                snprintf(sel, sizeof sel, "features = '%s', target = '%s'; the target column is ignored",
                         sp->features[0] ? sp->features : "all but the target", sp->target[0] ? sp->target : "-1");
            rc = kn_err(ctx, KN_ERR_SHAPE,
                        "%s has %lld column%s%s%s%s%s%s: give the training file's columns (%s) or exactly %s feature "
                        "columns%s%s%s%s",
                        input, (long long)c->ncols, c->ncols == 1 ? "" : "s", wants, path, want >= 0 ? " takes " : "",
                        want >= 0 ? count : "", want >= 0 ? " features" : "", sel, count,
                        why[0] ? "; with the training selection, " : "", why, why2[0] ? "; with all columns, " : "", why2);
            goto done;
        }
        float *x = NULL;
        if ((rc = kn_csv_numbers(ctx, c, cols, ncols, &x))) goto done;
        in.x = x;
        in.n = c->nrows;
        in.numel = ncols;
        in.shape = kn_shape1(ncols);
    } else {
        D.in[0].shape = in.shape;
        fits = plan_fit(ctx, cfg, st.eval_batch, &D, ck, &m, why, sizeof why);
        if (!fits) {
            char sh[160];
            rc = kn_err(ctx, KN_ERR_SHAPE, "%s: samples of shape %s do not fit the model in %s: %s; give samples shaped as the "
                        "training data", input, kn_shape_str(&in.shape, sh, sizeof sh), path, why);
            goto done;
        }
    }
    if (in.n < 1) {
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s holds no samples: nothing to predict", input);
        goto done;
    }
    if (norm.kind != KN_NORM_NONE && (rc = kn_norm_apply(ctx, &norm, in.x, in.n, in.numel))) {
        kn_err_prefix(ctx, "%s: ", input);
        goto done;
    }
    if ((rc = kn_model_alloc(ctx, &m)) || (rc = kn_ckpt_load_store(ctx, ck, &m.store))) goto done;

    const kn_shape *os = kn_shp(m.eval, m.out_eval);
    const int64_t B = m.eval_batch, KP = os->nd >= 1 && os->d[0] == B ? kn_shape_numel(os) / B : 0;
    /* a classifier with one label per position ([batch, positions, classes]) writes one
     * row per sample and position */
    const int64_t P = !D.target_real && os->nd == 3 ? os->d[1] : 1, K = P > 0 ? KP / P : 0;
    if (K < 1) {
        char sh[160];
        rc = kn_err(ctx, KN_ERR_SHAPE, "%s: the model's output is %s: expected (batch, outputs)", path, kn_shape_str(os, sh, sizeof sh));
        goto done;
    }

    if (output) {
        if (snprintf(tmp, sizeof tmp, "%s.tmp", output) >= (int)sizeof tmp) {
            rc = kn_err(ctx, KN_ERR_IO, "'%.200s...': output path too long", output);
            tmp[0] = 0;
            goto done;
        }
        if (!(f = fopen(tmp, "w"))) {
            rc = kn_err(ctx, KN_ERR_IO, "cannot create '%s': %s (is the directory there and writable?)", tmp, strerror(errno));
            tmp[0] = 0;
            goto done;
        }
    } else {
        f = stdout;
    }
    /* header */
    if (D.target_real) {
        if (K == 1) fputs("index,value\n", f);
        else {
            fputs("index", f);
            for (int64_t k = 0; k < K; k++) fprintf(f, ",value_%lld", (long long)k);
            fputc('\n', f);
        }
    } else {
        fputs(P > 1 || os->nd == 3 ? "index,position,class" : "index,class", f);
        for (int64_t k = 0; k < K; k++) {
            char num[32];
            snprintf(num, sizeof num, "%lld", (long long)k);
            fputc(',', f);
            put_field(f, logits ? "logit_" : "prob_", k < classes.n ? classes.names[k] : num);
        }
        fputc('\n', f);
    }
    kn_rt rt;
    memset(&rt, 0, sizeof rt);
    rt.seed = st.seed;
    const int64_t E = in.numel;
    for (int64_t i0 = 0; i0 < in.n; i0 += B) {
        const int64_t cnt = in.n - i0 < B ? in.n - i0 : B;
        float *xb = kn_ptr(m.eval, m.x_eval);
        memcpy(xb, in.x + i0 * E, (size_t)(cnt * E) * sizeof(float));
        if (cnt < B) memset(xb + cnt * E, 0, (size_t)((B - cnt) * E) * sizeof(float));
        kn_g_forward(m.eval, &rt);
        const float *out = kn_ptr(m.eval, m.out_eval);
        for (int64_t i = 0; i < cnt * P; i++) {
            const float *r = out + i * K;
            if (os->nd == 3 && !D.target_real) fprintf(f, "%lld,%lld", (long long)(i0 + i / P), (long long)(i % P));
            else fprintf(f, "%lld", (long long)(i0 + i));
            if (D.target_real) {
                for (int64_t k = 0; k < K; k++) fprintf(f, ",%.9g", (double)r[k]);
                fputc('\n', f);
                continue;
            }
            int arg = 0;
            float mx = r[0];
            for (int k = 1; k < K; k++) /* the first maximum, as evaluation counts it */
                if (r[k] > mx) { mx = r[k]; arg = k; }
            if (arg < classes.n) put_field(f, ",", classes.names[arg]);
            else fprintf(f, ",%d", arg);
            if (logits) {
                for (int64_t k = 0; k < K; k++) fprintf(f, ",%.9g", (double)r[k]);
            } else {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += exp((double)r[k] - mx);
                for (int64_t k = 0; k < K; k++) fprintf(f, ",%.9g", exp((double)r[k] - mx) / s);
            }
            fputc('\n', f);
        }
    }
    if (fflush(f) != 0 || ferror(f)) {
        rc = kn_err(ctx, KN_ERR_IO, "writing %s: %s", output ? tmp : "standard output", strerror(errno));
        goto done;
    }
    if (output) {
        if (fsync(fileno(f)) != 0) {
            rc = kn_err(ctx, KN_ERR_IO, "writing %s: %s", tmp, strerror(errno));
            goto done;
        }
        int crc = fclose(f);
        f = NULL;
        if (crc != 0) {
            rc = kn_err(ctx, KN_ERR_IO, "writing %s: %s", tmp, strerror(errno));
            goto done;
        }
        if (rename(tmp, output) != 0) {
            rc = kn_err(ctx, KN_ERR_IO, "cannot rename %s to %s: %s", tmp, output, strerror(errno));
            goto done;
        }
        tmp[0] = 0;
    }
done:
    if (f && f != stdout) fclose(f);
    if (tmp[0]) remove(tmp);
    free(cols);
    input_free(&in);
    kn_model_free(&m);
    kn_classmap_free(&classes);
    kn_norm_free(&norm);
    kn_config_free(cfg);
    kn_ckpt_close(ck);
    return rc;
}
