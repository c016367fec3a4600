/* Gradient-check harness for kiln ops (header-only: the test CMake links only
 * testutil.c into each test program, so everything here is static).
 *
 * gc_build() makes a one-op training (or evaluation) graph: every float input to
 * differentiate is a trainable PARAM (inputs never get gradients in kiln), constant
 * inputs (labels, targets) are graph INPUTs, persistent state (BatchNorm running
 * statistics) is STATE. The op's first output y is marked as the loss even when it
 * is not a scalar, and the backward is seeded with a random R, so the scalar being
 * differentiated is L = sum_k R_k y_k. (y is copied by a reshape node, which is the
 * graph's loss, so that y itself is an ordinary activation whose lifetime the planner
 * ends after its last declared reader.)
 *
 * gc_check() compares every analytic gradient element (or a random subset of large
 * tensors) with a central difference (L(x+h) - L(x-h)) / (2h):
 *  - the difference is taken per output element in double, sum_k R_k (y+_k - y-_k),
 *    so outputs that do not depend on the perturbed element cancel exactly and float
 *    rounding only enters through the outputs that do;
 *  - the step is the float-representable one, (float)(x+h) - (float)(x-h);
 *  - an element passes when |a - n| <= rtol * max(|a|, |n|) + atol * scale, scale being
 *    the largest |gradient| of that tensor (analytic or numeric, at least 1e-6).
 *    rtol = 1e-2 covers the O(h^2) truncation error of smooth ops with h = 1e-2
 *    (|f'''| h^2 / 6 ~ 2e-5 |f'''|) and float rounding in the analytic gradient; the
 *    atol * scale term (1e-3 of the gradient scale) absorbs the float32 forward noise
 *    of elements whose gradient is close to zero: the forward is float32, so
 *    (y+ - y-) carries ~1e-7 |y| of rounding per affected output, i.e. ~1e-5 |y| / h
 *    after the division. Measured worst err/tol ratios are printed with GC_VERBOSE=1
 *    and stay below ~0.11 (the worst: mse, a float32 scalar) in test_gradcheck.c.
 * Piecewise-linear ops (relu, leaky relu, maxpool) are checked on inputs filled with
 * GC_DISTINCT: a random permutation of a grid with spacing 0.05, offset by half a step
 * so no value is 0, and h = 1e-2 < spacing / 2: no perturbation crosses a kink or
 * changes a window's argmax.
 *
 * Before the backward, the harness also:
 *  - fills every arena tensor that is dead after the forward (its liveness interval
 *    ends before the first backward step, and its memory holds nothing live) with
 *    0xFF bytes (NaN / -1): a backward that reads an input, its output or a saved
 *    output missing from its bwd_reads_in / bwd_reads_out masks produces NaN (or an
 *    out-of-range index, caught by the sanitizer build) and fails;
 *  - fills the parameter gradients with NaN: a backward that accumulates into din[i]
 *    instead of overwriting it, or does not write it at all, fails.
 * It also runs the forward twice and requires bitwise-identical outputs. */
#ifndef KN_GRADCHECK_H
#define KN_GRADCHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph.h"
#include "testutil.h"

enum { GC_PARAM = 0, GC_INPUT = 1, GC_STATE = 2 };
enum {
    GC_RANDN = 0,  /* N(0, a^2), a = 1 if 0 */
    GC_DISTINCT,   /* permuted grid, spacing a (0.05 if 0), never 0 */
    GC_LABELS,     /* int32 uniform in [0, a) */
    GC_POSITIVE,   /* uniform in [0.5, 1.5) * (a ? a : 1) */
    GC_VALUES,     /* copied from .values (float or int32 by dtype) */
    GC_CONST       /* all a */
};

typedef struct {
    int kind;            /* GC_PARAM (checked), GC_INPUT, GC_STATE */
    kn_dtype dt;         /* KN_F32 unless an INPUT */
    kn_shape shape;
    int fill;
    double a;
    const void *values;  /* GC_VALUES */
    const char *name;    /* optional: two PARAMs with one name are one tensor */
} gc_tensor;

typedef struct {
    const char *name;
    const kn_op *op;
    kn_attrs attrs;
    int nin;
    gc_tensor in[KN_MAX_IN];
    double h, rtol, atol; /* 0: 1e-2, 1e-2, 1e-3 */
    int max_elems;        /* per checked tensor; 0: 512 */
    uint64_t seed;
} gc_case;

