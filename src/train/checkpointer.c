/* kiln — the checkpointer (checkpointer.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/checkpointer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/backend.h"
#include "train/checkpoint.h"
#include "train/resume.h"

static int save_state(kn_ctx *ctx, kn_checkpointer *R, const char *path, const kn_train_state *s) {
    kn_store *store = &R->job->model.store;
    kn_optimizer *o = R->opt;
    int nmom = o->v ? 2 : 1;
    kn_ckpt_tensor_in *ex = calloc((size_t)store->n * 2 + 1, sizeof *ex);
    char (*names)[128] = calloc((size_t)store->n * 2 + 1, sizeof *names);
    if (!ex || !names) { free(ex); free(names); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    int nex = 0;
    for (int i = 0; i < store->n; i++) {
        const kn_store_entry *e = &store->e[i];
        if (e->is_state) continue;
        for (int k = 0; k < nmom; k++) {
            snprintf(names[nex], sizeof names[nex], "optimizer.%s.%s", k ? "v" : "m", e->name);
            ex[nex].name = names[nex];
            ex[nex].shape = e->shape;
            ex[nex].data = (k ? o->v : o->m) + e->offset;
            nex++;
        }
    }
    char algos[4096], isa[256];
    kn_algorithms_of(R->job->model.train, algos, sizeof algos);
    R->job->model.train->be->path(isa, sizeof isa);
    kn_ckpt_record rec = {.kind = "train", .s = *s, .seed = R->st->seed, .optimizer_t = o->t,
                          .optimizer_kind = (int64_t)o->c.kind, .config_hash = kn_fnv1a(R->cfg_text),
                          .data_mean = (double)R->job->mean, .data_std = (double)R->job->std,
                          .threads = kn_get_threads(), .micro_batch = R->job->model.batch,
                          .algorithms = algos, .isa_path = isa, .config = R->cfg_text,
                          .data_norm = R->job->norm_text, .data_classes = R->job->classes_text};
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int nmeta = kn_ckpt_record_meta(&rec, v, meta);
    double t0 = kn_now_seconds();
    int rc = kn_ckpt_save(ctx, path, store, ex, nex, meta, nmeta);
    R->write_seconds += kn_now_seconds() - t0;
    if (R->times) R->times->checkpoint += kn_now_seconds() - t0;
    R->nwrites++;
    free(ex);
    free(names);
    return rc;
}

/* Load a training checkpoint into the job and optimizer. config_error is set when the
 * failure is a config mismatch (not a bad file). */
