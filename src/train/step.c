/* kiln — the training step and gradient accumulation (step.h). */
#include "train/step.h"

#include <stdlib.h>
#include <string.h>

#include "train/health.h"

float kn_trainer_loss(const kn_model *m) { return kn_ptr(m->train, m->loss)[0]; }

/* forward + backward of what the train graph's inputs hold */
static float forward_backward(kn_model *m, kn_rt *rt, kn_step_times *tm) {
    double t0 = kn_now_seconds();
    kn_g_forward(m->train, rt);
    double t1 = kn_now_seconds();
    kn_g_backward(m->train, rt, NULL);
    if (tm) {
        tm->forward += t1 - t0;
        tm->backward += kn_now_seconds() - t1;
    }
    return kn_trainer_loss(m);
}

/* ---------------- gradient accumulation ---------------- */
int kn_accum_init(kn_ctx *ctx, kn_accum *a, kn_model *m, int64_t batch) {
    memset(a, 0, sizeof *a);
    a->batch = batch;
    a->micro = m->batch;
    if (a->micro <= 0 || batch % a->micro)
        return kn_err(ctx, KN_ERR_INTERNAL, "micro-batch %lld does not divide the batch %lld", (long long)a->micro,
                      (long long)batch);
    a->steps = batch / a->micro;
    a->sample_floats = kn_numel(m->train, m->x_train) / a->micro;
    if (a->steps == 1) {
        a->x = kn_ptr(m->train, m->x_train);
        return KN_OK;
    }
    a->x = kn_aligned_alloc((size_t)(batch * a->sample_floats) * sizeof(float));
    a->gsum = kn_aligned_alloc((size_t)m->store.nparam * sizeof(float));
    if (!a->x || !a->gsum) {
        kn_accum_free(a);
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the gradient accumulation buffers");
    }
    return KN_OK;
}

void kn_accum_load(kn_accum *a, kn_model *m, const int32_t *y, int64_t i) {
    if (a->steps > 1)
        memcpy(kn_ptr(m->train, m->x_train), a->x + i * a->micro * a->sample_floats,
               (size_t)(a->micro * a->sample_floats) * sizeof(float));
    /* targets are 4-byte elements, target_numel per sample (labels: 1) */
    kn_model_set_targets(m, y + i * a->micro * (m->target_numel > 0 ? m->target_numel : 1));
}

static float accum_step(kn_accum *a, kn_model *m, kn_rt *rt, const int32_t *y, kn_step_times *tm) {
    if (a->steps == 1) {
        kn_model_set_targets(m, y);
        return forward_backward(m, rt, tm);
    }
    int64_t step = rt->step, n = m->store.nparam;
    float *g = m->store.grad, *s = a->gsum;
    double loss = 0;
    for (int64_t i = 0; i < a->steps; i++) {
        kn_accum_load(a, m, y, i);
        rt->step = step * a->steps + i;
        loss += forward_backward(m, rt, tm);
        /* small models run these serially: a one-thread parallel region would make
         * libgomp allocate a team descriptor */
        if (i == 0) memcpy(s, g, (size_t)n * sizeof(float));
        else if (n <= 65536)
            for (int64_t k = 0; k < n; k++) s[k] += g[k];
        else {
#pragma omp parallel for schedule(static)
            for (int64_t k = 0; k < n; k++) s[k] += g[k];
        }
    }
    const float inv = 1.0f / (float)a->steps;
    if (n <= 65536)
        for (int64_t k = 0; k < n; k++) g[k] = s[k] * inv;
    else {
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < n; k++) g[k] = s[k] * inv;
    }
    rt->step = step;
    return (float)(loss / (double)a->steps);
}

float kn_accum_step(kn_accum *a, kn_model *m, kn_rt *rt, const int32_t *y) { return accum_step(a, m, rt, y, NULL); }

void kn_accum_free(kn_accum *a) {
    if (a->steps > 1) kn_aligned_free(a->x);
    kn_aligned_free(a->gsum);
    memset(a, 0, sizeof *a);
}

/* ---------------- the step ---------------- */
int kn_trainer_init(kn_ctx *ctx, kn_trainer *t, kn_model *m, kn_optimizer *opt, int64_t batch, uint64_t seed, double clip_norm) {
    memset(t, 0, sizeof *t);
    t->m = m;
    t->opt = opt;
    t->clip_norm = clip_norm;
    t->rt.seed = seed;
    /* the loader fills a whole batch: the graph input, or with micro-batches a buffer
     * that the step feeds to the graph one micro-batch at a time */
    int rc = kn_accum_init(ctx, &t->acc, m, batch);
    if (rc) return rc;
    t->y = malloc((size_t)(batch * (m->target_numel > 0 ? m->target_numel : 1)) * sizeof(int32_t)); /* labels or float targets */
    if (!t->y) {
        kn_accum_free(&t->acc);
        return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    }
    return KN_OK;
}

void kn_trainer_free(kn_trainer *t) {
    if (t->y) kn_accum_free(&t->acc);
    free(t->y);
    t->y = NULL;
}

int kn_trainer_next_batch(kn_trainer *t, kn_loader *L) {
    double t0 = kn_now_seconds();
    int n = kn_loader_next(L, t->acc.x, t->y);
    memset(&t->last, 0, sizeof t->last);
    t->last.data = kn_now_seconds() - t0;
    t->total.data += t->last.data;
    return n;
}

static void add_times(kn_step_times *to, const kn_step_times *d) {
    to->forward += d->forward;
    to->backward += d->backward;
    to->optimizer += d->optimizer;
}

int kn_trainer_step(kn_trainer *t, int64_t step, double lr, kn_health *health) {
    kn_model *m = t->m;
    kn_store *st = &m->store;
    t->rt.step = step;
    t->health_step = health != NULL;
    if (health) {
        double t0 = kn_now_seconds();
        kn_model_set_targets(m, t->y);
        kn_health_forward_backward(health, m, &t->rt);
        t->loss = kn_trainer_loss(m);
        t->last.forward += kn_now_seconds() - t0;
    } else {
        t->loss = accum_step(&t->acc, m, &t->rt, t->y, &t->last);
    }
    if (t->allreduce) t->allreduce(t->allreduce_arg, st->grad, st->nparam);
    t->gnorm = 0;
    if (t->gate || t->clip_norm > 0) t->gnorm = kn_global_norm(st->grad, st->nparam);
    if (t->gate) {
        int a = t->gate(t->gate_arg, t);
        if (a != KN_STEP_UPDATED) {
            add_times(&t->total, &t->last);
            return a;
        }
    }
    double t0 = kn_now_seconds();
    if (t->clip_norm > 0) kn_clip_grad_norm(st->grad, st->nparam, t->gnorm, t->clip_norm);
    kn_opt_step(t->opt, st->param, st->grad, lr);
    t->last.optimizer += kn_now_seconds() - t0;
    add_times(&t->total, &t->last);
    t->steps++;
    return KN_STEP_UPDATED;
}
