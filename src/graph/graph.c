/* kiln — graph builder, autodiff, liveness planner and executor. See graph.h. */
#define _POSIX_C_SOURCE 200809L
#include "graph/graph.h"

#include "backend/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ======================= parameter store ======================= */
void kn_store_init(kn_store *s) { memset(s, 0, sizeof *s); }

void kn_store_free(kn_store *s) {
    free(s->e);
    kn_aligned_free(s->param);
    kn_aligned_free(s->grad);
    kn_aligned_free(s->state);
    memset(s, 0, sizeof *s);
}

const kn_store_entry *kn_store_find(const kn_store *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->e[i].name, name) == 0) return &s->e[i];
    return NULL;
}

float *kn_store_data(kn_store *s, const kn_store_entry *e) {
    return (e->is_state ? s->state : s->param) + e->offset;
}

static int store_add(kn_ctx *ctx, kn_store *s, const char *name, const char *layer,
                     kn_shape shape, kn_init init, int is_state) {
    for (int i = 0; i < s->n; i++) {
        if (strcmp(s->e[i].name, name) != 0) continue;
        char a[64], b[64];
        if (!kn_shape_eq(&s->e[i].shape, &shape) || s->e[i].is_state != is_state)
        {
            kn_err(ctx, KN_ERR_SHAPE, "tensor '%s' is declared twice with different shapes %s and %s", name,
                   kn_shape_str(&s->e[i].shape, a, sizeof a), kn_shape_str(&shape, b, sizeof b));
            return -1;
        }
        return i;
    }
    if (s->frozen) {
        kn_err(ctx, KN_ERR_INTERNAL, "tensor '%s' added after the parameter store was allocated", name);
        return -1;
    }
    /* sizes come from the config: checked before anything is added up */
    int64_t numel, padded, total;
    const int64_t pad = (int64_t)(KN_ALIGN / sizeof(float));
    {
        char what[200];
        snprintf(what, sizeof what, "%s '%s'", is_state ? "state tensor" : "parameter", name);
        if (kn_shape_check(ctx, &shape, 1, sizeof(float), what, &numel)) return -1;
    }
    padded = (numel + pad - 1) / pad * pad; /* numel <= 2^46: no overflow */
    if (kn_add_ovf(is_state ? s->nstate : s->nparam, padded, &total) || total > KN_MAX_BYTES / (int64_t)sizeof(float)) {
        kn_err(ctx, KN_ERR_SHAPE, "parameter '%s' %s: the model's %s would exceed kiln's limit of 2^48 bytes (256 TiB)", name,
               "is one too many", is_state ? "state tensors" : "parameters");
        return -1;
    }
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 32;
        kn_store_entry *e = realloc(s->e, (size_t)cap * sizeof *e);
        if (!e) { kn_err(ctx, KN_ERR_NOMEM, "out of memory registering '%s'", name); return -1; }
        s->e = e;
        s->cap = cap;
    }
    kn_store_entry *e = &s->e[s->n];
    memset(e, 0, sizeof *e);
    kn_strlcpy(e->name, name, sizeof e->name);
    kn_strlcpy(e->layer, layer, sizeof e->layer);
    e->shape = shape;
    e->numel = numel;
    e->is_state = is_state;
    e->init = init;
    /* keep every tensor 64-byte aligned inside the packed blocks */
    if (is_state) {
        e->offset = s->nstate;
        s->nstate = total;
    } else {
        e->offset = s->nparam;
        s->nparam = total;
    }
    return s->n++;
}

int kn_store_alloc(kn_ctx *ctx, kn_store *s) {
    if (s->frozen) return KN_OK;
    s->param = kn_aligned_alloc((size_t)s->nparam * sizeof(float));
    s->grad = kn_aligned_alloc((size_t)s->nparam * sizeof(float));
    s->state = kn_aligned_alloc((size_t)s->nstate * sizeof(float));
    if (!s->param || !s->grad || !s->state)
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate %lld parameters", (long long)s->nparam);
    s->frozen = 1;
    return KN_OK;
}

void kn_store_init_values(kn_store *s, kn_rng *rng) {
    for (int i = 0; i < s->n; i++) {
        kn_store_entry *e = &s->e[i];
        float *p = kn_store_data(s, e);
        const kn_init *in = &e->init;
        double fi = (double)(in->fan_in > 0 ? in->fan_in : 1), fo = (double)(in->fan_out > 0 ? in->fan_out : 1);
        double gain = sqrt(2.0 / (1.0 + in->a * in->a));
        for (int64_t k = 0; k < e->numel; k++) {
            double v = 0;
            switch (in->kind) {
            case KN_INIT_ZEROS: v = 0; break;
            case KN_INIT_ONES: v = 1; break;
            case KN_INIT_CONST: v = in->a; break;
            case KN_INIT_KAIMING_UNIFORM: v = gain * sqrt(3.0 / fi) * (2 * kn_rng_uniform(rng) - 1); break;
            case KN_INIT_KAIMING_NORMAL: v = gain / sqrt(fi) * kn_rng_normal(rng); break;
            case KN_INIT_XAVIER_UNIFORM: v = sqrt(6.0 / (fi + fo)) * (2 * kn_rng_uniform(rng) - 1); break;
            case KN_INIT_XAVIER_NORMAL: v = sqrt(2.0 / (fi + fo)) * kn_rng_normal(rng); break;
            case KN_INIT_UNIFORM: v = in->a * (2 * kn_rng_uniform(rng) - 1); break;
            case KN_INIT_NORMAL: v = in->a * kn_rng_normal(rng); break;
            }
            p[k] = (float)v;
        }
    }
}

