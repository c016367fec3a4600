/* kiln — sessions (include/kiln.h): a model with its data, optimizer and schedule,
 * trained, evaluated and used step by step by a C program. A thin layer over the parts
 * `kiln train` is made of (train/trainer.h: settings and job; train/step.h: the step;
 * optim/optim.h: the optimizer and its schedule; train/checkpoint.h: model files),
 * without a run directory, checkpoints, guard or health checks. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/checkpoint.h"
#include "train/resume.h"
#include "train/step.h"
#include "train/trainer.h"

struct kn_session {
    kn_ctx *ctx;
    kn_config *cfg;
    char *cfg_text; /* what a saved model records: the config with the session's seed/threads */
    kn_settings st;
    kn_job job;
    kn_optimizer opt;
    kn_trainer tr;
    int have_opt, have_tr;
    int64_t steps_per_epoch, total_steps;
    int64_t step, epoch, batch_in_epoch; /* updates done; epochs completed; batches of the current epoch */
    int64_t in_size, out_size;
};

int kn_config_new(kn_ctx *ctx, const char *name, kn_config **out) {
    return kn_config_parse_string(ctx, name ? name : "<code>", "", out);
}

char *kn_config_to_text(const kn_config *cfg) { return cfg ? kn_cfg_to_text(cfg) : NULL; }

void kn_session_options_init(kn_session_options *o) {
    memset(o, 0, sizeof *o);
    o->seed = -1;
}

void kn_session_free(kn_session *s) {
    if (!s) return;
    if (s->have_tr) kn_trainer_free(&s->tr);
    if (s->have_opt) kn_opt_free(&s->opt);
    kn_job_close(&s->job);
    kn_config_free(s->cfg);
    free(s->cfg_text);
    free(s);
}

/* The session of cfg; given: the input's normalisation of a saved model (typed data), or
 * NULL (fitted on the training rows); mean/std: a saved model's image statistics (NAN:
 * from the config / the training images). */
static int session_create(kn_ctx *ctx, const kn_config *cfg, const kn_session_options *o, const kn_norm *given, double mean,
                          double std, kn_session **out) {
    if (!out) return kn_err(ctx, KN_ERR_INVALID, "kn_session_new: out is NULL");
    *out = NULL;
    if (!cfg) return kn_err(ctx, KN_ERR_INVALID, "kn_session_new: no config");
    kn_session_options def;
    if (!o) { kn_session_options_init(&def); o = &def; }
    kn_session *s = calloc(1, sizeof *s);
    if (!s) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    s->ctx = ctx;
    kn_settings *st = &s->st;
    int rc;
    if (!(s->cfg = kn_cfg_clone(cfg))) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto fail; }
    if ((rc = kn_settings_read(ctx, s->cfg, st))) goto fail;
    kn_train_options to;
    kn_train_options_init(&to);
    to.seed = o->seed;
    to.threads = o->threads;
    if (!(s->cfg_text = kn_effective_config_text(ctx, s->cfg, st, &to, NULL))) {
        rc = kn_ctx_code(ctx) ? kn_ctx_code(ctx) : KN_ERR_NOMEM;
        goto fail;
    }
    if (o->seed >= 0) st->seed = (uint64_t)o->seed;
    if (o->threads > 0) st->threads = o->threads;
    if (!isnan(mean)) st->mean = mean;
    if (!isnan(std)) st->std = std;
    kn_set_threads(st->threads);
    if (given) rc = kn_job_open_norm(ctx, s->cfg, st, 1, given, &s->job);
    else rc = kn_job_open(ctx, s->cfg, st, 1, &s->job);
    if (rc) goto fail;
    kn_model *m = &s->job.model;
    s->steps_per_epoch = kn_loader_batches(s->job.train_loader);
    s->total_steps = s->steps_per_epoch * st->epochs;
    if (st->max_steps > 0 && st->max_steps < s->total_steps) s->total_steps = st->max_steps;
    st->opt.total_steps = s->total_steps;
    if ((rc = kn_opt_init(ctx, &s->opt, &st->opt, m->store.nparam))) goto fail;
    s->have_opt = 1;
    kn_model_init(m, st->seed);
    if ((rc = kn_trainer_init(ctx, &s->tr, m, &s->opt, st->batch, st->seed, st->opt.clip_norm))) goto fail;
    s->have_tr = 1;
    s->in_size = kn_loader_x_elems(s->job.train_loader);
    s->out_size = kn_numel(m->eval, m->out_eval) / m->eval_batch;
    *out = s;
    return KN_OK;
fail:
    kn_session_free(s);
    return rc;
}

int kn_session_new(kn_ctx *ctx, const kn_config *cfg, const kn_session_options *o, kn_session **out) {
    return session_create(ctx, cfg, o, NULL, NAN, NAN, out);
}

