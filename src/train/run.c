/* kiln — a training run: kn_train, a short loop over the trainer's parts.
 *
 *   step.c          the step: forward, backward, accumulation, all-reduce hook, clip, update
 *   guard_policy.c  the step's gate: skip / roll back / stop on a failed check, spikes
 *   health.c        per-layer health checks on health steps
 *   checkpointer.c  checkpoint cadence, names, pruning, resume, best, model.safetensors
 *   early_stop.c    best validation loss, early stopping, the overfitting warning
 *   progress.c      the progress bar or lines
 *   sinks/          metric records (metrics.jsonl)
 *   rundir.c        the run directory (lock, versions, peek); resume.c what a resume must match
 *
 * A training checkpoint holds parameters, BatchNorm statistics, optimizer moments and,
 * in its metadata (state.c: one table of named fields), the position (step, epoch, batch
 * in epoch), the seed from which every random stream is derived (data order: seed+epoch;
 * dropout: seed+step), the epoch's running loss, the best validation loss, the length of
 * metrics.jsonl, and the config; and what else decides the bits: threads, micro-batch,
 * each convolution's algorithm. A resume takes those from the checkpoint (from
 * first.safetensors before the first step checkpoint; from config.ini, which holds
 * --seed/--threads, before first). */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700 /* realpath */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/checkpoint.h"
#include "train/checkpointer.h"
#include "train/early_stop.h"
#include "train/guard_policy.h"
#include "train/health.h"
#include "train/plan.h"
#include "train/progress.h"
#include "train/resume.h"
#include "train/rundir.h"
#include "train/sinks/sink.h"
#include "train/state.h"
#include "train/step.h"
#include "train/trainer.h"

/* The one process-wide flag: a signal handler can reach nothing else. kn_train clears
 * it when it starts, so a stop request ends only the run it arrived in. */
static volatile sig_atomic_t g_stop = 0;
void kn_request_stop(int signo) { g_stop = signo; }
int kn_stop_requested(void) { return g_stop; }

void kn_train_options_init(kn_train_options *o) {
    memset(o, 0, sizeof *o);
    o->seed = -1;
    o->progress = -1;
}

/* The parts of one run. */
typedef struct {
    kn_settings st;
    char *cfg_text;
    kn_rundir rd;
    kn_job job;
    kn_optimizer o;
    kn_checkpointer ck;
    kn_sinks sinks;
    kn_trainer tr;
    kn_health *H;
    kn_guard_policy *G;
    kn_early_stop E;
    kn_progress P;
    kn_train_state S;
    FILE *out;
    int resumed;
    int64_t steps_per_epoch, total_steps;
} run;

/* exact duplicates of evaluation images in the training set */
static int leak_check(kn_ctx *ctx, kn_job *job, int k, kn_leak_report *r) {
    if (!job->typed)
        return k == 0 ? kn_leakage_check(ctx, &job->train_ds, job->train_idx, job->ntrain, &job->test_ds, NULL, job->test_ds.n, r)
                      : kn_leakage_check(ctx, &job->train_ds, job->train_idx, job->ntrain, &job->train_ds, job->val_idx, job->nval, r);
    const kn_field *a = &job->train_t.fields[job->x_field], *b = k == 0 ? &job->test_t.fields[job->x_field] : a;
    const size_t sz = (size_t)a->sample_numel * sizeof(float);
    return kn_leakage_check_bytes(ctx, a->data, job->train_t.n, sz, job->train_idx, job->ntrain, b->data,
                                  k == 0 ? job->test_t.n : job->train_t.n, sz, k == 0 ? NULL : job->val_idx,
                                  k == 0 ? job->test_t.n : job->nval, r);
}

