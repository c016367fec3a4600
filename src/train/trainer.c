/* kiln — the trainer: data → step → metrics → checkpoint. It sees a compiled model
 * (inputs, targets, loss, logits, parameter store), never a layer type. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "data/data.h"
#include "nn/model.h"
#include "ops/metric.h"
#include "optim/optim.h"
#include "train/checkpoint.h"
#include "train/plan.h"
#include "train/trainer.h"

#ifndef KN_DEFAULT_DATA_DIR
#define KN_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"
#endif


/* ---------------- settings ---------------- */
static const char *const k_data[] = {"dataset", "dir", "train_images", "train_labels", "test_images", "test_labels",
                                     "batch_size", "eval_batch_size", "validation_split", "mean", "std", "prefetch",
                                     "shuffle", "limit_train", "limit_test", NULL};
static const char *const k_train[] = {"epochs", "seed", "threads", "log_every", "loss", "label_smoothing", "class_weights",
                                      "huber_delta", "metrics", "max_steps", "run_dir", "init_from", "budget", "fit", "micro_batch",
                                      "early_stopping", "warn_worse_epochs", NULL};
static const char *const k_guard[] = {"enabled", "policy", "lr_factor", "max_retries", "snapshot_every", "trust_steps", "spike_factor", "explode_factor", "auto_clip", "collapse_checks", NULL};
static const char *const k_health[] = {"every", "leakage_check", NULL};
static const char *const k_ckpt[] = {"every_steps", "every_seconds", "keep_last", "keep_epochs", "on_error", NULL};
static const char *const k_opt[] = {"type", "lr", "momentum", "nesterov", "beta1", "beta2", "eps", "weight_decay",
                                    "clip_norm", "schedule", "warmup_steps", "step_size", "gamma", "min_lr", NULL};

static int path_join(char *out, size_t n, const char *dir, const char *file) {
    return snprintf(out, n, "%s/%s", dir, file) >= (int)n;
}

/* [data] of the image path: dataset, dir and the four IDX files */
static int read_image_files(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *d, kn_settings *st) {
    int rc;
    char w[4300];
    static const char *const datasets[] = {"fashion-mnist", "mnist", "idx", NULL};
    /* absent: IDX files of any shape, by default Debian's Fashion-MNIST; named: checked */
    st->dataset = -1;
    if (kn_cfg_get(d, "dataset") && (rc = kn_cfg_enum(ctx, cfg, d, "dataset", datasets, 0, &st->dataset))) return rc;
    const char *names[4] = {"train_images", "train_labels", "test_images", "test_labels"};
    const char *files[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                            "t10k-labels-idx1-ubyte.gz"};
    char *dst[4] = {st->train_images, st->train_labels, st->test_images, st->test_labels};
    int nexplicit = 0;
    for (int i = 0; i < 4; i++) nexplicit += kn_cfg_get(d, names[i]) != NULL;
    if (nexplicit == 4 && kn_cfg_get(d, "dir"))
        return kn_err(ctx, KN_ERR_CONFIG,
                      "%s: [data] dir has no effect: train_images, train_labels, test_images and test_labels are all "
                      "given; remove dir (or one of them)",
                      kn_cfg_where(cfg, d, "dir", w, sizeof w));
    if (st->dataset > 0 && nexplicit < 4 && !kn_cfg_get(d, "dir"))
        return kn_err(ctx, KN_ERR_CONFIG,
                      "%s: [data] dataset = %s needs dir = DIRECTORY (with %s, %s, %s and %s) or the four paths "
                      "train_images, train_labels, test_images, test_labels: the default directory, %s, holds "
                      "Fashion-MNIST",
                      kn_cfg_where(cfg, d, "dataset", w, sizeof w), datasets[st->dataset], files[0], files[1], files[2],
                      files[3], KN_DEFAULT_DATA_DIR);
    const char *dir;
    if ((rc = kn_cfg_str(ctx, cfg, d, "dir", KN_DEFAULT_DATA_DIR, &dir))) return rc;
    for (int i = 0; i < 4; i++) {
        const char *v;
        if ((rc = kn_cfg_str(ctx, cfg, d, names[i], NULL, &v))) return rc;
        int too_long = v ? strlen(v) >= sizeof st->train_images || strlen(v) > 4096
                         : path_join(dst[i], sizeof st->train_images, dir, files[i]) || strlen(dir) > 4096;
        if (too_long)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [data] %s is too long (%zu characters; paths have at most 4096)",
                          kn_cfg_where(cfg, d, v ? names[i] : "dir", w, sizeof w), v ? names[i] : "dir",
                          strlen(v ? v : dir));
        if (v) kn_strlcpy(dst[i], v, sizeof st->train_images);
    }
    return KN_OK;
}

