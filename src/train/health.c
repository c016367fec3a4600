/* kiln — training health: per-layer statistics on every K-th step, warnings, and the
 * `kiln health RUN_DIR` report. See health.h.
 *
 * Layers are config sections. A layer's output is out[0] of the LAST forward node whose
 * `layer` is the section name (a linear layer with `activation = relu` emits linear +
 * relu; its output is the relu's). The loss node is not a layer here.
 *
 * On a health step the forward runs one step at a time (kn_g_run_steps(g, rt, s, s+1))
 * and a layer's output statistics are taken right after the step that produces it,
 * while its memory is still live (the planner may give it to another tensor later);
 * then the backward runs exactly as kn_model_forward_backward runs it, so the results
 * are bit-identical. All statistics are computed in double with fixed-size blocks summed
 * in block order: the same numbers whatever the thread count.
 *
 * Per layer, on each check:
 *   act_mean, act_std  mean and population standard deviation of all elements of the
 *                      layer's output (the whole batch);
 *   dead_relu          (last op relu or a fused op ending in ReLU, e.g. batchnorm_relu)
 *                      fraction of units that are exactly 0 for every sample of the
 *                      batch; a unit is a channel of a 4-D (N, C, H, W) output (0 at
 *                      every position of every sample: a dead filter) and an element of
 *                      the non-batch dimensions otherwise (a feature of a linear layer);
 *   dead_sustained     fraction of units dead on each of the last KN_H_DEAD_CHECKS (3)
 *                      checks' batches (NAN before 3 checks; the first check of a run,
 *                      resume or rollback — at the start, the initialisation — is not
 *                      counted: it describes no trained state): a unit that is silent on
 *                      one batch of 64 may fire on others, one silent on three batches
 *                      hundreds of steps apart is dead;
 *   grad_norm          L2 norm of the gradients of all the layer's trainable parameters
 *                      (weight and bias together), before any clipping;
 *   weight_norm        L2 norm of those parameters before the update;
 *   update_ratio       ||w_after - w_before|| / ||w_before|| over the same parameters;
 *   drift              internal covariate shift of the output distribution: the mean over
 *                      all pairs of consecutive checks t-1, t of
 *                          |mu_t - mu_{t-1}| / s + |sigma_t - sigma_{t-1}| / s,
 *                      s = max(sigma_{t-1}, 1e-6); NAN before two checks; pairs with a
 *                      non-finite term are left out.
 *
 * Warnings (thresholds below; each kind at most once every KN_H_WARN_EVERY checks per
 * layer):
 *   vanishing_gradient  a layer with parameters whose grad_norm < 1e-7 * weight_norm, or
 *                       whose update_ratio < 1e-7 x s while some layer's weights did
 *                       change, s = min(1, learning rate of the update / optimizer.lr):
 *                       a schedule that decayed the rate shrinks the updates on purpose
 *                       (kn_health_set_lr_scale);
 *   exploding_gradient  grad_norm not finite, or > 1e3 * weight_norm, or a spike: more
 *                       than 100 times the layer's moving average of grad_norm over the
 *                       earlier checks (exponential, weight 0.2 on the newest; needs 5
 *                       earlier checks);
 *   dead_relu           the sustained dead fraction of a ReLU layer is above 50% AND it
 *                       is either at least 90% or has risen by at least 10 points over
 *                       the last KN_H_DEAD_RISE (5) checks (units keep dying). A stable
 *                       share of silent units in a healthy network (the CNN example's fc1
 *                       keeps ~60% of its 128 units silent on a batch while it reaches
 *                       92%) is not warned about. Once per layer; again only when the
 *                       fraction has grown by another 10 points since the last warning.
 * Layers whose parameters receive no gradient by design (no path to the loss: the
 * graph zeroes their gradient) get no gradient statistics and no gradient warnings. */
#define _POSIX_C_SOURCE 200809L
#include "train/health.h"

#include "backend/backend.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KN_H_VANISH_GRAD 1e-7   /* grad_norm / weight_norm below: vanishing */
#define KN_H_VANISH_UPDATE 1e-7 /* update_ratio below: vanishing */
#define KN_H_EXPLODE_GRAD 1e3   /* grad_norm / weight_norm above: exploding */
#define KN_H_SPIKE 100.0        /* grad_norm / moving average above: exploding (spike) */
#define KN_H_SPIKE_MIN 5        /* earlier checks needed before the spike rule applies */
#define KN_H_SPIKE_EMA 0.2      /* weight of the newest grad_norm in the moving average */
#define KN_H_DEAD 0.5           /* sustained dead fraction above: warning (if rising) */
#define KN_H_DEAD_HIGH 0.9      /* sustained dead fraction at or above: warning even if flat */
#define KN_H_DEAD_RISE_BY 0.1   /* rise over KN_H_DEAD_RISE checks that counts as rising */
#define KN_H_DEAD_RISE 5        /* checks over which the rise is measured */
#define KN_H_DEAD_CHECKS 3      /* consecutive dead checks that make a unit dead */
#define KN_H_WARN_EVERY 10      /* checks between two warnings of one kind for one layer */
#define KN_H_DRIFT_EPS 1e-6     /* floor of sigma_{t-1} in the drift */
#define KN_H_BLOCK 16384        /* elements per block of a deterministic sum */

#define KN_H_WARN_SHOWN 2 /* warnings of one kind per check printed in full */
enum { W_VANISH = 0, W_EXPLODE, W_DEAD, W_NKINDS };
static const char *const warn_kind[W_NKINDS] = {"vanishing_gradient", "exploding_gradient", "dead_relu"};