static void leakage_report(kn_job *job, kn_sinks *sinks, FILE *out) {
    kn_ctx *ctx = kn_ctx_new();
    if (!ctx) return;
    struct { const char *name; } sets[2] = {{"test"}, {"validation"}};
    for (int k = 0; k < (job->val_loader ? 2 : 1); k++) {
        kn_leak_report r;
        if (leak_check(ctx, job, k, &r) != KN_OK) {
            if (out) fprintf(stderr, "kiln: warning: leakage check failed: %s\n", kn_ctx_message(ctx));
            kn_ctx_clear(ctx);
            continue;
        }
        char ex[512];
        size_t len = (size_t)snprintf(ex, sizeof ex, "[");
        for (int i = 0; i < r.nexamples && len < sizeof ex; i++)
            len += (size_t)snprintf(ex + len, sizeof ex - len, "%s[%lld,%lld]", i ? "," : "", (long long)r.examples[i][0], (long long)r.examples[i][1]);
        if (len < sizeof ex) snprintf(ex + len, sizeof ex - len, "]");
        kn_record rec;
        kn_rec_begin(&rec, "leakage");
        kn_rec_str(&rec, "set", sets[k].name);
        kn_rec_int(&rec, "duplicates", r.count);
        kn_rec_raw(&rec, "examples", ex);
        kn_sinks_write(sinks, &rec);
        if (out && r.count > 0) {
            fprintf(out, "leakage: %lld %s sample(s) also appear, byte for byte, in the training set (e.g.", (long long)r.count, sets[k].name);
            for (int i = 0; i < r.nexamples && i < 3; i++)
                fprintf(out, "%s %s #%lld = train #%lld", i ? "," : "", sets[k].name, (long long)r.examples[i][1], (long long)r.examples[i][0]);
            fprintf(out, ")\n");
        } else if (out) {
            fprintf(out, "leakage: no %s sample appears in the training set\n", sets[k].name);
        }
    }
    kn_ctx_free(ctx);
}

/* The memory plan, before anything big is allocated: print its summary, refuse a run
 * whose predicted peak exceeds the budget, or (train.fit) choose the micro-batch. */
static int plan_run(kn_ctx *ctx, const kn_config *cfg, kn_settings *st, FILE *out, int64_t forced_micro) {
    int rc = kn_plan_for_training(ctx, cfg, st, out, NULL);
    if (rc == KN_ERR_NOMEM && forced_micro && st->mem_fit) {
        kn_ctx_clear(ctx);
        st->micro_batch = 0;
        rc = kn_plan_for_training(ctx, cfg, st, out, NULL);
        if (!rc && st->micro_batch != forced_micro)
            fprintf(stderr, "kiln: warning: the run's micro-batch of %lld does not fit this budget; continuing with micro-batches of %lld: "
                            "correct, but not bit-identical to an uninterrupted run\n",
                    (long long)forced_micro, (long long)st->micro_batch);
    }
    return rc;
}

/* Data and model, with the convolution algorithms the run used where they run here. */
static int open_job(kn_ctx *ctx, const kn_config *cfg, run *r) {
    kn_config *jcfg = kn_config_with_algorithms(cfg, &r->rd.pk);
    int rc = kn_job_open(ctx, jcfg ? jcfg : cfg, &r->st, 1, &r->job);
    if (rc && jcfg) { /* the run's algorithm does not run here: this CPU's choice (warned about on resume) */
        kn_ctx_clear(ctx);
        kn_job_close(&r->job);
        rc = kn_job_open(ctx, cfg, &r->st, 1, &r->job);
    }
    kn_config_free(jcfg);
    return rc;
}

static int init_from(kn_ctx *ctx, const char *spec, kn_store *store, FILE *out) {
    char ip[2600];
    kn_ckpt *c = NULL;
    int rc;
    if ((rc = kn_resolve_init_from(ctx, spec, ip, sizeof ip))) return rc;
    if ((rc = kn_ckpt_open(ctx, ip, &c))) return rc;
    rc = kn_ckpt_load_init(ctx, c, store);
    kn_ckpt_close(c);
    if (!rc && out) fprintf(out, "initialised from %s\n", ip);
    return rc;
}

/* Everything before the first step: settings, run directory, plan, job, optimizer,
 * resume or first checkpoint, sinks and the parts. */