int kn_settings_read(kn_ctx *ctx, const kn_config *cfg, kn_settings *st) {
    memset(st, 0, sizeof *st);
    int rc;
    const kn_cfg_section *d = kn_cfg_find(cfg, "data"), *t = kn_cfg_find(cfg, "train"), *o = kn_cfg_find(cfg, "optimizer");
    st->typed = d && kn_cfg_get(d, "source") != NULL;
    if (st->typed && (rc = kn_source_spec_read(ctx, cfg, "data", NULL, &st->src))) return rc; /* checks its keys */
    if (d && !st->typed && (rc = kn_cfg_check_keys(ctx, cfg, d, k_data, "the [data] section"))) return rc;
    if (t && (rc = kn_cfg_check_keys(ctx, cfg, t, k_train, "the [train] section"))) return rc;
    if (o && (rc = kn_cfg_check_keys(ctx, cfg, o, k_opt, "the [optimizer] section"))) return rc;
    const kn_cfg_section *gs = kn_cfg_find(cfg, "guard"), *hs = kn_cfg_find(cfg, "health");
    if (gs && (rc = kn_cfg_check_keys(ctx, cfg, gs, k_guard, "the [guard] section"))) return rc;
    if (hs && (rc = kn_cfg_check_keys(ctx, cfg, hs, k_health, "the [health] section"))) return rc;
    static const char *const policies[] = {"skip", "rollback", "stop", NULL};
    if ((rc = kn_cfg_bool(ctx, cfg, gs, "enabled", 1, &st->guard_enabled))) return rc;
    if ((rc = kn_cfg_enum(ctx, cfg, gs, "policy", policies, 1, &st->guard_policy))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, gs, "lr_factor", 0.5, 1e-6, 1.0, &st->guard_lr_factor))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, gs, "max_retries", 5, 0, 1000, &st->guard_max_retries))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, gs, "snapshot_every", 100, 1, INT64_MAX / 2, &st->guard_snapshot_every))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, gs, "trust_steps", 2000, 0, INT64_MAX / 2, &st->guard_trust_steps))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, gs, "spike_factor", 10.0, 1.0, 1e9, &st->guard_spike_factor))) return rc;
    if ((rc = kn_cfg_bool(ctx, cfg, gs, "auto_clip", 0, &st->guard_auto_clip))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, gs, "explode_factor", 0.0, 0.0, 1e30, &st->guard_explode_factor))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, gs, "collapse_checks", 2, 0, 1000000, &st->guard_collapse_checks))) return rc;
    for (int i = 0; !st->guard_enabled && gs && i < gs->nkv; i++)
        if (strcmp(gs->kv[i].key, "enabled") != 0) {
            char w[512];
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [guard] %s has no effect with enabled = false; remove it",
                          kn_cfg_where(cfg, gs, gs->kv[i].key, w, sizeof w), gs->kv[i].key);
        }
    if ((rc = kn_cfg_int(ctx, cfg, hs, "every", 100, 0, INT64_MAX / 2, &st->health_every))) return rc;
    if ((rc = kn_cfg_bool(ctx, cfg, hs, "leakage_check", 1, &st->leakage_check))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, t, "early_stopping", 0, 0, 1000000, &st->early_stopping))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, t, "warn_worse_epochs", 2, 0, 1000000, &st->warn_worse_epochs))) return rc;
    const kn_cfg_section *c = kn_cfg_find(cfg, "checkpoint");
    if (c && (rc = kn_cfg_check_keys(ctx, cfg, c, k_ckpt, "the [checkpoint] section"))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, c, "every_steps", 0, 0, INT64_MAX / 2, &st->ckpt_every_steps))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, c, "every_seconds", 300.0, 0.0, 1e9, &st->ckpt_every_seconds))) return rc;
    int64_t keep;
    if ((rc = kn_cfg_int(ctx, cfg, c, "keep_last", 3, 1, 1000000, &keep))) return rc;
    st->ckpt_keep_last = (int)keep;
    if ((rc = kn_cfg_bool(ctx, cfg, c, "keep_epochs", 0, &st->ckpt_keep_epochs))) return rc;
    static const char *const on_err[] = {"stop", "continue", NULL};
    if ((rc = kn_cfg_enum(ctx, cfg, c, "on_error", on_err, 0, &st->ckpt_on_error))) return rc;
    char w[4300];
    if (!st->typed && (rc = read_image_files(ctx, cfg, d, st))) return rc;
    int64_t iv;
    double fv;
    if ((rc = kn_cfg_int(ctx, cfg, d, "batch_size", 64, 1, 1 << 20, &st->batch))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, d, "eval_batch_size", 500, 1, 1 << 20, &st->eval_batch))) return rc;
    if (st->typed) {
        st->val_split = st->src.validation_split;
        st->mean = st->std = NAN;
    } else if ((rc = kn_cfg_float(ctx, cfg, d, "validation_split", 0.1, 0.0, 0.9, &st->val_split))) return rc;
    /* normalisation: any mean and any positive standard deviation that a float32 holds
     * (the loader normalises in float32); absent: from the training split */
    if (!st->typed && (rc = kn_cfg_float(ctx, cfg, d, "mean", NAN, -FLT_MAX, FLT_MAX, &st->mean))) return rc;
    if (!st->typed && (rc = kn_cfg_float(ctx, cfg, d, "std", NAN, -INFINITY, FLT_MAX, &st->std))) return rc;
    if (!st->typed && kn_cfg_get(d, "std") && !(st->std >= FLT_MIN))
        return kn_err(ctx, KN_ERR_CONFIG,
                      "%s: [data] std = '%s': expected a positive number of at least %g (pixels are normalised in float32 as "
                      "(pixel/255 - mean) / std; leave std out to take the training set's)",
                      kn_cfg_where(cfg, d, "std", w, sizeof w), kn_cfg_get(d, "std")->value, (double)FLT_MIN);
    if ((rc = kn_cfg_int(ctx, cfg, d, "prefetch", 2, 0, 64, &iv))) return rc;
    st->prefetch = (int)iv;
    if ((rc = kn_cfg_bool(ctx, cfg, d, "shuffle", 1, &st->shuffle))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, d, "limit_train", 0, 0, INT64_MAX / 2, &st->limit_train))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, d, "limit_test", 0, 0, INT64_MAX / 2, &st->limit_test))) return rc;

    if ((rc = kn_cfg_int(ctx, cfg, t, "epochs", 5, 1, 1000000, &st->epochs))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, t, "seed", 1, 0, INT64_MAX / 2, &iv))) return rc;
    st->seed = (uint64_t)iv;
    if ((rc = kn_cfg_int(ctx, cfg, t, "threads", 0, 0, 1024, &iv))) return rc;
    st->threads = (int)iv;
    if ((rc = kn_cfg_int(ctx, cfg, t, "log_every", 100, 1, INT64_MAX / 2, &st->log_every))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, t, "max_steps", 0, 0, INT64_MAX / 2, &st->max_steps))) return rc;
    const char *rd;
    if ((rc = kn_cfg_str(ctx, cfg, t, "run_dir", NULL, &rd))) return rc;
    if (rd && strlen(rd) >= sizeof st->run_dir)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] run_dir is too long (%zu characters, at most %zu)",
                      kn_cfg_where(cfg, t, "run_dir", w, sizeof w), strlen(rd), sizeof st->run_dir - 1);
    if (rd) kn_strlcpy(st->run_dir, rd, sizeof st->run_dir);
    const char *ifr;
    if ((rc = kn_cfg_str(ctx, cfg, t, "init_from", NULL, &ifr))) return rc;
    if (ifr && strlen(ifr) >= sizeof st->init_from)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] init_from is too long (%zu characters, at most %zu)",
                      kn_cfg_where(cfg, t, "init_from", w, sizeof w), strlen(ifr), sizeof st->init_from - 1);
    if (ifr) kn_strlcpy(st->init_from, ifr, sizeof st->init_from);

    kn_opt_config *oc = &st->opt;
    kn_opt_defaults(oc);
    static const char *const opt_names[] = {"sgd", "adam", "adamw", NULL};
    static const char *const sched_names[] = {"constant", "step", "cosine", NULL};
    int k;
    if ((rc = kn_cfg_enum(ctx, cfg, o, "type", opt_names, KN_OPT_ADAM, &k))) return rc;
    oc->kind = (kn_opt_kind)k;
    if ((rc = kn_cfg_float(ctx, cfg, o, "lr", oc->kind == KN_OPT_SGD ? 0.01 : 1e-3, 0.0, 1e6, &oc->lr))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "momentum", oc->kind == KN_OPT_SGD ? 0.9 : 0.0, 0.0, 1.0, &oc->momentum))) return rc;
    if ((rc = kn_cfg_bool(ctx, cfg, o, "nesterov", 0, &oc->nesterov))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "beta1", 0.9, 0.0, 0.999999, &oc->beta1))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "beta2", 0.999, 0.0, 0.99999999, &oc->beta2))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "eps", 1e-8, 0.0, 1.0, &oc->eps))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "weight_decay", oc->kind == KN_OPT_ADAMW ? 0.01 : 0.0, 0.0, 10.0, &oc->weight_decay))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "clip_norm", 0.0, 0.0, 1e9, &oc->clip_norm))) return rc;
    if ((rc = kn_cfg_enum(ctx, cfg, o, "schedule", sched_names, KN_SCHED_CONSTANT, &k))) return rc;
    oc->schedule = (kn_sched_kind)k;
    if ((rc = kn_cfg_int(ctx, cfg, o, "warmup_steps", 0, 0, INT64_MAX / 2, &oc->warmup_steps))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, o, "step_size", 1000, 1, INT64_MAX / 2, &oc->step_size))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "gamma", 0.1, 0.0, 1.0, &oc->gamma))) return rc;
    if ((rc = kn_cfg_float(ctx, cfg, o, "min_lr", 0.0, 0.0, 1e6, &fv))) return rc;
    oc->min_lr = fv;
    /* a key the chosen optimizer or schedule does not use is an error, not a silent no-op */
    static const char *const sgd_only[] = {"momentum", "nesterov", NULL}, *const adam_only[] = {"beta1", "beta2", "eps", NULL};
    const char *const *unused = oc->kind == KN_OPT_SGD ? adam_only : sgd_only;
    for (int i = 0; unused[i]; i++)
        if (kn_cfg_get(o, unused[i])) {
            char w2[300];
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [optimizer] %s has no effect with type = %s (%s): it applies to %s; remove it",
                          kn_cfg_where(cfg, o, unused[i], w, sizeof w), unused[i], opt_names[oc->kind],
                          kn_cfg_get(o, "type") ? kn_cfg_where(cfg, o, "type", w2, sizeof w2) : "the default",
                          oc->kind == KN_OPT_SGD ? "type = adam or adamw" : "type = sgd");
        }
    static const char *const sched_keys[] = {"step_size", "gamma", "min_lr", NULL};
    static const int sched_of[] = {KN_SCHED_STEP, KN_SCHED_STEP, KN_SCHED_COSINE};
    for (int i = 0; sched_keys[i]; i++)
        if (kn_cfg_get(o, sched_keys[i]) && (int)oc->schedule != sched_of[i])
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [optimizer] %s has no effect with schedule = %s: it applies to schedule = %s; remove it",
                          kn_cfg_where(cfg, o, sched_keys[i], w, sizeof w), sched_keys[i], sched_names[oc->schedule],
                          sched_names[sched_of[i]]);
    if (oc->kind == KN_OPT_SGD && oc->nesterov && oc->momentum <= 0) {
        return kn_err(ctx, KN_ERR_CONFIG, "%s: nesterov = true needs momentum > 0", kn_cfg_where(cfg, o, "nesterov", w, sizeof w));
    }
    if ((rc = kn_plan_read_settings(ctx, cfg, st))) return rc;
    /* layers are checked when the model is built; reject unknown top-level sections early? they are layers */
    return KN_OK;
}