static int load_state(kn_ctx *ctx, kn_checkpointer *R, const char *path, kn_train_state *s, int allow_change, int *config_error) {
    *config_error = 0;
    kn_ckpt *c = NULL;
    int rc = kn_ckpt_open(ctx, path, &c);
    if (rc) return rc;
    const char *kind = kn_ckpt_meta_get(c, "kind");
    const char *ctext = kn_ckpt_meta_get(c, "config");
    if (!kind || strcmp(kind, "train") != 0 || !ctext) {
        kn_ckpt_close(c);
        return kn_err(ctx, KN_ERR_FORMAT, "%s: not a kiln training checkpoint (no training state in its metadata)", path);
    }
    kn_ckpt_record rec;
    memset(&rec, 0, sizeof rec);
    if ((rc = kn_ckpt_record_read(ctx, c, &rec))) {
        kn_ckpt_close(c);
        return rc;
    }
    *s = rec.s;
    int64_t t = rec.optimizer_t, okind = rec.optimizer_kind;
    /* a checkpoint of another model is a bad file (skipped); a changed config of the
     * same model is the user's decision (refused unless allowed) */
    kn_store *store = &R->job->model.store;
    if ((rc = kn_ckpt_load_store(ctx, c, store))) { kn_ckpt_close(c); return rc; }
    if (strcmp(ctext, R->cfg_text) != 0) {
        char diff[1500];
        int nd = kn_config_diff(ctx, ctext, R->cfg_text, diff, sizeof diff);
        if (nd > 0 && !allow_change) {
            kn_ckpt_close(c);
            *config_error = 1;
            return kn_err(ctx, KN_ERR_CONFIG, "the config differs from the one %s was trained with: %s. Resume with the original config, or pass --allow-config-change to continue with the new one",
                          path, diff);
        }
    }
    if (kn_ckpt_checksum(c) == 0)
        fprintf(stderr, "kiln: warning: %s carries no kiln checksum: its tensors and metadata are unverified (was it written by "
                        "another program?)\n", path);
    /* what decides the bits was taken from the newest checkpoint that opens (the run
     * directory's peek); this one may be older, when the newest did not load */
    uint64_t seed;
    if (kn_ckpt_meta_get(c, "seed") && kn_ckpt_meta_u64(ctx, c, "seed", UINT64_MAX, &seed) == KN_OK && seed != R->st->seed)
        fprintf(stderr, "kiln: warning: %s was trained with seed %llu, this run uses seed %llu: training continues correctly but "
                        "with another data order and dropout than an uninterrupted run\n",
                path, (unsigned long long)seed, (unsigned long long)R->st->seed);
    kn_ctx_clear(ctx);
    kn_check_algorithms(kn_ckpt_meta_get(c, "algorithms"), R->job->model.train, path);
    char isa_msg[768];
    if (R->job->model.train->be->check_resume(kn_ckpt_meta_get(c, "isa_path"), path, isa_msg, sizeof isa_msg))
        fprintf(stderr, "kiln: warning: %s\n", isa_msg);
    kn_optimizer *o = R->opt;
    int same_kind = okind == (int64_t)o->c.kind;
    memset(o->m, 0, (size_t)o->n * sizeof(float));
    if (o->v) memset(o->v, 0, (size_t)o->n * sizeof(float));
    o->t = same_kind ? t : 0;
    for (int i = 0; same_kind && i < store->n; i++) {
        const kn_store_entry *e = &store->e[i];
        if (e->is_state) continue;
        for (int k = 0; k < (o->v ? 2 : 1); k++) {
            char nm[160];
            snprintf(nm, sizeof nm, "optimizer.%s.%s", k ? "v" : "m", e->name);
            const float *d;
            kn_shape sh;
            if ((rc = kn_ckpt_get(ctx, c, nm, &d, &sh))) { kn_ckpt_close(c); return rc; }
            if (!kn_shape_eq(&sh, &e->shape)) {
                kn_ckpt_close(c);
                return kn_err(ctx, KN_ERR_FORMAT, "%s: optimizer state '%s' has the wrong shape", path, nm);
            }
            memcpy((k ? o->v : o->m) + e->offset, d, (size_t)e->numel * sizeof(float));
        }
    }
    kn_ckpt_close(c);
    return KN_OK;
}


static void prune(kn_checkpointer *R) {
    kn_ckpt_entry *v;
    int n = kn_list_step_ckpts(R->ckpt_dir, &v);
    for (int i = R->st->ckpt_keep_last; i < n; i++) {
        char p[2600];
        snprintf(p, sizeof p, "%s/%s", R->ckpt_dir, v[i].name);
        unlink(p);
    }
    free(v);
    kn_remove_dead_temps(R->ckpt_dir); /* temporaries of a process killed while writing */
}

/* Save step checkpoint (and prune). Returns rc; on failure with on_error=continue,
 * prints a warning and returns KN_OK. */
static int checkpoint(kn_ctx *ctx, kn_checkpointer *R, const kn_train_state *s, const char *also_as) {
    char p[2600];
    snprintf(p, sizeof p, "%s/step-%09lld.safetensors", R->ckpt_dir, (long long)s->step);
    int rc = save_state(ctx, R, p, s);
    if (!rc && also_as) {
        /* the same bytes under a second name: a hard link, made atomically */
        char q[2600], t[2700];
        snprintf(q, sizeof q, "%s/%s", R->ckpt_dir, also_as);
        snprintf(t, sizeof t, "%s.tmp.%ld", q, (long)getpid());
        unlink(t);
        if (link(p, t) != 0 || rename(t, q) != 0) {
            unlink(t);
            rc = save_state(ctx, R, q, s);
        } else {
            kn_fsync_parent(q);
        }
    }
    if (rc) {
        if (R->st->ckpt_on_error == 1) {
            fprintf(stderr, "kiln: warning: %s; training continues (checkpoint.on_error = continue)\n", kn_ctx_message(ctx));
            kn_ctx_clear(ctx);
            return KN_OK;
        }
        kn_ckpt_entry *v;
        int n = kn_list_step_ckpts(R->ckpt_dir, &v);
        char last[2600] = "none";
        if (n > 0) snprintf(last, sizeof last, "%s/%s", R->ckpt_dir, v[0].name);
        free(v);
        kn_err_prefix(ctx, "checkpoint at step %lld failed: ", (long long)s->step);
        char tail[2800];
        snprintf(tail, sizeof tail, "; training stopped cleanly, earlier checkpoints are intact (newest: %s); free space and run 'kiln resume' (or set checkpoint.on_error = continue)", last);
        size_t l = strlen(ctx->msg);
        kn_strlcpy(ctx->msg + l, tail, sizeof ctx->msg - l);
        return rc;
    }
    prune(R);
    return KN_OK;
}

