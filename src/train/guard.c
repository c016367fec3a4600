/* kiln — non-finite localisation by replay, and the gradient spike detector. */
#include "train/guard.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kn_all_finite(const float *x, int64_t n) {
    int ok = 1;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (n > 65536)
    for (int64_t i = 0; i < n; i++) ok = ok && isfinite(x[i]);
    return ok;
}

void kn_tensor_stats_of(const float *x, int64_t n, const char *name, kn_tensor_stats *s) {
    memset(s, 0, sizeof *s);
    kn_strlcpy(s->name, name, sizeof s->name);
    s->count = n;
    double mn = INFINITY, mx = -INFINITY, sum = 0;
    int64_t good = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) { s->nonfinite++; continue; }
        if (v < mn) mn = v;
        if (v > mx) mx = v;
        sum += v;
        good++;
    }
    s->min = good ? mn : NAN;
    s->max = good ? mx : NAN;
    s->mean = good ? sum / (double)good : NAN;
}

static int64_t count_bad(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 0; i < n; i++) b += !isfinite(x[i]);
    return b;
}

static void add_stats(kn_graph *g, kn_diag_report *r, int vid, const char *prefix) {
    if (vid < 0 || r->nin >= KN_MAX_IN + KN_MAX_OUT || g->v[vid].dtype != KN_F32) return;
    char nm[96];
    snprintf(nm, sizeof nm, "%s%.80s", prefix, g->v[vid].name);
    kn_tensor_stats_of(kn_ptr(g, vid), kn_numel(g, vid), nm, &r->in[r->nin++]);
}

static void found(kn_graph *g, kn_diag_report *r, const kn_node *n, int backward, int vid, int64_t bad) {
    r->found = 1;
    r->backward = backward;
    kn_strlcpy(r->op, n->op->name, sizeof r->op);
    kn_strlcpy(r->layer, n->layer, sizeof r->layer);
    kn_strlcpy(r->tensor, g->v[vid].name, sizeof r->tensor);
    r->bad = bad;
    r->total = kn_numel(g, vid);
}

void kn_diagnose(kn_graph *g, kn_rt *rt, kn_diag_report *r) {
    int64_t step = r->step;
    memset(r, 0, sizeof *r);
    r->step = step;
    for (int s = 0; s < g->nfwd; s++) {
        /* stats of the inputs before the op runs (its outputs may reuse their memory
         * only after their last use, which is at or after this step) */
        const kn_node *n = &g->n[g->steps[s].node];
        kn_diag_report tmp = *r;
        tmp.nin = 0;
        for (int i = 0; i < n->nin; i++) add_stats(g, &tmp, n->in[i], "");
        kn_g_run_steps(g, rt, s, s + 1);
        for (int j = 0; j < n->nout; j++) {
            int vid = n->out[j];
            if (g->v[vid].dtype != KN_F32) continue;
            int64_t bad = count_bad(kn_ptr(g, vid), kn_numel(g, vid));
            if (bad) {
                *r = tmp;
                found(g, r, n, 0, vid, bad);
                return;
            }
        }
    }
    if (g->loss < 0 || g->v[g->loss].grad < 0) return;
    kn_value *lg = &g->v[g->v[g->loss].grad];
    for (int64_t i = 0; i < kn_shape_numel(&lg->shape); i++) lg->data[i] = 1.0f;
    for (int s = g->nfwd; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        kn_diag_report tmp = *r;
        tmp.nin = 0;
        const kn_node *n = st->kind == KN_STEP_ZERO ? NULL : &g->n[st->node];
        if (n) {
            for (int j = 0; j < n->nout; j++) add_stats(g, &tmp, g->v[n->out[j]].grad, "");
            for (int i = 0; i < n->nin; i++)
                if (n->op->bwd_reads_in >> i & 1u) add_stats(g, &tmp, n->in[i], "");
        }
        kn_g_run_steps(g, rt, s, s + 1);
        if (!n) continue;
        for (int i = 0; i < n->nin; i++) {
            if (st->din[i] < 0) continue;
            int gid = g->v[n->in[i]].grad;
            int64_t bad = count_bad(kn_ptr(g, st->din[i]), kn_numel(g, st->din[i]));
            if (!bad && gid >= 0) bad = count_bad(kn_ptr(g, gid), kn_numel(g, gid));
            if (bad) {
                *r = tmp;
                found(g, r, n, 1, gid >= 0 ? gid : st->din[i], bad);
                return;
            }
        }
    }
}