typedef struct {
    kn_health_layer pub;
    int step;             /* forward step that produces the layer's output */
    int vid;              /* that output's value id */
    int is_relu;
    int *ent;             /* store entries of its trainable parameters */
    int nent;
    double prev_mean, prev_std;
    int have_prev;
    double drift_sum;
    int64_t drift_n;
    double gema;          /* moving average of grad_norm over earlier checks */
    int64_t gema_n;
    int64_t last_warn[W_NKINDS]; /* check index of the last warning of each kind, -1 none */
    int64_t nunits;       /* ReLU layers: units (channels of a 4-D output, else features) */
    unsigned char *now;   /* per unit: dead on the pending check's batch */
    unsigned char *streak;/* per unit: consecutive committed checks it was dead */
    int64_t nstreak;      /* committed checks since the history began */
    double sus_hist[KN_H_DEAD_RISE + 1]; /* ring: dead_sustained of the latest checks */
    double dead_warned;   /* dead_sustained at the last dead_relu warning; -1 none */
} hlayer;

struct kn_health {
    kn_graph *g;
    kn_store *store;
    int64_t every;
    hlayer *L;
    int nl;
    int *step_layer;      /* per forward step: layer whose output it produces, -1 none */
    float *wprev;         /* parameters before the update of the pending check */
    double *part;         /* partial sums, one per block */
    unsigned char *alive; /* per unit: nonzero for some sample */
    int pending;          /* a health forward/backward ran; its update is awaited */
    int64_t hist_checks;  /* checks since the history began (start, resume, rollback) */
    double lr_scale;      /* learning rate of the pending update / the configured one */
    uint64_t *feeds;      /* nl x fw bits: bit a of row b set when layer a's output reaches
                             layer b through the graph (a == b included) */
    int fw;               /* 64-bit words per row */
    int64_t nchecks;
    /* this check's warnings on the terminal: the first KN_H_WARN_SHOWN of each kind in
     * full, the others' layer names gathered into one line (metrics.jsonl has each) */
    int nshown[W_NKINDS];
    char more[W_NKINDS][512];
    int nmore[W_NKINDS];
};

/* ---------------- deterministic sums ---------------- */
/* sum over i of f(x[i]) with f = x (mode 0), (x - c)^2 (mode 1), (x - y)^2 (mode 2). */
static double block_sum(const float *x, const float *y, int64_t n, double c, int mode, double *part) {
    int64_t nb = (n + KN_H_BLOCK - 1) / KN_H_BLOCK;
#pragma omp parallel for schedule(static) if (n > 4 * KN_H_BLOCK)
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * KN_H_BLOCK, hi = lo + KN_H_BLOCK < n ? lo + KN_H_BLOCK : n;
        double s = 0;
        if (mode == 0)
            for (int64_t i = lo; i < hi; i++) s += (double)x[i];
        else if (mode == 1)
            for (int64_t i = lo; i < hi; i++) { double d = (double)x[i] - c; s += d * d; }
        else
            for (int64_t i = lo; i < hi; i++) { double d = (double)x[i] - (double)y[i]; s += d * d; }
        part[b] = s;
    }
    double t = 0;
    for (int64_t b = 0; b < nb; b++) t += part[b];
    return t;
}

static void act_stats(kn_health *h, hlayer *l) {
    const kn_graph *g = h->g;
    const float *x = kn_ptr(g, l->vid);
    const kn_shape *sh = kn_shp(g, l->vid);
    int64_t n = kn_shape_numel(sh);
    if (n <= 0) { l->pub.act_mean = l->pub.act_std = l->pub.dead_relu = NAN; return; }
    double mean = block_sum(x, NULL, n, 0, 0, h->part) / (double)n;
    double var = block_sum(x, NULL, n, mean, 1, h->part) / (double)n;
    l->pub.act_mean = mean;
    l->pub.act_std = sqrt(var);
    l->pub.dead_relu = NAN;
    if (!l->is_relu) return;
    int64_t N = sh->nd >= 1 ? sh->d[0] : 1, U = N > 0 ? n / N : 0;
    if (U <= 0 || N <= 0) return;
    unsigned char *alive = h->alive;
    if (sh->nd == 4) {
        /* units are channels; the value may be stored channel-blocked (nChw{B}c) */
        int64_t C = sh->d[1], HW = sh->d[2] * sh->d[3];
        int B = g->be->layout(g, l->vid);
        memset(alive, 0, (size_t)C);
#pragma omp parallel for schedule(static) if (n > 4 * KN_H_BLOCK)
        for (int64_t c = 0; c < C; c++) {
            unsigned char a = 0;
            for (int64_t i = 0; i < N && !a; i++) {
                for (int64_t p = 0; p < HW && !a; p++) {
                    int64_t at = B ? ((i * (C / B) + c / B) * HW + p) * B + c % B : (i * C + c) * HW + p;
                    a = x[at] != 0.0f;
                }
            }
            alive[c] = a;
        }
        U = C;
    } else {
        const int64_t UB = 512, nub = (U + UB - 1) / UB;
#pragma omp parallel for schedule(static) if (n > 4 * KN_H_BLOCK)
        for (int64_t b = 0; b < nub; b++) {
            int64_t lo = b * UB, hi = lo + UB < U ? lo + UB : U;
            for (int64_t j = lo; j < hi; j++) alive[j] = 0;
            for (int64_t i = 0; i < N; i++) {
                const float *row = x + i * U;
                for (int64_t j = lo; j < hi; j++) alive[j] |= row[j] != 0.0f;
            }
        }
    }
    int64_t dead = 0;
    for (int64_t j = 0; j < U; j++) {
        dead += !alive[j];
        if (l->now && j < l->nunits) l->now[j] = !alive[j];
    }
    l->pub.dead_relu = (double)dead / (double)U;
}

/* ---------------- create / free ---------------- */
/* Ops whose output is a ReLU's (KN_OPF_RELU_OUT): relu and the fused ops that end in
 * one (batchnorm_relu, linear_relu: graph/fuse.c). */
static int ends_in_relu(const kn_op *op) { return kn_op_has(op, KN_OPF_RELU_OUT); }