/* The step a checkpoint records (its metadata, validated), or -1 when it does not open. */
static int64_t file_step(const char *path) {
    int64_t step = -1;
    kn_ctx *c2 = kn_ctx_new();
    kn_ckpt *c = NULL;
    if (c2 && kn_ckpt_open(c2, path, &c) == KN_OK) {
        if (kn_ckpt_meta_int(c2, c, "step", &step) != KN_OK) step = -1;
        kn_ckpt_close(c);
    }
    kn_ctx_free(c2);
    return step;
}

/* best.safetensors is a hard link to the step checkpoint of the lowest validation loss;
 * a kill between writing that checkpoint (which records best_step) and linking leaves it
 * at an older step. Repair it from the resumed state: relink to step-<best_step>. */
static void repair_best(kn_checkpointer *R, const kn_train_state *S, FILE *out) {
    if (S->best_step < 0) return;
    char bp[2600], sp[2600];
    snprintf(bp, sizeof bp, "%s/best.safetensors", R->ckpt_dir);
    snprintf(sp, sizeof sp, "%s/step-%09lld.safetensors", R->ckpt_dir, (long long)S->best_step);
    struct stat bs, ss;
    int have_b = stat(bp, &bs) == 0, have_s = stat(sp, &ss) == 0;
    if (have_b && have_s && bs.st_ino == ss.st_ino && bs.st_dev == ss.st_dev) return;
    long long was = -1;
    if (have_b) {
        was = (long long)file_step(bp);
        if (was == S->best_step) return; /* a copy (the link failed when it was made) */
    }
    if (!have_s) {
        fprintf(stderr, "kiln: warning: %s is %s, but the run's best is step %lld, whose checkpoint is no longer kept; "
                        "it stays as it is\n", bp, have_b ? "from another step" : "missing", (long long)S->best_step);
        return;
    }
    char t[2700];
    snprintf(t, sizeof t, "%s.tmp.%ld", bp, (long)getpid());
    unlink(t);
    if (link(sp, t) != 0 || rename(t, bp) != 0) {
        fprintf(stderr, "kiln: warning: cannot repair %s (link %s: %s)\n", bp, sp, strerror(errno));
        unlink(t);
        return;
    }
    kn_fsync_parent(bp);
    if (out)
        fprintf(out, "repaired %s: it %s; it is now step %lld (the best validation loss)\n", bp,
                was >= 0 ? "was at an older step" : "was missing", (long long)S->best_step);
}

static int repair_epoch(kn_ctx *ctx, kn_checkpointer *R, const kn_train_state *S, FILE *out);

int kn_checkpointer_init(kn_ctx *ctx, kn_checkpointer *ck, const kn_rundir *rd, const kn_settings *st, kn_job *job,
                         kn_optimizer *opt, const char *cfg_text) {
    memset(ck, 0, sizeof *ck);
    ck->ckpt_dir = rd->ckpt_dir;
    ck->run_dir = rd->dir;
    ck->st = st;
    ck->job = job;
    ck->opt = opt;
    ck->cfg_text = cfg_text;
    int rc = kn_mkdirs(ctx, ck->ckpt_dir);
    if (rc) return rc;
    kn_remove_dead_temps(ck->ckpt_dir); /* left by a killed run (we hold the lock) */
    kn_remove_dead_temps(ck->run_dir);
    return KN_OK;
}