/* ---------------- helpers ---------------- */


/* An evaluation pass runs the eval graph on each batch with its targets: the graph's loss
 * and metric outputs (found by name when the model was built) count the batch's valid
 * samples only (rt.rows), and are added up here over the set: the loss as the mean of the
 * batches' mean losses weighted by their sample counts, each metric by its statistics
 * (ops/metric.h). Nothing here computes a loss or an argmax. */
int kn_evaluate_metrics(kn_model *m, kn_loader *L, uint64_t seed, kn_eval_metrics *out) {
    out->loss = out->accuracy = out->mae = out->rmse = out->r2 = NAN;
    out->n = 0;
    out->nmetrics = 0;
    if (m->loss_eval < 0) return KN_ERR_SHAPE; /* the output does not fit the targets */
    kn_rt rt = {0};
    rt.seed = seed;
    rt.g = m->eval;
    kn_loader_start_epoch(L, 0, 0);
    double acc[KN_MAX_METRICS][KN_METRIC_NACC], loss_sum = 0;
    for (int i = 0; i < m->nmetrics; i++) kn_metric_reset(acc[i]);
    void *y = malloc((size_t)(m->eval_batch * (m->target_numel > 0 ? m->target_numel : 1)) * 4);
    if (!y) return KN_ERR_NOMEM;
    int cnt;
    while ((cnt = kn_loader_next(L, kn_ptr(m->eval, m->x_eval), y)) > 0) {
        kn_model_set_eval_targets(m, y);
        rt.rows = cnt;
        kn_g_forward(m->eval, &rt);
        loss_sum += (double)kn_ptr(m->eval, m->loss_eval)[0] * cnt;
        for (int i = 0; i < m->nmetrics; i++)
            kn_metric_add((kn_metric_kind)m->metric[i].kind, acc[i], kn_ptr(m->eval, m->metric[i].vid));
        out->n += cnt;
    }
    free(y);
    if (out->n) out->loss = loss_sum / (double)out->n;
    for (int i = 0; i < m->nmetrics; i++) {
        const double v = kn_metric_finish((kn_metric_kind)m->metric[i].kind, acc[i]);
        const char *nm = m->metric[i].name;
        kn_strlcpy(out->names[i], nm, sizeof out->names[i]);
        out->values[i] = v;
        out->nmetrics = i + 1;
        if (!strcmp(nm, "accuracy")) out->accuracy = v;
        else if (!strcmp(nm, "mae")) out->mae = v;
        else if (!strcmp(nm, "rmse")) out->rmse = v;
        else if (!strcmp(nm, "r2")) out->r2 = v;
    }
    return KN_OK;
}