typedef struct {
    kn_ctx *ctx;
    kn_store store;
    kn_graph *g;
    int nin;
    gc_tensor in[KN_MAX_IN];
    int vid[KN_MAX_IN];
    void *host[KN_MAX_IN]; /* the values written into INPUTs before every forward */
    int node;            /* the op under test */
    int y;               /* a copy of its first output: the "loss" */
    kn_rt rt;
} gc_graph;

static inline gc_tensor gc_param(kn_shape s, int fill, double a) {
    gc_tensor t = {GC_PARAM, KN_F32, s, fill, a, NULL, NULL};
    return t;
}
static inline gc_tensor gc_input(kn_dtype dt, kn_shape s, int fill, double a) {
    gc_tensor t = {GC_INPUT, dt, s, fill, a, NULL, NULL};
    return t;
}
static inline gc_tensor gc_state(kn_shape s, int fill, double a) {
    gc_tensor t = {GC_STATE, KN_F32, s, fill, a, NULL, NULL};
    return t;
}
static inline kn_shape gc_shape3(int64_t a, int64_t b, int64_t c) {
    kn_shape s = {3, {a, b, c}};
    return s;
}

static void gc_fill(const gc_tensor *t, void *dst, kn_rng *rng) {
    int64_t m = kn_shape_numel(&t->shape);
    float *f = dst;
    int32_t *iv = dst;
    switch (t->fill) {
    case GC_RANDN:
        for (int64_t k = 0; k < m; k++) f[k] = (float)((t->a ? t->a : 1.0) * kn_rng_normal(rng));
        break;
    case GC_DISTINCT: {
        int64_t *perm = malloc((size_t)(m > 0 ? m : 1) * sizeof *perm);
        for (int64_t k = 0; k < m; k++) perm[k] = k;
        for (int64_t k = m - 1; k > 0; k--) {
            int64_t j = (int64_t)kn_rng_below(rng, (uint64_t)k + 1), tmp = perm[k];
            perm[k] = perm[j];
            perm[j] = tmp;
        }
        double sp = t->a ? t->a : 0.05;
        for (int64_t k = 0; k < m; k++) f[k] = (float)(((double)perm[k] - (double)(m / 2) + 0.5) * sp);
        free(perm);
        break;
    }
    case GC_LABELS:
        for (int64_t k = 0; k < m; k++) iv[k] = (int32_t)kn_rng_below(rng, (uint64_t)t->a);
        break;
    case GC_POSITIVE:
        for (int64_t k = 0; k < m; k++) f[k] = (float)((t->a ? t->a : 1.0) * (0.5 + kn_rng_uniform(rng)));
        break;
    case GC_VALUES: memcpy(dst, t->values, (size_t)m * kn_dtype_size(t->dt)); break;
    case GC_CONST:
        for (int64_t k = 0; k < m; k++) f[k] = (float)t->a;
        break;
    }
}

static void gc_free(gc_graph *G) {
    kn_g_free(G->g);
    kn_store_free(&G->store);
    for (int i = 0; i < G->nin; i++) free(G->host[i]);
    kn_ctx_free(G->ctx);
    memset(G, 0, sizeof *G);
}

/* Build, compile and fill a one-op graph. On error returns nonzero, the message in
 * G->ctx (the graph is freed except the context: call gc_free anyway). */
static int gc_build(gc_graph *G, const kn_op *op, const kn_attrs *a, const gc_tensor *in, int nin, int training,
                    uint64_t seed) {
    memset(G, 0, sizeof *G);
    G->ctx = kn_ctx_new();
    kn_store_init(&G->store);
    G->g = kn_g_new(&G->store, training);
    G->nin = nin;
    kn_init zero = {KN_INIT_ZEROS, 0, 0, 0};
    for (int i = 0; i < nin; i++) {
        char name[32];
        G->in[i] = in[i];
        if (in[i].name) snprintf(name, sizeof name, "%s", in[i].name);
        else snprintf(name, sizeof name, "in%d", i);
        if (in[i].kind == GC_PARAM) G->vid[i] = kn_g_param(G->ctx, G->g, name, in[i].shape, zero);
        else if (in[i].kind == GC_STATE) G->vid[i] = kn_g_state(G->ctx, G->g, name, in[i].shape, zero);
        else G->vid[i] = kn_g_input(G->g, name, in[i].dt, in[i].shape);
        if (G->vid[i] < 0) return 1;
    }
    kn_g_set_layer(G->g, "gc");
    int y = kn_g_op(G->ctx, G->g, op, G->vid, nin, a);
    if (y < 0) return 1;
    G->node = G->g->nn - 1;
    /* y -> a copy (reshape to the same shape): y is then an ordinary activation that
     * is not kept to the end of the step, so a backward that reads y without saying so
     * in bwd_reads_out finds it poisoned (see gc_poison) */
    const kn_shape *ys = kn_shp(G->g, y);
    kn_attrs ra;
    memset(&ra, 0, sizeof ra);
    ra.i[0] = ys->nd;
    for (int k = 0; k < ys->nd; k++) ra.i[1 + k] = ys->d[k];
    kn_g_set_layer(G->g, "gc_copy");
    G->y = kn_g_op(G->ctx, G->g, &kn_op_reshape, &y, 1, &ra);
    if (G->y < 0) return 1;
    if (training) kn_g_set_loss(G->g, G->y);
    else kn_g_keep(G->g, G->y);
    if (kn_g_compile(G->ctx, G->g) != KN_OK) return 1;
    kn_rng rng;
    kn_rng_seed(&rng, seed);
    for (int i = 0; i < nin; i++) {
        size_t bytes = (size_t)kn_shape_numel(&in[i].shape) * kn_dtype_size(in[i].dt);
        G->host[i] = malloc(bytes ? bytes : 1);
        gc_fill(&in[i], G->host[i], &rng);
        memcpy(kn_ptr(G->g, G->vid[i]), G->host[i], bytes);
    }
    G->rt.seed = 0x5EEDULL + seed;
    G->rt.step = 3;
    return 0;
}