int kn_checkpointer_resume(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int allow_change, int resume_only, FILE *out,
                           int *resumed_out) {
    kn_checkpointer *R = ck;
    char path[2600];
    int resumed = 0, rc = KN_OK;
    *resumed_out = 0;
    {
        kn_ckpt_entry *v;
        int n = kn_list_step_ckpts(R->ckpt_dir, &v), nbad = 0;
        for (int i = 0; i <= n && !resumed; i++) {
            /* no step checkpoint yet: the state before the first update */
            if (i == n) {
                snprintf(path, sizeof path, "%s/first.safetensors", R->ckpt_dir);
                if (n > 0 || !kn_file_exists(path)) break;
            } else {
                snprintf(path, sizeof path, "%s/%s", R->ckpt_dir, v[i].name);
            }
            int cfg_err = 0;
            kn_train_state T;
            if (load_state(ctx, R, path, &T, allow_change, &cfg_err) == KN_OK) {
                *S = T;
                resumed = 1;
                if (out && i == n) fprintf(out, "resuming from %s (step 0: no step checkpoint had been written yet)\n", path);
                else if (out) fprintf(out, "resuming from %s (step %lld, epoch %lld)\n", path, (long long)S->step, (long long)S->epoch + 1);
            } else if (cfg_err) {
                free(v);
                rc = KN_ERR_CONFIG;
                return rc;
            } else {
                fprintf(stderr, "kiln: warning: skipping unusable checkpoint: %s\n", kn_ctx_message(ctx));
                kn_ctx_clear(ctx);
                nbad += i < n;
            }
        }
        free(v);
        if (!resumed && nbad > 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "no usable checkpoint in %s: all %d are damaged or from another model (see the warnings above); move them away to start afresh",
                        R->ckpt_dir, nbad);
            return rc;
        }
        if (!resumed && resume_only && out)
            fprintf(out, "no checkpoint in %s yet (the run stopped before its first): starting from step 0 with the run's "
                         "config.ini, which gives the same bits as an uninterrupted run\n", R->ckpt_dir);
    }
    if (resumed) {
        repair_best(R, S, out);
        rc = repair_epoch(ctx, R, S, out);
    }
    *resumed_out = resumed;
    return rc;
}

/* A run killed between the end-of-epoch step checkpoint and its epoch-E copy
 * (checkpoint.keep_epochs) resumes from that step checkpoint, at the very end of epoch
 * E: the state epoch-E must hold. Write it now. */
static int repair_epoch(kn_ctx *ctx, kn_checkpointer *R, const kn_train_state *S, FILE *out) {
    if (!R->st->ckpt_keep_epochs || S->epoch <= 0 || S->batch_in_epoch != 0) return KN_OK;
    char path[2600];
    snprintf(path, sizeof path, "%s/epoch-%04lld.safetensors", R->ckpt_dir, (long long)S->epoch);
    if (kn_file_exists(path)) return KN_OK;
    int rc = save_state(ctx, R, path, S);
    if (!rc && out) fprintf(out, "wrote the missing %s (the run was stopped before it)\n", path);
    return rc;
}

int kn_checkpointer_first(kn_ctx *ctx, kn_checkpointer *ck, const kn_train_state *S) {
    char path[2600];
    snprintf(path, sizeof path, "%s/first.safetensors", ck->ckpt_dir);
    int rc = save_state(ctx, ck, path, S);
    if (rc) {
        size_t l = strlen(ctx->msg);
        snprintf(ctx->msg + l, sizeof ctx->msg - l, "; nothing is lost (no step was trained yet): free space and run 'kiln resume %s'",
                 ck->run_dir);
    }
    return rc;
}

int kn_checkpointer_due(const kn_checkpointer *ck, const kn_train_state *S, int64_t total_steps) {
    const kn_settings *st = ck->st;
    int end_of_epoch = S->batch_in_epoch == kn_loader_batches(ck->job->train_loader);
    int due = (st->ckpt_every_steps > 0 && S->step % st->ckpt_every_steps == 0) ||
              (st->ckpt_every_seconds > 0 && kn_now_seconds() - ck->last_t >= st->ckpt_every_seconds);
    return due && !end_of_epoch && S->step < total_steps;
}

int kn_checkpointer_save(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int best) {
    S->metrics_bytes = kn_sinks_mark(ck->sinks);
    int rc = checkpoint(ctx, ck, S, best ? "best.safetensors" : NULL);
    ck->last_t = kn_now_seconds();
    return rc;
}

int kn_checkpointer_epoch(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, int best) {
    int rc = kn_checkpointer_save(ctx, ck, S, best);
    if (rc) return rc;
    if (ck->st->ckpt_keep_epochs) {
        char path[2600];
        snprintf(path, sizeof path, "%s/epoch-%04lld.safetensors", ck->ckpt_dir, (long long)S->epoch);
        if ((rc = save_state(ctx, ck, path, S))) return rc;
    }
    ck->last_t = kn_now_seconds();
    return KN_OK;
}