int kn_session_open(kn_ctx *ctx, const char *path, const kn_session_options *o, kn_session **out) {
    if (!out) return kn_err(ctx, KN_ERR_INVALID, "kn_session_open: out is NULL");
    *out = NULL;
    if (!path) return kn_err(ctx, KN_ERR_INVALID, "kn_session_open: no path");
    kn_ckpt *ck = NULL;
    kn_config *cfg = NULL;
    kn_norm given;
    memset(&given, 0, sizeof given);
    int rc = kn_ckpt_open(ctx, path, &ck), have_norm = 0;
    if (rc) return rc;
    const char *text = kn_ckpt_meta_get(ck, "config"), *ntext = kn_ckpt_meta_get(ck, "data_norm");
    double mean = NAN, sd = NAN;
    if (!text) { rc = kn_err(ctx, KN_ERR_FORMAT, "%s: no kiln config in the metadata (not a kiln model file)", path); goto done; }
    char name[4200];
    snprintf(name, sizeof name, "%.4000s[config]", path);
    if ((rc = kn_config_parse_string(ctx, name, text, &cfg))) goto done;
    if (kn_ckpt_meta_get(ck, "data_mean") && kn_ckpt_meta_get(ck, "data_std") &&
        ((rc = kn_ckpt_meta_num(ctx, ck, "data_mean", &mean)) || (rc = kn_ckpt_meta_num(ctx, ck, "data_std", &sd))))
        goto done;
    if (ntext) {
        if ((rc = kn_norm_from_string(ctx, ntext, &given))) { kn_err_prefix(ctx, "%s: metadata data_norm: ", path); goto done; }
        have_norm = 1;
    }
    kn_session *s = NULL;
    /* a typed source takes the file's normalisation; image data its mean and std */
    if ((rc = session_create(ctx, cfg, o, have_norm ? &given : NULL, have_norm ? NAN : mean, have_norm ? NAN : sd, &s))) goto done;
    if ((rc = kn_ckpt_load_store(ctx, ck, &s->job.model.store))) { kn_session_free(s); goto done; }
    *out = s;
done:
    if (have_norm) kn_norm_free(&given);
    kn_config_free(cfg);
    kn_ckpt_close(ck);
    return rc;
}

/* ---------------- training ---------------- */
int64_t kn_session_steps_per_epoch(const kn_session *s) { return s ? s->steps_per_epoch : 0; }
int64_t kn_session_steps_done(const kn_session *s) { return s ? s->step : 0; }
int64_t kn_session_epoch(const kn_session *s) { return s ? s->epoch : 0; }
int64_t kn_session_epochs(const kn_session *s) { return s ? s->st.epochs : 0; }
double kn_session_lr(const kn_session *s) { return s ? kn_opt_lr(&s->st.opt, s->step) : NAN; }

int kn_session_train_step(kn_session *s, double *loss) {
    if (loss) *loss = NAN;
    if (!s) return KN_ERR_INVALID;
    kn_loader *L = s->job.train_loader;
    if (s->batch_in_epoch == 0) kn_loader_start_epoch(L, s->epoch, 0);
    if (kn_trainer_next_batch(&s->tr, L) <= 0)
        return kn_err(s->ctx, KN_ERR_INTERNAL, "the training loader gave no batch at batch %lld of epoch %lld",
                      (long long)s->batch_in_epoch, (long long)s->epoch);
    const double lr = kn_opt_lr(&s->st.opt, s->step);
    int action = kn_trainer_step(&s->tr, s->step, lr, NULL);
    if (action != KN_STEP_UPDATED) /* no gate is set: every step updates */
        return kn_err(s->ctx, KN_ERR_INTERNAL, "step %lld was not applied (%d)", (long long)s->step, action);
    s->step++;
    if (++s->batch_in_epoch == s->steps_per_epoch) {
        s->batch_in_epoch = 0;
        s->epoch++;
    }
    if (loss) *loss = (double)s->tr.loss;
    return KN_OK;
}

int kn_session_train_epoch(kn_session *s, double *mean_loss) {
    if (mean_loss) *mean_loss = NAN;
    if (!s) return KN_ERR_INVALID;
    double sum = 0, l;
    int64_t n = 0, epoch = s->epoch;
    int rc;
    do {
        if ((rc = kn_session_train_step(s, &l))) return rc;
        sum += l;
        n++;
    } while (s->epoch == epoch);
    if (mean_loss) *mean_loss = sum / (double)n;
    return KN_OK;
}

/* ---------------- evaluation and prediction ---------------- */
int kn_session_evaluate(kn_session *s, kn_split which, kn_metrics *out) {
    if (!s) return KN_ERR_INVALID;
    if (!out) return kn_err(s->ctx, KN_ERR_INVALID, "kn_session_evaluate: out is NULL");
    memset(out, 0, sizeof *out);
    kn_loader *L;
    if (which == KN_SPLIT_TEST) L = s->job.test_loader;
    else if (which == KN_SPLIT_VALIDATION) {
        L = s->job.val_loader;
        if (!L)
            return kn_err(s->ctx, KN_ERR_INVALID, "%s: no validation split to evaluate (data.validation_split is 0 or leaves no "
                          "sample): set data.validation_split, or evaluate KN_SPLIT_TEST", s->cfg->path);
    } else {
        return kn_err(s->ctx, KN_ERR_INVALID, "kn_session_evaluate: which = %d is neither KN_SPLIT_VALIDATION nor KN_SPLIT_TEST",
                      (int)which);
    }
    kn_eval_metrics em;
    int rc = kn_evaluate_metrics(&s->job.model, L, s->st.seed, &em);
    if (rc) return kn_err(s->ctx, rc, "evaluation: out of memory");
    out->loss = em.loss;
    out->accuracy = em.accuracy;
    out->r2 = em.r2;
    out->mae = em.mae;
    out->rmse = em.rmse;
    out->n = em.n;
    return KN_OK;
}