int kn_evaluate(kn_model *m, kn_loader *L, uint64_t seed, double *loss, double *acc) {
    kn_eval_metrics r;
    int rc = kn_evaluate_metrics(m, L, seed, &r);
    *loss = rc ? NAN : r.loss;
    *acc = rc ? NAN : r.accuracy;
    return rc;
}


/* ---------------- data + model ---------------- */
static int field_index(const kn_table *t, const char *name) {
    for (int i = 0; i < t->nfields; i++)
        if (!strcmp(t->fields[i].name, name)) return i;
    return -1;
}

/* A typed source (data.source = csv | npy | idx): tables of named fields, the validation
 * split held out of the training rows (data.split_seed), the input normalised with
 * statistics of the training rows only (or, for a saved model, those in its checkpoint:
 * `given`), loaders over the tables. */
static int job_open_typed(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int want_train, const kn_norm *given,
                          kn_job *j) {
    const kn_source_spec *sp = &st->src;
    int rc;
    j->typed = 1;
    if ((rc = kn_source_load(ctx, sp, &j->train_t, &j->test_t))) return rc;
    j->test_name = sp->test_path[0] ? sp->test_path : sp->path;
    if (j->test_t.n == 0)
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [data] has no test set: give test_path = FILE (and test_targets_path) or "
                      "test_split = FRACTION (e.g. 0.2: that part of %s is held out for the final test)", cfg->path, sp->path);
    if (st->limit_train > 0 && st->limit_train < j->train_t.n) j->train_t.n = st->limit_train;
    if (st->limit_test > 0 && st->limit_test < j->test_t.n) j->test_t.n = st->limit_test;
    j->x_field = field_index(&j->train_t, sp->input_name);
    j->y_field = field_index(&j->train_t, sp->target_name);
    if (j->x_field < 0 || j->y_field < 0 || field_index(&j->test_t, sp->input_name) != j->x_field ||
        field_index(&j->test_t, sp->target_name) != j->y_field)
        return kn_err(ctx, KN_ERR_INTERNAL, "%s: the tables do not hold the fields '%s' and '%s'", sp->path, sp->input_name,
                      sp->target_name);
    kn_field *xf = &j->train_t.fields[j->x_field], *yf = &j->train_t.fields[j->y_field];
    kn_field *txf = &j->test_t.fields[j->x_field], *tyf = &j->test_t.fields[j->y_field];
    kn_data_desc *D = &j->desc;
    memset(D, 0, sizeof *D);
    D->ninputs = 1;
    kn_strlcpy(D->in[0].name, sp->input_name, sizeof D->in[0].name);
    D->in[0].dtype = KN_F32;
    D->in[0].shape = xf->sample_shape;
    D->target_real = yf->kind == KN_FIELD_REAL;
    D->target = yf->sample_shape;
    if (!D->target_real) {
        D->nclasses = yf->nclasses > tyf->nclasses ? yf->nclasses : tyf->nclasses;
        /* a label beyond the model's classes is the data's fault: named with its sample */
        int k = kn_model_classes(cfg);
        if (k > 0) {
            const kn_field *fs[2] = {yf, tyf};
            const int64_t ns[2] = {j->train_t.n, j->test_t.n};
            const char *names[2] = {sp->targets_path[0] ? sp->targets_path : sp->path, j->test_name};
            for (int t = 0; t < 2; t++) {
                const int32_t *lab = fs[t]->data;
                for (int64_t i = 0; i < ns[t] * fs[t]->sample_numel; i++)
                    if (lab[i] >= k)
                        return kn_err(ctx, KN_ERR_CONFIG, "%s: sample %lld has class %d (%s), but the model has %d classes "
                                      "(its last linear layer's out); the data has %d: set out = %d",
                                      names[t], (long long)(i / fs[t]->sample_numel), lab[i],
                                      fs[t]->classes.n > lab[i] ? fs[t]->classes.names[lab[i]] : "a label", k, D->nclasses, D->nclasses);
            }
            D->nclasses = k;
        }
    }
    /* validation rows are held out of the training rows before anything is fitted on them */
    if (want_train || !given) {
        if (st->val_split > 0) {
            if ((rc = kn_split_indices(ctx, j->train_t.n, st->val_split, sp->split_seed ^ 0x5EEDULL, &j->train_idx, &j->ntrain,
                                       &j->val_idx, &j->nval)))
                return rc;
            if (j->nval == 0) {
                free(j->train_idx);
                free(j->val_idx);
                j->train_idx = j->val_idx = NULL;
            }
        }
        if (!j->train_idx) j->ntrain = j->train_t.n;
    }
    if (given) {
        j->norm = *given;
        j->norm.mean = j->norm.std = NULL;
        if (given->count > 0) {
            j->norm.mean = malloc((size_t)given->count * sizeof(double));
            j->norm.std = malloc((size_t)given->count * sizeof(double));
            if (!j->norm.mean || !j->norm.std) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
            memcpy(j->norm.mean, given->mean, (size_t)given->count * sizeof(double));
            memcpy(j->norm.std, given->std, (size_t)given->count * sizeof(double));
        }
    } else if (sp->normalize != KN_NORM_NONE) {
        char note[512] = "";
        if ((rc = kn_norm_fit(ctx, xf, j->train_idx, j->ntrain, sp->normalize, &j->norm, note, sizeof note))) return rc;
        if (note[0] && want_train) fprintf(stderr, "kiln: note: %s\n", note);
    }
    if (j->norm.kind != KN_NORM_NONE &&
        ((rc = kn_norm_apply(ctx, &j->norm, xf->data, j->train_t.n, xf->sample_numel)) ||
         (rc = kn_norm_apply(ctx, &j->norm, txf->data, j->test_t.n, txf->sample_numel))))
        return rc;
    j->mean = 0.0f;
    j->std = 1.0f;
    j->ntest = j->test_t.n;
    j->norm_text = kn_norm_to_string(&j->norm);
    j->classes_text = yf->classes.n > 0 ? kn_classmap_to_string(&yf->classes) : NULL;
    if (!j->norm_text || (yf->classes.n > 0 && !j->classes_text)) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    if ((rc = kn_model_build_desc(ctx, cfg, want_train ? (st->micro_batch > 0 ? st->micro_batch : st->batch) : 0, st->eval_batch,
                                  D, &j->model)))
        return rc;
    kn_loader_config lc = {0};
    lc.batch = (int)st->eval_batch;
    lc.table = &j->test_t;
    lc.x_field = j->x_field;
    lc.y_field = j->y_field;
    if ((rc = kn_loader_create(ctx, &lc, &j->test_loader))) return rc;
    if (!want_train) return KN_OK;
    if (j->nval > 0) {
        lc.table = &j->train_t;
        lc.indices = j->val_idx;
        lc.n = j->nval;
        if ((rc = kn_loader_create(ctx, &lc, &j->val_loader))) return rc;
    }
    if (j->ntrain < st->batch)
        return kn_err(ctx, KN_ERR_CONFIG, "the training set has %lld samples, fewer than one batch (data.batch_size = %lld)",
                      (long long)j->ntrain, (long long)st->batch);
    kn_loader_config tc = lc;
    tc.table = &j->train_t;
    tc.indices = j->train_idx;
    tc.n = j->ntrain;
    tc.batch = (int)st->batch;
    tc.shuffle = st->shuffle;
    tc.drop_last = 1;
    tc.seed = st->seed;
    tc.prefetch = st->prefetch;
    return kn_loader_create(ctx, &tc, &j->train_loader);
}

