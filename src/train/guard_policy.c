/* kiln — the guard's policies (guard_policy.h). */
#include "train/guard_policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int snap_alloc(kn_snapshot *sn, int64_t nparam, int64_t nstate, int adam) {
    sn->param = kn_aligned_alloc((size_t)nparam * sizeof(float));
    sn->state = kn_aligned_alloc((size_t)nstate * sizeof(float));
    sn->m = kn_aligned_alloc((size_t)nparam * sizeof(float));
    sn->v = adam ? kn_aligned_alloc((size_t)nparam * sizeof(float)) : NULL;
    return sn->param && sn->state && sn->m && (!adam || sn->v);
}

static void snap_free(kn_snapshot *sn) {
    kn_aligned_free(sn->param);
    kn_aligned_free(sn->state);
    kn_aligned_free(sn->m);
    kn_aligned_free(sn->v);
}

static void snapshot_take(kn_guard_policy *G, kn_snapshot *sn) {
    kn_model *m = G->m;
    kn_optimizer *o = G->o;
    memcpy(sn->param, m->store.param, (size_t)G->nparam * sizeof(float));
    memcpy(sn->state, m->store.state, (size_t)G->nstate * sizeof(float));
    memcpy(sn->m, o->m, (size_t)G->nparam * sizeof(float));
    if (o->v) memcpy(sn->v, o->v, (size_t)G->nparam * sizeof(float));
    sn->t = o->t;
    sn->S = *G->S;
    sn->valid = 1;
}

static void snapshot_restore(kn_guard_policy *G, const kn_snapshot *sn) {
    kn_model *m = G->m;
    kn_optimizer *o = G->o;
    memcpy(m->store.param, sn->param, (size_t)G->nparam * sizeof(float));
    memcpy(m->store.state, sn->state, (size_t)G->nstate * sizeof(float));
    memcpy(o->m, sn->m, (size_t)G->nparam * sizeof(float));
    if (o->v) memcpy(o->v, sn->v, (size_t)G->nparam * sizeof(float));
    o->t = sn->t;
    *G->S = sn->S;
}

static void snapshot_copy(kn_guard_policy *G, kn_snapshot *dst, const kn_snapshot *src) {
    memcpy(dst->param, src->param, (size_t)G->nparam * sizeof(float));
    memcpy(dst->state, src->state, (size_t)G->nstate * sizeof(float));
    memcpy(dst->m, src->m, (size_t)G->nparam * sizeof(float));
    if (src->v) memcpy(dst->v, src->v, (size_t)G->nparam * sizeof(float));
    dst->t = src->t;
    dst->S = src->S;
    dst->valid = src->valid;
}

int kn_guard_policy_create(kn_ctx *ctx, const kn_settings *st, kn_model *m, kn_optimizer *o, kn_loader *loader,
                           kn_health *health, kn_sinks *sinks, const kn_progress *progress, const char *ckpt_dir,
                           kn_train_state *S, double chance, kn_guard_policy **out) {
    *out = NULL;
    if (!st->guard_enabled) return KN_OK;
    kn_guard_policy *G = calloc(1, sizeof *G);
    if (!G) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    G->ctx = ctx;
    G->st = st;
    G->m = m;
    G->o = o;
    G->loader = loader;
    G->health = health;
    G->sinks = sinks;
    G->progress = progress;
    G->ckpt_dir = ckpt_dir;
    G->S = S;
    G->nparam = m->store.nparam;
    G->nstate = m->store.nstate;
    kn_collapse_init(&G->collapse, chance, st->guard_collapse_checks);
    /* the BatchNorm statistics before the step (for the replay), and in-memory snapshots
     * of the whole training state (for rollback) */
    G->state_before = kn_aligned_alloc((size_t)G->nstate * sizeof(float));
    int ok = snap_alloc(&G->anchor, G->nparam, G->nstate, o->v != NULL) && snap_alloc(&G->recent, G->nparam, G->nstate, o->v != NULL);
    if (!G->state_before || !ok) {
        double mib = (double)G->nparam * 24.0 / 1048576.0;
        kn_guard_policy_free(G);
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the guard's snapshots (%.1f MiB); set guard.enabled = false", mib);
    }
    *out = G;
    return KN_OK;
}

void kn_guard_policy_free(kn_guard_policy *G) {
    if (!G) return;
    kn_aligned_free(G->state_before);
    snap_free(&G->anchor);
    snap_free(&G->recent);
    free(G);
}

void kn_guard_policy_begin(kn_guard_policy *G) {
    G->S->metrics_bytes = kn_sinks_mark(G->sinks);
    snapshot_take(G, &G->anchor);
}