/* ======================= graph building ======================= */
kn_graph *kn_g_new(kn_store *store, int training) {
    kn_graph *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->store = store;
    g->training = training;
    g->be = kn_backend_get(KN_BACKEND_CPU);
    g->blocking = 1;
    g->be->graph_init(g);
    g->loss = -1;
    return g;
}

void kn_g_free(kn_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->nn; i++) {
        const kn_kernels *k = g->n[i].k;
        if (k && k->release && g->n[i].priv) k->release(&g->n[i]);
    }
    g->be->graph_free(g);
    if (g->own_arena) g->be->release(g->arena);
    free(g->v);
    free(g->n);
    free(g->steps);
    free(g);
}

void kn_g_set_layer(kn_graph *g, const char *layer) { kn_strlcpy(g->cur_layer, layer, sizeof g->cur_layer); }
void kn_g_set_recompute(kn_graph *g, int group) { g->cur_recompute = group > 0 ? group : 0; }

static int new_value(kn_graph *g, const char *name, kn_dtype dt, kn_shape shape, kn_val_kind kind) {
    if (g->nv == g->vcap) {
        int cap = g->vcap ? 2 * g->vcap : 64;
        kn_value *v = realloc(g->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        g->v = v;
        g->vcap = cap;
    }
    kn_value *v = &g->v[g->nv];
    memset(v, 0, sizeof *v);
    kn_strlcpy(v->name, name, sizeof v->name);
    v->dtype = dt;
    v->shape = shape;
    v->kind = kind;
    v->producer = -1;
    v->grad = -1;
    v->store_idx = -1;
    v->first = v->last = -1;
    v->first2 = v->last2 = -1;
    v->alias = -1;
    return g->nv++;
}

int kn_g_input(kn_graph *g, const char *name, kn_dtype dt, kn_shape shape) {
    if (kn_shape_check(NULL, &shape, 1, kn_dtype_size(dt), name, NULL)) return -1; /* the caller checked with a message */
    return new_value(g, name, dt, shape, KN_VAL_INPUT);
}

static int param_or_state(kn_ctx *ctx, kn_graph *g, const char *name, kn_shape shape, kn_init init, int st) {
    int idx = store_add(ctx, g->store, name, g->cur_layer, shape, init, st);
    if (idx < 0) return -1;
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].store_idx == idx && (g->v[i].kind == KN_VAL_PARAM || g->v[i].kind == KN_VAL_STATE)) return i;
    int vid = new_value(g, name, KN_F32, shape, st ? KN_VAL_STATE : KN_VAL_PARAM);
    if (vid < 0) { kn_err(ctx, KN_ERR_NOMEM, "out of memory"); return -1; }
    g->v[vid].store_idx = idx;
    return vid;
}
int kn_g_param(kn_ctx *ctx, kn_graph *g, const char *name, kn_shape shape, kn_init init) {
    return param_or_state(ctx, g, name, shape, init, 0);
}
int kn_g_state(kn_ctx *ctx, kn_graph *g, const char *name, kn_shape shape, kn_init init) {
    return param_or_state(ctx, g, name, shape, init, 1);
}

int kn_g_declare_out(kn_graph *g, kn_node *n, int slot, kn_dtype dt, kn_shape shape) {
    char name[96];
    if (slot == 0) snprintf(name, sizeof name, "%s", n->layer[0] ? n->layer : n->op->name);
    else snprintf(name, sizeof name, "%s.%s.saved%d", n->layer[0] ? n->layer : "?", n->op->name, slot);
    if (slot == 0) {
        /* a layer made of several ops: name intermediate results layer/op */
        int dup = 0;
        for (int i = 0; i < g->nv; i++) if (strcmp(g->v[i].name, name) == 0) dup = 1;
        if (dup) snprintf(name, sizeof name, "%s/%s#%d", n->layer, n->op->name, n->index);
    }
    int vid = new_value(g, name, dt, shape, KN_VAL_ACT);
    if (vid < 0) return -1;
    g->v[vid].producer = n->index;
    g->v[vid].out_slot = slot;
    n->out[slot] = vid;
    if (slot + 1 > n->nout) n->nout = slot + 1;
    return vid;
}