int kn_job_open_norm(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int want_train, const kn_norm *given,
                     kn_job *j) {
    memset(j, 0, sizeof *j);
    int rc;
    if ((rc = kn_model_check_config(ctx, cfg))) return rc;
    return job_open_typed(ctx, cfg, st, want_train, given, j);
}

int kn_job_open(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int want_train, kn_job *j) {
    memset(j, 0, sizeof *j);
    int rc;
    if ((rc = kn_model_check_config(ctx, cfg))) return rc;
    if (st->typed) return job_open_typed(ctx, cfg, st, want_train, NULL, j);
    j->test_name = st->test_images;
    if (want_train) {
        if ((rc = kn_dataset_load(ctx, st->train_images, st->train_labels, &j->train_ds))) return rc;
        if (st->limit_train > 0 && st->limit_train < j->train_ds.n) j->train_ds.n = st->limit_train;
    }
    if ((rc = kn_dataset_load(ctx, st->test_images, st->test_labels, &j->test_ds))) return rc;
    if (st->limit_test > 0 && st->limit_test < j->test_ds.n) j->test_ds.n = st->limit_test;
    const kn_dataset *ref = want_train ? &j->train_ds : &j->test_ds;
    if (st->dataset == 0 || st->dataset == 1) { /* fashion-mnist, mnist: 28x28 grayscale, 10 classes */
        const kn_dataset *sets[2] = {ref, &j->test_ds};
        const char *paths[2] = {want_train ? st->train_images : st->test_images, st->test_images};
        for (int i = 0; i < 2; i++)
            if (sets[i]->rows != 28 || sets[i]->cols != 28 || sets[i]->channels != 1 || sets[i]->nclasses > 10)
                return kn_err(ctx, KN_ERR_CONFIG,
                              "data.dataset = %s, but %s holds %dx%dx%d images with %d classes (%s has 28x28x1 images "
                              "and 10 classes); set data.dataset = idx for other IDX data",
                              st->dataset ? "mnist" : "fashion-mnist", paths[i], sets[i]->channels, sets[i]->rows,
                              sets[i]->cols, sets[i]->nclasses, st->dataset ? "MNIST" : "Fashion-MNIST");
    }
    if (want_train && (j->test_ds.rows != ref->rows || j->test_ds.cols != ref->cols || j->test_ds.channels != ref->channels))
        return kn_err(ctx, KN_ERR_FORMAT, "%s: images are %dx%dx%d but the training images (%s) are %dx%dx%d",
                      st->test_images, j->test_ds.channels, j->test_ds.rows, j->test_ds.cols, st->train_images,
                      ref->channels, ref->rows, ref->cols);
    /* a label beyond the model's classes is the labels file's fault: named with its sample */
    int kcls = kn_model_classes(cfg);
    if (kcls > 0 && ((want_train && (rc = kn_dataset_check_labels(ctx, &j->train_ds, st->train_labels, kcls))) ||
                     (rc = kn_dataset_check_labels(ctx, &j->test_ds, st->test_labels, kcls))))
        return rc;

    int nclasses = ref->nclasses > j->test_ds.nclasses ? ref->nclasses : j->test_ds.nclasses;
    /* The validation split is held out of the training data first: normalisation
     * statistics come from the training split only (validation must not leak in). */
    if (want_train) {
        int64_t nval = (int64_t)floor(st->val_split * (double)j->train_ds.n);
        if (nval > 0) {
            if ((rc = kn_dataset_split(ctx, j->train_ds.n, nval, st->seed ^ 0x5EEDULL, &j->train_idx, &j->ntrain,
                                       &j->val_idx, &j->nval)))
                return rc;
        } else {
            j->ntrain = j->train_ds.n;
        }
    }
    double mean = st->mean, sd = st->std; /* NAN: not given, take the training split's */
    if (isnan(mean) || isnan(sd)) {
        double m0, s0;
        if (want_train) kn_dataset_stats_subset(&j->train_ds, j->train_idx, j->ntrain, &m0, &s0);
        else kn_dataset_stats(ref, &m0, &s0);
        if (isnan(mean)) mean = m0;
        if (isnan(sd)) sd = s0 > 0 ? s0 : 1.0;
    }
    j->mean = (float)mean;
    j->std = (float)sd;
    j->ntest = j->test_ds.n;
    if ((rc = kn_model_build(ctx, cfg, want_train ? (st->micro_batch > 0 ? st->micro_batch : st->batch) : 0, st->eval_batch, ref->channels, ref->rows, ref->cols,
                             nclasses, &j->model)))
        return rc;
    kn_loader_config lc = {0};
    lc.batch = (int)st->eval_batch;
    lc.mean = j->mean;
    lc.std = j->std;
    lc.ds = &j->test_ds;
    if ((rc = kn_loader_create(ctx, &lc, &j->test_loader))) return rc;
    if (want_train) {
        if (j->nval > 0) {
            lc.ds = &j->train_ds;
            lc.indices = j->val_idx;
            lc.n = j->nval;
            if ((rc = kn_loader_create(ctx, &lc, &j->val_loader))) return rc;
        }
        if (j->ntrain < st->batch)
            return kn_err(ctx, KN_ERR_CONFIG, "the training set has %lld samples, fewer than one batch (data.batch_size = %lld)",
                          (long long)j->ntrain, (long long)st->batch);
        kn_loader_config tc = {0};
        tc.ds = &j->train_ds;
        tc.indices = j->train_idx;
        tc.n = j->ntrain;
        tc.batch = (int)st->batch;
        tc.shuffle = st->shuffle;
        tc.drop_last = 1;
        tc.seed = st->seed;
        tc.mean = j->mean;
        tc.std = j->std;
        tc.prefetch = st->prefetch;
        if ((rc = kn_loader_create(ctx, &tc, &j->train_loader))) return rc;
    }
    return KN_OK;
}

