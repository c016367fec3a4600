/* Per-op comparison with PyTorch (like tinygrad's helper_test_op): for every case of
 * tests/fixtures/op_ref.txt, build the op in a one-op training graph (gradcheck.h's
 * gc_build: float inputs marked `p` are parameters, `c` inputs are constants, `s`
 * persistent state), run the
 * forward, seed the backward with the fixture's dy, and compare the output and every
 * parameter's gradient with PyTorch's float64 results computed from the same float32
 * inputs. One line per case.
 *
 * Criterion, per tensor: max |kiln - torch| <= 1e-5 * max |torch| (relative to the
 * tensor's largest magnitude: an element that cancels to near zero cannot be held to
 * 1e-5 of itself in float32). The worst ratio is printed; so is, for information, the
 * worst element-wise relative error among elements of at least 1e-3 of the largest.
 * The arena's dead memory is poisoned before the backward (gc_poison), so a backward
 * that reads a tensor it did not declare fails here too.
 *
 * The fixture is committed; CI needs no torch. To regenerate it (needs torch):
 *     python3 tests/fixtures/make_op_ref.py     (from the repository root)
 * Each case of an op with kiln's own kernels also runs on the baseline x86-64 path and
 * must give the same bits as on this CPU's path (avx2, avx512): kiln's kernels do not
 * reassociate.
 * KN_OPS_TORCH_ONLY=NAME-PREFIX runs only the cases whose name starts with it. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>

#include "backend/cpu/isa.h"
#include "gradcheck.h"
#include "ops/metric.h"

#define RTOL 1e-5

static const kn_op *find_op(const char *name) {
    const kn_op *ops[] = {&kn_op_add,     &kn_op_sub,     &kn_op_mul,         &kn_op_div,     &kn_op_exp,
                          &kn_op_log,     &kn_op_sqrt,    &kn_op_rsqrt,       &kn_op_neg,     &kn_op_square,
                          &kn_op_affine,  &kn_op_sum,     &kn_op_mean,        &kn_op_max,     &kn_op_softmax,
                          &kn_op_log_softmax, &kn_op_matmul, &kn_op_permute,  &kn_op_slice,   &kn_op_concat,
                          &kn_op_gather,  &kn_op_layernorm, &kn_op_linear,    &kn_op_relu,    &kn_op_gelu,
                          &kn_op_silu,    &kn_op_tanh,    &kn_op_sigmoid,     &kn_op_leaky_relu, &kn_op_softmax_ce,
                          &kn_op_mse,     &kn_op_conv2d,  &kn_op_maxpool2d,   &kn_op_avgpool2d, &kn_op_global_avgpool,
                          &kn_op_reshape, &kn_op_batchnorm, &kn_op_bce_logits, &kn_op_l1,     &kn_op_huber,
                          &kn_op_accuracy, &kn_op_topk_accuracy, &kn_op_mae, &kn_op_rmse,     &kn_op_r2};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (!strcmp(ops[i]->name, name)) return ops[i];
    return NULL;
}

typedef struct {
    kn_shape s;
    int64_t n;
    double *v;
} ref_t;

static int read_tensor(FILE *f, ref_t *t) {
    if (fscanf(f, "%d", &t->s.nd) != 1 || t->s.nd < 1 || t->s.nd > KN_MAX_DIMS) return 1;
    for (int k = 0; k < t->s.nd; k++)
        if (fscanf(f, "%lld", (long long *)&t->s.d[k]) != 1) return 1;
    t->n = kn_shape_numel(&t->s);
    t->v = malloc((size_t)(t->n > 0 ? t->n : 1) * sizeof(double));
    for (int64_t k = 0; k < t->n; k++)
        if (fscanf(f, "%lf", &t->v[k]) != 1) return 1;
    return 0;
}

/* the criterion's ratio (err / (RTOL * max|ref|)), and the element-wise information */
static double compare(const float *got, const ref_t *ref, double *elem) {
    double mx = 0, err = 0, er = 0;
    for (int64_t k = 0; k < ref->n; k++) mx = fmax(mx, fabs(ref->v[k]));
    for (int64_t k = 0; k < ref->n; k++) {
        double e = fabs((double)got[k] - ref->v[k]);
        if (!(e <= err)) err = e; /* NaN sticks */
        if (fabs(ref->v[k]) >= 1e-3 * mx && mx > 0) er = fmax(er, e / fabs(ref->v[k]));
    }
    *elem = er;
    return mx > 0 ? err / (RTOL * mx) : (err == 0 ? 0 : INFINITY);
}