static int run_open(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, run *r) {
    kn_settings *st = &r->st;
    int rc = kn_settings_read(ctx, cfg, st);
    if (rc) return rc;
    r->out = opt->quiet ? NULL : stdout;
    /* --init-from: the file it names now (RUN_DIR:last moves on as that run goes on) */
    char init_path[2600];
    if (opt->init_from && (rc = kn_resolve_init_from(ctx, opt->init_from, init_path, sizeof init_path))) return rc;
    if (opt->init_from) { /* absolute: a resume from another directory finds it too */
        char *abs = realpath(init_path, NULL);
        if (abs && strlen(abs) < sizeof init_path) kn_strlcpy(init_path, abs, sizeof init_path);
        free(abs);
    }
    /* the config text this run records: with --seed / --threads / --init-from written in */
    if (!(r->cfg_text = kn_effective_config_text(ctx, cfg, st, opt, opt->init_from ? init_path : NULL)))
        return kn_ctx_code(ctx) ? kn_ctx_code(ctx) : KN_ERR_NOMEM;
    if (opt->init_from) kn_strlcpy(st->init_from, init_path, sizeof st->init_from);
    if (opt->seed >= 0) st->seed = (uint64_t)opt->seed;
    if (opt->threads > 0) st->threads = opt->threads;
    if ((rc = kn_rundir_choose(ctx, cfg, opt, st, r->cfg_text, &r->rd))) return rc;
    int64_t forced_micro;
    kn_rundir_adopt(&r->rd, opt, st, &forced_micro);
    kn_set_threads(st->threads);
    if ((rc = plan_run(ctx, cfg, st, r->out, forced_micro)) || (rc = kn_rundir_create(ctx, &r->rd)) || (rc = open_job(ctx, cfg, r)))
        return rc;
    kn_model *m = &r->job.model;
    r->steps_per_epoch = kn_loader_batches(r->job.train_loader);
    r->total_steps = r->steps_per_epoch * st->epochs;
    if (st->max_steps > 0 && st->max_steps < r->total_steps) r->total_steps = st->max_steps;
    st->opt.total_steps = r->total_steps;
    if ((rc = kn_opt_init(ctx, &r->o, &st->opt, m->store.nparam))) return rc;
    kn_model_init(m, st->seed);
    if ((rc = kn_checkpointer_init(ctx, &r->ck, &r->rd, st, &r->job, &r->o, r->cfg_text))) return rc;
    kn_train_state_init(&r->S);
    if ((rc = kn_checkpointer_resume(ctx, &r->ck, &r->S, opt->allow_config_change, opt->resume_only, r->out, &r->resumed))) return rc;
    /* a new run, or one killed before its first checkpoint: config.ini holds init_from */
    if (!r->resumed && st->init_from[0] && (rc = init_from(ctx, st->init_from, &m->store, r->out))) return rc;

    char path[2600];
    snprintf(path, sizeof path, "%s/config.ini", r->rd.dir);
    if ((rc = kn_write_text(ctx, path, r->cfg_text))) return rc;
    snprintf(path, sizeof path, "%s/metrics.jsonl", r->rd.dir);
    kn_sink jsonl;
    if ((rc = kn_sink_jsonl_open(ctx, path, r->resumed ? r->S.metrics_bytes : -1, &jsonl, &r->sinks.jsonl))) return rc;
    kn_sinks_add(&r->sinks, jsonl);
    r->ck.sinks = &r->sinks;
    kn_early_stop_init(&r->E, st->early_stopping, st->warn_worse_epochs, st->epochs, r->resumed ? path : NULL);
    int bar = opt->progress >= 0 ? opt->progress : isatty(fileno(stdout));
    kn_progress_init(&r->P, r->out, bar, r->steps_per_epoch, st->epochs, r->total_steps, st->batch, st->log_every);
    if (r->out) {
        /* parameters, batch, threads and memory are in the plan summary above: once */
        fprintf(r->out, "kiln %s: %s — %lld steps/epoch, %lld epochs\n", KILN_VERSION, cfg->path, (long long)r->steps_per_epoch,
                (long long)st->epochs);
        fprintf(r->out, "data: %lld training samples, %lld %s samples\n", (long long)r->job.ntrain,
                (long long)(r->job.val_loader ? r->job.nval : r->job.ntest),
                r->job.val_loader ? "validation" : "test (used for validation)");
        fprintf(r->out, "run directory: %s\n", r->rd.dir);
        fflush(r->out);
    }
    if (!r->resumed && (rc = kn_checkpointer_first(ctx, &r->ck, &r->S))) return rc; /* the model before the first update */

    if ((rc = kn_trainer_init(ctx, &r->tr, m, &r->o, st->batch, st->seed, st->opt.clip_norm))) return rc;
    r->ck.times = &r->tr.total;
    if (st->health_every > 0 && (rc = kn_health_create(ctx, m, st->health_every, &r->H))) return rc;
    double chance = NAN;
    if (m->loss_kind == KN_LOSS_CE && st->guard_collapse_checks > 0)
        chance = r->job.typed ? kn_label_entropy_i32(r->job.train_t.fields[r->job.y_field].data, r->job.train_idx, r->job.ntrain,
                                                     m->nclasses)
                              : kn_label_entropy(r->job.train_ds.labels, r->job.train_idx, r->job.ntrain, m->nclasses);
    if ((rc = kn_guard_policy_create(ctx, st, m, &r->o, r->job.train_loader, r->H, &r->sinks, &r->P, r->rd.ckpt_dir, &r->S,
                                     chance, &r->G)))
        return rc;
    r->tr.gate = r->G ? kn_guard_policy_gate : NULL;
    r->tr.gate_arg = r->G;
    if (st->leakage_check) leakage_report(&r->job, &r->sinks, r->out);
    return KN_OK;
}