int kn_g_op(kn_ctx *ctx, kn_graph *g, const kn_op *op, const int *in, int nin, const kn_attrs *a) {
    if (g->planned) { kn_err(ctx, KN_ERR_INTERNAL, "graph already compiled"); return -1; }
    if (nin > KN_MAX_IN) { kn_err(ctx, KN_ERR_INVALID, "%s: too many inputs (%d, at most %d)", op->name, nin, KN_MAX_IN); return -1; }
    for (int i = 0; i < nin; i++)
        if (in[i] < 0 || in[i] >= g->nv) { kn_err(ctx, KN_ERR_INTERNAL, "%s: bad input id", op->name); return -1; }
    if (g->nn == g->ncap) {
        int cap = g->ncap ? 2 * g->ncap : 32;
        kn_node *nn = realloc(g->n, (size_t)cap * sizeof *nn);
        if (!nn) { kn_err(ctx, KN_ERR_NOMEM, "out of memory"); return -1; }
        g->n = nn;
        g->ncap = cap;
    }
    /* room for every output the op may declare, made now: an op's shape rule holds
     * pointers into g->v (its inputs' shapes) while it declares outputs, and a realloc
     * there would leave them dangling (fuzz_config found softmax_ce reading a freed
     * shape: tests/fuzz/regress/config/) */
    if (g->nv + KN_MAX_OUT > g->vcap) {
        int cap = g->vcap ? 2 * g->vcap : 64;
        while (cap < g->nv + KN_MAX_OUT) cap *= 2;
        kn_value *v = realloc(g->v, (size_t)cap * sizeof *v);
        if (!v) { kn_err(ctx, KN_ERR_NOMEM, "out of memory"); return -1; }
        g->v = v;
        g->vcap = cap;
    }
    kn_node *n = &g->n[g->nn];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->nin = nin;
    n->index = g->nn;
    for (int i = 0; i < nin; i++) n->in[i] = in[i];
    for (int i = 0; i < KN_MAX_OUT; i++) n->out[i] = -1;
    n->scratch_fwd_val = n->scratch_bwd_val = -1;
    if (a) n->a = *a;
    kn_strlcpy(n->layer, g->cur_layer, sizeof n->layer);
    n->recompute = g->cur_recompute;
    g->nn++;
    if (op->infer(g, n, ctx) != KN_OK) {
        g->nn--;
        if (!ctx->code) kn_err(ctx, KN_ERR_SHAPE, "%s: invalid inputs", op->name);
        return -1;
    }
    if (n->nout < 1 || n->out[0] < 0) { kn_err(ctx, KN_ERR_INTERNAL, "%s declared no output", op->name); g->nn--; return -1; }
    for (int i = 0; i < n->nout; i++) {
        if (n->out[i] < 0) continue;
        const kn_value *v = &g->v[n->out[i]];
        char what[200];
        snprintf(what, sizeof what, "the %s output of %s", i ? "saved" : "", op->name);
        if (!i) snprintf(what, sizeof what, "the output of %s", op->name);
        if (kn_shape_check(ctx, &v->shape, 1, kn_dtype_size(v->dtype), what, NULL)) { g->nn--; return -1; }
    }
    return n->out[0];
}

void kn_g_set_loss(kn_graph *g, int vid) { g->loss = vid; g->v[vid].keep = 1; }
void kn_g_keep(kn_graph *g, int vid) { g->v[vid].keep = 1; }

