/* The liveness planner on graphs with fan-out, branches, residual adds and concats,
 * with and without activation recomputation:
 *  - no two simultaneously live arena tensors share a byte, except a gradient that an
 *    in-place backward (relu, tanh, sigmoid, BatchNorm) writes over its output's
 *    gradient at the one step where the first is last read and the second first
 *    written; every tensor fits in the arena; the planned peak is max(offset + bytes); every tensor a step reads or
 *    writes is live at that step;
 *  - the planned layout computes bit-identical losses, gradients and BatchNorm
 *    statistics to a layout where every tensor has its own buffer (a planner that
 *    reused live memory would change them), the arena being filled with NaN first;
 *  - recomputation gives bit-identical gradients and running statistics with fewer
 *    activation bytes kept for backward. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "testutil.h"

#define NB 8 /* batch */

typedef struct {
    kn_ctx *ctx;
    kn_store store;
    kn_graph *g;
    int x, y, loss;
    const char *const *recompute; /* layer names to recompute, NULL-terminated */
} tg;

static void layer(tg *t, const char *name) {
    kn_g_set_layer(t->g, name);
    int r = 0;
    for (int i = 0; t->recompute && t->recompute[i]; i++)
        if (!strcmp(t->recompute[i], name)) r = 1;
    kn_g_set_recompute(t->g, r);
}

static int lin(tg *t, const char *name, int x, int out) {
    layer(t, name);
    char nm[96];
    int64_t in = kn_shp(t->g, x)->d[1];
    kn_init ki = {KN_INIT_KAIMING_UNIFORM, 0, in, out}, zi = {KN_INIT_UNIFORM, 0.1, 0, 0};
    int a[3] = {x, -1, -1};
    snprintf(nm, sizeof nm, "%s.weight", name);
    a[1] = kn_g_param(t->ctx, t->g, nm, kn_shape2(out, in), ki);
    snprintf(nm, sizeof nm, "%s.bias", name);
    a[2] = kn_g_param(t->ctx, t->g, nm, kn_shape1(out), zi);
    return kn_g_op(t->ctx, t->g, &kn_op_linear, a, 3, NULL);
}

static int conv(tg *t, const char *name, int x, int oc, int k) {
    layer(t, name);
    char nm[96];
    int64_t c = kn_shp(t->g, x)->d[1];
    kn_init ki = {KN_INIT_KAIMING_UNIFORM, 0, c * k * k, oc * k * k};
    int a[2] = {x, -1};
    snprintf(nm, sizeof nm, "%s.weight", name);
    a[1] = kn_g_param(t->ctx, t->g, nm, kn_shape4(oc, c, k, k), ki);
    kn_attrs at = {0};
    at.i[0] = at.i[1] = 1;
    at.i[2] = at.i[3] = k / 2;
    return kn_g_op(t->ctx, t->g, &kn_op_conv2d, a, 2, &at);
}

static int bn(tg *t, const char *name, int x) {
    layer(t, name);
    char nm[96];
    int64_t c = kn_shp(t->g, x)->d[1];
    kn_init one = {KN_INIT_ONES, 0, 0, 0}, zero = {KN_INIT_ZEROS, 0, 0, 0};
    int a[5] = {x};
    snprintf(nm, sizeof nm, "%s.weight", name);
    a[1] = kn_g_param(t->ctx, t->g, nm, kn_shape1(c), one);
    snprintf(nm, sizeof nm, "%s.bias", name);
    a[2] = kn_g_param(t->ctx, t->g, nm, kn_shape1(c), zero);
    snprintf(nm, sizeof nm, "%s.running_mean", name);
    a[3] = kn_g_state(t->ctx, t->g, nm, kn_shape1(c), zero);
    snprintf(nm, sizeof nm, "%s.running_var", name);
    a[4] = kn_g_state(t->ctx, t->g, nm, kn_shape1(c), one);
    kn_attrs at = {0};
    at.f[0] = 0.1;
    at.f[1] = 1e-5;
    return kn_g_op(t->ctx, t->g, &kn_op_batchnorm, a, 5, &at);
}