void kn_guard_policy_before_step(kn_guard_policy *G) {
    memcpy(G->state_before, G->m->store.state, (size_t)G->m->store.nstate * sizeof(float));
}

static void guard_event(kn_sinks *sinks, int64_t step, const char *kind, const char *action, const kn_diag_report *rep,
                        const char *msg, double lr_scale) {
    kn_record r;
    kn_rec_begin(&r, "guard");
    kn_rec_int(&r, "step", step);
    kn_rec_str(&r, "kind", kind);
    kn_rec_str(&r, "action", action);
    kn_rec_num(&r, "lr_scale", KN_MV_G9, lr_scale);
    if (rep && rep->found) {
        kn_rec_str(&r, "op", rep->op);
        kn_rec_str(&r, "layer", rep->layer);
        kn_rec_str(&r, "tensor", rep->tensor);
        kn_rec_str(&r, "phase", rep->backward ? "backward" : "forward");
    }
    kn_rec_str(&r, "message", msg);
    kn_sinks_write(sinks, &r);
    kn_sinks_flush(sinks);
}

/* A failed step: explain it, then skip, roll back or stop. */
static int on_failure(kn_guard_policy *G, kn_trainer *t, int nonfinite, int collapsed, double gnorm, double med_now,
                      const char *cmsg) {
    const kn_settings *st = G->st;
    kn_train_state *S = G->S;
    kn_model *m = G->m;
    kn_collapse *C = &G->collapse;
    const char *gkind = nonfinite ? "nonfinite" : !collapsed ? "exploding" : "collapse";
    kn_diag_report rep;
    memset(&rep, 0, sizeof rep);
    rep.step = S->step;
    char msg[3000];
    if (nonfinite) {
        /* explain: replay this step op by op from the state before it; the same batch
         * again: its order is a function of (seed, epoch), so the loader can produce it
         * again (and then continues after it) */
        memcpy(m->store.state, G->state_before, (size_t)m->store.nstate * sizeof(float));
        kn_loader_start_epoch(G->loader, S->epoch, S->batch_in_epoch);
        kn_loader_next(G->loader, t->acc.x, t->y);
        kn_accum_load(&t->acc, m, t->y, 0); /* with micro-batches: the first one */
        kn_diagnose(m->train, &t->rt, &rep);
        kn_diag_format(&rep, msg, sizeof msg);
    } else if (collapsed) {
        snprintf(msg, sizeof msg, "%s; %s", cmsg,
                 C->last_healthy < 0 ? "no health check of this run was healthy, so there is no good state to return to and a "
                                       "smaller learning rate cannot help: change the initialisation, use leaky_relu, BatchNorm "
                                       "or residual connections"
                                     : "it followed a healthy stretch, so the updates were too large for the network: kiln rolls "
                                       "back to a state before the collapse with a smaller learning rate");
    } else {
        snprintf(msg, sizeof msg,
                 "step %lld: exploding gradients: the global gradient norm %.4g is %.0fx its running median %.4g "
                 "(guard.explode_factor = %g); NaN usually follows",
                 (long long)S->step, gnorm, gnorm / med_now, med_now, st->guard_explode_factor);
    }
    memcpy(m->store.state, G->state_before, (size_t)m->store.nstate * sizeof(float));
    S->guard_events++;
    const char *action = st->guard_policy == 0 ? "skip" : st->guard_policy == 1 ? "rollback" : "stop";
    if (st->guard_policy == 1 && G->retries >= st->guard_max_retries) action = "stop";
    if (collapsed && st->guard_policy == 1 && C->last_healthy < 0) action = "stop";
    kn_progress_break(G->progress);
    fprintf(stderr, "kiln: guard: %s\n", msg);
    if (!strcmp(action, "stop")) {
        guard_event(G->sinks, S->step, gkind, action, &rep, msg, S->lr_scale);
        kn_err(G->ctx, KN_ERR_INVALID, "training stopped by the %s guard (%s): %s; the last checkpoint in %s is good",
               collapsed ? "collapse" : "non-finite",
               st->guard_policy == 2 ? "guard.policy = stop"
               : collapsed && C->last_healthy < 0 ? "nothing healthy to roll back to"
                                                  : "retry limit guard.max_retries reached after rollbacks",
               msg, G->ckpt_dir);
        return KN_STEP_STOP;
    }
    if (t->health_step) kn_health_discard(G->health);
    if (!strcmp(action, "skip")) {
        fprintf(stderr, "kiln: guard: skipping this batch (no update)\n");
        guard_event(G->sinks, S->step, gkind, action, &rep, msg, S->lr_scale);
        S->step++;
        S->batch_in_epoch++;
        return KN_STEP_SKIPPED;
    }
    /* rollback, with a smaller learning rate: to the anchor if the failure came soon
     * after it, else to the recent snapshot (the new anchor) */
    int64_t bad_step = S->step, events = S->guard_events;
    double scale = S->lr_scale * st->guard_lr_factor;
    if (G->recent.valid && S->step - G->anchor.S.step >= st->guard_trust_steps && (!collapsed || G->recent.S.step <= C->last_healthy)) {
        snapshot_copy(G, &G->anchor, &G->recent);
        G->retries = 0;
    }
    snapshot_restore(G, &G->anchor);
    G->recent.valid = 0;
    S->lr_scale = scale;
    S->guard_events = events;
    G->retries++;
    kn_sinks_rewind(G->sinks, S->metrics_bytes);
    fprintf(stderr, "kiln: guard: rolled back from step %lld to step %lld; learning rate x%g (retry %lld of %lld)\n",
            (long long)bad_step, (long long)S->step, S->lr_scale, (long long)G->retries, (long long)st->guard_max_retries);
    guard_event(G->sinks, bad_step, gkind, action, &rep, msg, S->lr_scale);
    S->metrics_bytes = kn_sinks_mark(G->sinks);
    /* the anchor now carries the new learning rate and the event */
    G->anchor.S.metrics_bytes = S->metrics_bytes;
    G->anchor.S.lr_scale = S->lr_scale;
    G->anchor.S.guard_events = S->guard_events;
    G->spike.n = G->spike.pos = 0; /* the median restarts with the new learning rate */
    G->spikes_since_snapshot = 0;
    kn_collapse_reset(C, S->step);
    kn_health_reset_history(G->health);
    return KN_STEP_ROLLBACK;
}