/* Re-write the INPUTs (their arena memory may be reused during a backward) and run
 * the forward. */
static void gc_forward(gc_graph *G) {
    for (int i = 0; i < G->nin; i++)
        if (G->in[i].kind == GC_INPUT)
            memcpy(kn_ptr(G->g, G->vid[i]), G->host[i],
                   (size_t)kn_shape_numel(&G->in[i].shape) * kn_dtype_size(G->in[i].dt));
    kn_g_forward(G->g, &G->rt);
}

/* See the header comment: poison what a backward must not read. */
static void gc_poison(gc_graph *G) {
    kn_graph *g = G->g;
    for (int i = 0; i < g->nv; i++) {
        kn_value *v = &g->v[i];
        int arena = v->kind == KN_VAL_ACT || v->kind == KN_VAL_INPUT || v->kind == KN_VAL_GRAD ||
                    v->kind == KN_VAL_TEMP || v->kind == KN_VAL_SCRATCH;
        if (arena && v->last < g->nfwd) {
            size_t sz = (size_t)kn_shape_numel(&v->shape) * kn_dtype_size(v->dtype);
            int shared = 0;
            for (int j = 0; j < g->nv; j++) {
                kn_value *u = &g->v[j];
                int uarena = u->kind == KN_VAL_ACT || u->kind == KN_VAL_INPUT || u->kind == KN_VAL_GRAD ||
                             u->kind == KN_VAL_TEMP || u->kind == KN_VAL_SCRATCH;
                if (j == i || !uarena || !(u->first < g->nfwd && u->last >= g->nfwd)) continue;
                if (u->offset < v->offset + sz && v->offset < u->offset + u->bytes) shared = 1;
            }
            if (!shared) memset(v->data, 0xFF, sz);
        }
        if (v->kind == KN_VAL_PGRAD)
            for (int64_t k = 0; k < kn_shape_numel(&v->shape); k++) v->data[k] = NAN;
    }
}

static int gc_verbose(void) {
    const char *e = getenv("GC_VERBOSE");
    return e && *e && *e != '0';
}