/* Build and run one case: forward, then the backward seeded with dy; returns the output
 * followed by every parameter's gradient (malloc'ed, *n floats), NULL if it cannot build. */
static float *run_case(const kn_op *op, const kn_attrs *a, const gc_tensor *in, int nin, const float *dy, int64_t *n,
                       int training) {
    gc_graph G;
    if (gc_build(&G, op, a, in, nin, training, 1)) {
        gc_free(&G);
        return NULL;
    }
    kn_graph *g = G.g;
    int64_t tot = kn_numel(g, G.y);
    for (int i = 0; i < nin; i++)
        if (in[i].kind == GC_PARAM) tot += kn_numel(g, G.vid[i]);
    float *r = malloc((size_t)tot * sizeof *r);
    gc_forward(&G);
    int64_t off = kn_numel(g, G.y);
    memcpy(r, kn_ptr(g, G.y), (size_t)off * sizeof *r);
    if (training) {
        gc_poison(&G);
        kn_g_backward(g, &G.rt, dy);
    }
    for (int i = 0; i < nin; i++) {
        if (in[i].kind != GC_PARAM) continue;
        const int64_t m = kn_numel(g, G.vid[i]);
        memcpy(r + off, kn_ptr(g, g->v[G.vid[i]].grad), (size_t)m * sizeof *r);
        off += m;
    }
    *n = tot;
    gc_free(&G);
    return r;
}