/* ======================= autodiff ======================= */
static int add_step(kn_graph *g, int kind, int node) {
    kn_step *s = &g->steps[g->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->node = node;
    s->zero_val = -1;
    s->backup = -1;
    for (int i = 0; i < KN_MAX_IN; i++) s->din[i] = -1;
    return g->nsteps - 1;
}

static int grad_value(kn_graph *g, int vid) {
    kn_value *x = &g->v[vid];
    char name[96];
    snprintf(name, sizeof name, "grad(%.88s)", x->name);
    int gid = new_value(g, name, KN_F32, x->shape, x->kind == KN_VAL_PARAM ? KN_VAL_PGRAD : KN_VAL_GRAD);
    if (gid < 0) return -1;
    g->v[vid].grad = gid;
    g->v[gid].store_idx = g->v[vid].store_idx;
    return gid;
}

static int autodiff(kn_ctx *ctx, kn_graph *g) {
    /* which values a gradient flows to */
    for (int i = 0; i < g->nv; i++) g->v[i].needs_grad = (g->v[i].kind == KN_VAL_PARAM);
    for (int k = 0; k < g->nn; k++) {
        kn_node *n = &g->n[k];
        int ng = 0;
        for (int i = 0; i < n->nin; i++)
            if ((n->op->diff_inputs >> i & 1u) && g->v[n->in[i]].needs_grad) ng = 1;
        g->v[n->out[0]].needs_grad = ng;
    }
    if (!g->v[g->loss].needs_grad)
        return kn_err(ctx, KN_ERR_CONFIG, "the loss does not depend on any trainable parameter");
    int *written = calloc((size_t)g->nv + 1, sizeof(int)); /* indexed by forward value ids */
    if (!written) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    int lg = grad_value(g, g->loss);
    if (lg < 0) { free(written); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    written[g->loss] = 1;
    for (int k = g->nn - 1; k >= 0; k--) {
        kn_node *n = &g->n[k];
        int o = n->out[0];
        if (!g->v[o].needs_grad || !written[o]) continue;
        int any = 0;
        for (int i = 0; i < n->nin; i++)
            if ((n->op->diff_inputs >> i & 1u) && g->v[n->in[i]].needs_grad) any = 1;
        if (!any) continue;
        if (!g->be->supports_op(g, n, 1)) {
            free(written);
            return kn_err(ctx, KN_ERR_CONFIG, "layer '%s': op %s has no backward on the %s backend", n->layer,
                          n->op->name, g->be->name);
        }
        int s = add_step(g, KN_STEP_BWD, k);
        for (int i = 0; i < n->nin; i++) {
            int x = n->in[i];
            if (!((n->op->diff_inputs >> i & 1u) && g->v[x].needs_grad)) continue;
            /* the same value twice as input of one node: second one accumulates */
            if (!written[x]) {
                int gid = g->v[x].grad >= 0 ? g->v[x].grad : grad_value(g, x);
                if (gid < 0) { free(written); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
                g->steps[s].din[i] = gid;
                written[x] = 1;
            } else {
                char name[96];
                snprintf(name, sizeof name, "tmpgrad(%.80s)", g->v[x].name);
                int t = new_value(g, name, KN_F32, g->v[x].shape, KN_VAL_TEMP);
                if (t < 0) { free(written); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
                g->steps[s].din[i] = t;
                g->steps[s].accum[i] = 1;
            }
        }
    }
    /* parameters that received no gradient (unused branch): clear theirs every step */
    int nv0 = g->nv;
    for (int i = 0; i < nv0; i++) {
        if (g->v[i].kind != KN_VAL_PARAM || written[i]) continue;
        int gid = g->v[i].grad >= 0 ? g->v[i].grad : grad_value(g, i);
        if (gid < 0) { free(written); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        int s = add_step(g, KN_STEP_ZERO, -1);
        g->steps[s].zero_val = gid;
    }
    free(written);
    return KN_OK;
}

/* ======================= recomputation ======================= */
/* Nodes with a recompute group form segments: sets of nodes of one group connected
 * through the values one produces and another reads (a block with branches is one
 * segment; two blocks in a row are two, the second recomputed from the first's output).
 * A segment's nodes whose outputs the backward reads (directly, or as inputs of such
 * nodes inside the segment) are run again as KN_STEP_RECOMP steps, in forward order,
 * just before the first backward step that reads any value the segment produced.
 * Their outputs then have two live intervals (forward, and from the recompute step
 * on) and the arena room between them is free for other tensors. A recomputation
 * reads the same inputs with the same seed and step, so it rewrites bit-identical
 * values; persistent state the forward updates in place (BatchNorm running
 * statistics) is saved to a backup before and restored after, so it is updated once
 * per step as without recomputation. */
static int plan_recompute(kn_ctx *ctx, kn_graph *g) {
    if (!g->training) return KN_OK;
    int any = 0;
    for (int k = 0; k < g->nn; k++) any |= g->n[k].recompute;
    if (!any) return KN_OK;
    int nn = g->nn, rc = KN_OK;
    int *seg = malloc((size_t)nn * sizeof *seg), *need = calloc((size_t)nn, sizeof *need);
    int *pos = malloc((size_t)nn * sizeof *pos);
    kn_step *ns = NULL;
    if (!seg || !need || !pos) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto out; }
    /* union-find over the recompute nodes (pos is the parent array for now) */
    for (int k = 0; k < nn; k++) pos[k] = k;
    for (int k = 0; k < nn; k++) {
        if (!g->n[k].recompute) continue;
        for (int i = 0; i < g->n[k].nin; i++) {
            int p = g->v[g->n[k].in[i]].producer;
            if (p < 0 || g->n[p].recompute != g->n[k].recompute) continue;
            int a = p, b = k;
            while (pos[a] != a) a = pos[a];
            while (pos[b] != b) b = pos[b];
            if (a != b) pos[a > b ? a : b] = a < b ? a : b;
        }
    }
    int nseg = 0;
    for (int k = 0; k < nn; k++) {
        if (!g->n[k].recompute) { seg[k] = -1; continue; }
        int r = k;
        while (pos[r] != r) r = pos[r];
        seg[k] = r == k ? nseg++ : seg[r]; /* a root comes before the nodes joined to it */
    }
    for (int i = 0; i < nseg; i++) pos[i] = g->nsteps;
    for (int s = g->nfwd; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind != KN_STEP_BWD) continue;
        const kn_node *n = &g->n[st->node];
        for (int i = 0; i < n->nin + n->nout; i++) {
            int read = i < n->nin ? (int)(n->op->bwd_reads_in >> i & 1u) : (int)(n->op->bwd_reads_out >> (i - n->nin) & 1u);
            int vid = i < n->nin ? n->in[i] : n->out[i - n->nin];
            int p = g->v[vid].producer;
            if (!read || p < 0 || seg[p] < 0) continue;
            need[p] = 1;
            if (s < pos[seg[p]]) pos[seg[p]] = s;
        }
    }
    /* a needed node needs the nodes of its segment that produce its inputs */
    int extra = 0;
    for (int k = nn - 1; k >= 0; k--) {
        if (!need[k]) continue;
        extra++;
        for (int i = 0; i < g->n[k].nin; i++) {
            int p = g->v[g->n[k].in[i]].producer;
            if (p >= 0 && seg[p] == seg[k]) need[p] = 1;
        }
    }
    if (!extra) goto out;
    ns = calloc((size_t)(g->nsteps + extra) + 1, sizeof *ns);
    if (!ns) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto out; }
    int m = 0;
    for (int s = 0; s <= g->nsteps; s++) {
        for (int sg = 0; sg < nseg && s >= g->nfwd; sg++) {
            if (pos[sg] != s) continue;
            for (int k = 0; k < nn; k++) {
                if (seg[k] != sg || !need[k]) continue;
                kn_step *st = &ns[m++];
                memset(st, 0, sizeof *st);
                st->kind = KN_STEP_RECOMP;
                st->node = k;
                st->zero_val = -1;
                st->backup = -1;
                for (int i = 0; i < KN_MAX_IN; i++) st->din[i] = -1;
                int64_t nstate = 0;
                for (int i = 0; i < g->n[k].nin; i++)
                    if (g->v[g->n[k].in[i]].kind == KN_VAL_STATE) nstate += kn_numel(g, g->n[k].in[i]);
                if (nstate > 0) {
                    char name[96];
                    snprintf(name, sizeof name, "backup(%.70s state)", g->n[k].layer);
                    st->backup = new_value(g, name, KN_F32, kn_shape1(nstate), KN_VAL_SCRATCH);
                    if (st->backup < 0) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto out; }
                }
            }
        }
        if (s < g->nsteps) ns[m++] = g->steps[s];
    }
    free(g->steps);
    g->steps = ns;
    ns = NULL;
    g->nsteps = m;
out:
    free(ns);
    free(seg);
    free(need);
    free(pos);
    return rc;
}

/* ======================= planner ======================= */
static int is_arena(kn_val_kind k) {
    return k == KN_VAL_ACT || k == KN_VAL_INPUT || k == KN_VAL_GRAD || k == KN_VAL_TEMP || k == KN_VAL_SCRATCH;
}
int kn_g_in_arena(const kn_value *v) { return is_arena(v->kind); }

static int ranges_meet(int a0, int a1, int b0, int b1) { return a0 >= 0 && b0 >= 0 && a0 <= b1 && b0 <= a1; }
int kn_g_live_at(const kn_value *v, int s) {
    return (v->first >= 0 && v->first <= s && s <= v->last) || (v->first2 >= 0 && v->first2 <= s && s <= v->last2);
}
int kn_g_live_overlap(const kn_value *a, const kn_value *b) {
    return ranges_meet(a->first, a->last, b->first, b->last) || ranges_meet(a->first2, a->last2, b->first, b->last) ||
           ranges_meet(a->first, a->last, b->first2, b->last2) || ranges_meet(a->first2, a->last2, b->first2, b->last2);
}

/* A value whose producer is recomputed at step split[v] has a second interval: touches
 * before the split extend the first, touches from it on the second. */
static void touch(kn_value *v, int split, int s) {
    if (split >= 0 && s >= split) {
        if (v->first2 < 0 || s < v->first2) v->first2 = s;
        if (s > v->last2) v->last2 = s;
        return;
    }
    if (v->first < 0 || s < v->first) v->first = s;
    if (s > v->last) v->last = s;
}

static int liveness(kn_ctx *ctx, kn_graph *g) {
    int *split = malloc((size_t)g->nv * sizeof *split);
    if (!split) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < g->nv; i++) {
        g->v[i].first = g->v[i].last = g->v[i].first2 = g->v[i].last2 = -1;
        split[i] = -1;
    }
    for (int s = 0; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind != KN_STEP_RECOMP) continue;
        const kn_node *n = &g->n[st->node];
        for (int j = 0; j < n->nout; j++) split[n->out[j]] = s;
        if (n->scratch_fwd_val >= 0) split[n->scratch_fwd_val] = s;
    }