void kn_job_close(kn_job *j) {
    kn_loader_free(j->train_loader);
    kn_loader_free(j->val_loader);
    kn_loader_free(j->test_loader);
    kn_model_free(&j->model);
    kn_dataset_free(&j->train_ds);
    kn_dataset_free(&j->test_ds);
    kn_table_free(&j->train_t);
    kn_table_free(&j->test_t);
    kn_norm_free(&j->norm);
    free(j->norm_text);
    free(j->classes_text);
    free(j->train_idx);
    free(j->val_idx);
    memset(j, 0, sizeof *j);
}

/* ---------------- evaluation of a saved model ---------------- */
int kn_model_file(kn_ctx *ctx, const char *run_dir_or_ckpt, const char *what, char *path, size_t size) {
    struct stat sb;
    if (stat(run_dir_or_ckpt, &sb) != 0)
        return kn_err(ctx, KN_ERR_IO, "'%s': %s (expected a run directory or a .safetensors checkpoint)", run_dir_or_ckpt,
                      strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        if (strlen(run_dir_or_ckpt) >= size) return kn_err(ctx, KN_ERR_IO, "'%.200s...': path too long", run_dir_or_ckpt);
        kn_strlcpy(path, run_dir_or_ckpt, size);
        return KN_OK;
    }
    snprintf(path, size, "%s/model.safetensors", run_dir_or_ckpt);
    if (stat(path, &sb) == 0) return KN_OK;
    /* a run that did not finish: its best checkpoint, else its newest step checkpoint */
    const char *why = "the best validation loss";
    snprintf(path, size, "%s/checkpoints/best.safetensors", run_dir_or_ckpt);
    if (stat(path, &sb) != 0) {
        why = "the newest checkpoint";
        long long newest = -1;
        char cdir[4096];
        snprintf(cdir, sizeof cdir, "%s/checkpoints", run_dir_or_ckpt);
        DIR *d = opendir(cdir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            long long st;
            char tail[32];
            if (sscanf(de->d_name, "step-%lld.safetens%31s", &st, tail) == 2 && !strcmp(tail, "ors") && st > newest) newest = st;
        }
        if (d) closedir(d);
        if (newest < 0)
            return kn_err(ctx, KN_ERR_IO, "%s holds no model.safetensors, best.safetensors or step checkpoint: nothing to %s "
                                          "(finish the run with 'kiln resume %s')",
                          run_dir_or_ckpt, what, run_dir_or_ckpt);
        snprintf(path, size, "%.4000s/step-%09lld.safetensors", cdir, newest);
    }
    fprintf(stderr, "kiln: %s has no model.safetensors (the run did not finish): using %s (%s)\n", run_dir_or_ckpt, path,
            why);
    return KN_OK;
}