int main(void) {
    const char *path = kn_test_src("tests/fixtures/op_ref.txt");
    const char *only = getenv("KN_OPS_TORCH_ONLY");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s", path);
    if (!f) return kn_test_finish("test_ops_torch");
    kn_set_threads(1);
    char line[512], word[64], name[128], opname[64];
    int ncases = 0, nbad = 0, nbits = 0;
    double worst = 0, worst_elem = 0;
    char worst_name[160] = "";
    while (fscanf(f, "%63s", word) == 1) {
        if (word[0] == '#') {
            if (!fgets(line, sizeof line, f)) break;
            continue;
        }
        int nin = 0;
        if (strcmp(word, "case") || fscanf(f, "%127s %63s %d", name, opname, &nin) != 3 || nin < 1 || nin > KN_MAX_IN) {
            CHECK(0, "%s: malformed case header at '%s'", path, word);
            break;
        }
        kn_attrs a;
        memset(&a, 0, sizeof a);
        int ok = fscanf(f, "%63s", word) == 1 && !strcmp(word, "ai");
        for (int k = 0; ok && k < KN_NATTR_I; k++) ok = fscanf(f, "%lld", (long long *)&a.i[k]) == 1;
        ok = ok && fscanf(f, "%63s", word) == 1 && !strcmp(word, "af");
        for (int k = 0; ok && k < KN_NATTR_F; k++) ok = fscanf(f, "%lf", &a.f[k]) == 1;
        gc_tensor in[KN_MAX_IN];
        void *vals[KN_MAX_IN] = {0};
        for (int i = 0; ok && i < nin; i++) {
            char kind[8], dt[8];
            ref_t t;
            ok = fscanf(f, "%63s %7s %7s", word, kind, dt) == 3 && !strcmp(word, "in") && !read_tensor(f, &t);
            if (!ok) break;
            const int isint = !strcmp(dt, "i32");
            vals[i] = malloc((size_t)t.n * 4 + 4);
            for (int64_t k = 0; k < t.n; k++) {
                if (isint) ((int32_t *)vals[i])[k] = (int32_t)t.v[k];
                else ((float *)vals[i])[k] = (float)t.v[k];
            }
            in[i] = kind[0] == 'p'   ? gc_param(t.s, GC_VALUES, 0)
                    : kind[0] == 's' ? gc_state(t.s, GC_VALUES, 0)
                                     : gc_input(isint ? KN_I32 : KN_F32, t.s, GC_VALUES, 0);
            in[i].values = vals[i];
            free(t.v);
        }
        ref_t dy = {0}, out = {0}, grads[KN_MAX_IN];
        int gidx[KN_MAX_IN], ng = 0;
        ok = ok && fscanf(f, "%63s", word) == 1 && !strcmp(word, "dy") && !read_tensor(f, &dy);
        ok = ok && fscanf(f, "%63s", word) == 1 && !strcmp(word, "out") && !read_tensor(f, &out);
        while (ok && fscanf(f, "%63s", word) == 1 && strcmp(word, "end")) {
            ok = !strcmp(word, "grad") && ng < KN_MAX_IN && fscanf(f, "%d", &gidx[ng]) == 1 && !read_tensor(f, &grads[ng]);
            if (ok) ng++;
        }
        CHECK(ok, "%s: case %s is malformed", path, name);
        if (!ok) break;
        const kn_op *op = find_op(opname);
        CHECK(op != NULL, "%s: case %s: no op named %s", path, name, opname);
        if (op && (!only || !strncmp(name, only, strlen(only)))) {
            ncases++;
            /* a case without a parameter (the metrics: forward only) runs in an
             * evaluation graph, and each of its statistics must match to 1e-5 of itself */
            int training = 0;
            for (int i = 0; i < nin; i++) training |= in[i].kind == GC_PARAM;
            gc_graph G;
            if (gc_build(&G, op, &a, in, nin, training, 1)) {
                CHECK(0, "%s: cannot build: %s", name, kn_ctx_message(G.ctx));
                nbad++;
            } else {
                kn_graph *g = G.g;
                char sb[64], sr[64], msg[512];
                int n = snprintf(msg, sizeof msg, "%-34s", name);
                int bad = 0;
                if (!kn_shape_eq(kn_shp(g, G.y), &out.s) || dy.n != out.n) {
                    CHECK(0, "%s: kiln output %s, torch %s", name, kn_shape_str(kn_shp(g, G.y), sb, sizeof sb),
                          kn_shape_str(&out.s, sr, sizeof sr));
                    bad = 1;
                } else {
                    gc_forward(&G);
                    double el, r = compare(kn_ptr(g, G.y), &out, &el);
                    n += snprintf(msg + n, sizeof msg - (size_t)n, " y %.3f", r);
                    if (!(r <= 1)) bad = 1;
                    if (r > worst) worst = r, snprintf(worst_name, sizeof worst_name, "%s y", name);
                    worst_elem = fmax(worst_elem, el);
                    if (!training) {
                        const float *y = kn_ptr(g, G.y);
                        for (int64_t k = 0; k < out.n; k++)
                            if (!(fabs((double)y[k] - out.v[k]) <= RTOL * fabs(out.v[k]))) {
                                CHECK(0, "%s: statistic %lld is %.9g, torch/numpy %.9g", name, (long long)k, y[k], out.v[k]);
                                bad = 1;
                            }
                        const kn_metric_kind mk = kn_metric_kind_of(op);
                        if (mk != KN_METRIC_NONE) { /* the finished value, e.g. R^2 = 1 - SSE / SST in float64 */
                            double acc[KN_METRIC_NACC], want = out.v[0] / out.v[1];
                            kn_metric_reset(acc);
                            kn_metric_add(mk, acc, y);
                            if (mk == KN_METRIC_RMSE) want = sqrt(want);
                            if (mk == KN_METRIC_R2) want = 1.0 - out.v[0] / out.v[3];
                            const double got = kn_metric_finish(mk, acc);
                            n += snprintf(msg + n, sizeof msg - (size_t)n, "  value %.7g", got);
                            if (!(fabs(got - want) <= RTOL * fabs(want))) {
                                CHECK(0, "%s: %s %.9g, want %.9g", name, op->name, got, want);
                                bad = 1;
                            }
                        }
                    }
                    float *seed = malloc((size_t)dy.n * sizeof *seed);
                    for (int64_t k = 0; k < dy.n; k++) seed[k] = (float)dy.v[k];
                    if (training) {
                        gc_poison(&G);
                        kn_g_backward(g, &G.rt, seed);
                    }
                    free(seed);
                    for (int j = 0; j < ng; j++) {
                        const int i = gidx[j];
                        if (i < 0 || i >= nin || in[i].kind != GC_PARAM || grads[j].n != kn_numel(g, G.vid[i])) {
                            CHECK(0, "%s: gradient %d does not match an input", name, i);
                            bad = 1;
                            continue;
                        }
                        r = compare(kn_ptr(g, g->v[G.vid[i]].grad), &grads[j], &el);
                        n += snprintf(msg + n, sizeof msg - (size_t)n, "  d%d %.3f", i, r);
                        if (!(r <= 1)) bad = 1;
                        if (r > worst) worst = r, snprintf(worst_name, sizeof worst_name, "%s d%d", name, i);
                        worst_elem = fmax(worst_elem, el);
                    }
                }
                /* kiln's own kernels give the same bits on every instruction-set path
                 * (no reassociation): this case again on the baseline x86-64 path
                 * (oneDNN's ops, linear and conv2d, differ between paths) */
                if (!bad && g->isa != KN_ISA_BASE && strcmp(opname, "linear") && strcmp(opname, "conv2d")) {
                    int64_t n1 = 0, n2 = 0;
                    float *seed = malloc((size_t)dy.n * sizeof *seed);
                    for (int64_t k = 0; k < dy.n; k++) seed[k] = (float)dy.v[k];
                    float *r1 = run_case(op, &a, in, nin, seed, &n1, training);
                    setenv("KN_MAX_ISA", "x86-64", 1);
                    float *r2 = run_case(op, &a, in, nin, seed, &n2, training);
                    unsetenv("KN_MAX_ISA");
                    const int same = r1 && r2 && n1 == n2 && !memcmp(r1, r2, (size_t)n1 * sizeof *r1);
                    CHECK(same, "%s: the x86-64 path gives other bits than the %s path", name, kn_isa_name(g->isa));
                    bad |= !same;
                    nbits += same;
                    free(seed), free(r1), free(r2);
                }
                printf("%s%s\n", msg, bad ? "   FAIL" : "");
                CHECK(!bad, "%s: kiln and PyTorch differ by more than %g of the largest magnitude (ratios above)", name,
                      RTOL);
                nbad += bad;
            }
            gc_free(&G);
        }
        for (int i = 0; i < nin; i++) free(vals[i]);
        free(dy.v);
        free(out.v);
        for (int j = 0; j < ng; j++) free(grads[j].v);
    }
    fclose(f);
    CHECK(ncases >= (only ? 1 : 100), "only %d cases read from %s", ncases, path);
    printf("%d cases the same bits on the x86-64 path as on this CPU's\n", nbits);
    printf("%d cases against PyTorch, %d failed; worst max|err| / (1e-5 max|ref|) = %.3f (%s), i.e. %.2e relative; "
           "worst element-wise relative error %.2e\n",
           ncases, nbad, worst, worst_name, worst * RTOL, worst_elem);
    return kn_test_finish("test_ops_torch");
}