#define TOUCH(vid) touch(&g->v[(vid)], split[(vid)], s)
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].kind == KN_VAL_INPUT) touch(&g->v[i], split[i], 0);
    for (int s = 0; s < g->nsteps; s++) {
        kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) { TOUCH(st->zero_val); continue; }
        kn_node *n = &g->n[st->node];
        if (st->kind == KN_STEP_FWD || st->kind == KN_STEP_RECOMP) {
            for (int i = 0; i < n->nin; i++) TOUCH(n->in[i]);
            for (int j = 0; j < n->nout; j++) TOUCH(n->out[j]);
            if (n->scratch_fwd_val >= 0) TOUCH(n->scratch_fwd_val);
            if (st->backup >= 0) TOUCH(st->backup);
        } else {
            for (int i = 0; i < n->nin; i++) {
                if (n->op->bwd_reads_in >> i & 1u) TOUCH(n->in[i]);
                if (st->din[i] >= 0) {
                    TOUCH(st->din[i]);
                    if (st->accum[i]) TOUCH(g->v[n->in[i]].grad);
                }
            }
            for (int j = 0; j < n->nout; j++) {
                if (n->op->bwd_reads_out >> j & 1u) TOUCH(n->out[j]);
                if (g->v[n->out[j]].grad >= 0) TOUCH(g->v[n->out[j]].grad);
            }
            if (n->scratch_bwd_val >= 0) TOUCH(n->scratch_bwd_val);
        }
    }
    {
        int s = g->nfwd; /* the loss gradient is seeded just before the first backward step */
        if (g->loss >= 0 && g->v[g->loss].grad >= 0) TOUCH(g->v[g->loss].grad);
    }
    {
        int s = g->nsteps; /* read by the caller after the step */
        for (int i = 0; i < g->nv; i++)
            if (g->v[i].keep) TOUCH(i);
    }
#undef TOUCH
    free(split);
    return KN_OK;
}

/* In-place backward: din[i] of an op with bwd_inplace bit i takes over the bytes of
 * the gradient of its output 0 when that gradient is last read at this step and din[i]
 * is first written here (one buffer for both, their intervals joined). */
static void plan_inplace(kn_graph *g) {
    for (int i = 0; i < g->nv; i++) g->v[i].alias = -1;
    for (int s = g->nfwd; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind != KN_STEP_BWD) continue;
        const kn_node *n = &g->n[st->node];
        if (!n->op->bwd_inplace) continue;
        int go = g->v[n->out[0]].grad;
        if (go < 0 || g->v[go].kind != KN_VAL_GRAD || g->v[go].last != s || g->v[go].first2 >= 0) continue;
        for (int i = 0; i < n->nin; i++) {
            int gi = st->din[i];
            if (!(n->op->bwd_inplace >> i & 1u) || gi < 0 || st->accum[i]) continue;
            kn_value *v = &g->v[gi];
            if (v->kind != KN_VAL_GRAD || v->first != s || v->first2 >= 0 || v->dtype != g->v[go].dtype ||
                kn_shape_numel(&v->shape) != kn_shape_numel(&g->v[go].shape))
                continue;
            int taken = 0; /* one taker per buffer */
            for (int j = 0; j < g->nv && !taken; j++) taken = g->v[j].alias == go;
            if (taken) continue;
            v->alias = go;
        }
    }
}

static int alias_root(const kn_graph *g, int vid) {
    while (g->v[vid].alias >= 0) vid = g->v[vid].alias;
    return vid;
}