static void run_close(run *r) {
    kn_sinks_close(&r->sinks);
    kn_rundir_close(&r->rd);
    kn_trainer_free(&r->tr);
    free(r->cfg_text);
    kn_guard_policy_free(r->G);
    kn_health_free(r->H);
    kn_opt_free(&r->o);
    kn_job_close(&r->job);
}

/* The stop request after its checkpoint. */
static int stopped(kn_ctx *ctx, run *r, int sig_no, kn_train_result *res) {
    kn_progress_break(&r->P);
    const char *sig = sig_no == SIGINT ? "SIGINT (Ctrl-C)" : sig_no == SIGTERM ? "SIGTERM" : "a stop request";
    fprintf(stderr, "kiln: stopped by %s after step %lld; checkpoint %s/step-%09lld.safetensors written.\n"
                    "kiln: continue with: kiln resume %s\n",
            sig, (long long)r->S.step, r->rd.ckpt_dir, (long long)r->S.step, r->rd.dir);
    res->stopped_by_signal = sig_no;
    res->steps = r->S.step;
    return kn_err(ctx, KN_ERR_INTERRUPTED, "stopped by %s at step %lld; resume with: kiln resume %s", sig, (long long)r->S.step,
                  r->rd.dir);
}

/* The end of an epoch: validation, its record and line, best and early stopping, the
 * epoch's checkpoint. *stop = 1 when early stopping ends the run. */
static int end_epoch(kn_ctx *ctx, run *r, const kn_train_options *opt, double ep_t0, double *vloss, double *vacc, double *vr2,
                     int *stop) {
    kn_train_state *S = &r->S;
    kn_progress_break(&r->P);
    if (opt->hook) opt->hook(opt->hook_arg, "eval", S->step);
    kn_eval_metrics em;
    kn_evaluate_metrics(&r->job.model, r->job.val_loader ? r->job.val_loader : r->job.test_loader, r->st.seed, &em);
    *vloss = em.loss;
    *vacc = em.accuracy;
    *vr2 = em.r2;
    if (opt->hook) opt->hook(opt->hook_arg, "eval_done", S->step);
    double secs = kn_now_seconds() - ep_t0;
    double tl = S->ep_steps ? S->ep_loss_sum / (double)S->ep_steps : NAN;
    kn_record rec;
    kn_rec_begin(&rec, "epoch");
    kn_rec_int(&rec, "epoch", S->epoch + 1);
    kn_rec_int(&rec, "step", S->step);
    kn_rec_num(&rec, "train_loss", KN_MV_G9, tl);
    kn_rec_num(&rec, "val_loss", KN_MV_G9, *vloss);
    char keys[8][48]; /* the record keeps pointers to its keys until it is written */
    for (int i = 0; i < em.nmetrics; i++) {
        snprintf(keys[i], sizeof keys[i], "val_%s", em.names[i]);
        kn_rec_num(&rec, keys[i], strstr(em.names[i], "accuracy") ? KN_MV_F6 : KN_MV_G9, em.values[i]);
    }
    kn_rec_num(&rec, "gap", KN_MV_G9, *vloss - tl);
    kn_rec_num(&rec, "seconds", KN_MV_F3, secs);
    kn_sinks_write(&r->sinks, &rec);
    kn_progress_epoch_done(&r->P, S, secs, tl, *vloss, *vacc, *vr2);
    int is_best = kn_early_stop_epoch(&r->E, S, tl, *vloss, &r->sinks);
    S->epoch++;
    S->batch_in_epoch = 0;
    S->ep_steps = 0;
    S->ep_loss_sum = 0;
    int rc = kn_checkpointer_epoch(ctx, &r->ck, S, is_best);
    if (rc) return rc;
    if (r->G) kn_guard_policy_after_epoch(r->G);
    if (kn_early_stop_due(&r->E, S)) { /* stop and go back to the best weights */
        if ((rc = kn_checkpointer_load_best(ctx, &r->ck))) return rc;
        kn_early_stop_report(S, r->out, &r->sinks);
        *stop = 1;
    }
    return KN_OK;
}