static int op1(tg *t, const char *name, const kn_op *op, int x) {
    layer(t, name);
    return kn_g_op(t->ctx, t->g, op, &x, 1, NULL);
}
static int op2(tg *t, const char *name, const kn_op *op, int a, int b, int64_t attr0) {
    layer(t, name);
    int in[2] = {a, b};
    kn_attrs at = {0};
    at.i[0] = attr0;
    return kn_g_op(t->ctx, t->g, op, in, 2, &at);
}

static int finish(tg *t, int logits, int nclasses) {
    layer(t, "loss");
    kn_g_set_recompute(t->g, 0);
    t->y = kn_g_input(t->g, "labels", KN_I32, kn_shape1(NB));
    int in[2] = {logits, t->y};
    (void)nclasses;
    t->loss = kn_g_op(t->ctx, t->g, &kn_op_softmax_ce, in, 2, NULL);
    if (t->loss < 0) return -1;
    kn_g_set_loss(t->g, t->loss);
    kn_g_keep(t->g, logits);
    return 0;
}

/* 1. residuals and fan-out: h1 feeds relu, then two adds read the running sum */
static int build_residual(tg *t) {
    t->x = kn_g_input(t->g, "input", KN_F32, kn_shape2(NB, 16));
    int h1 = lin(t, "fc1", t->x, 32);
    int r1 = op1(t, "relu1", &kn_op_relu, h1);
    int h2 = lin(t, "fc2", r1, 32);
    int s1 = op2(t, "add1", &kn_op_add, r1, h2, 0);
    int h3 = lin(t, "fc3", s1, 32);
    int t3 = op1(t, "tanh3", &kn_op_tanh, h3);
    int s2 = op2(t, "add2", &kn_op_add, s1, t3, 0);
    int s3 = op2(t, "add3", &kn_op_add, s2, r1, 0); /* a long skip: r1 has three readers */
    int o = lin(t, "out", s3, 10);
    return o < 0 ? -1 : finish(t, o, 10);
}

/* 2. conv branches from one input, BatchNorm on one, concatenated along channels */
static int build_branches(tg *t) {
    t->x = kn_g_input(t->g, "input", KN_F32, kn_shape4(NB, 2, 8, 8));
    int a = conv(t, "conv_a", t->x, 4, 3);
    int ab = bn(t, "bn_a", a);
    int ar = op1(t, "relu_a", &kn_op_relu, ab);
    int b = conv(t, "conv_b", t->x, 3, 1);
    int br = op1(t, "relu_b", &kn_op_relu, b);
    int c = op2(t, "cat", &kn_op_concat, ar, br, 1);
    layer(t, "pool");
    kn_attrs pa = {0};
    pa.i[0] = pa.i[1] = 2;
    pa.i[2] = pa.i[3] = 2;
    int p = kn_g_op(t->ctx, t->g, &kn_op_maxpool2d, &c, 1, &pa);
    layer(t, "flat");
    kn_attrs ra = {0};
    ra.i[0] = 2;
    ra.i[1] = NB;
    ra.i[2] = -1;
    int f = kn_g_op(t->ctx, t->g, &kn_op_reshape, &p, 1, &ra);
    int o = lin(t, "out", f, 10);
    return o < 0 ? -1 : finish(t, o, 10);
}

/* 3. three branches of one input: concat of two, added to the third */
static int build_concat_add(tg *t) {
    t->x = kn_g_input(t->g, "input", KN_F32, kn_shape2(NB, 12));
    int a = lin(t, "fa", t->x, 8);
    int b = lin(t, "fb", t->x, 8);
    int c = lin(t, "fc", t->x, 16);
    int ab = op2(t, "cat", &kn_op_concat, a, b, 1);
    int as = op1(t, "sig", &kn_op_sigmoid, ab);
    int d = lin(t, "fd", as, 16);
    int s = op2(t, "add", &kn_op_add, d, c, 0);
    int r = op1(t, "relu", &kn_op_relu, s);
    int o = lin(t, "out", r, 10);
    return o < 0 ? -1 : finish(t, o, 10);
}

typedef int (*builder)(tg *t);

