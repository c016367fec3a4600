/* kiln — graph builder, autodiff, liveness planner and executor. See graph.h. */
#define _POSIX_C_SOURCE 200809L
#include "graph/graph.h"

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
    e->numel = kn_shape_numel(&shape);
    e->is_state = is_state;
    e->init = init;
    /* keep every tensor 64-byte aligned inside the packed blocks */
    int64_t pad = (int64_t)(KN_ALIGN / sizeof(float));
    if (is_state) {
        e->offset = s->nstate;
        s->nstate += (e->numel + pad - 1) / pad * pad;
    } else {
        e->offset = s->nparam;
        s->nparam += (e->numel + pad - 1) / pad * pad;
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
    g->loss = -1;
    return g;
}

void kn_g_free(kn_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->nn; i++) {
        const kn_kernels *k = &g->n[i].op->kernels[g->backend];
        if (k->release && g->n[i].priv) k->release(&g->n[i]);
    }
    kn_aligned_free(g->arena);
    free(g->v);
    free(g->n);
    free(g->steps);
    free(g);
}

void kn_g_set_layer(kn_graph *g, const char *layer) { kn_strlcpy(g->cur_layer, layer, sizeof g->cur_layer); }

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
    return g->nv++;
}

int kn_g_input(kn_graph *g, const char *name, kn_dtype dt, kn_shape shape) {
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
    if (g->compiled) { kn_err(ctx, KN_ERR_INTERNAL, "graph already compiled"); return -1; }
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
    g->nn++;
    if (op->infer(g, n, ctx) != KN_OK) {
        g->nn--;
        if (!ctx->code) kn_err(ctx, KN_ERR_SHAPE, "%s: invalid inputs", op->name);
        return -1;
    }
    if (n->nout < 1 || n->out[0] < 0) { kn_err(ctx, KN_ERR_INTERNAL, "%s declared no output", op->name); g->nn--; return -1; }
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
        if (!n->op->kernels[g->backend].backward) {
            free(written);
            return kn_err(ctx, KN_ERR_INTERNAL, "op %s has no backward", n->op->name);
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

/* ======================= planner ======================= */
static int is_arena(kn_val_kind k) {
    return k == KN_VAL_ACT || k == KN_VAL_INPUT || k == KN_VAL_GRAD || k == KN_VAL_TEMP || k == KN_VAL_SCRATCH;
}

static void touch(kn_value *v, int s) {
    if (v->first < 0 || s < v->first) v->first = s;
    if (s > v->last) v->last = s;
}

static void liveness(kn_graph *g) {
    for (int i = 0; i < g->nv; i++) g->v[i].first = g->v[i].last = -1;
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].kind == KN_VAL_INPUT) touch(&g->v[i], 0);
    for (int s = 0; s < g->nsteps; s++) {
        kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) { touch(&g->v[st->zero_val], s); continue; }
        kn_node *n = &g->n[st->node];
        if (st->kind == KN_STEP_FWD) {
            for (int i = 0; i < n->nin; i++) touch(&g->v[n->in[i]], s);
            for (int j = 0; j < n->nout; j++) touch(&g->v[n->out[j]], s);
            if (n->scratch_fwd_val >= 0) touch(&g->v[n->scratch_fwd_val], s);
        } else {
            for (int i = 0; i < n->nin; i++) {
                if (n->op->bwd_reads_in >> i & 1u) touch(&g->v[n->in[i]], s);
                if (st->din[i] >= 0) {
                    touch(&g->v[st->din[i]], s);
                    if (st->accum[i]) touch(&g->v[g->v[n->in[i]].grad], s);
                }
            }
            for (int j = 0; j < n->nout; j++) {
                if (n->op->bwd_reads_out >> j & 1u) touch(&g->v[n->out[j]], s);
                if (g->v[n->out[j]].grad >= 0) touch(&g->v[g->v[n->out[j]].grad], s);
            }
            if (n->scratch_bwd_val >= 0) touch(&g->v[n->scratch_bwd_val], s);
        }
    }
    /* the loss gradient is seeded just before the first backward step */
    if (g->loss >= 0 && g->v[g->loss].grad >= 0) touch(&g->v[g->v[g->loss].grad], g->nfwd);
    for (int i = 0; i < g->nv; i++)
        if (g->v[i].keep) touch(&g->v[i], g->nsteps);
}