/* After the last step: the position if mid-epoch, the test pass, the model file. */
static int finish(kn_ctx *ctx, run *r, const kn_train_options *opt, int early_stopped, int64_t start_step, double t0,
                  kn_train_result *res) {
    kn_train_state *S = &r->S;
    int rc;
    if (S->batch_in_epoch > 0 && !early_stopped && (rc = kn_checkpointer_save(ctx, &r->ck, S, 0))) return rc; /* ended mid-epoch (max_steps) */
    res->seconds = kn_now_seconds() - t0;
    res->steps = S->step;
    if (opt->hook) opt->hook(opt->hook_arg, "test", S->step);
    kn_eval_metrics em;
    kn_evaluate_metrics(&r->job.model, r->job.test_loader, r->st.seed, &em);
    res->test_loss = em.loss;
    res->test_accuracy = em.accuracy;
    res->test_r2 = em.r2;
    res->test_mae = em.mae;
    res->test_rmse = em.rmse;
    res->test_samples = em.n;
    const int real = r->job.model.desc.target_real;
    kn_record rec;
    kn_rec_begin(&rec, "test");
    kn_rec_int(&rec, "step", S->step);
    kn_rec_num(&rec, "test_loss", KN_MV_G9, res->test_loss);
    char keys[8][48]; /* the record keeps pointers to its keys until it is written */
    for (int i = 0; i < em.nmetrics; i++) {
        snprintf(keys[i], sizeof keys[i], "test_%s", em.names[i]);
        kn_rec_num(&rec, keys[i], strstr(em.names[i], "accuracy") ? KN_MV_F6 : KN_MV_G9, em.values[i]);
    }
    kn_sinks_write(&r->sinks, &rec);
    kn_rec_begin(&rec, "checkpoint_time");
    kn_rec_int(&rec, "writes", r->ck.nwrites);
    kn_rec_num(&rec, "seconds", KN_MV_F6, r->ck.write_seconds);
    kn_rec_num(&rec, "train_seconds", KN_MV_F6, res->seconds);
    kn_sinks_write(&r->sinks, &rec);
    if (opt->hook) opt->hook(opt->hook_arg, "model", S->step);
    if ((rc = kn_checkpointer_save_model(ctx, &r->ck, S->step))) return rc;
    if (r->out) {
        if (S->step == start_step && r->resumed) fprintf(r->out, "training was already complete (step %lld)\n", (long long)S->step);
        if (real)
            fprintf(r->out, "test: loss %.4f, R^2 %.4f, MAE %.4g, RMSE %.4g (%lld samples) after %lld steps in %.1fs\n", res->test_loss,
                    res->test_r2, res->test_mae, res->test_rmse, (long long)r->job.ntest, (long long)S->step, res->seconds);
        else
            fprintf(r->out, "test: loss %.4f, accuracy %.2f%% (%lld samples) after %lld steps in %.1fs\n", res->test_loss,
                    100.0 * res->test_accuracy, (long long)r->job.ntest, (long long)S->step, res->seconds);
        fprintf(r->out, "model saved to %s/model.safetensors; checkpoints in %s\n", r->rd.dir, r->rd.ckpt_dir);
    }
    return KN_OK;
}