int kn_guard_policy_gate(void *arg, kn_trainer *t) {
    kn_guard_policy *G = arg;
    const kn_settings *st = G->st;
    kn_train_state *S = G->S;
    float loss = t->loss;
    double gnorm = t->gnorm;
    int health_now = t->health_step;
    int nonfinite = !isfinite(loss) || !isfinite(gnorm);
    double med_now = kn_spike_median(&G->spike);
    int exploding = !nonfinite && st->guard_explode_factor > 0 && G->spike.n >= 16 && gnorm > st->guard_explode_factor * med_now;
    char cmsg[1024];
    int collapsed = !nonfinite && !exploding && health_now && kn_collapse_check(&G->collapse, G->health, S->step, loss, cmsg, sizeof cmsg);
    if (!health_now) kn_collapse_add_loss(&G->collapse, loss);
    if (nonfinite || exploding || collapsed) return on_failure(G, t, nonfinite, collapsed, gnorm, med_now, cmsg);
    double med = kn_spike_median(&G->spike);
    if (G->spike.n >= 16 && gnorm > st->guard_spike_factor * med) {
        char msg[512];
        double limit = st->guard_spike_factor * med;
        snprintf(msg, sizeof msg, "step %lld: gradient norm %.4g is %.1fx the running median %.4g%s", (long long)S->step, gnorm,
                 gnorm / med, med, st->guard_auto_clip ? "; clipped to the limit" : " (guard.auto_clip = true would clip it)");
        fprintf(stderr, "%skiln: warning: %s\n", kn_progress_lead(G->progress), msg);
        guard_event(G->sinks, S->step, "grad_spike", st->guard_auto_clip ? "clip" : "warn", NULL, msg, S->lr_scale);
        G->spikes_since_snapshot++;
        if (st->guard_auto_clip) gnorm = kn_clip_grad_norm(G->m->store.grad, G->m->store.nparam, gnorm, limit);
    }
    kn_spike_add(&G->spike, gnorm);
    t->gnorm = gnorm;
    return KN_STEP_UPDATED;
}

/* no snapshot after a gradient spike until the next rollback: a rollback lands before
 * the first sign of the instability, not in its aftermath */
void kn_guard_policy_after_update(kn_guard_policy *G) {
    if (G->S->step % G->st->guard_snapshot_every == 0 && G->spikes_since_snapshot == 0) {
        G->S->metrics_bytes = kn_sinks_mark(G->sinks);
        snapshot_take(G, &G->recent);
    }
}

void kn_guard_policy_after_epoch(kn_guard_policy *G) {
    if (G->spikes_since_snapshot == 0) snapshot_take(G, &G->recent);
}