/* Run a gradient check; returns the number of failed tensors (also counted by CHECK). */
__attribute__((unused)) static int gc_check(const gc_case *c) {
    gc_graph G;
    const char *nm = c->name ? c->name : c->op->name;
    if (gc_build(&G, c->op, &c->attrs, c->in, c->nin, 1, c->seed ? c->seed : 1)) {
        CHECK(0, "%s: cannot build the graph: %s", nm, kn_ctx_message(G.ctx));
        gc_free(&G);
        return 1;
    }
    const double h = c->h > 0 ? c->h : 1e-2, rtol = c->rtol > 0 ? c->rtol : 1e-2, atol = c->atol > 0 ? c->atol : 1e-3;
    const int maxe = c->max_elems > 0 ? c->max_elems : 512;
    kn_graph *g = G.g;
    int64_t ny = kn_numel(g, G.y);
    float *R = malloc((size_t)ny * sizeof *R), *y0 = malloc((size_t)ny * sizeof *R), *yp = malloc((size_t)ny * sizeof *R);
    kn_rng rng;
    kn_rng_seed(&rng, 77 + (c->seed ? c->seed : 1));
    for (int64_t k = 0; k < ny; k++) R[k] = (float)kn_rng_normal(&rng);
    int fails = 0;

    gc_forward(&G);
    memcpy(y0, kn_ptr(g, G.y), (size_t)ny * sizeof *y0);
    gc_forward(&G);
    int same = memcmp(y0, kn_ptr(g, G.y), (size_t)ny * sizeof *y0) == 0, finite = 1;
    for (int64_t k = 0; k < ny; k++)
        if (!isfinite(y0[k])) finite = 0;
    CHECK(same, "%s: two forward passes differ", nm);
    CHECK(finite, "%s: forward output is not finite", nm);
    fails += !same + !finite;

    gc_poison(&G);
    kn_g_backward(g, &G.rt, R);
    float *ga[KN_MAX_IN] = {0};
    for (int i = 0; i < c->nin; i++) {
        if (c->in[i].kind != GC_PARAM) continue;
        int dup = 0;
        for (int j = 0; j < i; j++) if (G.vid[j] == G.vid[i]) dup = 1;
        if (dup) continue;
        int64_t m = kn_numel(g, G.vid[i]);
        ga[i] = malloc((size_t)m * sizeof(float));
        memcpy(ga[i], kn_ptr(g, g->v[G.vid[i]].grad), (size_t)m * sizeof(float));
    }

    for (int i = 0; i < c->nin; i++) {
        if (!ga[i]) continue;
        int64_t m = kn_numel(g, G.vid[i]);
        float *x = kn_ptr(g, G.vid[i]);
        /* which elements: all, or a random subset */
        int64_t ne = m < maxe ? m : maxe;
        int64_t *idx = malloc((size_t)m * sizeof *idx);
        for (int64_t k = 0; k < m; k++) idx[k] = k;
        if (ne < m)
            for (int64_t k = 0; k < ne; k++) {
                int64_t j = k + (int64_t)kn_rng_below(&rng, (uint64_t)(m - k)), t = idx[k];
                idx[k] = idx[j];
                idx[j] = t;
            }
        double *num = malloc((size_t)ne * sizeof *num);
        for (int64_t e = 0; e < ne; e++) {
            int64_t j = idx[e];
            float orig = x[j], xp = (float)(orig + h), xm = (float)(orig - h);
            x[j] = xp;
            gc_forward(&G);
            memcpy(yp, kn_ptr(g, G.y), (size_t)ny * sizeof *yp);
            x[j] = xm;
            gc_forward(&G);
            const float *ym = kn_ptr(g, G.y);
            double d = 0;
            for (int64_t k = 0; k < ny; k++) d += (double)R[k] * ((double)yp[k] - (double)ym[k]);
            num[e] = d / ((double)xp - (double)xm);
            x[j] = orig;
        }
        double scale = 1e-6, worst = 0;
        int nonfinite = 0;
        for (int64_t k = 0; k < m; k++) {
            if (!isfinite(ga[i][k])) nonfinite++;
            else if (fabs(ga[i][k]) > scale) scale = fabs(ga[i][k]);
        }
        for (int64_t e = 0; e < ne; e++)
            if (fabs(num[e]) > scale) scale = fabs(num[e]);
        int bad = 0;
        for (int64_t e = 0; e < ne; e++) {
            double a = ga[i][idx[e]], n = num[e];
            double tol = rtol * fmax(fabs(a), fabs(n)) + atol * scale;
            double err = fabs(a - n);
            if (!(err <= tol)) {
                if (bad < 5)
                    fprintf(stderr, "  %s: input %d element %lld: analytic %.6g numeric %.6g (tol %.3g)\n", nm, i,
                            (long long)idx[e], a, n, tol);
                bad++;
            }
            if (err / tol > worst) worst = err / tol;
        }
        char sb[64];
        if (gc_verbose())
            printf("  %-40s in%d %-14s %4lld/%-5lld checked, worst err/tol %.3f\n", nm, i,
                   kn_shape_str(kn_shp(g, G.vid[i]), sb, sizeof sb), (long long)ne, (long long)m, worst);
        CHECK(nonfinite == 0, "%s: input %d: %d analytic gradient elements are not finite", nm, i, nonfinite);
        CHECK(bad == 0, "%s: input %d %s: %d of %lld gradient elements differ from finite differences", nm, i,
              kn_shape_str(kn_shp(g, G.vid[i]), sb, sizeof sb), bad, (long long)ne);
        fails += (bad != 0) + (nonfinite != 0);
        free(idx);
        free(num);
    }
    for (int i = 0; i < c->nin; i++) free(ga[i]);
    free(R);
    free(y0);
    free(yp);
    gc_free(&G);
    return fails;
}