static int tg_build(tg *t, builder b, const char *const *recompute) {
    memset(t, 0, sizeof *t);
    t->ctx = kn_ctx_new();
    kn_store_init(&t->store);
    t->recompute = recompute;
    t->g = kn_g_new(&t->store, 1);
    if (b(t) != 0) return -1;
    return kn_g_plan(t->ctx, t->g);
}

static void tg_free(tg *t) {
    kn_g_free(t->g);
    kn_store_free(&t->store);
    kn_ctx_free(t->ctx);
}

/* every tensor a step touches must be live at that step */
static int check_usage(const kn_graph *g, int s, int vid, const char *what) {
    if (vid < 0 || !kn_g_in_arena(&g->v[vid])) return 1;
    int ok = kn_g_live_at(&g->v[vid], s);
    CHECK(ok, "step %d: %s '%s' is used but not live ([%d,%d] [%d,%d])", s, what, g->v[vid].name, g->v[vid].first,
          g->v[vid].last, g->v[vid].first2, g->v[vid].last2);
    return ok;
}

static int root(const kn_graph *g, int vid) {
    while (g->v[vid].alias >= 0) vid = g->v[vid].alias;
    return vid;
}

static int check_plan(const char *name, const kn_graph *g) {
    size_t peak = 0, used = 0;
    int bad = 0, inplace = 0;
    for (int i = 0; i < g->nv; i++) {
        const kn_value *u = &g->v[i];
        if (!kn_g_in_arena(u)) continue;
        if (u->offset + u->bytes > peak) peak = u->offset + u->bytes;
        if (u->offset + u->nbytes > used) used = u->offset + u->nbytes;
        CHECK(u->offset % KN_ALIGN == 0, "%s: %s offset %zu is not aligned", name, u->name, u->offset);
        for (int j = i + 1; j < g->nv; j++) {
            const kn_value *v = &g->v[j];
            if (!kn_g_in_arena(v) || !kn_g_live_overlap(u, v)) continue;
            if (root(g, i) == root(g, j)) { /* one buffer handed over in place at one step */
                CHECK(u->offset == v->offset && (u->last == v->first || v->last == u->first),
                      "%s: in-place pair '%s' [%d,%d] @%zu and '%s' [%d,%d] @%zu", name, u->name, u->first, u->last,
                      u->offset, v->name, v->first, v->last, v->offset);
                inplace++;
                continue;
            }
            if (u->offset < v->offset + v->bytes && v->offset < u->offset + u->bytes) {
                bad++;
                CHECK(0, "%s: '%s' [%zu,+%zu) and '%s' [%zu,+%zu) are live together and overlap", name, u->name,
                      u->offset, u->bytes, v->name, v->offset, v->bytes);
            }
        }
    }
    CHECK(!bad, "%s: %d overlapping pairs", name, bad);
    CHECK(peak == g->arena_bytes, "%s: planned peak %zu != max(offset + bytes) %zu", name, g->arena_bytes, peak);
    CHECK(used == g->arena_used, "%s: arena_used %zu != max(offset + nbytes) %zu", name, g->arena_used, used);
    CHECK(g->arena_bytes <= g->naive_bytes, "%s: peak %zu above the naive total %zu", name, g->arena_bytes,
          g->naive_bytes);
    for (int s = 0; s < g->nsteps; s++) {
        const kn_step *st = &g->steps[s];
        if (st->kind == KN_STEP_ZERO) continue;
        const kn_node *n = &g->n[st->node];
        if (st->kind != KN_STEP_BWD) {
            for (int i = 0; i < n->nin; i++) check_usage(g, s, n->in[i], "input");
            for (int j = 0; j < n->nout; j++) check_usage(g, s, n->out[j], "output");
            check_usage(g, s, n->scratch_fwd_val, "scratch");
            check_usage(g, s, st->backup, "backup");
        } else {
            for (int i = 0; i < n->nin; i++) {
                if (n->op->bwd_reads_in >> i & 1u) check_usage(g, s, n->in[i], "saved input");
                check_usage(g, s, st->din[i], "input gradient");
                if (st->accum[i]) check_usage(g, s, g->v[n->in[i]].grad, "summed gradient");
            }
            for (int j = 0; j < n->nout; j++) {
                if (n->op->bwd_reads_out >> j & 1u) check_usage(g, s, n->out[j], "saved output");
                check_usage(g, s, g->v[n->out[j]].grad, "output gradient");
            }
            check_usage(g, s, n->scratch_bwd_val, "scratch");
        }
    }
    return inplace;
}