int64_t kn_session_input_size(const kn_session *s) { return s ? s->in_size : 0; }
int64_t kn_session_output_size(const kn_session *s) { return s ? s->out_size : 0; }

int kn_session_predict(kn_session *s, const float *x, int64_t n, int64_t features, float *out, int64_t out_capacity) {
    if (!s) return KN_ERR_INVALID;
    kn_ctx *ctx = s->ctx;
    if (n < 0 || (n > 0 && (!x || !out)))
        return kn_err(ctx, KN_ERR_INVALID, "kn_session_predict: %s", n < 0 ? "n < 0" : !x ? "x is NULL" : "out is NULL");
    if (features != s->in_size)
        return kn_err(ctx, KN_ERR_SHAPE, "kn_session_predict: samples of %lld floats given, the model's input has %lld per sample",
                      (long long)features, (long long)s->in_size);
    if (n > INT64_MAX / (s->out_size > 0 ? s->out_size : 1) || out_capacity < n * s->out_size)
        return kn_err(ctx, KN_ERR_SHAPE, "kn_session_predict: out has room for %lld floats, %lld samples of %lld outputs need %lld",
                      (long long)out_capacity, (long long)n, (long long)s->out_size,
                      n > INT64_MAX / (s->out_size > 0 ? s->out_size : 1) ? -1LL : (long long)(n * s->out_size));
    kn_model *m = &s->job.model;
    const int64_t B = m->eval_batch, F = s->in_size, K = s->out_size;
    float *gx = kn_ptr(m->eval, m->x_eval);
    const float *gy = kn_ptr(m->eval, m->out_eval);
    kn_rt rt = {0};
    rt.seed = s->st.seed;
    for (int64_t i = 0; i < n; i += B) {
        const int64_t c = n - i < B ? n - i : B;
        memcpy(gx, x + i * F, (size_t)(c * F) * sizeof(float));
        memset(gx + c * F, 0, (size_t)((B - c) * F) * sizeof(float));
        if (s->job.typed) {
            int rc = kn_norm_apply(ctx, &s->job.norm, gx, c, F);
            if (rc) return rc;
        } else { /* image data: pixel values, as the loader maps bytes */
            for (int64_t k = 0; k < c * F; k++) gx[k] = (gx[k] / 255.0f - s->job.mean) / s->job.std;
        }
        kn_g_forward(m->eval, &rt);
        memcpy(out + i * K, gy, (size_t)(c * K) * sizeof(float));
    }
    return KN_OK;
}

/* ---------------- model files ---------------- */
int kn_session_save(kn_session *s, const char *path) {
    if (!s) return KN_ERR_INVALID;
    if (!path || !*path) return kn_err(s->ctx, KN_ERR_INVALID, "kn_session_save: no path");
    char steps_s[32], mean_s[64], std_s[64];
    snprintf(steps_s, sizeof steps_s, "%lld", (long long)s->step);
    snprintf(mean_s, sizeof mean_s, "%.17g", (double)s->job.mean);
    snprintf(std_s, sizeof std_s, "%.17g", (double)s->job.std);
    /* as train/checkpointer.c kn_checkpointer_save_model writes model.safetensors */
    kn_ckpt_meta meta[7] = {{"config", s->cfg_text}, {"step", steps_s}, {"kind", "model"}, {"data_mean", mean_s}, {"data_std", std_s}};
    int nmeta = 5;
    if (s->job.norm_text) meta[nmeta++] = (kn_ckpt_meta){"data_norm", s->job.norm_text};
    if (s->job.classes_text) meta[nmeta++] = (kn_ckpt_meta){"data_classes", s->job.classes_text};
    return kn_ckpt_save(s->ctx, path, &s->job.model.store, NULL, 0, meta, nmeta);
}

int kn_session_load_weights(kn_session *s, const char *path) {
    if (!s) return KN_ERR_INVALID;
    if (!path || !*path) return kn_err(s->ctx, KN_ERR_INVALID, "kn_session_load_weights: no path");
    kn_ckpt *ck = NULL;
    int rc = kn_ckpt_open(s->ctx, path, &ck);
    if (rc) return rc;
    const char *ntext = kn_ckpt_meta_get(ck, "data_norm");
    if (ntext && s->job.norm_text && strcmp(ntext, s->job.norm_text) != 0)
        rc = kn_err(s->ctx, KN_ERR_FORMAT, "%s: the model was trained with another normalisation of its input than this "
                    "session's data (metadata data_norm differs): its predictions would be wrong here; open it with "
                    "kn_session_open instead", path);
    else rc = kn_ckpt_load_store(s->ctx, ck, &s->job.model.store);
    kn_ckpt_close(ck);
    return rc;
}