void kn_diag_format(const kn_diag_report *r, char *buf, size_t n) {
    if (!r->found) {
        snprintf(buf, n,
                 "step %lld: the loss or the gradient norm is not finite, but replaying the step op by op found no "
                 "non-finite tensor (the failure is in the optimizer update or not reproducible)",
                 (long long)r->step);
        return;
    }
    size_t k = (size_t)snprintf(buf, n,
                                "step %lld: first non-finite value in the %s of op '%s' in layer '%s': tensor '%s' has "
                                "%lld of %lld values NaN or infinite. Its inputs:",
                                (long long)r->step, r->backward ? "backward" : "forward", r->op, r->layer, r->tensor,
                                (long long)r->bad, (long long)r->total);
    for (int i = 0; i < r->nin && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s '%s' min %.4g max %.4g mean %.4g (%lld non-finite of %lld)",
                              i ? ";" : "", r->in[i].name, r->in[i].min, r->in[i].max, r->in[i].mean,
                              (long long)r->in[i].nonfinite, (long long)r->in[i].count);
}

void kn_spike_add(kn_spike *s, double x) {
    s->v[s->pos] = x;
    s->pos = (s->pos + 1) % KN_SPIKE_WINDOW;
    if (s->n < KN_SPIKE_WINDOW) s->n++;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double kn_spike_median(const kn_spike *s) {
    if (s->n == 0) return NAN;
    double t[KN_SPIKE_WINDOW];
    memcpy(t, s->v, (size_t)s->n * sizeof(double));
    qsort(t, (size_t)s->n, sizeof(double), cmp_d);
    return s->n % 2 ? t[s->n / 2] : 0.5 * (t[s->n / 2 - 1] + t[s->n / 2]);
}

/* ---------------- collapse ---------------- */
void kn_collapse_init(kn_collapse *c, double chance, int64_t need) {
    memset(c, 0, sizeof *c);
    c->chance = chance;
    c->need = need > 0 ? need : 1;
    c->last_healthy = -1;
    c->first_step = -1;
}

void kn_collapse_add_loss(kn_collapse *c, double loss) {
    c->loss_sum += loss;
    c->loss_n++;
}

void kn_collapse_reset(kn_collapse *c, int64_t step) {
    c->streak = 0;
    c->first_step = -1;
    c->last_healthy = step;
    c->loss_sum = 0;
    c->loss_n = 0;
    c->chance_streak = 0;
}

static int vanished(const kn_health_layer *p) {
    double w = p->weight_norm > 0 ? p->weight_norm : 0;
    return !(p->grad_norm > KN_COLLAPSE_VANISH * w) || (w == 0 && p->grad_norm == 0);
}

int kn_collapse_check(kn_collapse *c, const kn_health *h, int64_t step, double loss, char *msg, size_t n) {
    if (msg && n) msg[0] = 0;
    double mean = (c->loss_sum + loss) / (double)(c->loss_n + 1);
    c->loss_sum = 0;
    c->loss_n = 0;
    int nl = kn_health_nlayers(h);
    int at_chance = isfinite(c->chance) && c->chance > 0 && isfinite(mean) && mean >= KN_COLLAPSE_CHANCE * c->chance;
    /* layers a gradient reaches by design, in forward order */
    int nflow = 0, last = -1, nvan = 0, dead = -1, dead_n = 0, most = -1;
    double most_dead = 0;
    for (int i = 0; i < nl; i++) {
        const kn_health_layer *p = kn_health_get_layer(h, i);
        if (p->nparams > 0 && !p->no_flow) {
            nflow++;
            last = i;
        }
    }
    for (int i = 0; i < nl; i++) {
        const kn_health_layer *p = kn_health_get_layer(h, i);
        if (p->nparams > 0 && !p->no_flow && i != last) nvan += vanished(p);
        double dfrac = isfinite(p->dead_sustained) && p->dead_sustained > p->dead_relu ? p->dead_sustained : p->dead_relu;
        if (isfinite(dfrac) && dfrac > most_dead) { most_dead = dfrac; most = i; }
        if (!(p->dead_relu >= 1.0)) continue;
        /* an entirely dead layer that cuts the gradient to every layer feeding it */
        int cut = 1, nfeed = 0;
        for (int a = 0; a <= i && cut; a++) {
            const kn_health_layer *q = kn_health_get_layer(h, a);
            if (q->nparams <= 0 || q->no_flow || !kn_health_feeds(h, a, i)) continue;
            nfeed++;
            cut = vanished(q);
        }
        if (cut && nfeed > 0) { dead = i; dead_n = nfeed; }
    }
    int everywhere = nflow >= 2 && nvan == nflow - 1;
    c->chance_streak = at_chance ? c->chance_streak + 1 : 0;
    int nearly = most >= 0 && most_dead >= KN_COLLAPSE_DEAD;
    int stuck = nearly && c->chance_streak >= KN_COLLAPSE_STUCK;
    int sick = at_chance && (dead >= 0 || everywhere || nearly);
    int collapsed = at_chance && (dead >= 0 || everywhere || stuck);
    if (!sick) c->last_healthy = step;
    if (!collapsed) {
        c->streak = 0;
        c->first_step = -1;
        return 0;
    }
    if (c->streak++ == 0) c->first_step = step;
    if (c->streak < c->need) return 0;
    if (msg && n) {
        size_t k = (size_t)snprintf(msg, n,
                                    "step %lld: the run has collapsed: for %lld health checks (since step %lld) the training loss "
                                    "has been no better than chance (mean %.4f since the last check; a constant prediction scores %.4f) ",
                                    (long long)step, (long long)c->streak, (long long)c->first_step, mean, c->chance);
        if (k < n && dead >= 0) {
            const kn_health_layer *p = kn_health_get_layer(h, dead);
            k += (size_t)snprintf(msg + k, n - k,
                                  "and layer '%s' is entirely dead (every one of its ReLU units gives 0 for every sample), so no "
                                  "gradient reaches the %d layer(s) with parameters that feed it",
                                  p->layer, dead_n);
        } else if (k < n && everywhere) {
            k += (size_t)snprintf(msg + k, n - k, "and the gradient has vanished in every layer with parameters but the last ('%s')",
                                  kn_health_get_layer(h, last)->layer);
        } else if (k < n) {
            k += (size_t)snprintf(msg + k, n - k,
                                  "for %lld checks in a row, and %.1f%% of the ReLU units of layer '%s' are dead (zero for every sample)",
                                  (long long)c->chance_streak, 100.0 * most_dead, kn_health_get_layer(h, most)->layer);
        }
        if (k < n) snprintf(msg + k, n - k, ": it cannot recover by itself");
    }
    return 1;
}

double kn_label_entropy_i32(const int32_t *labels, const int64_t *idx, int64_t n, int nclasses) {
    if (!labels || n <= 0 || nclasses <= 0) return NAN;
    int64_t *cnt = calloc((size_t)nclasses, sizeof *cnt);
    if (!cnt) return NAN;
    for (int64_t i = 0; i < n; i++) {
        const int32_t c = labels[idx ? idx[i] : i];
        if (c >= 0 && c < nclasses) cnt[c]++;
    }
    double e = 0;
    for (int k = 0; k < nclasses; k++)
        if (cnt[k]) {
            double p = (double)cnt[k] / (double)n;
            e -= p * log(p);
        }
    free(cnt);
    return e;
}

double kn_label_entropy(const uint8_t *labels, const int64_t *idx, int64_t n, int nclasses) {
    if (!labels || n <= 0 || nclasses <= 0 || nclasses > 256) return NAN;
    int64_t cnt[256] = {0};
    for (int64_t i = 0; i < n; i++) cnt[labels[idx ? idx[i] : i]]++;
    double e = 0;
    for (int k = 0; k < nclasses; k++)
        if (cnt[k]) {
            double p = (double)cnt[k] / (double)n;
            e -= p * log(p);
        }
    return e;
}