static int find_layer(const kn_health *h, const char *name) {
    for (int i = 0; i < h->nl; i++)
        if (!strcmp(h->L[i].pub.layer, name)) return i;
    return -1;
}

void kn_health_free(kn_health *h) {
    if (!h) return;
    for (int i = 0; i < h->nl; i++) {
        free(h->L[i].ent);
        free(h->L[i].now);
        free(h->L[i].streak);
    }
    free(h->L);
    free(h->step_layer);
    free(h->wprev);
    free(h->part);
    free(h->alive);
    free(h->feeds);
    free(h);
}

int kn_health_create(kn_ctx *ctx, kn_model *m, int64_t every, kn_health **out) {
    *out = NULL;
    if (every <= 0) return kn_err(ctx, KN_ERR_INVALID, "health checks: 'every' must be a positive number of steps, got %lld", (long long)every);
    if (!m || !m->train || !m->train->compiled)
        return kn_err(ctx, KN_ERR_INVALID, "health checks need a model built for training (with a compiled training graph)");
    kn_graph *g = m->train;
    kn_health *h = calloc(1, sizeof *h);
    if (!h) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    h->g = g;
    h->store = g->store;
    h->every = every;
    h->lr_scale = 1.0;
    h->L = calloc((size_t)g->nn + 1, sizeof *h->L);
    h->step_layer = malloc(((size_t)g->nfwd + 1) * sizeof *h->step_layer);
    h->wprev = malloc(((size_t)h->store->nparam + 1) * sizeof *h->wprev);
    if (!h->L || !h->step_layer || !h->wprev) { kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }

    /* Layers in forward order; the last node of each gives its output. */
    int64_t maxn = 1, maxu = 1;
    for (int s = 0; s < g->nfwd; s++) {
        h->step_layer[s] = -1;
        const kn_step *st = &g->steps[s];
        if (st->kind != KN_STEP_FWD) continue;
        const kn_node *nd = &g->n[st->node];
        if (nd->nout < 1 || nd->out[0] == g->loss || g->v[nd->out[0]].dtype != KN_F32) continue;
        int li = find_layer(h, nd->layer);
        if (li < 0) {
            li = h->nl++;
            kn_strlcpy(h->L[li].pub.layer, nd->layer, sizeof h->L[li].pub.layer);
            for (int k = 0; k < W_NKINDS; k++) h->L[li].last_warn[k] = -1;
            h->L[li].step = -1;
        }
        h->L[li].step = s;
        h->L[li].vid = nd->out[0];
        h->L[li].is_relu = ends_in_relu(nd->op);
        h->L[li].pub.op = nd->op->name;
    }
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        h->step_layer[l->step] = i;
        const kn_shape *sh = kn_shp(g, l->vid);
        int64_t n = kn_shape_numel(sh), N = sh->nd >= 1 && sh->d[0] > 0 ? sh->d[0] : 1;
        if (n > maxn) maxn = n;
        if (n / N > maxu) maxu = n / N;
        l->pub.act_mean = l->pub.act_std = l->pub.dead_relu = l->pub.dead_sustained = NAN;
        l->pub.grad_norm = l->pub.weight_norm = l->pub.update_ratio = l->pub.drift = NAN;
        l->dead_warned = -1;
        if (l->is_relu) {
            l->nunits = sh->nd == 4 ? sh->d[1] : n / N;
            if (l->nunits > maxu) maxu = l->nunits;
            l->now = calloc((size_t)l->nunits + 1, 1);
            l->streak = calloc((size_t)l->nunits + 1, 1);
            if (!l->now || !l->streak) { kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        }
    }
    /* Trainable parameters per layer; those whose gradient the graph zeroes every step
     * (no path to the loss) receive no gradient by design. */
    const kn_store *st = h->store;
    unsigned char *noflow = calloc((size_t)st->n + 1, 1);
    if (!noflow) { kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    for (int s = 0; s < g->nsteps; s++)
        if (g->steps[s].kind == KN_STEP_ZERO && g->steps[s].zero_val >= 0) {
            int si = g->v[g->steps[s].zero_val].store_idx;
            if (si >= 0 && si < st->n) noflow[si] = 1;
        }
    for (int i = 0; i < h->nl; i++) h->L[i].pub.no_flow = 1;
    for (int e = 0; e < st->n; e++) {
        if (st->e[e].is_state) continue;
        int li = find_layer(h, st->e[e].layer);
        if (li < 0) continue;
        hlayer *l = &h->L[li];
        int *p = realloc(l->ent, (size_t)(l->nent + 1) * sizeof *p);
        if (!p) { kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        l->ent = p;
        l->ent[l->nent++] = e;
        l->pub.nparams += st->e[e].numel;
        if (!noflow[e]) l->pub.no_flow = 0;
        if (st->e[e].numel > maxn) maxn = st->e[e].numel;
    }
    free(noflow);
    for (int i = 0; i < h->nl; i++)
        if (!h->L[i].nent) h->L[i].pub.no_flow = 0;
    /* which layers feed which: a layer mask per value, in forward order */
    h->fw = (h->nl + 63) / 64;
    h->feeds = calloc((size_t)h->nl * (size_t)h->fw + 1, sizeof *h->feeds);
    uint64_t *vm = calloc((size_t)g->nv * (size_t)h->fw + 1, sizeof *vm);
    if (!h->feeds || !vm) { free(vm); kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    for (int s = 0; s < g->nfwd; s++) {
        const kn_step *stp = &g->steps[s];
        if (stp->kind != KN_STEP_FWD) continue;
        const kn_node *nd = &g->n[stp->node];
        int li = find_layer(h, nd->layer);
        for (int j = 0; j < nd->nout; j++) {
            uint64_t *o = vm + (size_t)nd->out[j] * (size_t)h->fw;
            for (int i = 0; i < nd->nin; i++) {
                if (nd->in[i] < 0) continue;
                const uint64_t *x = vm + (size_t)nd->in[i] * (size_t)h->fw;
                for (int w = 0; w < h->fw; w++) o[w] |= x[w];
            }
            if (li >= 0) o[li / 64] |= 1ULL << (li % 64);
        }
    }
    for (int i = 0; i < h->nl; i++)
        memcpy(h->feeds + (size_t)i * (size_t)h->fw, vm + (size_t)h->L[i].vid * (size_t)h->fw, (size_t)h->fw * sizeof *vm);
    free(vm);
    h->part = malloc((size_t)((maxn + KN_H_BLOCK - 1) / KN_H_BLOCK) * sizeof *h->part);
    h->alive = malloc((size_t)maxu);
    if (!h->part || !h->alive) { kn_health_free(h); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    *out = h;
    return KN_OK;
}

int kn_health_due(const kn_health *h, int64_t step) { return h && step >= 0 && step % h->every == 0; }
int kn_health_nlayers(const kn_health *h) { return h ? h->nl : 0; }
const kn_health_layer *kn_health_get_layer(const kn_health *h, int i) {
    return h && i >= 0 && i < h->nl ? &h->L[i].pub : NULL;
}
int64_t kn_health_nchecks(const kn_health *h) { return h ? h->nchecks : 0; }
void kn_health_set_lr_scale(kn_health *h, double s) {
    if (h) h->lr_scale = isfinite(s) && s > 0 ? s : 1.0;
}
int kn_health_feeds(const kn_health *h, int a, int b) {
    if (!h || a < 0 || b < 0 || a >= h->nl || b >= h->nl) return 0;
    return (int)(h->feeds[(size_t)b * (size_t)h->fw + (size_t)(a / 64)] >> (a % 64) & 1u);
}
void kn_health_discard(kn_health *h) {
    if (h) h->pending = 0;
}
void kn_health_reset_history(kn_health *h) {
    if (!h) return;
    h->pending = 0;
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        if (l->streak) memset(l->streak, 0, (size_t)l->nunits);
        l->nstreak = 0;
        l->pub.dead_sustained = NAN;
        h->hist_checks = 0;
        l->dead_warned = -1;
        l->gema = 0;
        l->gema_n = 0;
        for (int k = 0; k < W_NKINDS; k++) l->last_warn[k] = -1;
    }
}

/* ---------------- the health step ---------------- */
float kn_health_forward_backward(kn_health *h, kn_model *m, kn_rt *rt) {
    kn_graph *g = m->train;
    for (int s = 0; s < g->nfwd; s++) {
        kn_g_run_steps(g, rt, s, s + 1);
        if (h->step_layer[s] >= 0) act_stats(h, &h->L[h->step_layer[s]]);
    }
    kn_g_backward(g, rt, NULL);
    const kn_store *st = h->store;
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        if (!l->nent) continue;
        double g2 = 0, w2 = 0;
        for (int k = 0; k < l->nent; k++) {
            const kn_store_entry *e = &st->e[l->ent[k]];
            g2 += block_sum(st->grad + e->offset, NULL, e->numel, 0, 1, h->part);
            w2 += block_sum(st->param + e->offset, NULL, e->numel, 0, 1, h->part);
        }
        l->pub.grad_norm = sqrt(g2);
        l->pub.weight_norm = sqrt(w2);
        l->pub.update_ratio = NAN;
    }
    memcpy(h->wprev, st->param, (size_t)st->nparam * sizeof(float));
    h->pending = 1;
    return kn_ptr(g, m->loss)[0];
}

/* ---------------- JSON helpers ---------------- */
static void jnum(FILE *f, double x) {
    if (isfinite(x)) fprintf(f, "%.9g", x);
    else fputs("null", f);
}

static void jstr(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void warn(kn_health *h, hlayer *l, int kind, int64_t step, FILE *metrics, FILE *wout, const char *msg) {
    if (l->last_warn[kind] >= 0 && h->nchecks - l->last_warn[kind] < KN_H_WARN_EVERY) return;
    l->last_warn[kind] = h->nchecks;
    if (wout && h->nshown[kind] < KN_H_WARN_SHOWN) {
        h->nshown[kind]++;
        fprintf(wout, "kiln: warning: step %lld: %s\n", (long long)step, msg);
        fflush(wout);
    } else if (wout) {
        size_t len = strlen(h->more[kind]);
        if (len + strlen(l->pub.layer) + 8 < sizeof h->more[kind])
            snprintf(h->more[kind] + len, sizeof h->more[kind] - len, "%s'%s'", len ? ", " : "", l->pub.layer);
        else if (len + 5 < sizeof h->more[kind] && strcmp(h->more[kind] + len - 3, "...") != 0)
            snprintf(h->more[kind] + len, sizeof h->more[kind] - len, ", ...");
        h->nmore[kind]++;
    }
    if (!metrics) return;
    fprintf(metrics, "{\"event\":\"warning\",\"step\":%lld,\"kind\":\"%s\",\"layer\":", (long long)step, warn_kind[kind]);
    jstr(metrics, l->pub.layer);
    if (kind == W_DEAD) {
        fputs(",\"dead_relu\":", metrics);
        jnum(metrics, l->pub.dead_relu);
    } else {
        fputs(",\"grad_norm\":", metrics);
        jnum(metrics, l->pub.grad_norm);
        fputs(",\"weight_norm\":", metrics);
        jnum(metrics, l->pub.weight_norm);
        fputs(",\"update_ratio\":", metrics);
        jnum(metrics, l->pub.update_ratio);
    }
    fputs(",\"message\":", metrics);
    jstr(metrics, msg);
    fputs("}\n", metrics);
}

void kn_health_after_update(kn_health *h, kn_model *m, int64_t step, FILE *metrics, FILE *wout) {
    (void)m;
    if (!h || !h->pending) return;
    h->pending = 0;
    for (int k = 0; k < W_NKINDS; k++) {
        h->nshown[k] = 0;
        h->nmore[k] = 0;
        h->more[k][0] = 0;
    }
    const kn_store *st = h->store;
    int any_update = 0;
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        if (!l->nent) continue;
        double d2 = 0;
        for (int k = 0; k < l->nent; k++) {
            const kn_store_entry *e = &st->e[l->ent[k]];
            d2 += block_sum(st->param + e->offset, h->wprev + e->offset, e->numel, 0, 2, h->part);
        }
        if (d2 != 0) any_update = 1;
        l->pub.update_ratio = l->pub.weight_norm > 0 ? sqrt(d2) / l->pub.weight_norm : NAN;
    }
    /* Sustained dead units: dead on each of the last KN_H_DEAD_CHECKS checks. */
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        if (!l->is_relu || !l->nunits) continue;
        int64_t dead = 0;
        for (int64_t j = 0; j < l->nunits; j++) {
            l->streak[j] = l->now[j] ? (unsigned char)(l->streak[j] < 255 ? l->streak[j] + 1 : 255) : 0;
            dead += l->streak[j] >= KN_H_DEAD_CHECKS;
        }
        l->nstreak++;
        if (h->hist_checks == 0) { /* the first check (e.g. the initialisation) starts no streak */
            memset(l->streak, 0, (size_t)l->nunits);
            l->nstreak = 0;
            continue;
        }
        l->pub.dead_sustained = l->nstreak >= KN_H_DEAD_CHECKS ? (double)dead / (double)l->nunits : NAN;
        l->sus_hist[l->nstreak % (KN_H_DEAD_RISE + 1)] = l->pub.dead_sustained;
    }
    h->hist_checks++;
    /* Drift of the output distribution. */
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        double mu = l->pub.act_mean, sd = l->pub.act_std;
        if (l->have_prev) {
            double s = l->prev_std > KN_H_DRIFT_EPS ? l->prev_std : KN_H_DRIFT_EPS;
            double d = fabs(mu - l->prev_mean) / s + fabs(sd - l->prev_std) / s;
            if (isfinite(d)) { l->drift_sum += d; l->drift_n++; }
        }
        if (isfinite(mu) && isfinite(sd)) {
            l->prev_mean = mu;
            l->prev_std = sd;
            l->have_prev = 1;
        }
        l->pub.drift = l->drift_n ? l->drift_sum / (double)l->drift_n : NAN;
    }
    if (metrics) {
        fprintf(metrics, "{\"event\":\"health\",\"step\":%lld,\"layers\":[", (long long)step);
        for (int i = 0; i < h->nl; i++) {
            const kn_health_layer *p = &h->L[i].pub;
            fputs(i ? ",{\"layer\":" : "{\"layer\":", metrics);
            jstr(metrics, p->layer);
            fputs(",\"act_mean\":", metrics); jnum(metrics, p->act_mean);
            fputs(",\"act_std\":", metrics); jnum(metrics, p->act_std);
            fputs(",\"dead_relu\":", metrics); jnum(metrics, p->dead_relu);
            fputs(",\"grad_norm\":", metrics); jnum(metrics, p->grad_norm);
            fputs(",\"weight_norm\":", metrics); jnum(metrics, p->weight_norm);
            fputs(",\"update_ratio\":", metrics); jnum(metrics, p->update_ratio);
            fputs(",\"drift\":", metrics); jnum(metrics, p->drift);
            if (h->L[i].is_relu) { fputs(",\"dead_sustained\":", metrics); jnum(metrics, p->dead_sustained); }
            fputs("}", metrics);
        }
        fputs("]}\n", metrics);
    }
    /* Warnings. */
    char msg[512];
    for (int i = 0; i < h->nl; i++) {
        hlayer *l = &h->L[i];
        const kn_health_layer *p = &l->pub;
        if (l->nent && !p->no_flow) {
            double gn = p->grad_norm, wn = p->weight_norm, ur = p->update_ratio;
            if (!isfinite(gn)) {
                snprintf(msg, sizeof msg, "layer '%s': exploding gradient: the gradient norm is not finite (%g); lower the learning rate or set optimizer.clip_norm",
                         p->layer, gn);
                warn(h, l, W_EXPLODE, step, metrics, wout, msg);
            } else if (wn > 0 && gn > KN_H_EXPLODE_GRAD * wn) {
                snprintf(msg, sizeof msg, "layer '%s': exploding gradient: gradient norm %.3g is %.3g times the weight norm %.3g (threshold %g); lower the learning rate or set optimizer.clip_norm",
                         p->layer, gn, gn / wn, wn, KN_H_EXPLODE_GRAD);
                warn(h, l, W_EXPLODE, step, metrics, wout, msg);
            } else if (l->gema_n >= KN_H_SPIKE_MIN && l->gema > 0 && gn > KN_H_SPIKE * l->gema) {
                snprintf(msg, sizeof msg, "layer '%s': exploding gradient: gradient norm %.3g is %.3g times its recent average %.3g (spike threshold %g); lower the learning rate or set optimizer.clip_norm",
                         p->layer, gn, gn / l->gema, l->gema, KN_H_SPIKE);
                warn(h, l, W_EXPLODE, step, metrics, wout, msg);
            } else if (wn > 0 && gn < KN_H_VANISH_GRAD * wn) {
                snprintf(msg, sizeof msg, "layer '%s': vanishing gradient: gradient norm %.3g is %.3g times the weight norm %.3g (threshold %g); the layer barely learns: check the initialisation, use ReLU-like activations, BatchNorm or residual connections",
                         p->layer, gn, gn / wn, wn, KN_H_VANISH_GRAD);
                warn(h, l, W_VANISH, step, metrics, wout, msg);
            } else if (any_update && isfinite(ur) && ur < KN_H_VANISH_UPDATE * (h->lr_scale < 1 ? h->lr_scale : 1)) {
                /* a schedule that has decayed the learning rate shrinks the updates on
                 * purpose: the threshold scales with it */
                snprintf(msg, sizeof msg, "layer '%s': vanishing gradient: the update changed the weights by %.3g of their norm (threshold %g); the layer barely learns: check the learning rate and the initialisation",
                         p->layer, ur, KN_H_VANISH_UPDATE * (h->lr_scale < 1 ? h->lr_scale : 1));
                warn(h, l, W_VANISH, step, metrics, wout, msg);
            }
            if (isfinite(gn)) {
                l->gema = l->gema_n ? (1 - KN_H_SPIKE_EMA) * l->gema + KN_H_SPIKE_EMA * gn : gn;
                l->gema_n++;
            }
        }
        double f = p->dead_sustained;
        if (l->is_relu && isfinite(f) && f > KN_H_DEAD) {
            /* rising: against the sustained fraction KN_H_DEAD_RISE checks earlier, or the
             * oldest sustained value there is */
            int64_t back = l->nstreak - KN_H_DEAD_CHECKS < KN_H_DEAD_RISE ? l->nstreak - KN_H_DEAD_CHECKS : KN_H_DEAD_RISE;
            double ref = l->sus_hist[(l->nstreak - back) % (KN_H_DEAD_RISE + 1)];
            int rising = isfinite(ref) && f - ref >= KN_H_DEAD_RISE_BY - 1e-12;
            int worse = l->dead_warned < 0 || f - l->dead_warned >= KN_H_DEAD_RISE_BY - 1e-12 ||
                        (f >= 1.0 && l->dead_warned < 1.0);
            if ((f >= KN_H_DEAD_HIGH || rising) && worse) {
                snprintf(msg, sizeof msg, "layer '%s': %.1f%% of its %lld units gave 0 for every sample of each of the last %d health checks' batches (dead ReLUs; %s); lower the learning rate, use leaky_relu, BatchNorm before the ReLU or check the initialisation",
                         p->layer, 100.0 * f, (long long)l->nunits, KN_H_DEAD_CHECKS,
                         f >= KN_H_DEAD_HIGH ? "90% or more" : "above 50% and up 10 points or more in 5 checks");
                l->last_warn[W_DEAD] = -1; /* this kind has its own repeat rule */
                warn(h, l, W_DEAD, step, metrics, wout, msg);
                l->dead_warned = f;
            }
        }
    }
    static const char *const what[W_NKINDS] = {"vanishing gradients", "exploding gradients", "dead ReLUs"};
    for (int k = 0; k < W_NKINDS && wout; k++)
        if (h->nmore[k] > 0) {
            fprintf(wout, "kiln: warning: step %lld: %d more layer(s) with %s, as above: %s (each is in metrics.jsonl)\n",
                    (long long)step, h->nmore[k], what[k], h->more[k]);
            fflush(wout);
        }
    if (metrics) fflush(metrics);
    h->nchecks++;
}