/* Results of two training steps. */
typedef struct {
    float loss[2];
    float *grad, *state;
    int64_t ngrad, nstate;
} run_out;

static void tg_run(tg *t, int naive, run_out *r) {
    kn_graph *g = t->g;
    if (naive) { /* every arena tensor its own buffer */
        size_t off = 0;
        for (int i = 0; i < g->nv; i++) {
            if (!kn_g_in_arena(&g->v[i])) continue;
            g->v[i].offset = off;
            off += g->v[i].bytes;
        }
        g->arena_bytes = off;
    }
    int rc = kn_g_bind(t->ctx, g, NULL, 0);
    CHECK(rc == KN_OK, "bind: %s", kn_ctx_message(t->ctx));
    memset(g->arena, 0xFF, g->arena_bytes); /* NaN everywhere */
    kn_rng rng;
    kn_rng_seed(&rng, 7);
    kn_store_init_values(&t->store, &rng);
    kn_rt rt = {0};
    rt.seed = 99;
    for (int step = 0; step < 2; step++) {
        kn_rng_seed(&rng, 1000 + (uint64_t)step);
        float *x = kn_ptr(g, t->x);
        for (int64_t i = 0; i < kn_numel(g, t->x); i++) x[i] = (float)kn_rng_normal(&rng);
        int32_t *y = kn_iptr(g, t->y);
        for (int i = 0; i < NB; i++) y[i] = (int32_t)kn_rng_below(&rng, 10);
        rt.step = step;
        kn_g_forward(g, &rt);
        kn_g_backward(g, &rt, NULL);
        r->loss[step] = kn_ptr(g, t->loss)[0];
    }
    r->ngrad = t->store.nparam;
    r->nstate = t->store.nstate;
    r->grad = malloc((size_t)(r->ngrad + 1) * sizeof(float));
    r->state = malloc((size_t)(r->nstate + 1) * sizeof(float));
    memcpy(r->grad, t->store.grad, (size_t)r->ngrad * sizeof(float));
    memcpy(r->state, t->store.state, (size_t)r->nstate * sizeof(float));
}

static int same(const run_out *a, const run_out *b) {
    return a->ngrad == b->ngrad && a->nstate == b->nstate && !memcmp(a->loss, b->loss, sizeof a->loss) &&
           !memcmp(a->grad, b->grad, (size_t)a->ngrad * sizeof(float)) &&
           !memcmp(a->state, b->state, (size_t)a->nstate * sizeof(float));
}

static void run_free(run_out *r) {
    free(r->grad);
    free(r->state);
}