/* ---------------- the run ---------------- */
int kn_train(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, kn_train_result *res) {
    kn_train_options defopt;
    if (!opt) { kn_train_options_init(&defopt); opt = &defopt; }
    kn_train_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    run *r = calloc(1, sizeof *r);
    if (!r) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    r->rd.lock_fd = -1;
    g_stop = 0;
    int rc = run_open(ctx, cfg, opt, r);
    if (rc) goto done;
    res->resumed = r->resumed;
    kn_train_state *S = &r->S;
    const kn_settings *st = &r->st;
    kn_model *m = &r->job.model;
    kn_trainer *tr = &r->tr;
    double t0 = kn_now_seconds(), vloss = NAN, vacc = NAN, vr2 = NAN, last_loss = NAN;
    int64_t start_step = S->step;
    int early_stopped = 0;
    r->ck.last_t = t0;
    if (r->G) kn_guard_policy_begin(r->G);
    /* killed after an epoch's checkpoint decided on early stopping: stop as it would have */
    if (r->resumed && kn_early_stop_due(&r->E, S)) {
        if ((rc = kn_checkpointer_load_best(ctx, &r->ck))) goto done;
        kn_early_stop_report(S, r->out, &r->sinks);
        early_stopped = 1;
    }
    while (!early_stopped && S->epoch < st->epochs && S->step < r->total_steps) {
        kn_loader_start_epoch(r->job.train_loader, S->epoch, S->batch_in_epoch);
        double ep_t0 = kn_now_seconds();
        kn_progress_epoch_start(&r->P, ep_t0);
        int restart = 0;
        while (S->step < r->total_steps && S->batch_in_epoch < r->steps_per_epoch && kn_trainer_next_batch(tr, r->job.train_loader) > 0) {
            if (r->G) kn_guard_policy_before_step(r->G);
            int health_now = r->H && tr->acc.steps == 1 && kn_health_due(r->H, S->step); /* not in micro-batches */
            double lr = kn_opt_lr(&st->opt, S->step) * S->lr_scale;
            int action = kn_trainer_step(tr, S->step, lr, health_now ? r->H : NULL);
            if (action == KN_STEP_SKIPPED) continue;
            if (action == KN_STEP_ROLLBACK) { /* never resume the abandoned steps */
                if ((rc = kn_checkpointer_rollback(ctx, &r->ck, S, r->out))) goto done;
                restart = 1;
                break;
            }
            if (action == KN_STEP_STOP) { rc = kn_ctx_code(ctx) ? kn_ctx_code(ctx) : KN_ERR_INVALID; goto done; }
            if (health_now) {
                kn_health_set_lr_scale(r->H, st->opt.lr > 0 ? lr / st->opt.lr : 1.0);
                kn_progress_break(&r->P);
                kn_health_after_update(r->H, m, S->step + 1, kn_sinks_jsonl_file(&r->sinks), r->out ? stderr : NULL);
            }
            S->step++;
            S->batch_in_epoch++;
            S->ep_steps++;
            S->ep_loss_sum += tr->loss;
            last_loss = tr->loss;
            if (S->step % st->log_every == 0) {
                kn_record rec;
                kn_rec_begin(&rec, "step");
                kn_rec_int(&rec, "step", S->step);
                kn_rec_int(&rec, "epoch", S->epoch);
                kn_rec_num(&rec, "loss", KN_MV_G9, (double)tr->loss);
                kn_rec_num(&rec, "lr", KN_MV_G9, lr);
                kn_sinks_write(&r->sinks, &rec);
            }
            kn_progress_step(&r->P, S, (double)tr->loss, lr);
            if (r->G) kn_guard_policy_after_update(r->G);
            if (opt->hook) opt->hook(opt->hook_arg, "step", S->step);
            int stop = kn_stop_requested();
            if (stop || kn_checkpointer_due(&r->ck, S, r->total_steps)) {
                if ((rc = kn_checkpointer_save(ctx, &r->ck, S, 0))) goto done;
                if (stop) { rc = stopped(ctx, r, stop, res); goto done; }
            }
        }
        if (restart) continue;
        if (S->batch_in_epoch < r->steps_per_epoch) break; /* max_steps reached mid-epoch */
        if ((rc = end_epoch(ctx, r, opt, ep_t0, &vloss, &vacc, &vr2, &early_stopped))) goto done;
    }
    res->final_train_loss = last_loss;
    res->val_loss = vloss;
    res->val_accuracy = vacc;
    res->val_r2 = vr2;
    rc = finish(ctx, r, opt, early_stopped, start_step, t0, res);
done:
    run_close(r);
    free(r);
    return rc;
}