int kn_eval(kn_ctx *ctx, const char *run_dir_or_ckpt, int threads, kn_train_result *res) {
    kn_train_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    char path[4096];
    int rc0 = kn_model_file(ctx, run_dir_or_ckpt, "evaluate", path, sizeof path);
    if (rc0) return rc0;
    kn_ckpt *ck = NULL;
    int rc = kn_ckpt_open(ctx, path, &ck);
    if (rc) return rc;
    const char *text = kn_ckpt_meta_get(ck, "config");
    if (!text) { kn_ckpt_close(ck); return kn_err(ctx, KN_ERR_FORMAT, "%s: no kiln config in the checkpoint metadata", path); }
    kn_config *cfg = NULL;
    char name[4200];
    snprintf(name, sizeof name, "%s[config]", path);
    if ((rc = kn_config_parse_string(ctx, name, text, &cfg))) { kn_ckpt_close(ck); return rc; }
    kn_settings st;
    kn_job job;
    memset(&job, 0, sizeof job);
    if ((rc = kn_settings_read(ctx, cfg, &st))) goto done;
    /* normalise with the training set's statistics, as in training */
    if (kn_ckpt_meta_get(ck, "data_mean") && kn_ckpt_meta_get(ck, "data_std") &&
        ((rc = kn_ckpt_meta_num(ctx, ck, "data_mean", &st.mean)) || (rc = kn_ckpt_meta_num(ctx, ck, "data_std", &st.std))))
        goto done;
    kn_set_threads(threads > 0 ? threads : st.threads);
    kn_norm given;
    memset(&given, 0, sizeof given);
    const char *ntext = kn_ckpt_meta_get(ck, "data_norm");
    if (st.typed && ntext) {
        char nm[4300];
        snprintf(nm, sizeof nm, "%s: metadata data_norm", path);
        if ((rc = kn_norm_from_string(ctx, ntext, &given))) { kn_err_prefix(ctx, "%s: ", nm); goto done; }
        rc = kn_job_open_norm(ctx, cfg, &st, 0, &given, &job);
        kn_norm_free(&given);
    } else {
        rc = kn_job_open(ctx, cfg, &st, 0, &job);
    }
    if (rc) goto done;
    if ((rc = kn_ckpt_load_store(ctx, ck, &job.model.store))) goto done;
    double t0 = kn_now_seconds();
    kn_eval_metrics em;
    kn_evaluate_metrics(&job.model, job.test_loader, st.seed, &em);
    res->test_loss = em.loss;
    res->test_accuracy = em.accuracy;
    res->test_r2 = em.r2;
    res->test_mae = em.mae;
    res->test_rmse = em.rmse;
    res->test_samples = em.n;
    res->val_loss = res->val_accuracy = res->val_r2 = NAN;
    res->seconds = kn_now_seconds() - t0;
done:
    kn_job_close(&job);
    kn_config_free(cfg);
    kn_ckpt_close(ck);
    return rc;
}