static void case_graph(const char *name, builder b, const char *const *recompute) {
    tg t, tn, tr;
    run_out planned, naive, rec;
    int ok = tg_build(&t, b, NULL) == KN_OK;
    CHECK(ok, "%s: %s", name, kn_ctx_message(t.ctx));
    if (!ok) { tg_free(&t); return; }
    int inplace = check_plan(name, t.g);
    CHECK(inplace > 0, "%s: no gradient written in place", name);
    tg_run(&t, 0, &planned);
    CHECK(isfinite(planned.loss[0]) && isfinite(planned.loss[1]), "%s: loss %g %g", name, (double)planned.loss[0],
          (double)planned.loss[1]);
    CHECK(t.g->arena_bytes < t.g->naive_bytes, "%s: no reuse (%zu of %zu)", name, t.g->arena_bytes, t.g->naive_bytes);

    CHECK(tg_build(&tn, b, NULL) == KN_OK, "%s naive: %s", name, kn_ctx_message(tn.ctx));
    tg_run(&tn, 1, &naive);
    CHECK(same(&planned, &naive), "%s: the planned layout computes something else than one buffer per tensor", name);

    ok = tg_build(&tr, b, recompute) == KN_OK;
    CHECK(ok, "%s recompute: %s", name, kn_ctx_message(tr.ctx));
    if (ok) {
        char nm[128];
        snprintf(nm, sizeof nm, "%s (recompute)", name);
        check_plan(nm, tr.g);
        int nrec = 0;
        for (int s = 0; s < tr.g->nsteps; s++) nrec += tr.g->steps[s].kind == KN_STEP_RECOMP;
        CHECK(nrec > 0, "%s: no recompute steps", nm);
        size_t s0 = kn_g_saved_bytes(t.g), s1 = kn_g_saved_bytes(tr.g);
        if (getenv("KN_PLAN_DEBUG")) {
            for (int i = 0; i < t.g->nv; i++) if (kn_g_is_saved(t.g, i)) printf("  saved: %s %zu\n", t.g->v[i].name, t.g->v[i].bytes);
            for (int i = 0; i < tr.g->nv; i++) if (kn_g_is_saved(tr.g, i)) printf("  saved (r): %s %zu\n", tr.g->v[i].name, tr.g->v[i].bytes);
            for (int i = 0; i < tr.g->nv; i++) if (kn_g_in_arena(&tr.g->v[i])) printf("  %s [%d,%d] [%d,%d] @%zu+%zu\n", tr.g->v[i].name, tr.g->v[i].first, tr.g->v[i].last, tr.g->v[i].first2, tr.g->v[i].last2, tr.g->v[i].offset, tr.g->v[i].bytes);
        }
        CHECK(s1 < s0, "%s: saved activations %zu, without recomputation %zu", nm, s1, s0);
        printf("%-16s arena %7zu (naive %7zu)  saved %6zu; with recomputation: arena %7zu saved %6zu, %d steps\n",
               name, t.g->arena_bytes, t.g->naive_bytes, s0, tr.g->arena_bytes, s1, nrec);
        tg_run(&tr, 0, &rec);
        CHECK(same(&planned, &rec), "%s: gradients, losses or running statistics differ", nm);
        run_free(&rec);
    }
    tg_free(&tr);
    run_free(&planned);
    run_free(&naive);
    tg_free(&t);
    tg_free(&tn);
}

/* A forward-only graph keeps nothing for a backward. */
static void case_eval(void) {
    tg t;
    memset(&t, 0, sizeof t);
    t.ctx = kn_ctx_new();
    kn_store_init(&t.store);
    t.g = kn_g_new(&t.store, 0);
    t.x = kn_g_input(t.g, "input", KN_F32, kn_shape2(NB, 16));
    int h = lin(&t, "fc1", t.x, 64);
    h = op1(&t, "relu1", &kn_op_relu, h);
    h = lin(&t, "fc2", h, 64);
    h = op1(&t, "relu2", &kn_op_relu, h);
    h = lin(&t, "out", h, 10);
    kn_g_keep(t.g, h);
    CHECK(kn_g_plan(t.ctx, t.g) == KN_OK, "eval: %s", kn_ctx_message(t.ctx));
    check_plan("eval", t.g);
    CHECK(kn_g_saved_bytes(t.g) == 0, "eval graph keeps %zu bytes", kn_g_saved_bytes(t.g));
    /* a chain needs at most two activations at a time, the input, the kept output and
     * one step's scratch */
    size_t act = (size_t)NB * 64 * 4, scratch = 0;
    for (int i = 0; i < t.g->nv; i++)
        if (t.g->v[i].kind == KN_VAL_SCRATCH && t.g->v[i].bytes > scratch) scratch = t.g->v[i].bytes;
    CHECK(t.g->arena_bytes <= 2 * act + (size_t)NB * 16 * 4 + (size_t)NB * 10 * 4 + scratch + 2 * KN_ALIGN,
          "eval arena %zu", t.g->arena_bytes);
    tg_free(&t);
}

int main(void) {
    static const char *const rec_res[] = {"fc2", "add1", "fc3", "tanh3", "add2", NULL};
    static const char *const rec_br[] = {"conv_a", "bn_a", "relu_a", "conv_b", "relu_b", NULL};
    static const char *const rec_cat[] = {"fa", "fb", "cat", "sig", NULL};
    case_graph("residual", build_residual, rec_res);
    case_graph("branches", build_branches, rec_br);
    case_graph("concat+add", build_concat_add, rec_cat);
    case_eval();
    return kn_test_finish("test_planner");
}