/* Run forward + backward with 1 thread and with `threads` threads: the output and
 * every parameter gradient must agree to rtol (0: bitwise), and a second run with
 * `threads` threads must give the same bits as the first (kiln's promise: the same bits
 * for the same thread count). rtol > 0 (oneDNN's GEMM and convolutions, whose blocking
 * and order of summation may follow the thread count: on AVX2 its sgemm splits the
 * reduction by thread) is a normwise bound, the bound that float32 summation in another
 * order obeys: |a - b| <= rtol * max|tensor| for each element of each tensor (output,
 * each gradient); an element near zero after cancellation may differ by more than rtol
 * of itself. The gradient checks run on one thread; this covers the parallel loops of
 * large tensors, where finite differences of a float32 scalar loss would drown in its
 * rounding. Leaves the thread count at 1. */
__attribute__((unused)) static int gc_threads_agree(const gc_case *c, int threads, double rtol) {
    gc_graph G;
    const char *nm = c->name ? c->name : c->op->name;
    if (gc_build(&G, c->op, &c->attrs, c->in, c->nin, 1, c->seed ? c->seed : 1)) {
        CHECK(0, "%s: cannot build the graph: %s", nm, kn_ctx_message(G.ctx));
        gc_free(&G);
        return 1;
    }
    kn_graph *g = G.g;
    int64_t ny = kn_numel(g, G.y), total = ny;
    for (int i = 0; i < c->nin; i++)
        if (c->in[i].kind == GC_PARAM) total += kn_numel(g, G.vid[i]);
    float *R = malloc((size_t)ny * sizeof *R), *res[3];
    double *scale = calloc((size_t)total, sizeof *scale);
    kn_rng rng;
    kn_rng_seed(&rng, 99);
    for (int64_t k = 0; k < ny; k++) R[k] = (float)kn_rng_normal(&rng);
    for (int t = 0; t < 3; t++) {
        kn_set_threads(t ? threads : 1);
        res[t] = malloc((size_t)total * sizeof(float));
        gc_forward(&G);
        memcpy(res[t], kn_ptr(g, G.y), (size_t)ny * sizeof(float));
        gc_poison(&G);
        kn_g_backward(g, &G.rt, R);
        int64_t off = ny;
        for (int i = 0; i < c->nin; i++) {
            if (c->in[i].kind != GC_PARAM) continue;
            int64_t m = kn_numel(g, G.vid[i]);
            memcpy(res[t] + off, kn_ptr(g, g->v[G.vid[i]].grad), (size_t)m * sizeof(float));
            off += m;
        }
    }
    kn_set_threads(1);
    /* per tensor: the largest magnitude of the 1-thread result */
    int64_t seg0 = 0, seg1 = ny;
    for (int i = -1; i < c->nin; i++) {
        if (i >= 0) {
            if (c->in[i].kind != GC_PARAM) continue;
            seg0 = seg1;
            seg1 = seg0 + kn_numel(g, G.vid[i]);
        }
        double mx = 0;
        for (int64_t k = seg0; k < seg1; k++) mx = fmax(mx, fabs(res[0][k]));
        for (int64_t k = seg0; k < seg1; k++) scale[k] = mx;
    }
    int64_t rerun = 0;
    for (int64_t k = 0; k < total; k++) rerun += memcmp(&res[1][k], &res[2][k], 4) != 0;
    CHECK(rerun == 0, "%s: %lld of %lld output/gradient values differ between two runs on %d threads", nm,
          (long long)rerun, (long long)total, threads);
    int64_t bad = 0, first = -1;
    for (int64_t k = 0; k < total; k++) {
        double a = res[0][k], b = res[1][k];
        int ok = rtol > 0 ? fabs(a - b) <= rtol * scale[k] + 1e-30 : memcmp(&res[0][k], &res[1][k], 4) == 0;
        if (!ok || !isfinite(a)) {
            if (first < 0) first = k;
            bad++;
        }
    }
    CHECK(bad == 0, "%s: %lld of %lld output/gradient values differ between 1 and %d threads (first at %lld: %g vs %g)",
          nm, (long long)bad, (long long)total, threads, (long long)first, first >= 0 ? res[0][first] : 0.0,
          first >= 0 ? res[1][first] : 0.0);
    if (gc_verbose()) printf("  %-40s 1 vs %d threads: %lld values %s\n", nm, threads, (long long)total, bad ? "DIFFER" : "agree");
    free(res[0]);
    free(res[1]);
    free(res[2]);
    free(scale);
    free(R);
    gc_free(&G);
    return bad != 0 || rerun != 0;
}

#endif