int kn_checkpointer_load_best(kn_ctx *ctx, kn_checkpointer *ck) {
    char bp[2600];
    snprintf(bp, sizeof bp, "%s/best.safetensors", ck->ckpt_dir);
    kn_ckpt *bc = NULL;
    int rc = kn_ckpt_open(ctx, bp, &bc);
    if (rc) return rc;
    rc = kn_ckpt_load_store(ctx, bc, &ck->job->model.store);
    kn_ckpt_close(bc);
    return rc;
}

int kn_checkpointer_save_model(kn_ctx *ctx, kn_checkpointer *ck, int64_t step) {
    char steps_s[32], mean_s[64], std_s[64], path[2600];
    snprintf(steps_s, sizeof steps_s, "%lld", (long long)step);
    snprintf(mean_s, sizeof mean_s, "%.17g", (double)ck->job->mean);
    snprintf(std_s, sizeof std_s, "%.17g", (double)ck->job->std);
    kn_ckpt_meta meta[7] = {{"config", ck->cfg_text}, {"step", steps_s}, {"kind", "model"}, {"data_mean", mean_s}, {"data_std", std_s}};
    int nmeta = 5;
    if (ck->job->norm_text) meta[nmeta++] = (kn_ckpt_meta){"data_norm", ck->job->norm_text};
    if (ck->job->classes_text) meta[nmeta++] = (kn_ckpt_meta){"data_classes", ck->job->classes_text};
    snprintf(path, sizeof path, "%s/model.safetensors", ck->run_dir);
    return kn_ckpt_save(ctx, path, &ck->job->model.store, NULL, 0, meta, nmeta);
}

/* After a guard rollback: the step and epoch checkpoints past the restored state belong
 * to the abandoned trajectory and must never be resumed from. They go first (a kill then
 * resumes from an older checkpoint of the kept history and meets the failure again);
 * then best.safetensors, when it is from the abandoned part; then a step checkpoint of
 * the restored state, with its smaller learning rate. */
int kn_checkpointer_rollback(kn_ctx *ctx, kn_checkpointer *ck, kn_train_state *S, FILE *out) {
    kn_checkpointer *R = ck;
    char p[2600];
    kn_ckpt_entry *v;
    int n = kn_list_step_ckpts(R->ckpt_dir, &v), removed = 0;
    for (int i = 0; i < n; i++) {
        if (v[i].step <= S->step) continue;
        snprintf(p, sizeof p, "%s/%s", R->ckpt_dir, v[i].name);
        removed += unlink(p) == 0;
    }
    free(v);
    for (int64_t e = S->epoch + 1; R->st->ckpt_keep_epochs && e <= S->epoch + 1 + R->st->epochs; e++) {
        snprintf(p, sizeof p, "%s/epoch-%04lld.safetensors", R->ckpt_dir, (long long)e);
        removed += unlink(p) == 0;
    }
    snprintf(p, sizeof p, "%s/best.safetensors", R->ckpt_dir);
    int64_t bstep = kn_file_exists(p) ? file_step(p) : -1;
    if (bstep > S->step || (bstep < 0 && kn_file_exists(p))) {
        unlink(p);
        removed++;
    }
    if (removed) kn_fsync_parent(p);
    if (S->best_step >= 0 && !kn_file_exists(p)) {
        char sp[2600];
        snprintf(sp, sizeof sp, "%s/step-%09lld.safetensors", R->ckpt_dir, (long long)S->best_step);
        if (kn_file_exists(sp)) {
            repair_best(R, S, NULL);
        } else {
            fprintf(stderr, "kiln: warning: guard rollback: best.safetensors was from the abandoned steps and the best before "
                            "them (step %lld) is no longer kept; the best is chosen afresh from the next validation\n",
                    (long long)S->best_step);
            S->best_step = -1;
            S->best_val = INFINITY;
            S->bad_epochs = 0;
        }
    }
    int rc = kn_checkpointer_save(ctx, R, S, 0);
    if (!rc && out && removed)
        fprintf(out, "guard rollback: removed %d checkpoint(s) of the abandoned steps; step-%09lld holds the restored state\n",
                removed, (long long)S->step);
    return rc;
}