typedef struct { size_t off, end; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* The placement order: largest first, then earliest, then by id (a total order, so
 * qsort's result is the same on every libc). The keys are copied into the array sorted,
 * as qsort has no context argument in C17. */
typedef struct { size_t bytes; int first, id; } sort_key;
static int cmp_key(const void *a, const void *b) {
    const sort_key *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return x->id - y->id;
}

static int assign_offsets(kn_ctx *ctx, kn_graph *g) {
    int *ids = malloc((size_t)g->nv * sizeof *ids);
    int *placed = malloc((size_t)g->nv * sizeof *placed);
    span *sp = malloc((size_t)g->nv * sizeof *sp);
    if (!ids || !placed || !sp) { free(ids); free(placed); free(sp); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    int m = 0;
    g->naive_bytes = 0;
    for (int i = 0; i < g->nv; i++) {
        kn_value *v = &g->v[i];
        /* every shape was checked when its value was made (kn_shape_check); the sums are
         * checked too, so no size below can wrap */
        int64_t ne = kn_shape_numel(&v->shape);
        if (ne < 0 || kn_mulz_ovf((size_t)ne, kn_dtype_size(v->dtype), &v->nbytes) || v->nbytes > (size_t)KN_MAX_BYTES) {
            char sh[160];
            free(ids); free(placed); free(sp);
            return kn_err(ctx, KN_ERR_SHAPE, "tensor '%s' has shape %s: more than kiln's limit of 2^48 bytes", v->name,
                          kn_shape_str(&v->shape, sh, sizeof sh));
        }
        v->bytes = kn_align_up(v->nbytes, KN_ALIGN);
        if (!is_arena(v->kind)) continue;
        if (v->first < 0) { v->first = v->last = 0; } /* never touched: still give it room */
        if (kn_addz_ovf(g->naive_bytes, v->bytes, &g->naive_bytes) || g->naive_bytes > ((size_t)1 << 58)) {
            free(ids); free(placed); free(sp);
            return kn_err(ctx, KN_ERR_SHAPE, "the %s graph's activations add up to more than 2^58 bytes: far beyond any memory",
                          g->training ? "training" : "evaluation");
        }
    }
    plan_inplace(g);
    /* a buffer shared in place is placed once, as its root, live over all its takers' intervals */
    int *save_last = malloc((size_t)g->nv * sizeof *save_last);
    if (!save_last) { free(ids); free(placed); free(sp); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    for (int i = 0; i < g->nv; i++) save_last[i] = g->v[i].last;
    for (int i = 0; i < g->nv; i++) {
        if (!is_arena(g->v[i].kind) || g->v[i].alias < 0) continue;
        int r = alias_root(g, i);
        if (g->v[i].last > g->v[r].last) g->v[r].last = g->v[i].last;
    }
    for (int i = 0; i < g->nv; i++)
        if (is_arena(g->v[i].kind) && g->v[i].alias < 0) ids[m++] = i;
    {
        sort_key *keys = malloc((size_t)(m ? m : 1) * sizeof *keys);
        if (!keys) { free(ids); free(placed); free(sp); free(save_last); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        for (int k = 0; k < m; k++) keys[k] = (sort_key){g->v[ids[k]].bytes, g->v[ids[k]].first, ids[k]};
        qsort(keys, (size_t)m, sizeof *keys, cmp_key);
        for (int k = 0; k < m; k++) ids[k] = keys[k].id;
        free(keys);
    }
    int np = 0;
    size_t peak = 0, used = 0;
    for (int k = 0; k < m; k++) {
        kn_value *v = &g->v[ids[k]];
        int ns = 0;
        for (int j = 0; j < np; j++) {
            kn_value *u = &g->v[placed[j]];
            if (kn_g_live_overlap(u, v)) {
                sp[ns].off = u->offset;
                sp[ns].end = u->offset + u->bytes;
                ns++;
            }
        }
        qsort(sp, (size_t)ns, sizeof *sp, cmp_span);
        /* best fit: the smallest gap that holds it, else after the last */
        size_t best = (size_t)-1, best_gap = (size_t)-1, cur = 0;
        for (int j = 0; j < ns; j++) {
            if (sp[j].off > cur) {
                size_t gap = sp[j].off - cur;
                if (gap >= v->bytes && gap < best_gap) { best_gap = gap; best = cur; }
            }
            if (sp[j].end > cur) cur = sp[j].end;
        }
        if (best == (size_t)-1) best = cur;
        v->offset = best;
        if (best + v->bytes > peak) peak = best + v->bytes;
        if (best + v->nbytes > used) used = best + v->nbytes;
        placed[np++] = ids[k];
    }
    for (int i = 0; i < g->nv; i++) {
        if (!is_arena(g->v[i].kind)) continue;
        if (g->v[i].alias >= 0) {
            g->v[i].offset = g->v[alias_root(g, i)].offset;
            if (g->v[i].offset + g->v[i].nbytes > used) used = g->v[i].offset + g->v[i].nbytes;
        }
    }
    for (int i = 0; i < g->nv; i++) g->v[i].last = save_last[i];
    free(save_last);
    g->arena_bytes = peak;
    g->arena_used = used;
    free(ids);
    free(placed);
    free(sp);
    return KN_OK;
}

int kn_g_plan(kn_ctx *ctx, kn_graph *g) {
    if (g->planned) return KN_OK;
    int rc;
    g->steps = calloc((size_t)g->nn * 2 + (size_t)g->nv + 8, sizeof *g->steps);
    if (!g->steps) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < g->nn; k++) add_step(g, KN_STEP_FWD, k);
    g->nfwd = g->nsteps;
    if (g->training) {
        if (g->loss < 0) return kn_err(ctx, KN_ERR_CONFIG, "a training graph needs a loss");
        if ((rc = autodiff(ctx, g))) return rc;
        if ((rc = plan_recompute(ctx, g))) return rc;
    }
    /* backend primitives and scratch sizes */
    for (int k = 0; k < g->nn; k++) {
        kn_node *n = &g->n[k];
        if (!g->be->supports_op(g, n, 0))
            return kn_err(ctx, KN_ERR_CONFIG, "layer '%s': op %s has no kernels on the %s backend", n->layer,
                          n->op->name, g->be->name);
        const kn_kernels *kk = n->k = g->be->kernels(n->op);
        if (kk->prepare && (rc = kk->prepare(g, n, ctx))) {
            kn_err_prefix(ctx, "layer '%s' (%s): ", n->layer, n->op->name);
            return rc;
        }
        char name[96];
        if (n->scratch_fwd) {
            snprintf(name, sizeof name, "scratch(%.60s fwd)", n->layer);
            n->scratch_fwd_val = new_value(g, name, KN_U8, kn_shape1((int64_t)n->scratch_fwd), KN_VAL_SCRATCH);
        }
        if (n->scratch_bwd && g->training) {
            snprintf(name, sizeof name, "scratch(%.60s bwd)", n->layer);
            n->scratch_bwd_val = new_value(g, name, KN_U8, kn_shape1((int64_t)n->scratch_bwd), KN_VAL_SCRATCH);
        }
        if (n->scratch_fwd_val < -1 || n->scratch_bwd_val < -1) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    }
    if ((rc = liveness(ctx, g))) return rc;
    if ((rc = assign_offsets(ctx, g))) return rc;
    g->planned = 1;
    return KN_OK;
}

int kn_g_bind(kn_ctx *ctx, kn_graph *g, void *arena, size_t arena_size) {
    int rc;
    if (!g->planned) return kn_err(ctx, KN_ERR_INTERNAL, "kn_g_bind: the graph is not planned");
    if (g->compiled) return KN_OK;
    if ((rc = kn_store_alloc(ctx, g->store))) return rc;
    if (arena) {
        if (arena_size < g->arena_bytes)
            return kn_err(ctx, KN_ERR_INTERNAL, "kn_g_bind: an arena of %zu bytes for a plan of %zu", arena_size,
                          g->arena_bytes);
        g->arena = arena;
        g->own_arena = 0;
    } else {
        g->arena = g->be->alloc(g->arena_bytes);
        if (!g->arena)
            return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the %.1f MiB arena", (double)g->arena_bytes / 1048576.0);
        g->own_arena = 1;
    }
    kn_store *st = g->store;
    for (int i = 0; i < g->nv; i++) {
        kn_value *v = &g->v[i];
        if (is_arena(v->kind)) v->data = (float *)(void *)((char *)g->arena + v->offset);
        else if (v->kind == KN_VAL_PARAM) v->data = st->param + st->e[v->store_idx].offset;
        else if (v->kind == KN_VAL_PGRAD) v->data = st->grad + st->e[v->store_idx].offset;
        else if (v->kind == KN_VAL_STATE) v->data = st->state + st->e[v->store_idx].offset;
    }
    g->compiled = 1;
    return KN_OK;
}

int kn_g_compile(kn_ctx *ctx, kn_graph *g) {
    int rc = kn_g_plan(ctx, g);
    return rc ? rc : kn_g_bind(ctx, g, NULL, 0);
}

/* ======================= executor ======================= */
/* Save (dir 0) or restore (dir 1) the STATE inputs of n around a recomputation. */
static void state_backup(const kn_graph *g, const kn_node *n, float *bk, int dir) {
    for (int i = 0; i < n->nin; i++) {
        const kn_value *v = &g->v[n->in[i]];
        if (v->kind != KN_VAL_STATE) continue;
        size_t b = v->nbytes;
        if (dir == 0) g->be->copy(g, bk, v->data, b);
        else g->be->copy(g, v->data, bk, b);
        bk += b / sizeof(float);
    }
}

void kn_g_run_steps(kn_graph *g, kn_rt *rt, int from, int to) {
    rt->g = g;
    rt->training = g->training;
    for (int s = from; s < to; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) {
            g->be->memset(g, g->v[st->zero_val].data, 0, (size_t)kn_numel(g, st->zero_val) * sizeof(float));
            continue;
        }
        const kn_node *n = &g->n[st->node];
        const kn_kernels *k = n->k;
        if (st->kind == KN_STEP_FWD) {
            rt->scratch = n->scratch_fwd_val >= 0 ? (void *)g->v[n->scratch_fwd_val].data : NULL;
            k->forward(n, rt);
        } else if (st->kind == KN_STEP_RECOMP) {
            float *bk = st->backup >= 0 ? g->v[st->backup].data : NULL;
            if (bk) state_backup(g, n, bk, 0);
            rt->scratch = n->scratch_fwd_val >= 0 ? (void *)g->v[n->scratch_fwd_val].data : NULL;
            k->forward(n, rt);
            if (bk) state_backup(g, n, bk, 1);
        } else {
            float *din[KN_MAX_IN] = {0};
            const float *dout[KN_MAX_OUT] = {0};
            for (int i = 0; i < n->nin; i++) din[i] = st->din[i] >= 0 ? g->v[st->din[i]].data : NULL;
            for (int j = 0; j < n->nout; j++) {
                int gid = g->v[n->out[j]].grad;
                dout[j] = gid >= 0 ? g->v[gid].data : NULL;
            }
            rt->scratch = n->scratch_bwd_val >= 0 ? (void *)g->v[n->scratch_bwd_val].data : NULL;
            k->backward(n, rt, din, dout);
            for (int i = 0; i < n->nin; i++)
                if (st->accum[i]) g->be->axpy(g, g->v[g->v[n->in[i]].grad].data, 1.0f, din[i], kn_numel(g, n->in[i]));
        }
    }
}

void kn_g_forward(kn_graph *g, kn_rt *rt) { kn_g_run_steps(g, rt, 0, g->nfwd); }

void kn_g_backward(kn_graph *g, kn_rt *rt, const float *seed_grad) {
    if (g->loss < 0 || g->v[g->loss].grad < 0) return;
    kn_value *lg = &g->v[g->v[g->loss].grad];
    int64_t n = kn_shape_numel(&lg->shape);
    if (seed_grad) g->be->copy(g, lg->data, seed_grad, (size_t)n * sizeof(float));
    else {
        static const float one = 1.0f;
        for (int64_t i = 0; i < n; i++) g->be->copy(g, lg->data + i, &one, sizeof one);
    }
    kn_g_run_steps(g, rt, g->nfwd, g->nsteps);
}

/* ======================= plan report ======================= */
int kn_g_is_saved(const kn_graph *g, int vid) {
    const kn_value *v = &g->v[vid];
    if (!g->training || g->nsteps <= g->nfwd) return 0;
    if (v->kind != KN_VAL_ACT && v->kind != KN_VAL_INPUT) return 0;
    return v->first >= 0 && v->first < g->nfwd && v->last >= g->nfwd;
}

size_t kn_g_saved_bytes(const kn_graph *g) {
    size_t b = 0;
    for (int i = 0; i < g->nv; i++)
        if (kn_g_is_saved(g, i)) b += g->v[i].bytes;
    return b;
}

static int find_row(kn_layer_stats *r, int n, const char *layer) {
    for (int i = 0; i < n; i++)
        if (strcmp(r[i].layer, layer) == 0) return i;
    return -1;
}

int kn_g_layer_stats(const kn_graph *g, kn_layer_stats **out) {
    *out = NULL;
    kn_layer_stats *r = calloc((size_t)g->nn + 1, sizeof *r);
    if (!r) return -1;
    int n = 0;
    kn_strlcpy(r[n].layer, "input", sizeof r[n].layer);
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].kind == KN_VAL_INPUT && strcmp(g->v[i].name, "input") == 0) r[n].out = g->v[i].shape;
    n++;
    for (int k = 0; k < g->nn; k++) {
        const kn_node *nd = &g->n[k];
        int row = find_row(r, n, nd->layer);
        if (row < 0) {
            row = n++;
            kn_strlcpy(r[row].layer, nd->layer, sizeof r[row].layer);
        }
        kn_layer_stats *L = &r[row];
        L->out = g->v[nd->out[0]].shape; /* the layer's last node gives its result */
        if (nd->op->flops_fwd) L->flops_fwd += nd->op->flops_fwd(g, nd);
        if (nd->recompute && g->training) L->recompute = 1;
        if (nd->impl[0]) kn_strlcpy(L->impl, nd->impl, sizeof L->impl);
        if (nd->scratch_fwd_val >= 0) L->scratch_bytes += g->v[nd->scratch_fwd_val].bytes;
        if (nd->scratch_bwd_val >= 0) L->scratch_bytes += g->v[nd->scratch_bwd_val].bytes;
    }
    for (int s = g->nfwd; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) continue;
        const kn_node *nd = &g->n[st->node];
        int row = find_row(r, n, nd->layer);
        if (st->kind == KN_STEP_BWD && nd->op->flops_bwd) r[row].flops_bwd += nd->op->flops_bwd(g, nd);
        if (st->kind == KN_STEP_RECOMP && nd->op->flops_fwd) r[row].flops_bwd += nd->op->flops_fwd(g, nd);
        if (st->backup >= 0) r[row].scratch_bytes += g->v[st->backup].bytes;
    }
    for (int i = 0; i < g->nv; i++) {
        if (!kn_g_is_saved(g, i)) continue;
        const kn_value *v = &g->v[i];
        int row = v->producer >= 0 ? find_row(r, n, g->n[v->producer].layer) : 0;
        if (row >= 0) r[row].saved_bytes += v->bytes;
    }
    const kn_store *st = g->store;
    for (int e = 0; e < st->n; e++) {
        /* only the entries this graph uses */
        int used = 0;
        for (int i = 0; i < g->nv && !used; i++)
            used = (g->v[i].kind == KN_VAL_PARAM || g->v[i].kind == KN_VAL_STATE) && g->v[i].store_idx == e;
        if (!used) continue;
        int row = find_row(r, n, st->e[e].layer);
        if (row < 0) continue;
        size_t b = kn_align_up((size_t)st->e[e].numel * sizeof(float), KN_ALIGN);
        r[row].param_bytes += b;
        if (!st->e[e].is_state) {
            r[row].params += st->e[e].numel;
            if (g->training) r[row].grad_bytes += b;
        }
    }
    *out = r;
    return n;
}

void kn_g_print_plan(const kn_graph *g, FILE *f) {
    kn_layer_stats *r;
    int n = kn_g_layer_stats(g, &r);
    if (n < 0) return;
    fprintf(f, "%-16s %-18s %12s %10s %10s %12s %12s\n", "layer", "output", "params", "fwd MFLOP", "bwd MFLOP",
            "saved KiB", "scratch KiB");
    for (int i = 0; i < n; i++) {
        char sh[64];
        fprintf(f, "%-16s %-18s %12lld %10.2f %10.2f %12.1f %12.1f\n", r[i].layer,
                kn_shape_str(&r[i].out, sh, sizeof sh), (long long)r[i].params, r[i].flops_fwd / 1e6,
                r[i].flops_bwd / 1e6, (double)r[i].saved_bytes / 1024.0, (double)r[i].scratch_bytes / 1024.0);
    }
    fprintf(f, "arena: planned peak %.2f MiB (naive %.2f MiB); parameters %.2f MiB\n",
            (double)g->arena_bytes / 1048576.0, (double)g->naive_bytes / 1048576.0,
            (double)g->store->nparam * 4 / 1048576.0);
    free(r);
}