typedef struct { size_t off, end; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static kn_graph *g_sort_graph; /* qsort has no context argument in C17 */
static int cmp_vid(const void *a, const void *b) {
    const kn_value *x = &g_sort_graph->v[*(const int *)a], *y = &g_sort_graph->v[*(const int *)b];
    if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return *(const int *)a - *(const int *)b;
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
        v->bytes = kn_align_up((size_t)kn_shape_numel(&v->shape) * kn_dtype_size(v->dtype), KN_ALIGN);
        if (!is_arena(v->kind)) continue;
        if (v->first < 0) { v->first = v->last = 0; } /* never touched: still give it room */
        ids[m++] = i;
        g->naive_bytes += v->bytes;
    }
    g_sort_graph = g;
    qsort(ids, (size_t)m, sizeof *ids, cmp_vid);
    int np = 0;
    size_t peak = 0;
    for (int k = 0; k < m; k++) {
        kn_value *v = &g->v[ids[k]];
        int ns = 0;
        for (int j = 0; j < np; j++) {
            kn_value *u = &g->v[placed[j]];
            if (u->first <= v->last && v->first <= u->last) {
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
        placed[np++] = ids[k];
    }
    g->arena_bytes = peak;
    free(ids);
    free(placed);
    free(sp);
    return KN_OK;
}

int kn_g_compile(kn_ctx *ctx, kn_graph *g) {
    if (g->compiled) return KN_OK;
    int rc;
    g->steps = calloc((size_t)g->nn * 2 + (size_t)g->nv + 8, sizeof *g->steps);
    if (!g->steps) return kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    for (int k = 0; k < g->nn; k++) add_step(g, KN_STEP_FWD, k);
    g->nfwd = g->nsteps;
    if (g->training) {
        if (g->loss < 0) return kn_err(ctx, KN_ERR_CONFIG, "a training graph needs a loss");
        if ((rc = autodiff(ctx, g))) return rc;
    }
    /* backend primitives and scratch sizes */
    for (int k = 0; k < g->nn; k++) {
        kn_node *n = &g->n[k];
        const kn_kernels *kk = &n->op->kernels[g->backend];
        if (!kk->forward) return kn_err(ctx, KN_ERR_INTERNAL, "op %s has no kernel for this backend", n->op->name);
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
    liveness(g);
    if ((rc = assign_offsets(ctx, g))) return rc;
    if ((rc = kn_store_alloc(ctx, g->store))) return rc;
    g->arena = kn_aligned_alloc(g->arena_bytes);
    if (!g->arena)
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the %.1f MiB arena", (double)g->arena_bytes / 1048576.0);
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

/* ======================= executor ======================= */
static void add_into(float *restrict dst, const float *restrict src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > 32768)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

void kn_g_run_steps(kn_graph *g, kn_rt *rt, int from, int to) {
    rt->g = g;
    rt->training = g->training;
    for (int s = from; s < to; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) {
            memset(g->v[st->zero_val].data, 0, (size_t)kn_numel(g, st->zero_val) * sizeof(float));
            continue;
        }
        const kn_node *n = &g->n[st->node];
        const kn_kernels *k = &n->op->kernels[g->backend];
        if (st->kind == KN_STEP_FWD) {
            rt->scratch = n->scratch_fwd_val >= 0 ? (void *)g->v[n->scratch_fwd_val].data : NULL;
            k->forward(n, rt);
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
                if (st->accum[i]) add_into(g->v[g->v[n->in[i]].grad].data, din[i], kn_numel(g, n->in[i]));
        }
    }
}

void kn_g_forward(kn_graph *g, kn_rt *rt) { kn_g_run_steps(g, rt, 0, g->nfwd); }

void kn_g_backward(kn_graph *g, kn_rt *rt, const float *seed_grad) {
    if (g->loss < 0 || g->v[g->loss].grad < 0) return;
    kn_value *lg = &g->v[g->v[g->loss].grad];
    int64_t n = kn_shape_numel(&lg->shape);
    if (seed_grad) memcpy(lg->data, seed_grad, (size_t)n * sizeof(float));
    else for (int64_t i = 0; i < n; i++) lg->data[i] = 1.0f;
    kn_g_run_steps(g, rt, g->nfwd, g->nsteps);
}

/* ======================= plan report ======================= */
void kn_g_print_plan(const kn_graph *g, FILE *f) {
    fprintf(f, "%-16s %-18s %12s %10s %10s\n", "layer", "output", "params", "fwd MFLOP", "bwd MFLOP");
    for (int k = 0; k < g->nn; k++) {
        const kn_node *n = &g->n[k];
        int last_of_layer = (k + 1 == g->nn) || strcmp(g->n[k + 1].layer, n->layer) != 0;
        if (!last_of_layer) continue;
        int64_t params = 0;
        double ff = 0, fb = 0;
        for (int j = 0; j <= k; j++) {
            const kn_node *m = &g->n[j];
            if (strcmp(m->layer, n->layer) != 0) continue;
            if (m->op->flops_fwd) ff += m->op->flops_fwd(g, m);
            if (m->op->flops_bwd) fb += m->op->flops_bwd(g, m);
        }
        for (int e = 0; e < g->store->n; e++)
            if (!g->store->e[e].is_state && strcmp(g->store->e[e].layer, n->layer) == 0) params += g->store->e[e].numel;
        char sh[64];
        fprintf(f, "%-16s %-18s %12lld %10.2f %10.2f\n", n->layer, kn_shape_str(kn_shp(g, n->out[0]), sh, sizeof sh),
                (long long)params, ff / 1e6, fb / 1e6);
    }
    fprintf(f, "arena: planned peak %.2f MiB (naive %.2f MiB); parameters %.2f MiB\n",
            (double)g->arena_bytes / 1048576.0, (double)g->naive_bytes / 1048576.0,
            (double)g->store->nparam * 4 / 1048576.0);
}