double kn_health_mean_drift(const kn_health *h) {
    if (!h) return NAN;
    double s = 0;
    int n = 0;
    for (int i = 0; i < h->nl; i++)
        if (isfinite(h->L[i].pub.drift)) { s += h->L[i].pub.drift; n++; }
    return n ? s / n : NAN;
}

/* ---------------- `kiln health RUN_DIR` ---------------- */
typedef struct {
    cJSON **v;
    int n, cap;
} jlist;

static int jl_push(jlist *l, cJSON *j) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        cJSON **p = realloc(l->v, (size_t)cap * sizeof *p);
        if (!p) return -1;
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = j;
    return 0;
}

static void jl_free(jlist *l) {
    for (int i = 0; i < l->n; i++) cJSON_Delete(l->v[i]);
    free(l->v);
}

static double jget(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static const char *jgets(const cJSON *o, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(x) && x->valuestring ? x->valuestring : NULL;
}

static void pcell(FILE *out, double x, const char *fmt, int w) {
    if (isfinite(x)) fprintf(out, fmt, w, x);
    else fprintf(out, " %*s", w, "-");
}

int kn_health_print(kn_ctx *ctx, const char *run_dir, FILE *out) {
    struct stat sb;
    if (!run_dir || !*run_dir) return kn_err(ctx, KN_ERR_INVALID, "kiln health: give the run directory of a training run, e.g. kiln health runs/NAME");
    if (stat(run_dir, &sb) != 0)
        return kn_err(ctx, KN_ERR_IO, "run directory '%s' not found (%s): pass the directory of a training run, e.g. runs/NAME as printed by kiln train",
                      run_dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kn_err(ctx, KN_ERR_IO, "'%s' is not a directory: pass the directory of a training run (the one that holds metrics.jsonl), e.g. runs/NAME", run_dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return kn_err(ctx, KN_ERR_IO, "cannot open '%s' (%s): '%s' is not a kiln run directory or its run has not logged yet; train with: kiln train CONFIG --run-dir %s",
                      path, strerror(errno), run_dir, run_dir);
    cJSON *health = NULL;
    jlist warns = {0}, guards = {0}, epochs = {0}, leaks = {0};
    int64_t nhealth = 0, nbad = 0;
    int rc = KN_OK;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        cJSON *j = cJSON_Parse(line);
        const char *ev = j ? jgets(j, "event") : NULL;
        if (!ev) { nbad++; cJSON_Delete(j); continue; }
        int keep = 0, err = 0;
        if (!strcmp(ev, "health")) {
            cJSON_Delete(health);
            health = j;
            nhealth++;
            continue;
        } else if (!strcmp(ev, "warning")) { err = jl_push(&warns, j); keep = 1; }
        else if (!strcmp(ev, "guard")) { err = jl_push(&guards, j); keep = 1; }
        else if (!strcmp(ev, "epoch")) { err = jl_push(&epochs, j); keep = 1; }
        else if (!strcmp(ev, "leakage")) { err = jl_push(&leaks, j); keep = 1; }
        if (err) { cJSON_Delete(j); rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory reading %s", path); break; }
        if (!keep) cJSON_Delete(j);
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (!rc && rerr) rc = kn_err(ctx, KN_ERR_IO, "error reading %s", path);
    if (rc) goto done;

    fprintf(out, "%s\n", path);
    if (!health) {
        fprintf(out, "no health checks recorded (no \"health\" events): the run was trained without health checks\n");
    } else {
        const cJSON *layers = cJSON_GetObjectItemCaseSensitive(health, "layers");
        fprintf(out, "health at step %.0f (latest of %lld checks)\n", jget(health, "step"), (long long)nhealth);
        fprintf(out, "%-16s %11s %11s %9s %11s %11s %12s %9s\n", "layer", "act mean", "act std", "dead relu", "grad norm",
                "weight norm", "update ratio", "drift");
        const cJSON *ly;
        cJSON_ArrayForEach(ly, layers) {
            const char *name = jgets(ly, "layer");
            fprintf(out, "%-16s", name ? name : "?");
            pcell(out, jget(ly, "act_mean"), " %*.4g", 11);
            pcell(out, jget(ly, "act_std"), " %*.4g", 11);
            double dr = jget(ly, "dead_relu");
            if (isfinite(dr)) fprintf(out, " %8.1f%%", 100.0 * dr);
            else fprintf(out, " %9s", "-");
            pcell(out, jget(ly, "grad_norm"), " %*.3e", 11);
            pcell(out, jget(ly, "weight_norm"), " %*.3e", 11);
            pcell(out, jget(ly, "update_ratio"), " %*.3e", 12);
            pcell(out, jget(ly, "drift"), " %*.4f", 9);
            fputc('\n', out);
        }
        fprintf(out, "drift: mean over consecutive checks of |mean_t - mean_t-1|/std_t-1 + |std_t - std_t-1|/std_t-1 of the layer's output\n");
    }
    fprintf(out, "\nwarnings: %d\n", warns.n);
    for (int i = 0; i < warns.n; i++) {
        const char *msg = jgets(warns.v[i], "message"), *kind = jgets(warns.v[i], "kind"), *layer = jgets(warns.v[i], "layer");
        fprintf(out, "  step %.0f: ", jget(warns.v[i], "step"));
        if (msg) fprintf(out, "%s\n", msg);
        else fprintf(out, "%s in layer '%s'\n", kind ? kind : "warning", layer ? layer : "?");
    }
    fprintf(out, "\nguard events: %d\n", guards.n);
    for (int i = 0; i < guards.n; i++) {
        const cJSON *gj = guards.v[i];
        const char *msg = jgets(gj, "message");
        fprintf(out, "  step %.0f: ", jget(gj, "step"));
        if (msg) {
            fprintf(out, "%s\n", msg);
        } else {
            const char *kind = jgets(gj, "kind"), *action = jgets(gj, "action"), *op = jgets(gj, "op"),
                       *layer = jgets(gj, "layer"), *tensor = jgets(gj, "tensor");
            fprintf(out, "%s (action: %s) at op %s, layer '%s', tensor %s\n", kind ? kind : "?", action ? action : "?",
                    op ? op : "?", layer ? layer : "?", tensor ? tensor : "?");
        }
    }
    /* one line per evaluation set: every start and resume of a run records the check
     * again; the latest record of each set is the one that holds */
    for (int i = 0, printed = 0; i < leaks.n; i++) {
        const char *set = jgets(leaks.v[i], "set");
        int later = 0;
        for (int k = i + 1; k < leaks.n && !later; k++) {
            const char *s2 = jgets(leaks.v[k], "set");
            later = (set && s2) ? !strcmp(set, s2) : (!set && !s2);
        }
        if (later) continue;
        double d = jget(leaks.v[i], "duplicates");
        if (printed++ == 0) fputc('\n', out);
        fprintf(out, "leakage: %.0f %s sample(s) also in the training set, byte for byte\n", d, set ? set : "evaluation");
    }
    if (epochs.n) {
        fprintf(out, "\nepochs:\n");
        for (int i = 0; i < epochs.n; i++) {
            const cJSON *e = epochs.v[i];
            double tl = jget(e, "train_loss"), vl = jget(e, "val_loss"), va = jget(e, "val_accuracy");
            fprintf(out, "  epoch %.0f (step %.0f): train loss ", jget(e, "epoch"), jget(e, "step"));
            if (isfinite(tl)) fprintf(out, "%.4f", tl);
            else fputs("-", out);
            double gap = jget(e, "gap");
            if (!isfinite(gap)) gap = vl - tl;
            if (isfinite(vl)) fprintf(out, "  val loss %.4f", vl);
            if (isfinite(gap)) fprintf(out, "  gap (val - train) %+.4f", gap);
            if (isfinite(va)) fprintf(out, "  val accuracy %.2f%%", 100.0 * va);
            fputc('\n', out);
        }
    }
    if (nbad) fprintf(out, "\n(%lld unreadable lines of %s skipped)\n", (long long)nbad, path);
done:
    cJSON_Delete(health);
    jl_free(&warns);
    jl_free(&guards);
    jl_free(&epochs);
    jl_free(&leaks);
    return rc;
}

/* ---------------- the overfitting warning ---------------- */
void kn_overfit_init(kn_overfit *o, int64_t patience) {
    memset(o, 0, sizeof *o);
    o->patience = patience;
    o->best = INFINITY;
}

int kn_overfit_epoch(kn_overfit *o, double t, double v, char *msg, size_t n) {
    if (msg && n) msg[0] = 0;
    o->epochs++;
    if (!isfinite(v)) return 0;
    double gap = isfinite(t) ? v - t : NAN;
    if (v < o->best) {
        o->best = v;
        o->best_gap = gap;
        o->best_epoch = o->epochs;
        o->bad = 0;
        o->warned_excess = 0;
        return 0;
    }
    o->bad++;
    if (o->patience <= 0 || o->bad < o->patience) return 0;
    double excess = v - o->best, floor = KN_OVERFIT_EXCESS * fabs(o->best);
    if (!(excess >= floor) || !isfinite(gap) || !isfinite(o->best_gap) || !(gap - o->best_gap >= floor)) return 0;
    if (o->warned_excess > 0 && excess < 2.0 * o->warned_excess) return 0;
    int again = o->warned_excess > 0;
    o->warned_excess = excess;
    if (msg && n)
        snprintf(msg, n,
                 "validation loss has not improved for %lld epochs and is %.1f%% above its best (%.4f at epoch %lld, now %.4f) "
                 "while the train/validation gap grew from %+.4f to %+.4f%s: the model is overfitting; "
                 "train.early_stopping = %lld would stop here and restore the best weights",
                 (long long)o->bad, 100.0 * excess / fabs(o->best), o->best, (long long)o->best_epoch, v, o->best_gap, gap,
                 again ? " (worse again: the excess has doubled since the last warning)" : "", (long long)o->patience);
    return 1;
}

int64_t kn_overfit_replay(kn_overfit *o, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int64_t fed = 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) >= 0) {
        if (!strstr(line, "\"event\":\"epoch\"")) continue;
        cJSON *j = cJSON_Parse(line);
        const char *ev = j ? jgets(j, "event") : NULL;
        if (ev && !strcmp(ev, "epoch")) {
            kn_overfit_epoch(o, jget(j, "train_loss"), jget(j, "val_loss"), NULL, 0);
            fed++;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    return fed;
}

/* ---------------- leakage: exact duplicates ---------------- */
typedef struct {
    uint64_t h;
    int64_t idx; /* sample index in the dataset */
} hent;

static uint64_t img_hash(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a 64, finished with a mix */
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return kn_mix64(h ^ (uint64_t)n);
}

static int hent_cmp(const void *pa, const void *pb) {
    const hent *a = pa, *b = pb;
    if (a->h != b->h) return a->h < b->h ? -1 : 1;
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

int kn_leakage_check_bytes(kn_ctx *ctx, const void *a_data, int64_t a_n, size_t sz, const int64_t *a_idx, int64_t na,
                           const void *b_data, int64_t b_n, size_t szb, const int64_t *b_idx, int64_t nb, kn_leak_report *r) {
    memset(r, 0, sizeof *r);
    if (!a_data || !b_data) return kn_err(ctx, KN_ERR_INVALID, "leakage check: a dataset is missing");
    if (!a_idx) na = a_n;
    if (!b_idx) nb = b_n;
    if (na < 0 || nb < 0) return kn_err(ctx, KN_ERR_INVALID, "leakage check: negative sample count");
    if (sz != szb || na == 0 || nb == 0) return KN_OK; /* samples of other sizes are never equal */
    for (int64_t i = 0; i < na; i++)
        if (a_idx && (a_idx[i] < 0 || a_idx[i] >= a_n))
            return kn_err(ctx, KN_ERR_INVALID, "leakage check: index %lld of the first set is outside 0..%lld", (long long)a_idx[i], (long long)a_n - 1);
    for (int64_t i = 0; i < nb; i++)
        if (b_idx && (b_idx[i] < 0 || b_idx[i] >= b_n))
            return kn_err(ctx, KN_ERR_INVALID, "leakage check: index %lld of the second set is outside 0..%lld", (long long)b_idx[i], (long long)b_n - 1);
    const uint8_t *A = a_data, *B = b_data;
    hent *t = malloc((size_t)na * sizeof *t);
    if (!t) return kn_err(ctx, KN_ERR_NOMEM, "out of memory (leakage check of %lld samples)", (long long)na);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < na; i++) {
        int64_t k = a_idx ? a_idx[i] : i;
        t[i].idx = k;
        t[i].h = img_hash(A + (size_t)k * sz, sz);
    }
    qsort(t, (size_t)na, sizeof *t, hent_cmp);
    for (int64_t j = 0; j < nb; j++) {
        int64_t kb = b_idx ? b_idx[j] : j;
        const uint8_t *img = B + (size_t)kb * sz;
        uint64_t hv = img_hash(img, sz);
        int64_t lo = 0, hi = na; /* first entry with hash >= hv */
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (t[mid].h < hv) lo = mid + 1;
            else hi = mid;
        }
        for (int64_t i = lo; i < na && t[i].h == hv; i++) {
            if (memcmp(A + (size_t)t[i].idx * sz, img, sz) != 0) continue; /* a hash collision */
            if (r->nexamples < 5) {
                r->examples[r->nexamples][0] = t[i].idx;
                r->examples[r->nexamples][1] = kb;
                r->nexamples++;
            }
            r->count++;
            break;
        }
    }
    free(t);
    return KN_OK;
}

int kn_leakage_check(kn_ctx *ctx, const kn_dataset *a, const int64_t *a_idx, int64_t na, const kn_dataset *b,
                     const int64_t *b_idx, int64_t nb, kn_leak_report *r) {
    if (!a || !b) {
        memset(r, 0, sizeof *r);
        return kn_err(ctx, KN_ERR_INVALID, "leakage check: a dataset is missing");
    }
    return kn_leakage_check_bytes(ctx, a->images, a->n, (size_t)a->channels * (size_t)a->rows * (size_t)a->cols, a_idx, na,
                                  b->images, b->n, (size_t)b->channels * (size_t)b->rows * (size_t)b->cols, b_idx, nb, r);
}
