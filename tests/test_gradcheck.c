/* Gradient checks of every op in graph.h's registry (see gradcheck.h for the method
 * and the tolerances), forward values against closed forms, shape-rule errors, and
 * thread-count determinism. GC_VERBOSE=1 prints the worst error/tolerance ratio of
 * every checked tensor. */
#include <string.h>

#include "backend/cpu/layout.h"
#include "gradcheck.h"
#include "ops/metric.h"

static int g_cases = 0;

static void run(gc_case *c) {
    g_cases++;
    if (!c->seed) c->seed = (uint64_t)g_cases * 7919u;
    gc_check(c);
}

/* ---------------- element-wise ---------------- */
static void check_elementwise(void) {
    const kn_op *smooth[] = {&kn_op_gelu, &kn_op_silu, &kn_op_tanh, &kn_op_sigmoid};
    kn_shape shapes[] = {kn_shape1(13), gc_shape3(3, 5, 7), kn_shape4(2, 3, 5, 7)};
    for (int s = 0; s < 3; s++) {
        for (int k = 0; k < 4; k++) {
            gc_case c = {.op = smooth[k], .nin = 1};
            c.in[0] = gc_param(shapes[s], GC_RANDN, 2.0);
            run(&c);
        }
        gc_case r = {.op = &kn_op_relu, .nin = 1};
        r.in[0] = gc_param(shapes[s], GC_DISTINCT, 0);
        run(&r);
        const double slopes[] = {0.01, 0.2, -0.5};
        for (int k = 0; k < 3; k++) {
            gc_case l = {.op = &kn_op_leaky_relu, .nin = 1};
            l.attrs.f[0] = slopes[k];
            l.in[0] = gc_param(shapes[s], GC_DISTINCT, 0);
            run(&l);
        }
    }
}

/* ---------------- pools ---------------- */
static void pool_case(const kn_op *op, kn_shape x, int kh, int kw, int sh, int sw, int ph, int pw, int incl) {
    char name[96];
    snprintf(name, sizeof name, "%s k%dx%d s%dx%d p%dx%d%s x[%lld,%lld,%lld,%lld]", op->name, kh, kw, sh, sw, ph, pw,
             op == &kn_op_avgpool2d ? (incl ? " incl" : " excl") : "", (long long)x.d[0], (long long)x.d[1],
             (long long)x.d[2], (long long)x.d[3]);
    gc_case c = {.name = name, .op = op, .nin = 1};
    c.attrs.i[0] = kh, c.attrs.i[1] = kw, c.attrs.i[2] = sh, c.attrs.i[3] = sw, c.attrs.i[4] = ph, c.attrs.i[5] = pw;
    c.attrs.i[6] = incl;
    c.in[0] = gc_param(x, op == &kn_op_maxpool2d ? GC_DISTINCT : GC_RANDN, 0);
    run(&c);
}

static void check_pools(void) {
    const int ks[] = {1, 2, 3, 5};
    kn_shape x = kn_shape4(2, 3, 7, 9);
    for (int ki = 0; ki < 4; ki++)
        for (int s = 1; s <= 3; s++)
            for (int p = 0; p <= 2; p++) {
                int k = ks[ki];
                if (p > k / 2) continue;
                pool_case(&kn_op_maxpool2d, x, k, k, s, s, p, p, 0);
                pool_case(&kn_op_avgpool2d, x, k, k, s, s, p, p, 1);
                if (p > 0) pool_case(&kn_op_avgpool2d, x, k, k, s, s, p, p, 0);
            }
    /* non-square kernels, strides and paddings; odd image sizes */
    const int ns[][6] = {{2, 3, 1, 2, 1, 1}, {3, 1, 2, 1, 1, 0}, {1, 5, 1, 3, 0, 2}, {5, 2, 3, 2, 2, 1},
                         {3, 5, 2, 3, 0, 2}, {5, 7, 1, 1, 0, 0}, {4, 4, 4, 4, 2, 2}};
    kn_shape xs[] = {kn_shape4(1, 2, 5, 7), kn_shape4(3, 1, 9, 5)};
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 2; j++) {
            const int *a = ns[i];
            if (xs[j].d[2] + 2 * a[4] < a[0] || xs[j].d[3] + 2 * a[5] < a[1]) continue;
            pool_case(&kn_op_maxpool2d, xs[j], a[0], a[1], a[2], a[3], a[4], a[5], 0);
            pool_case(&kn_op_avgpool2d, xs[j], a[0], a[1], a[2], a[3], a[4], a[5], 1);
            pool_case(&kn_op_avgpool2d, xs[j], a[0], a[1], a[2], a[3], a[4], a[5], 0);
        }
    /* a window of more than 256 positions: the argmax is kept as int32 instead of a byte */
    pool_case(&kn_op_maxpool2d, kn_shape4(1, 2, 19, 18), 17, 16, 2, 1, 1, 0, 0);
    kn_shape gs[] = {kn_shape4(2, 3, 5, 7), kn_shape4(3, 4, 1, 1), kn_shape4(1, 1, 9, 2)};
    for (int i = 0; i < 3; i++) {
        gc_case c = {.op = &kn_op_global_avgpool, .nin = 1};
        c.in[0] = gc_param(gs[i], GC_RANDN, 0);
        run(&c);
    }
}

/* ---------------- batchnorm ---------------- */
static void bn_case(kn_shape x, double xstd) {
    char name[96], sb[64];
    snprintf(name, sizeof name, "batchnorm x%s", kn_shape_str(&x, sb, sizeof sb));
    gc_case c = {.name = name, .op = &kn_op_batchnorm, .nin = 5};
    c.attrs.f[0] = 0.1, c.attrs.f[1] = 1e-5;
    int64_t C = x.d[1];
    c.in[0] = gc_param(x, GC_RANDN, xstd);
    c.in[1] = gc_param(kn_shape1(C), GC_RANDN, 1.0);
    c.in[2] = gc_param(kn_shape1(C), GC_RANDN, 1.0);
    c.in[3] = gc_state(kn_shape1(C), GC_RANDN, 0.5);
    c.in[4] = gc_state(kn_shape1(C), GC_POSITIVE, 1.0);
    run(&c);
}

static void check_batchnorm(void) {
    bn_case(kn_shape2(6, 5), 1.0);
    bn_case(kn_shape2(16, 3), 3.0);
    bn_case(kn_shape4(4, 3, 5, 7), 1.0);
    bn_case(kn_shape4(3, 4, 2, 3), 0.5);
    bn_case(kn_shape4(2, 2, 1, 5), 2.0);
}

/* ---------------- dropout, reshape, add, concat ---------------- */
static void check_misc(void) {
    const double ps[] = {0.0, 0.3, 0.5, 0.9};
    for (int i = 0; i < 4; i++) {
        gc_case c = {.op = &kn_op_dropout, .nin = 1};
        c.attrs.f[0] = ps[i];
        c.in[0] = gc_param(gc_shape3(4, 5, 6), GC_RANDN, 0);
        run(&c);
    }
    /* reshape: [2,3,4,5] -> [2,-1], [6,20], [5,4,3,2,1]; [120] -> [2,3,4,5] */
    {
        gc_case c = {.op = &kn_op_reshape, .nin = 1};
        c.attrs.i[0] = 2, c.attrs.i[1] = 2, c.attrs.i[2] = -1;
        c.in[0] = gc_param(kn_shape4(2, 3, 4, 5), GC_RANDN, 0);
        run(&c);
        c.attrs.i[1] = 6, c.attrs.i[2] = 20;
        run(&c);
        c.attrs.i[0] = 5, c.attrs.i[1] = 5, c.attrs.i[2] = 4, c.attrs.i[3] = 3, c.attrs.i[4] = 2, c.attrs.i[5] = 1;
        run(&c);
        gc_case d = {.op = &kn_op_reshape, .nin = 1};
        d.attrs.i[0] = 4, d.attrs.i[1] = 2, d.attrs.i[2] = 3, d.attrs.i[3] = -1, d.attrs.i[4] = 5;
        d.in[0] = gc_param(kn_shape1(120), GC_RANDN, 0);
        run(&d);
    }
    {
        gc_case c = {.op = &kn_op_add, .nin = 2};
        c.in[0] = gc_param(kn_shape4(2, 3, 5, 7), GC_RANDN, 0);
        c.in[1] = gc_param(kn_shape4(2, 3, 5, 7), GC_RANDN, 0);
        run(&c);
        /* the same tensor twice: the executor sums the two contributions */
        gc_case d = {.name = "add(a, a)", .op = &kn_op_add, .nin = 2};
        d.in[0] = gc_param(kn_shape2(3, 4), GC_RANDN, 0);
        d.in[1] = d.in[0];
        d.in[0].name = d.in[1].name = "a";
        run(&d);
        /* one differentiable and one constant input */
        gc_case e = {.name = "add(param, input)", .op = &kn_op_add, .nin = 2};
        e.in[0] = gc_param(kn_shape2(3, 4), GC_RANDN, 0);
        e.in[1] = gc_input(KN_F32, kn_shape2(3, 4), GC_RANDN, 0);
        run(&e);
    }
    {
        gc_case c = {.op = &kn_op_concat, .nin = 3};
        c.attrs.i[0] = 1;
        c.in[0] = gc_param(kn_shape4(2, 3, 4, 5), GC_RANDN, 0);
        c.in[1] = gc_param(kn_shape4(2, 1, 4, 5), GC_RANDN, 0);
        c.in[2] = gc_param(kn_shape4(2, 2, 4, 5), GC_RANDN, 0);
        run(&c);
        gc_case d = {.op = &kn_op_concat, .nin = 2};
        d.attrs.i[0] = 2;
        d.in[0] = gc_param(kn_shape4(2, 3, 4, 5), GC_RANDN, 0);
        d.in[1] = gc_param(kn_shape4(2, 3, 1, 5), GC_RANDN, 0);
        run(&d);
        d.attrs.i[0] = 3;
        d.in[1] = gc_param(kn_shape4(2, 3, 4, 2), GC_RANDN, 0);
        run(&d);
        gc_case e = {.op = &kn_op_concat, .nin = 2};
        e.attrs.i[0] = 1;
        e.in[0] = gc_param(kn_shape2(4, 3), GC_RANDN, 0);
        e.in[1] = gc_input(KN_F32, kn_shape2(4, 5), GC_RANDN, 0);
        run(&e);
        gc_case f = {.op = &kn_op_concat, .nin = 8};
        f.attrs.i[0] = 1;
        for (int i = 0; i < 8; i++) f.in[i] = gc_param(gc_shape3(2, 1 + i % 3, 3), GC_RANDN, 0);
        run(&f);
    }
}

/* ---------------- losses ---------------- */
static void check_losses(void) {
    const int64_t nk[][2] = {{7, 5}, {16, 10}, {1, 3}, {3, 1}};
    for (int i = 0; i < 4; i++) {
        /* a float32 scalar loss: h = 0.05 keeps its rounding (~1e-7 of the loss) well
         * below the difference; the truncation error stays < 1e-3 relative */
        gc_case c = {.op = &kn_op_softmax_ce, .nin = 2, .h = 0.05};
        c.in[0] = gc_param(kn_shape2(nk[i][0], nk[i][1]), GC_RANDN, 2.0);
        c.in[1] = gc_input(KN_I32, kn_shape1(nk[i][0]), GC_LABELS, (double)nk[i][1]);
        run(&c);
    }
    gc_case m = {.op = &kn_op_mse, .nin = 2};
    m.in[0] = gc_param(gc_shape3(3, 5, 7), GC_RANDN, 0);
    m.in[1] = gc_param(gc_shape3(3, 5, 7), GC_RANDN, 0);
    run(&m);
    /* two reduction blocks; a constant target. The loss is a float32 mean over 4200
     * elements, so a step of 1e-2 would move it by ~1e-5 of its value, close to its
     * rounding: the loss is quadratic, so a large step is exact. */
    gc_case m2 = {.op = &kn_op_mse, .nin = 2, .h = 1.0};
    m2.in[0] = gc_param(kn_shape2(2, 2100), GC_RANDN, 0);
    m2.in[1] = gc_input(KN_F32, kn_shape2(2, 2100), GC_RANDN, 0);
    run(&m2);

    /* softmax_ce: class weights (input 2), label smoothing (f[0]), positions (N,T,K) */
    const kn_shape lg[] = {kn_shape2(7, 5), gc_shape3(3, 4, 5), kn_shape4(2, 2, 3, 4)};
    for (int s = 0; s < 3; s++)
        for (int v = 0; v < 4; v++) { /* plain (positional only), weights, smoothing, both */
            if (s == 0 && v == 0) continue;
            char name[96];
            snprintf(name, sizeof name, "softmax_ce %dd%s%s", lg[s].nd, v & 1 ? " weighted" : "", v & 2 ? " smoothed" : "");
            gc_case c = {.name = name, .op = &kn_op_softmax_ce, .nin = v & 1 ? 3 : 2, .h = 0.05};
            const int64_t K = lg[s].d[lg[s].nd - 1];
            kn_shape ls = lg[s];
            ls.nd--;
            c.in[0] = gc_param(lg[s], GC_RANDN, 2.0);
            c.in[1] = gc_input(KN_I32, ls, GC_LABELS, (double)K);
            c.in[2] = gc_input(KN_F32, kn_shape1(K), GC_POSITIVE, 2.0);
            if (v & 2) c.attrs.f[0] = 0.2;
            run(&c);
        }
    gc_case ls1 = {.name = "softmax_ce smoothing 1", .op = &kn_op_softmax_ce, .nin = 3, .h = 0.05};
    ls1.attrs.f[0] = 1.0;
    ls1.in[0] = gc_param(kn_shape2(6, 4), GC_RANDN, 2.0);
    ls1.in[1] = gc_input(KN_I32, kn_shape1(6), GC_LABELS, 4);
    ls1.in[2] = gc_input(KN_F32, kn_shape1(4), GC_POSITIVE, 1.0);
    run(&ls1);
    /* bce_logits: logits and (soft) targets both differentiated; with pos_weight [C] and [1] */
    for (int v = 0; v < 3; v++) {
        gc_case b = {.name = v == 0 ? "bce_logits" : v == 1 ? "bce_logits pos_weight [C]" : "bce_logits pos_weight [1]",
                     .op = &kn_op_bce_logits, .nin = v ? 3 : 2, .h = 0.05};
        b.in[0] = gc_param(gc_shape3(3, 5, 7), GC_RANDN, 2.0);
        b.in[1] = gc_param(gc_shape3(3, 5, 7), GC_POSITIVE, 0.5); /* in [0.25, 0.75) */
        b.in[2] = gc_input(KN_F32, kn_shape1(v == 1 ? 7 : 1), GC_POSITIVE, 2.0);
        run(&b);
    }
    gc_case bh = {.name = "bce_logits hard targets", .op = &kn_op_bce_logits, .nin = 2, .h = 0.05};
    static const float hard[12] = {0, 1, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0};
    bh.in[0] = gc_param(kn_shape2(3, 4), GC_RANDN, 3.0);
    bh.in[1] = gc_input(KN_F32, kn_shape2(3, 4), GC_VALUES, 0);
    bh.in[1].values = hard;
    run(&bh);
    /* l1: pred on a grid that never reaches the target (0) within a step */
    gc_case l = {.op = &kn_op_l1, .nin = 2};
    l.in[0] = gc_param(gc_shape3(3, 5, 7), GC_DISTINCT, 0);
    l.in[1] = gc_param(gc_shape3(3, 5, 7), GC_CONST, 0);
    run(&l);
    /* huber: both sides of delta */
    const double deltas[] = {0.5, 1.0, 2.0};
    for (int k = 0; k < 3; k++) {
        gc_case hb = {.op = &kn_op_huber, .nin = 2, .h = 5e-3}; /* a kink in the second derivative at |d| = delta */
        hb.attrs.f[0] = deltas[k];
        hb.in[0] = gc_param(kn_shape2(4, 6), GC_RANDN, 1.5);
        hb.in[1] = gc_param(kn_shape2(4, 6), GC_RANDN, 0);
        run(&hb);
    }
}

/* ---------------- linear, conv2d ---------------- */
static void check_linear(void) {
    const int64_t sh[][3] = {{5, 7, 4}, {1, 3, 2}, {8, 16, 10}, {3, 1, 1}};
    for (int i = 0; i < 4; i++) {
        gc_case c = {.op = &kn_op_linear, .nin = 3};
        c.in[0] = gc_param(kn_shape2(sh[i][0], sh[i][1]), GC_RANDN, 0);
        c.in[1] = gc_param(kn_shape2(sh[i][2], sh[i][1]), GC_RANDN, 0);
        c.in[2] = gc_param(kn_shape1(sh[i][2]), GC_RANDN, 0);
        run(&c);
        c.nin = 2; /* no bias */
        run(&c);
    }
}

static void conv_case(kn_shape x, int64_t O, int kh, int kw, int sh, int sw, int ph, int pw, int groups, int bias) {
    char name[128];
    snprintf(name, sizeof name, "conv2d x[%lld,%lld,%lld,%lld] O%lld k%dx%d s%dx%d p%dx%d g%d%s", (long long)x.d[0],
             (long long)x.d[1], (long long)x.d[2], (long long)x.d[3], (long long)O, kh, kw, sh, sw, ph, pw, groups,
             bias ? "" : " nobias");
    gc_case c = {.name = name, .op = &kn_op_conv2d, .nin = bias ? 3 : 2};
    c.attrs.i[0] = sh, c.attrs.i[1] = sw, c.attrs.i[2] = ph, c.attrs.i[3] = pw, c.attrs.i[4] = groups;
    int G = groups > 1 ? groups : 1;
    c.in[0] = gc_param(x, GC_RANDN, 0);
    c.in[1] = gc_param(kn_shape4(O, x.d[1] / G, kh, kw), GC_RANDN, 0.5);
    c.in[2] = gc_param(kn_shape1(O), GC_RANDN, 0);
    run(&c);
}

static void check_conv(void) {
    const int ks[] = {1, 2, 3, 5};
    kn_shape x = kn_shape4(2, 3, 7, 9);
    for (int ki = 0; ki < 4; ki++)
        for (int s = 1; s <= 3; s++)
            for (int p = 0; p <= 2; p++) conv_case(x, 4, ks[ki], ks[ki], s, s, p, p, 0, 1);
    conv_case(kn_shape4(1, 3, 5, 7), 2, 3, 5, 1, 2, 1, 2, 1, 1);
    conv_case(kn_shape4(2, 2, 5, 7), 3, 1, 3, 2, 1, 0, 1, 0, 1);
    conv_case(kn_shape4(2, 3, 9, 5), 4, 5, 2, 3, 2, 2, 0, 0, 0);
    conv_case(kn_shape4(2, 4, 5, 7), 6, 3, 3, 1, 1, 1, 1, 2, 1);  /* groups 2 */
    conv_case(kn_shape4(1, 4, 6, 5), 2, 2, 3, 2, 1, 0, 1, 2, 0);  /* groups 2, no bias */
    conv_case(kn_shape4(2, 4, 5, 5), 4, 3, 3, 2, 2, 1, 1, 4, 1);  /* depthwise */
    conv_case(kn_shape4(3, 1, 5, 7), 2, 5, 7, 1, 1, 0, 0, 0, 1);  /* kernel = image */
}

/* The two convolution algorithms (direct, Winograd F(4x4,3x3)) against a naive
 * convolution in double precision: forward, input, weight and bias gradients, on
 * shapes where oneDNN has both (3x3, stride 1, 32 and 48 channels); then which one
 * `auto` takes. Winograd's transforms round differently: both must agree with the
 * reference to 1e-5 of the largest value. Without AVX-512 oneDNN has no Winograd
 * kernel: the Winograd half is then reported as not run. */
static double conv_ref_err(const float *got, const double *want, int64_t n) {
    double e = 0, m = 0;
    for (int64_t k = 0; k < n; k++) {
        e = fmax(e, fabs(got[k] - want[k]));
        m = fmax(m, fabs(want[k]));
    }
    return e / (m > 0 ? m : 1);
}

static void check_conv_algorithms(void) {
    enum { N = 2, C = 32, O = 48, H = 9, W = 10, K = 3 };
    const int64_t nx = N * C * H * W, nw = O * C * K * K, ny = N * O * H * W;
    float *x = malloc(nx * sizeof *x), *w = malloc(nw * sizeof *w), *b = malloc(O * sizeof *b), *dy = malloc(ny * sizeof *dy);
    double *y = calloc(ny, sizeof *y), *dx = calloc(nx, sizeof *dx), *dw = calloc(nw, sizeof *dw), *db = calloc(O, sizeof *db);
    kn_rng rng;
    kn_rng_seed(&rng, 4242);
    for (int64_t k = 0; k < nx; k++) x[k] = (float)kn_rng_normal(&rng);
    for (int64_t k = 0; k < nw; k++) w[k] = (float)(0.1 * kn_rng_normal(&rng));
    for (int k = 0; k < O; k++) b[k] = (float)kn_rng_normal(&rng);
    for (int64_t k = 0; k < ny; k++) dy[k] = (float)kn_rng_normal(&rng);
#define X(n, c, h, v) x[(((n) * C + (c)) * H + (h)) * W + (v)]
#define WT(o, c, i, j) (((o) * C + (c)) * K + (i)) * K + (j)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++)
            for (int h = 0; h < H; h++)
                for (int v = 0; v < W; v++) {
                    int64_t yi = (((int64_t)n * O + o) * H + h) * W + v;
                    double acc = b[o];
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < K; i++)
                            for (int j = 0; j < K; j++) {
                                int hh = h + i - 1, vv = v + j - 1;
                                if (hh < 0 || hh >= H || vv < 0 || vv >= W) continue;
                                acc += (double)X(n, c, hh, vv) * w[WT(o, c, i, j)];
                                dx[(((int64_t)n * C + c) * H + hh) * W + vv] += (double)dy[yi] * w[WT(o, c, i, j)];
                                dw[WT(o, c, i, j)] += (double)dy[yi] * X(n, c, hh, vv);
                            }
                    y[yi] = acc;
                    db[o] += dy[yi];
                }
#undef X
#undef WT
    const char *names[] = {"auto", "direct", "winograd"};
    kn_set_threads(2);
    for (int algo = KN_CONV_DIRECT; algo <= KN_CONV_WINOGRAD; algo++) {
        gc_tensor in[3] = {gc_param(kn_shape4(N, C, H, W), GC_VALUES, 0), gc_param(kn_shape4(O, C, K, K), GC_VALUES, 0),
                           gc_param(kn_shape1(O), GC_VALUES, 0)};
        in[0].values = x, in[1].values = w, in[2].values = b;
        kn_attrs a = {{1, 1, 1, 1, 1, algo}, {0}};
        gc_graph G;
        g_cases++;
        if (gc_build(&G, &kn_op_conv2d, &a, in, 3, 1, 1)) {
            if (algo == KN_CONV_WINOGRAD && kn_cpu_block() != 16 && strstr(kn_ctx_message(G.ctx), "no Winograd"))
                printf("conv2d winograd: not run, this CPU has no AVX-512 (%s)\n", kn_ctx_message(G.ctx));
            else
                CHECK(0, "conv2d %s: cannot build: %s", names[algo], kn_ctx_message(G.ctx));
            gc_free(&G);
            continue;
        }
        kn_graph *g = G.g;
        CHECK(!strcmp(g->n[G.node].impl, names[algo]), "conv2d %s: ran '%s'", names[algo], g->n[G.node].impl);
        gc_forward(&G);
        double ey = conv_ref_err(kn_ptr(g, G.y), y, ny);
        kn_g_backward(g, &G.rt, dy);
        double ex = conv_ref_err(kn_ptr(g, g->v[G.vid[0]].grad), dx, nx);
        double ew = conv_ref_err(kn_ptr(g, g->v[G.vid[1]].grad), dw, nw);
        double eb = conv_ref_err(kn_ptr(g, g->v[G.vid[2]].grad), db, O);
        if (gc_verbose()) printf("conv2d %-8s  y %.1e  dx %.1e  dw %.1e  db %.1e\n", names[algo], ey, ex, ew, eb);
        /* run to run on 2 threads: the same bits (a resumed run must replay exactly) */
        float *keep = malloc((ny + nx + nw) * sizeof *keep);
        memcpy(keep, kn_ptr(g, G.y), ny * sizeof *keep);
        memcpy(keep + ny, kn_ptr(g, g->v[G.vid[0]].grad), nx * sizeof *keep);
        memcpy(keep + ny + nx, kn_ptr(g, g->v[G.vid[1]].grad), nw * sizeof *keep);
        gc_forward(&G);
        int same = memcmp(keep, kn_ptr(g, G.y), ny * sizeof *keep) == 0;
        kn_g_backward(g, &G.rt, dy);
        same &= memcmp(keep + ny, kn_ptr(g, g->v[G.vid[0]].grad), nx * sizeof *keep) == 0;
        same &= memcmp(keep + ny + nx, kn_ptr(g, g->v[G.vid[1]].grad), nw * sizeof *keep) == 0;
        CHECK(same, "conv2d %s: a second forward + backward on 2 threads gave different bits", names[algo]);
        free(keep);
        CHECK(ey < 1e-5 && ex < 1e-5 && ew < 1e-5 && eb < 1e-5,
              "conv2d %s vs double reference: y %.2e dx %.2e dw %.2e db %.2e (max 1e-5 of the largest value)",
              names[algo], ey, ex, ew, eb);
        gc_free(&G);
    }
    kn_set_threads(1);
    /* auto: Winograd for 32 -> 48 channels where it runs, direct for 3x3 with 16 channels
     * (the transforms do not pay there) and for stride 2 */
    struct { int64_t c, o; int s; const char *want; } cases[] = {
        {32, 48, 1, kn_cpu_block() == 16 ? "winograd" : "direct"}, {16, 16, 1, "direct"}, {32, 32, 2, "direct"}};
    for (int k = 0; k < 3; k++) {
        gc_tensor in[2] = {gc_param(kn_shape4(2, cases[k].c, 8, 8), GC_RANDN, 0),
                           gc_param(kn_shape4(cases[k].o, cases[k].c, 3, 3), GC_RANDN, 0.1)};
        kn_attrs a = {{cases[k].s, cases[k].s, 1, 1, 1, KN_CONV_AUTO}, {0}};
        gc_graph G;
        if (gc_build(&G, &kn_op_conv2d, &a, in, 2, 1, 1))
            CHECK(0, "conv2d auto: cannot build: %s", kn_ctx_message(G.ctx));
        else
            CHECK(!strcmp(G.g->n[G.node].impl, cases[k].want), "conv2d auto %lld->%lld stride %d: took '%s', want '%s'",
                  (long long)cases[k].c, (long long)cases[k].o, cases[k].s, G.g->n[G.node].impl, cases[k].want);
        gc_free(&G);
    }
    /* asking for Winograd where it cannot run (one input channel) is an error that says so */
    {
        gc_tensor in[2] = {gc_param(kn_shape4(2, 1, 8, 8), GC_RANDN, 0), gc_param(kn_shape4(32, 1, 3, 3), GC_RANDN, 0.1)};
        kn_attrs a = {{1, 1, 1, 1, 1, KN_CONV_WINOGRAD}, {0}};
        gc_graph G;
        int rc = gc_build(&G, &kn_op_conv2d, &a, in, 2, 1, 1);
        CHECK(rc != 0 && strstr(kn_ctx_message(G.ctx), "algorithm = winograd") &&
                  strstr(kn_ctx_message(G.ctx), "use algorithm = auto"),
              "conv2d winograd on 1 input channel: build %s: %s", rc ? "failed" : "succeeded", kn_ctx_message(G.ctx));
        gc_free(&G);
    }
    free(x), free(w), free(b), free(dy), free(y), free(dx), free(dw), free(db);
}

/* ---------------- multi-threaded paths ----------------
 * main() runs the gradient checks on one thread (the tiny tensors stay below the
 * ops' parallel thresholds anyway, and on a loaded machine every OpenMP barrier can
 * cost a scheduler time slice). These cases are large enough to take the parallel
 * loops: forward + backward with 2 threads must match 1 thread bitwise for kiln's own
 * kernels (every element is computed the same way, reductions run per channel or per
 * fixed block), and to 1e-5 of each tensor's largest magnitude for oneDNN's
 * GEMM/convolutions, whose blocking may follow the thread count (on AVX2 its sgemm
 * splits the sums by thread: a value that cancels to near zero then differs by more
 * than 1e-5 of itself); every case also reruns on 2 threads and must repeat its bits. A few elements are also gradient-checked with 2 threads where the
 * output is not a float32 scalar over thousands of elements. */
static void parallel_case(gc_case *c, double rtol, int gradcheck) {
    g_cases++;
    if (!c->seed) c->seed = (uint64_t)g_cases * 7919u;
    gc_threads_agree(c, 2, rtol);
    if (gradcheck) {
        kn_set_threads(2);
        c->max_elems = 6;
        gc_check(c);
        kn_set_threads(1);
    }
}

static void check_parallel(void) {
    const int64_t M = 70000;
    const kn_op *ew[] = {&kn_op_relu, &kn_op_gelu, &kn_op_silu, &kn_op_tanh, &kn_op_sigmoid, &kn_op_leaky_relu,
                         &kn_op_dropout};
    for (int k = 0; k < 7; k++) {
        gc_case c = {.op = ew[k], .nin = 1};
        c.attrs.f[0] = 0.25;
        c.in[0] = gc_param(kn_shape1(M), k == 0 || k == 5 ? GC_DISTINCT : GC_RANDN, 0);
        parallel_case(&c, 0, 1);
    }
    kn_shape x = kn_shape4(4, 16, 24, 24);
    kn_attrs pool = {{3, 3, 2, 2, 1, 1, 0}, {0}};
    const kn_op *pools[] = {&kn_op_maxpool2d, &kn_op_avgpool2d, &kn_op_global_avgpool};
    for (int k = 0; k < 3; k++) {
        gc_case c = {.op = pools[k], .attrs = pool, .nin = 1};
        c.in[0] = gc_param(x, k == 0 ? GC_DISTINCT : GC_RANDN, 0);
        parallel_case(&c, 0, 1);
    }
    gc_case bn = {.op = &kn_op_batchnorm, .nin = 5};
    bn.attrs.f[0] = 0.1, bn.attrs.f[1] = 1e-5;
    bn.in[0] = gc_param(x, GC_RANDN, 2.0);
    bn.in[1] = gc_param(kn_shape1(16), GC_RANDN, 1.0);
    bn.in[2] = gc_param(kn_shape1(16), GC_RANDN, 1.0);
    bn.in[3] = gc_state(kn_shape1(16), GC_CONST, 0.0);
    bn.in[4] = gc_state(kn_shape1(16), GC_CONST, 1.0);
    parallel_case(&bn, 0, 1);
    bn.in[0] = gc_param(kn_shape2(2048, 24), GC_RANDN, 2.0); /* 1d */
    for (int i = 1; i < 5; i++) bn.in[i].shape = kn_shape1(24);
    parallel_case(&bn, 0, 0);
    gc_case add = {.op = &kn_op_add, .nin = 2};
    add.in[0] = gc_param(kn_shape1(M), GC_RANDN, 0);
    add.in[1] = gc_param(kn_shape1(M), GC_RANDN, 0);
    parallel_case(&add, 0, 1);
    gc_case cat = {.op = &kn_op_concat, .nin = 2};
    cat.attrs.i[0] = 1;
    cat.in[0] = gc_param(kn_shape2(2, 20000), GC_RANDN, 0);
    cat.in[1] = gc_param(kn_shape2(2, 15000), GC_RANDN, 0);
    parallel_case(&cat, 0, 1);
    gc_case sce = {.op = &kn_op_softmax_ce, .nin = 2};
    sce.in[0] = gc_param(kn_shape2(2000, 10), GC_RANDN, 2.0);
    sce.in[1] = gc_input(KN_I32, kn_shape1(2000), GC_LABELS, 10);
    parallel_case(&sce, 0, 0);
    /* a mean of 70000 squares: small differences (std 0.01) and an exact large step */
    gc_case mse = {.op = &kn_op_mse, .nin = 2, .h = 1.0};
    mse.in[0] = gc_param(kn_shape1(M), GC_RANDN, 0.01);
    mse.in[1] = gc_param(kn_shape1(M), GC_CONST, 0);
    parallel_case(&mse, 0, 1);
    gc_case lin = {.op = &kn_op_linear, .nin = 3};
    lin.in[0] = gc_param(kn_shape2(256, 128), GC_RANDN, 0);
    lin.in[1] = gc_param(kn_shape2(64, 128), GC_RANDN, 0.1);
    lin.in[2] = gc_param(kn_shape1(64), GC_RANDN, 0);
    parallel_case(&lin, 1e-5, 1);
    gc_case conv = {.op = &kn_op_conv2d, .nin = 3};
    conv.attrs.i[0] = 1, conv.attrs.i[1] = 1, conv.attrs.i[2] = 1, conv.attrs.i[3] = 1;
    conv.in[0] = gc_param(kn_shape4(4, 8, 16, 16), GC_RANDN, 0);
    conv.in[1] = gc_param(kn_shape4(8, 8, 3, 3), GC_RANDN, 0.2);
    conv.in[2] = gc_param(kn_shape1(8), GC_RANDN, 0);
    parallel_case(&conv, 1e-5, 1);
}

/* ---------------- primitive ops (ops/binary.c, unary.c, reduce.c, softmax.c, matmul.c,
 * permute.c, slice.c, gather.c, layernorm.c; concat on any axis; linear on N-d) ---------------- */
static kn_shape shp(int nd, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    kn_shape s = {nd, {a, b, c, d, e}};
    return s;
}

static void prim_case(const char *name, const kn_op *op, const kn_attrs *a, int nin, const gc_tensor *in) {
    gc_case c = {.name = name, .op = op, .nin = nin};
    if (a) c.attrs = *a;
    for (int i = 0; i < nin; i++) c.in[i] = in[i];
    run(&c);
}

static void check_primitives(void) {
    char nm[128], s1[64], s2[64];
    /* binary with broadcasting, size-1 axes, missing leading dims */
    const kn_op *bin[] = {&kn_op_add, &kn_op_sub, &kn_op_mul, &kn_op_div};
    const kn_shape pairs[][2] = {{shp(3, 3, 4, 5, 0, 0), shp(3, 3, 4, 5, 0, 0)}, {shp(3, 3, 4, 5, 0, 0), shp(1, 5, 0, 0, 0, 0)},
                                 {shp(3, 3, 1, 5, 0, 0), shp(2, 4, 1, 0, 0, 0)}, {shp(1, 1, 0, 0, 0, 0), shp(2, 2, 3, 0, 0, 0)},
                                 {shp(4, 2, 3, 4, 5, 0), shp(4, 2, 1, 4, 1, 0)}, {shp(5, 2, 1, 3, 1, 2), shp(3, 3, 4, 1, 0, 0)}};
    for (int k = 0; k < 4; k++)
        for (int p = 0; p < 6; p++) {
            snprintf(nm, sizeof nm, "%s %s %s", bin[k]->name, kn_shape_str(&pairs[p][0], s1, sizeof s1),
                     kn_shape_str(&pairs[p][1], s2, sizeof s2));
            gc_tensor in[2] = {gc_param(pairs[p][0], GC_RANDN, 0), gc_param(pairs[p][1], bin[k] == &kn_op_div ? GC_POSITIVE : GC_RANDN, 0)};
            prim_case(nm, bin[k], NULL, 2, in);
        }
    {
        gc_tensor in[2] = {gc_param(kn_shape2(3, 4), GC_RANDN, 0), gc_param(kn_shape2(3, 4), GC_RANDN, 0)};
        in[0].name = in[1].name = "a";
        prim_case("mul(a, a)", &kn_op_mul, NULL, 2, in);
        gc_tensor ci[2] = {gc_param(kn_shape2(3, 4), GC_RANDN, 0), gc_input(KN_F32, kn_shape1(4), GC_POSITIVE, 0)};
        prim_case("div(param, input[4])", &kn_op_div, NULL, 2, ci);
    }
    /* unary maths */
    const kn_op *un[] = {&kn_op_exp, &kn_op_log, &kn_op_sqrt, &kn_op_rsqrt, &kn_op_neg, &kn_op_square, &kn_op_affine};
    for (int k = 0; k < 7; k++) {
        kn_attrs a = {{0}, {1.5, -0.25}};
        int pos = un[k] == &kn_op_log || un[k] == &kn_op_sqrt || un[k] == &kn_op_rsqrt;
        gc_tensor in = gc_param(gc_shape3(3, 4, 5), pos ? GC_POSITIVE : GC_RANDN, 0);
        prim_case(un[k]->name, un[k], &a, 1, &in);
    }
    /* reductions over sets of axes */
    const kn_op *red[] = {&kn_op_sum, &kn_op_mean, &kn_op_max};
    const int masks[] = {0, 1, 2, 4, 5, 6, 3};
    for (int k = 0; k < 3; k++)
        for (int m = 0; m < 7; m++)
            for (int keep = 0; keep < 2; keep++) {
                kn_attrs a = {{masks[m], keep}, {0}};
                snprintf(nm, sizeof nm, "%s axes 0x%x keepdim %d", red[k]->name, masks[m], keep);
                gc_tensor in = gc_param(gc_shape3(3, 4, 5), k == 2 ? GC_DISTINCT : GC_RANDN, 0);
                prim_case(nm, red[k], &a, 1, &in);
            }
    {
        kn_attrs a = {{0x5, 0}, {0}};
        gc_tensor in = gc_param(shp(4, 2, 1, 3, 4, 0), GC_RANDN, 0);
        prim_case("sum axes 0x5 of [2,1,3,4]", &kn_op_sum, &a, 1, &in);
    }
    /* softmax, log_softmax */
    const int axes[] = {0, 1, 2, -1, -2};
    for (int k = 0; k < 2; k++)
        for (int ax = 0; ax < 5; ax++) {
            const kn_op *op = k ? &kn_op_log_softmax : &kn_op_softmax;
            kn_attrs a = {{axes[ax]}, {0}};
            snprintf(nm, sizeof nm, "%s axis %d", op->name, axes[ax]);
            gc_tensor in = gc_param(gc_shape3(3, 4, 5), GC_RANDN, 2.0);
            prim_case(nm, op, &a, 1, &in);
        }
    /* matmul: transposes, batch broadcasting */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int64_t M = 3, K = 4, N = 5;
            kn_shape as[3] = {ta ? kn_shape2(K, M) : kn_shape2(M, K), ta ? gc_shape3(2, K, M) : gc_shape3(2, M, K),
                              ta ? shp(4, 2, 1, K, M, 0) : shp(4, 2, 1, M, K, 0)};
            kn_shape bs[3] = {tb ? kn_shape2(N, K) : kn_shape2(K, N), tb ? kn_shape2(N, K) : kn_shape2(K, N),
                              tb ? gc_shape3(3, N, K) : gc_shape3(3, K, N)};
            for (int v = 0; v < 3; v++) {
                kn_attrs a = {{ta, tb}, {0}};
                snprintf(nm, sizeof nm, "matmul ta%d tb%d %s @ %s", ta, tb, kn_shape_str(&as[v], s1, sizeof s1),
                         kn_shape_str(&bs[v], s2, sizeof s2));
                gc_tensor in[2] = {gc_param(as[v], GC_RANDN, 0), gc_param(bs[v], GC_RANDN, 0)};
                prim_case(nm, &kn_op_matmul, &a, 2, in);
            }
        }
    {
        kn_attrs a = {{0, 0}, {0}};
        gc_tensor in[2] = {gc_param(gc_shape3(1, 9, 6), GC_RANDN, 0), gc_param(gc_shape3(4, 6, 7), GC_RANDN, 0)};
        prim_case("matmul [1,9,6] @ [4,6,7] (two row blocks)", &kn_op_matmul, &a, 2, in);
    }
    /* permute */
    {
        kn_attrs a = {{2, 0, 1}, {0}};
        gc_tensor in = gc_param(gc_shape3(2, 3, 4), GC_RANDN, 0);
        prim_case("permute [2,0,1]", &kn_op_permute, &a, 1, &in);
        kn_attrs b = {{4, 2, 0, 3, 1}, {0}};
        gc_tensor i5 = gc_param(shp(5, 2, 3, 1, 2, 3), GC_RANDN, 0);
        prim_case("permute [4,2,0,3,1]", &kn_op_permute, &b, 1, &i5);
        kn_attrs c = {{1, 0}, {0}};
        gc_tensor i2 = gc_param(kn_shape2(3, 5), GC_RANDN, 0);
        prim_case("permute [1,0] (transpose)", &kn_op_permute, &c, 1, &i2);
    }
    /* slice */
    {
        kn_attrs a = {{0, 0, 0, 1, 5, 2, -4, -1, 1}, {0}};
        gc_tensor in = gc_param(gc_shape3(4, 5, 6), GC_RANDN, 0);
        prim_case("slice [:, 1:5:2, -4:-1]", &kn_op_slice, &a, 1, &in);
        kn_attrs b = {{1, 100, 3}, {0}};
        prim_case("slice [1::3]", &kn_op_slice, &b, 1, &in);
    }
    /* concat on any axis */
    {
        kn_attrs a = {{0}, {0}};
        gc_tensor in[2] = {gc_param(gc_shape3(2, 3, 4), GC_RANDN, 0), gc_param(gc_shape3(1, 3, 4), GC_RANDN, 0)};
        prim_case("concat axis 0", &kn_op_concat, &a, 2, in);
        kn_attrs b = {{-1}, {0}};
        gc_tensor j[3] = {gc_param(gc_shape3(2, 3, 4), GC_RANDN, 0), gc_param(gc_shape3(2, 3, 1), GC_RANDN, 0),
                          gc_param(gc_shape3(2, 3, 2), GC_RANDN, 0)};
        prim_case("concat axis -1", &kn_op_concat, &b, 3, j);
    }
    /* gather */
    {
        gc_tensor in[2] = {gc_param(kn_shape2(7, 5), GC_RANDN, 0), gc_input(KN_I32, kn_shape2(3, 4), GC_LABELS, 7)};
        prim_case("gather [7,5] by [3,4]", &kn_op_gather, NULL, 2, in);
        gc_tensor i1[2] = {gc_param(kn_shape2(4, 3), GC_RANDN, 0), gc_input(KN_I32, kn_shape1(9), GC_LABELS, 4)};
        prim_case("gather [4,3] by [9]", &kn_op_gather, NULL, 2, i1);
    }
    /* layernorm */
    {
        kn_attrs a = {{0}, {1e-5}};
        gc_tensor in[3] = {gc_param(gc_shape3(3, 4, 6), GC_RANDN, 2.0), gc_param(kn_shape1(6), GC_RANDN, 0),
                           gc_param(kn_shape1(6), GC_RANDN, 0)};
        prim_case("layernorm [3,4,6]", &kn_op_layernorm, &a, 3, in);
        gc_tensor x = gc_param(kn_shape2(5, 8), GC_RANDN, 0);
        prim_case("layernorm [5,8] no affine", &kn_op_layernorm, &a, 1, &x);
    }
    /* linear on a 3-D input */
    {
        gc_tensor in[3] = {gc_param(gc_shape3(2, 3, 4), GC_RANDN, 0), gc_param(kn_shape2(5, 4), GC_RANDN, 0),
                           gc_param(kn_shape1(5), GC_RANDN, 0)};
        prim_case("linear [2,3,4]", &kn_op_linear, NULL, 3, in);
    }
}

static void check_primitives_parallel(void) {
    /* large enough for the parallel loops: 1 vs 2 threads bitwise, two runs on 2 threads the same */
    gc_case mul = {.op = &kn_op_mul, .nin = 2};
    mul.in[0] = gc_param(gc_shape3(40, 30, 64), GC_RANDN, 0);
    mul.in[1] = gc_param(gc_shape3(40, 1, 64), GC_RANDN, 0);
    parallel_case(&mul, 0, 1);
    gc_case dv = {.op = &kn_op_div, .nin = 2};
    dv.in[0] = gc_param(kn_shape2(300, 256), GC_RANDN, 0);
    dv.in[1] = gc_param(kn_shape1(256), GC_POSITIVE, 0);
    parallel_case(&dv, 0, 1);
    gc_case sum = {.op = &kn_op_sum, .nin = 1};
    sum.attrs.i[0] = 0x1;
    sum.in[0] = gc_param(kn_shape2(300, 600), GC_RANDN, 0);
    parallel_case(&sum, 0, 0);
    sum.attrs.i[0] = 0x2;
    parallel_case(&sum, 0, 0);
    gc_case mx = {.op = &kn_op_max, .nin = 1};
    mx.attrs.i[0] = 0x2;
    mx.in[0] = gc_param(kn_shape2(300, 600), GC_DISTINCT, 0);
    parallel_case(&mx, 0, 0);
    gc_case sm = {.op = &kn_op_softmax, .nin = 1};
    sm.attrs.i[0] = 1;
    sm.in[0] = gc_param(gc_shape3(20, 50, 40), GC_RANDN, 0);
    parallel_case(&sm, 0, 0);
    gc_case mm = {.op = &kn_op_matmul, .nin = 2};
    mm.attrs.i[1] = 1;
    mm.in[0] = gc_param(gc_shape3(4, 64, 48), GC_RANDN, 0);
    mm.in[1] = gc_param(kn_shape2(80, 48), GC_RANDN, 0);
    parallel_case(&mm, 0, 1);
    gc_case pm = {.op = &kn_op_permute, .nin = 1};
    pm.attrs.i[0] = 2, pm.attrs.i[1] = 0, pm.attrs.i[2] = 1;
    pm.in[0] = gc_param(gc_shape3(40, 30, 64), GC_RANDN, 0);
    parallel_case(&pm, 0, 1);
    gc_case ga = {.op = &kn_op_gather, .nin = 2};
    ga.in[0] = gc_param(kn_shape2(50, 256), GC_RANDN, 0);
    ga.in[1] = gc_input(KN_I32, kn_shape2(8, 64), GC_LABELS, 50);
    parallel_case(&ga, 0, 1);
    gc_case ln = {.op = &kn_op_layernorm, .nin = 3};
    ln.attrs.f[0] = 1e-5;
    ln.in[0] = gc_param(kn_shape2(256, 192), GC_RANDN, 0);
    ln.in[1] = gc_param(kn_shape1(192), GC_RANDN, 0);
    ln.in[2] = gc_param(kn_shape1(192), GC_RANDN, 0);
    parallel_case(&ln, 0, 0);
}

/* ---------------- a composition: one attention head from primitives ----------------
 * x [2,5,6] -> q, k, v = linear(x) (N-d) -> softmax(affine(q @ k^T, 1/sqrt(d)), -1) @ v
 * -> layernorm -> mul by a broadcast [6] -> sum over axis 1: several ops in one graph,
 * x feeding three consumers (gradient contributions summed), in-place gradients and the
 * planner's reuse of dead memory between them. Finite differences of L = sum R * y, as in
 * gc_check, on a random subset of every parameter. */
static void check_attention_composition(void) {
    kn_ctx *ctx = kn_ctx_new();
    kn_store st;
    kn_store_init(&st);
    kn_graph *g = kn_g_new(&st, 1);
    kn_init z = {KN_INIT_ZEROS, 0, 0, 0};
    const int64_t B = 2, T = 5, C = 6, H = 4;
    int x = kn_g_param(ctx, g, "x", gc_shape3(B, T, C), z);
    int wq = kn_g_param(ctx, g, "wq", kn_shape2(H, C), z), wk = kn_g_param(ctx, g, "wk", kn_shape2(H, C), z);
    int wv = kn_g_param(ctx, g, "wv", kn_shape2(H, C), z), bq = kn_g_param(ctx, g, "bq", kn_shape1(H), z);
    int gam = kn_g_param(ctx, g, "gamma", kn_shape1(H), z), bet = kn_g_param(ctx, g, "beta", kn_shape1(H), z);
    int sc = kn_g_param(ctx, g, "scale", kn_shape1(H), z);
    kn_attrs none = {{0}, {0}};
    kn_g_set_layer(g, "attn");
    int in3[3] = {x, wq, bq};
    int q = kn_g_op(ctx, g, &kn_op_linear, in3, 3, &none);
    int in2[2] = {x, wk};
    int k = kn_g_op(ctx, g, &kn_op_linear, in2, 2, &none);
    in2[1] = wv;
    int v = kn_g_op(ctx, g, &kn_op_linear, in2, 2, &none);
    kn_attrs tb = {{0, 1}, {0}};
    int qk[2] = {q, k};
    int s = kn_g_op(ctx, g, &kn_op_matmul, qk, 2, &tb);
    kn_attrs af = {{0}, {0.5, 0.0}};
    s = kn_g_op(ctx, g, &kn_op_affine, &s, 1, &af);
    kn_attrs last = {{-1}, {0}};
    int p = kn_g_op(ctx, g, &kn_op_softmax, &s, 1, &last);
    int pv[2] = {p, v};
    int o = kn_g_op(ctx, g, &kn_op_matmul, pv, 2, &none);
    kn_attrs eps = {{0}, {1e-5}};
    int ln[3] = {o, gam, bet};
    o = kn_g_op(ctx, g, &kn_op_layernorm, ln, 3, &eps);
    int ms[2] = {o, sc};
    o = kn_g_op(ctx, g, &kn_op_mul, ms, 2, &none);
    kn_attrs red = {{0x2, 0}, {0}};
    int y = kn_g_op(ctx, g, &kn_op_sum, &o, 1, &red);
    CHECK(y >= 0, "attention composition: %s", kn_ctx_message(ctx));
    if (y < 0) goto out;
    kn_g_set_loss(g, y);
    if (kn_g_compile(ctx, g) != KN_OK) {
        CHECK(0, "attention composition compile: %s", kn_ctx_message(ctx));
        goto out;
    }
    g_cases++;
    kn_rng rng;
    kn_rng_seed(&rng, 2024);
    for (int i = 0; i < st.n; i++) {
        float *d = kn_store_data(&st, &st.e[i]);
        for (int64_t j = 0; j < st.e[i].numel; j++) d[j] = (float)(0.7 * kn_rng_normal(&rng));
    }
    kn_rt rt = {.g = g, .training = 1};
    const int64_t ny = kn_numel(g, y);
    float *R = malloc((size_t)ny * sizeof *R), *yp = malloc((size_t)ny * sizeof *yp);
    for (int64_t j = 0; j < ny; j++) R[j] = (float)kn_rng_normal(&rng);
    kn_g_forward(g, &rt);
    kn_g_backward(g, &rt, R);
    int params[] = {x, wq, wk, wv, bq, gam, bet, sc};
    double worst = 0;
    for (int pi = 0; pi < 8; pi++) {
        const int vid = params[pi];
        const int64_t m = kn_numel(g, vid);
        float *xv = kn_ptr(g, vid), *ga = kn_ptr(g, g->v[vid].grad);
        double scale = 1e-6;
        for (int64_t j = 0; j < m; j++) scale = fmax(scale, fabs(ga[j]));
        int bad = 0;
        for (int e = 0; e < 12 && e < m; e++) {
            const int64_t j = m <= 12 ? e : (int64_t)kn_rng_below(&rng, (uint64_t)m);
            const float orig = xv[j], xp = orig + 1e-2f, xm = orig - 1e-2f;
            xv[j] = xp;
            kn_g_forward(g, &rt);
            memcpy(yp, kn_ptr(g, y), (size_t)ny * sizeof *yp);
            xv[j] = xm;
            kn_g_forward(g, &rt);
            double d = 0;
            for (int64_t t = 0; t < ny; t++) d += (double)R[t] * ((double)yp[t] - (double)kn_ptr(g, y)[t]);
            xv[j] = orig;
            const double num = d / ((double)xp - (double)xm), a = ga[j];
            const double tol = 1e-2 * fmax(fabs(a), fabs(num)) + 1e-3 * scale;
            worst = fmax(worst, fabs(a - num) / tol);
            if (!(fabs(a - num) <= tol)) {
                if (bad++ < 3) fprintf(stderr, "  attention %s[%lld]: analytic %g numeric %g\n", g->v[vid].name, (long long)j, a, num);
            }
        }
        CHECK(bad == 0, "attention composition: %d gradient elements of %s differ from finite differences", bad,
              g->v[vid].name);
    }
    if (gc_verbose()) printf("  attention composition: worst err/tol %.3f\n", worst);
    free(R);
    free(yp);
out:
    kn_g_free(g);
    kn_store_free(&st);
    kn_ctx_free(ctx);
}

/* ---------------- forward values ---------------- */
static void check_softmax_values(void) {
    const float logits[] = {1, 2, 3, 0, 0, 0, 1000, 0, -1000};
    const int32_t labels[] = {2, 1, 1};
    gc_tensor in[2] = {gc_input(KN_F32, kn_shape2(3, 3), GC_VALUES, 0), gc_input(KN_I32, kn_shape1(3), GC_VALUES, 0)};
    in[0].values = logits;
    in[1].values = labels;
    gc_graph G;
    kn_attrs a = {{0}, {0}};
    if (gc_build(&G, &kn_op_softmax_ce, &a, in, 2, 0, 1)) {
        CHECK(0, "softmax_ce build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    gc_forward(&G);
    /* rows: log(1+e^-1+e^-2) = 0.4076059644, log 3 = 1.0986122887, 1000 - 0 = 1000 */
    double want = (0.4076059644443803 + 1.0986122886681098 + 1000.0) / 3.0;
    float loss = kn_ptr(G.g, G.y)[0];
    CHECK(fabs(loss - want) < 1e-4 * want, "softmax_ce loss %.7g, want %.7g", loss, want);
    const float *pr = kn_ptr(G.g, G.g->n[G.node].out[1]);
    CHECK(fabsf(pr[3] - 1.0f / 3) < 1e-6f && fabsf(pr[6] - 1.0f) < 1e-6f && pr[7] >= 0 && pr[7] < 1e-30f,
          "softmax probs %g %g %g", pr[3], pr[6], pr[7]);
    CHECK(fabsf(pr[2] - 0.66524096f) < 1e-6f, "softmax prob %g, want 0.665241", pr[2]);
    /* an out-of-range label makes the loss NaN */
    int32_t *lab = G.host[1];
    lab[1] = 3;
    gc_forward(&G);
    CHECK(isnan(kn_ptr(G.g, G.y)[0]), "softmax_ce with label 3 of 3 classes: loss %g, want NaN", kn_ptr(G.g, G.y)[0]);
    lab[1] = -1;
    gc_forward(&G);
    CHECK(isnan(kn_ptr(G.g, G.y)[0]), "softmax_ce with label -1: loss %g, want NaN", kn_ptr(G.g, G.y)[0]);
    gc_free(&G);
}

static void check_batchnorm_values(void) {
    const int64_t N = 4, C = 3, H = 5, W = 6, S = H * W, m = N * S;
    gc_tensor in[5] = {gc_param(kn_shape4(N, C, H, W), GC_RANDN, 3.0), gc_param(kn_shape1(C), GC_CONST, 1.0),
                       gc_param(kn_shape1(C), GC_CONST, 0.0), gc_state(kn_shape1(C), GC_CONST, 0.5),
                       gc_state(kn_shape1(C), GC_CONST, 2.0)};
    kn_attrs a = {{0}, {0}};
    a.f[0] = 0.1, a.f[1] = 1e-5;
    gc_graph G;
    if (gc_build(&G, &kn_op_batchnorm, &a, in, 5, 1, 5)) {
        CHECK(0, "batchnorm build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    float *x = kn_ptr(G.g, G.vid[0]);
    for (int64_t k = 0; k < N * C * S; k++) x[k] += 10.0f; /* mean far from 0 */
    gc_forward(&G);
    const float *y = kn_ptr(G.g, G.y), *rm = kn_ptr(G.g, G.vid[3]), *rv = kn_ptr(G.g, G.vid[4]);
    const float *smean = kn_ptr(G.g, G.g->n[G.node].out[1]), *sinv = kn_ptr(G.g, G.g->n[G.node].out[2]);
    for (int64_t c = 0; c < C; c++) {
        double sx = 0, sxx = 0, sy = 0, syy = 0;
        for (int64_t b = 0; b < N; b++)
            for (int64_t s = 0; s < S; s++) {
                double xv = x[(b * C + c) * S + s], yv = y[(b * C + c) * S + s];
                sx += xv, sy += yv;
            }
        double mx = sx / m, my = sy / m;
        for (int64_t b = 0; b < N; b++)
            for (int64_t s = 0; s < S; s++) {
                double xv = x[(b * C + c) * S + s] - mx, yv = y[(b * C + c) * S + s] - my;
                sxx += xv * xv, syy += yv * yv;
            }
        double var = sxx / m, vy = syy / m;
        CHECK(fabs(my) < 1e-5, "batchnorm channel %lld: output mean %g, want 0", (long long)c, my);
        CHECK(fabs(vy - var / (var + 1e-5)) < 1e-5, "batchnorm channel %lld: output variance %g, want ~1", (long long)c,
              vy);
        CHECK(fabs(smean[c] - mx) < 1e-5 * fabs(mx), "batchnorm saved mean %g want %g", smean[c], mx);
        CHECK(fabs(sinv[c] - 1 / sqrt(var + 1e-5)) < 1e-6, "batchnorm saved invstd %g", sinv[c]);
        double wrm = 0.9 * 0.5 + 0.1 * mx, wrv = 0.9 * 2.0 + 0.1 * sxx / (m - 1);
        CHECK(fabs(rm[c] - wrm) < 1e-5 * fabs(wrm), "batchnorm running_mean %.7g, want %.7g", rm[c], wrm);
        CHECK(fabs(rv[c] - wrv) < 1e-5 * wrv, "batchnorm running_var %.7g, want %.7g (unbiased)", rv[c], wrv);
    }
    /* thread-count independence of the forward */
    float *y1 = malloc((size_t)(N * C * S) * sizeof *y1);
    kn_set_threads(1);
    gc_forward(&G);
    memcpy(y1, y, (size_t)(N * C * S) * sizeof *y1);
    kn_set_threads(3);
    gc_forward(&G);
    CHECK(memcmp(y1, y, (size_t)(N * C * S) * sizeof *y1) == 0, "batchnorm forward depends on the thread count");
    kn_set_threads(1);
    free(y1);
    gc_free(&G);

    /* evaluation: the running statistics */
    float xv[6] = {1, 2, 3, 4, 5, 6}, g2[2] = {2, -1}, b2[2] = {0.5f, 1}, m2[2] = {1, 2}, v2[2] = {4, 0.25f};
    gc_tensor e[5] = {gc_input(KN_F32, kn_shape2(3, 2), GC_VALUES, 0), gc_input(KN_F32, kn_shape1(2), GC_VALUES, 0),
                      gc_input(KN_F32, kn_shape1(2), GC_VALUES, 0), gc_state(kn_shape1(2), GC_VALUES, 0),
                      gc_state(kn_shape1(2), GC_VALUES, 0)};
    e[0].values = xv, e[1].values = g2, e[2].values = b2, e[3].values = m2, e[4].values = v2;
    a.f[1] = 1e-3;
    if (gc_build(&G, &kn_op_batchnorm, &a, e, 5, 0, 5)) {
        CHECK(0, "batchnorm eval build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    gc_forward(&G);
    y = kn_ptr(G.g, G.y);
    int ok = 1;
    for (int k = 0; k < 6; k++) {
        int c = k % 2;
        double want = (xv[k] - m2[c]) / sqrt(v2[c] + 1e-3) * g2[c] + b2[c];
        if (fabs(y[k] - want) > 1e-5) ok = 0;
    }
    CHECK(ok, "batchnorm evaluation does not use the running statistics");
    CHECK(kn_ptr(G.g, G.vid[3])[0] == 1 && kn_ptr(G.g, G.vid[4])[1] == 0.25f,
          "batchnorm evaluation changed the running statistics");
    gc_free(&G);
}

static void check_pool_values(void) {
    float ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    gc_tensor in = gc_input(KN_F32, kn_shape4(1, 1, 3, 3), GC_VALUES, 0);
    in.values = ones;
    kn_attrs a = {{3, 3, 1, 1, 1, 1, 1}, {0}};
    gc_graph G;
    for (int incl = 1; incl >= 0; incl--) {
        a.i[6] = incl;
        if (gc_build(&G, &kn_op_avgpool2d, &a, &in, 1, 0, 1)) {
            CHECK(0, "avgpool build: %s", kn_ctx_message(G.ctx));
            gc_free(&G);
            return;
        }
        gc_forward(&G);
        const float *y = kn_ptr(G.g, G.y);
        const float want[9] = {4 / 9.f, 6 / 9.f, 4 / 9.f, 6 / 9.f, 1, 6 / 9.f, 4 / 9.f, 6 / 9.f, 4 / 9.f};
        int ok = 1;
        for (int k = 0; k < 9; k++)
            if (fabsf(y[k] - (incl ? want[k] : 1.0f)) > 1e-6f) ok = 0;
        CHECK(ok, "avgpool count_include_pad=%d: got corner %g edge %g centre %g", incl, y[0], y[1], y[4]);
        gc_free(&G);
    }
    /* maxpool 2x2 stride 2 on 3x5 (floor mode: 1x2 output); of two equal maxima the
     * first (in row-major order) is the argmax, like PyTorch */
    float xv[15] = {1, 5, 2, 2, 9, 5, -1, 7, 2, 9, 8, 8, 8, 8, 8};
    in = gc_input(KN_F32, kn_shape4(1, 1, 3, 5), GC_VALUES, 0);
    in.values = xv;
    kn_attrs m = {{2, 2, 2, 2, 0, 0}, {0}};
    if (gc_build(&G, &kn_op_maxpool2d, &m, &in, 1, 0, 1)) {
        CHECK(0, "maxpool build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    CHECK(kn_shp(G.g, G.y)->d[2] == 1 && kn_shp(G.g, G.y)->d[3] == 2, "maxpool output shape");
    gc_forward(&G);
    const float *y = kn_ptr(G.g, G.y);
    /* the argmax is the position inside the window, one byte: (0,1) and (1,0) of their windows */
    const kn_value *av = &G.g->v[G.g->n[G.node].out[1]];
    const uint8_t *am = (const uint8_t *)(const void *)av->data;
    CHECK(av->dtype == KN_U8 && y[0] == 5 && y[1] == 7 && am[0] == 1 && am[1] == 2, "maxpool got %g %g at %d %d",
          y[0], y[1], am[0], am[1]);
    gc_free(&G);
    /* padding is -inf: an all-negative input never yields 0 */
    float neg[4] = {-4, -3, -2, -1};
    in = gc_input(KN_F32, kn_shape4(1, 1, 2, 2), GC_VALUES, 0);
    in.values = neg;
    kn_attrs mp = {{3, 3, 1, 1, 1, 1}, {0}};
    if (!gc_build(&G, &kn_op_maxpool2d, &mp, &in, 1, 0, 1)) {
        gc_forward(&G);
        y = kn_ptr(G.g, G.y);
        CHECK(y[0] == -1 && y[3] == -1, "maxpool with padding over negatives: %g %g", y[0], y[3]);
    } else {
        CHECK(0, "maxpool build: %s", kn_ctx_message(G.ctx));
    }
    gc_free(&G);
    /* global average pool */
    float gv[8] = {1, 2, 3, 4, 10, 20, 30, 40};
    in = gc_input(KN_F32, kn_shape4(1, 2, 2, 2), GC_VALUES, 0);
    in.values = gv;
    kn_attrs z = {{0}, {0}};
    if (!gc_build(&G, &kn_op_global_avgpool, &z, &in, 1, 0, 1)) {
        gc_forward(&G);
        y = kn_ptr(G.g, G.y);
        CHECK(y[0] == 2.5f && y[1] == 25.0f && kn_shp(G.g, G.y)->nd == 2, "global_avgpool got %g %g", y[0], y[1]);
    } else {
        CHECK(0, "global_avgpool build: %s", kn_ctx_message(G.ctx));
    }
    gc_free(&G);
}

static void check_dropout_values(void) {
    const int64_t N = 64, K = 1000, M = N * K;
    const double p = 0.3;
    gc_tensor in = gc_param(kn_shape2(N, K), GC_POSITIVE, 1.0);
    kn_attrs a = {{0}, {p}};
    gc_graph G;
    if (gc_build(&G, &kn_op_dropout, &a, &in, 1, 1, 9)) {
        CHECK(0, "dropout build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    const float *x = kn_ptr(G.g, G.vid[0]);
    float *y1 = malloc((size_t)M * sizeof *y1);
    gc_forward(&G);
    const float *y = kn_ptr(G.g, G.y);
    const uint8_t *mask = (const uint8_t *)(const void *)kn_ptr(G.g, G.g->n[G.node].out[1]);
    int64_t kept = 0, bad = 0;
    const float scale = (float)(1.0 / (1.0 - p));
    for (int64_t k = 0; k < M; k++) {
        if (mask[k] > 1) bad++;
        if (mask[k]) {
            kept++;
            if (y[k] != x[k] * scale) bad++;
        } else if (y[k] != 0.0f) {
            bad++;
        }
    }
    double frac = (double)kept / (double)M;
    CHECK(fabs(frac - (1 - p)) < 0.01, "dropout p=%.1f kept %.4f of the elements, want ~%.1f", p, frac, 1 - p);
    CHECK(bad == 0, "dropout: %lld elements not x*mask/(1-p)", (long long)bad);
    /* the same (seed, step) gives the same mask whatever the thread count */
    memcpy(y1, y, (size_t)M * sizeof *y1);
    kn_set_threads(1);
    gc_forward(&G);
    CHECK(memcmp(y1, y, (size_t)M * sizeof *y1) == 0, "dropout mask depends on the thread count (1 thread)");
    kn_set_threads(3);
    gc_forward(&G);
    CHECK(memcmp(y1, y, (size_t)M * sizeof *y1) == 0, "dropout mask depends on the thread count (3 threads)");
    kn_set_threads(1);
    /* another step draws another mask */
    G.rt.step++;
    gc_forward(&G);
    CHECK(memcmp(y1, y, (size_t)M * sizeof *y1) != 0, "dropout mask does not change with the step");
    gc_free(&G);
    free(y1);

    /* evaluation: identity */
    in = gc_input(KN_F32, kn_shape2(N, K), GC_RANDN, 0);
    if (gc_build(&G, &kn_op_dropout, &a, &in, 1, 0, 9)) {
        CHECK(0, "dropout eval build: %s", kn_ctx_message(G.ctx));
        gc_free(&G);
        return;
    }
    gc_forward(&G);
    CHECK(memcmp(kn_ptr(G.g, G.y), G.host[0], (size_t)M * sizeof(float)) == 0, "evaluation-mode dropout is not the identity");
    gc_free(&G);
}

static void check_loss_determinism(void) {
    /* losses reduce over the batch: the same result with 1 and 3 threads */
    gc_tensor in[2] = {gc_param(kn_shape2(300, 100), GC_RANDN, 2.0), gc_input(KN_I32, kn_shape1(300), GC_LABELS, 100)};
    kn_attrs a = {{0}, {0}};
    gc_graph G;
    if (!gc_build(&G, &kn_op_softmax_ce, &a, in, 2, 1, 3)) {
        kn_set_threads(1);
        gc_forward(&G);
        float l1 = kn_ptr(G.g, G.y)[0];
        kn_set_threads(3);
        gc_forward(&G);
        CHECK(l1 == kn_ptr(G.g, G.y)[0], "softmax_ce loss depends on the thread count");
        CHECK(l1 > 4.0f && l1 < 9.0f, "softmax_ce loss %g on random logits (expected about log(100) + 2)", l1);
    } else {
        CHECK(0, "softmax_ce build: %s", kn_ctx_message(G.ctx));
    }
    gc_free(&G);
    gc_tensor mi[2] = {gc_param(kn_shape2(7, 10000), GC_RANDN, 1.0), gc_input(KN_F32, kn_shape2(7, 10000), GC_CONST, 0)};
    if (!gc_build(&G, &kn_op_mse, &a, mi, 2, 1, 3)) {
        kn_set_threads(1);
        gc_forward(&G);
        float l1 = kn_ptr(G.g, G.y)[0];
        kn_set_threads(3);
        gc_forward(&G);
        CHECK(l1 == kn_ptr(G.g, G.y)[0], "mse loss depends on the thread count");
        double s = 0;
        const float *x = kn_ptr(G.g, G.vid[0]);
        for (int64_t k = 0; k < 70000; k++) s += (double)x[k] * x[k];
        CHECK(fabs(l1 - s / 70000) < 1e-6 * s / 70000, "mse loss %.8g want %.8g", l1, s / 70000);
    } else {
        CHECK(0, "mse build: %s", kn_ctx_message(G.ctx));
    }
    kn_set_threads(1);
    gc_free(&G);

    /* the new losses and metrics, large enough for their parallel loops: output and
     * gradients the same bits with 1 and 2 threads (gc_threads_agree) */
    const int64_t M = 70000;
    gc_case sw = {.name = "softmax_ce weighted smoothed [50,40,20]", .op = &kn_op_softmax_ce, .nin = 3};
    sw.attrs.f[0] = 0.1;
    sw.in[0] = gc_param(gc_shape3(50, 40, 20), GC_RANDN, 2.0);
    sw.in[1] = gc_input(KN_I32, kn_shape2(50, 40), GC_LABELS, 20);
    sw.in[2] = gc_input(KN_F32, kn_shape1(20), GC_POSITIVE, 1.0);
    parallel_case(&sw, 0, 0);
    gc_case bce = {.op = &kn_op_bce_logits, .nin = 3};
    bce.in[0] = gc_param(kn_shape2(M / 10, 10), GC_RANDN, 2.0);
    bce.in[1] = gc_param(kn_shape2(M / 10, 10), GC_POSITIVE, 0.5);
    bce.in[2] = gc_input(KN_F32, kn_shape1(10), GC_POSITIVE, 2.0);
    parallel_case(&bce, 0, 0);
    const kn_op *pt[] = {&kn_op_l1, &kn_op_huber};
    for (int k = 0; k < 2; k++) {
        gc_case c = {.op = pt[k], .nin = 2};
        c.attrs.f[0] = 0.7; /* huber's delta */
        c.in[0] = gc_param(kn_shape1(M), GC_RANDN, 0);
        c.in[1] = gc_param(kn_shape1(M), GC_RANDN, 0.5);
        parallel_case(&c, 0, 0);
    }
    /* the losses over 18 blocks against a sum in double; the metrics (no gradient: an
     * evaluation graph) with 1 and 2 threads */
    const kn_op *ev[] = {&kn_op_l1, &kn_op_huber, &kn_op_bce_logits, &kn_op_mae,     &kn_op_rmse,
                         &kn_op_r2, &kn_op_accuracy, &kn_op_topk_accuracy};
    for (int k = 0; k < 8; k++) {
        const int cls = k >= 6;
        kn_attrs ea = {{3}, {0.7}};
        gc_tensor in[2] = {gc_input(KN_F32, cls ? kn_shape2(M / 10, 10) : kn_shape1(M), GC_RANDN, 2.0),
                           cls ? gc_input(KN_I32, kn_shape1(M / 10), GC_LABELS, 10)
                               : gc_input(KN_F32, kn_shape1(M), k == 2 ? GC_POSITIVE : GC_RANDN, 0.5)};
        if (gc_build(&G, ev[k], &ea, in, 2, 0, 11)) {
            CHECK(0, "%s build: %s", ev[k]->name, kn_ctx_message(G.ctx));
            gc_free(&G);
            continue;
        }
        float o1[4], o2[4];
        const int64_t no = kn_numel(G.g, G.y);
        kn_set_threads(1);
        gc_forward(&G);
        memcpy(o1, kn_ptr(G.g, G.y), (size_t)no * sizeof(float));
        kn_set_threads(2);
        gc_forward(&G);
        memcpy(o2, kn_ptr(G.g, G.y), (size_t)no * sizeof(float));
        kn_set_threads(1);
        CHECK(!memcmp(o1, o2, (size_t)no * sizeof(float)), "%s: 1 and 2 threads give other bits", ev[k]->name);
        if (k < 3) {
            const float *x = G.host[0], *t = G.host[1];
            double s = 0;
            for (int64_t j = 0; j < M; j++) {
                const double d = (double)x[j] - t[j], z = fabs(d);
                s += k == 0 ? z : k == 1 ? (z < 0.7 ? 0.5 * d * d : 0.7 * (z - 0.35))
                                         : (1 - (double)t[j]) * x[j] + log1p(exp(-fabs((double)x[j]))) + fmax(-(double)x[j], 0);
            }
            CHECK(fabs(o1[0] - s / M) < 1e-6 * (s / M), "%s over %lld elements: %.9g, want %.9g", ev[k]->name, (long long)M,
                  o1[0], s / M);
        }
        gc_free(&G);
    }
}

/* ---------------- metrics: values, ties, aggregation over batches (ops/metric.h) ---------------- */
static int metric_run(const kn_op *op, const kn_attrs *a, gc_tensor *in, float *out, int nout) {
    gc_graph G;
    int rc = gc_build(&G, op, a, in, 2, 0, 1);
    CHECK(rc == 0, "%s build: %s", op->name, kn_ctx_message(G.ctx));
    if (!rc) {
        gc_forward(&G);
        CHECK(kn_numel(G.g, G.y) == nout, "%s: %lld statistics, want %d", op->name, (long long)kn_numel(G.g, G.y), nout);
        memcpy(out, kn_ptr(G.g, G.y), (size_t)nout * sizeof *out);
    }
    gc_free(&G);
    return rc;
}

static void check_metric_values(void) {
    /* rows: a tie between classes 0 and 2 (argmax 0), a clear max at 1, NaN at 2 (the
     * maximum, as torch.argmax), all equal (argmax 0) */
    const float logits[] = {3, 1, 3, 0, 0, 5, 2, 1, 0, 1, NAN, 2, 7, 7, 7, 7};
    const int32_t lab[][4] = {{0, 1, 2, 0}, {2, 1, 3, 1}, {0, 1, 2, 9}};
    const float want1[] = {4, 1, 3}, want2[] = {4, 4, 3};
    for (int c = 0; c < 3; c++) {
        gc_tensor in[2] = {gc_input(KN_F32, kn_shape2(4, 4), GC_VALUES, 0), gc_input(KN_I32, kn_shape1(4), GC_VALUES, 0)};
        in[0].values = logits;
        in[1].values = lab[c];
        float o[2] = {-1, -1};
        kn_attrs k2 = {{2}, {0}};
        if (!metric_run(&kn_op_accuracy, NULL, in, o, 2))
            CHECK(o[0] == want1[c] && o[1] == 4, "accuracy case %d: (%g, %g), want (%g, 4)", c, o[0], o[1], want1[c]);
        if (!metric_run(&kn_op_topk_accuracy, &k2, in, o, 2))
            CHECK(o[0] == want2[c] && o[1] == 4, "top-2 accuracy case %d: (%g, %g), want (%g, 4)", c, o[0], o[1], want2[c]);
    }
    /* an evaluation set of 1000 targets far from 0 (mean 100, std 1), in batches of
     * 64 (the last one short): the aggregated statistics against the whole set in double */
    enum { NS = 1000, B = 64 };
    static float p[NS], t[NS];
    kn_rng rng;
    kn_rng_seed(&rng, 5);
    for (int k = 0; k < NS; k++) {
        t[k] = (float)(100.0 + kn_rng_normal(&rng));
        p[k] = (float)(t[k] + 0.3 * kn_rng_normal(&rng));
    }
    double sse = 0, sae = 0, my = 0, sst = 0;
    for (int k = 0; k < NS; k++) {
        double d = (double)p[k] - t[k];
        sse += d * d, sae += fabs(d), my += t[k];
    }
    my /= NS;
    for (int k = 0; k < NS; k++) sst += ((double)t[k] - my) * ((double)t[k] - my);
    const kn_op *ops[] = {&kn_op_mae, &kn_op_rmse, &kn_op_r2};
    const double want[] = {sae / NS, sqrt(sse / NS), 1.0 - sse / sst};
    for (int o = 0; o < 3; o++) {
        const kn_metric_kind kind = kn_metric_kind_of(ops[o]);
        double acc[KN_METRIC_NACC], acc1[KN_METRIC_NACC];
        kn_metric_reset(acc);
        for (int b0 = 0; b0 < NS; b0 += B) {
            const int nb = NS - b0 < B ? NS - b0 : B;
            gc_tensor in[2] = {gc_input(KN_F32, kn_shape1(nb), GC_VALUES, 0), gc_input(KN_F32, kn_shape1(nb), GC_VALUES, 0)};
            in[0].values = p + b0;
            in[1].values = t + b0;
            float st[4];
            if (metric_run(ops[o], NULL, in, st, kn_metric_nstats(kind))) break;
            kn_metric_add(kind, acc, st);
            if (b0 == 0) { /* one batch: its own value */
                kn_metric_reset(acc1);
                kn_metric_add(kind, acc1, st);
                double s = 0, m = 0, q = 0;
                for (int k = 0; k < nb; k++) m += t[k];
                m /= nb;
                for (int k = 0; k < nb; k++) {
                    double d = (double)p[k] - t[k];
                    s += o == 0 ? fabs(d) : d * d;
                    q += ((double)t[k] - m) * ((double)t[k] - m);
                }
                const double w1 = o == 0 ? s / nb : o == 1 ? sqrt(s / nb) : 1.0 - s / q;
                CHECK(fabs(kn_metric_finish(kind, acc1) - w1) < 1e-6 * fabs(w1), "%s of one batch: %.9g, want %.9g",
                      ops[o]->name, kn_metric_finish(kind, acc1), w1);
            }
        }
        const double got = kn_metric_finish(kind, acc);
        CHECK(acc[1] == NS && fabs(got - want[o]) < 1e-6 * fabs(want[o]), "%s over %d batches: %.9g (n %g), want %.9g",
              ops[o]->name, (NS + B - 1) / B, got, acc[1], want[o]);
        if (gc_verbose()) printf("  %s over batches: %.9g, whole set %.9g\n", ops[o]->name, got, want[o]);
    }
    CHECK(kn_metric_kind_of(&kn_op_topk_accuracy) == KN_METRIC_ACCURACY && kn_metric_kind_of(&kn_op_mse) == KN_METRIC_NONE,
          "kn_metric_kind_of");
    double z[KN_METRIC_NACC];
    kn_metric_reset(z);
    CHECK(isnan(kn_metric_finish(KN_METRIC_ACCURACY, z)), "a metric over nothing is not NaN");
}

/* ---------------- shape-rule errors ---------------- */
static void expect_error(const char *what, const kn_op *op, const kn_attrs *a, const gc_tensor *in, int nin,
                         int training, const char *s1, const char *s2) {
    gc_graph G;
    int rc = gc_build(&G, op, a, in, nin, training, 1);
    const char *msg = kn_ctx_message(G.ctx);
    CHECK(rc != 0 && strstr(msg, s1) && (!s2 || strstr(msg, s2)), "%s: expected an error containing '%s'%s%s, got '%s'",
          what, s1, s2 ? " and " : "", s2 ? s2 : "", rc ? msg : "(no error)");
    gc_free(&G);
}

static void check_errors(void) {
    kn_attrs pool = {{2, 2, 2, 2, 0, 0, 1}, {0}};
    gc_tensor x2 = gc_input(KN_F32, kn_shape2(64, 784), GC_CONST, 0);
    gc_tensor x4 = gc_input(KN_F32, kn_shape4(2, 3, 4, 4), GC_CONST, 0);
    expect_error("maxpool on 2-D", &kn_op_maxpool2d, &pool, &x2, 1, 0, "expects a 4-D input", "[64,784]");
    expect_error("avgpool on 2-D", &kn_op_avgpool2d, &pool, &x2, 1, 0, "expects a 4-D input", "[64,784]");
    expect_error("global_avgpool on 2-D", &kn_op_global_avgpool, &pool, &x2, 1, 0, "expects a 4-D input", "[64,784]");
    kn_attrs bigpad = {{3, 3, 1, 1, 2, 2, 1}, {0}};
    expect_error("maxpool pad", &kn_op_maxpool2d, &bigpad, &x4, 1, 0, "half the kernel", "got 2x2");
    expect_error("avgpool pad", &kn_op_avgpool2d, &bigpad, &x4, 1, 0, "half the kernel", "got 2x2");
    kn_attrs bigk = {{5, 5, 1, 1, 0, 0, 1}, {0}};
    expect_error("maxpool empty", &kn_op_maxpool2d, &bigk, &x4, 1, 0, "larger than the padded input", "[2,3,4,4]");
    kn_attrs zstride = {{2, 2, 0, 1, 0, 0, 1}, {0}};
    expect_error("maxpool stride 0", &kn_op_maxpool2d, &zstride, &x4, 1, 0, "stride >= 1", NULL);
    gc_tensor ab[2] = {gc_param(kn_shape2(3, 4), GC_CONST, 0), gc_param(kn_shape2(4, 3), GC_CONST, 0)};
    kn_attrs none = {{0}, {0}};
    expect_error("add shapes", &kn_op_add, &none, ab, 2, 1, "[3,4]", "[4,3]");
    expect_error("mse shapes", &kn_op_mse, &none, ab, 2, 1, "[3,4]", "[4,3]");
    kn_attrs rs = {{2, 5, -1}, {0}};
    expect_error("reshape numel", &kn_op_reshape, &rs, &ab[0], 1, 1, "[3,4]", "[5,-1]");
    kn_attrs rs2 = {{2, 5, 3}, {0}};
    expect_error("reshape numel", &kn_op_reshape, &rs2, &ab[0], 1, 1, "keep the number of elements", "[5,3]");
    kn_attrs rs3 = {{2, -1, -1}, {0}};
    expect_error("reshape two -1", &kn_op_reshape, &rs3, &ab[0], 1, 1, "at most one -1", NULL);
    kn_attrs rs4 = {{6, 1, 1, 1, 1, 1, 12}, {0}};
    expect_error("reshape 6 dims", &kn_op_reshape, &rs4, &ab[0], 1, 1, "1 to 5 output dims", "got 6");
    kn_attrs cat1 = {{1}, {0}};
    expect_error("concat dims", &kn_op_concat, &cat1, ab, 2, 1, "[3,4]", "[4,3]");
    kn_attrs cat2 = {{2}, {0}};
    gc_tensor same[2] = {ab[0], ab[0]};
    same[1].name = "other";
    expect_error("concat axis 2 of 2-D", &kn_op_concat, &cat2, same, 2, 1, "axis must be between -2 and 1", "got 2");
    gc_tensor sce[2] = {gc_param(kn_shape2(4, 3), GC_CONST, 0), gc_input(KN_F32, kn_shape1(4), GC_CONST, 0)};
    expect_error("softmax_ce float labels", &kn_op_softmax_ce, &none, sce, 2, 1, "int32 labels", "float32");
    sce[1] = gc_input(KN_I32, kn_shape1(5), GC_LABELS, 3);
    expect_error("softmax_ce label count", &kn_op_softmax_ce, &none, sce, 2, 1, "labels [4]", "[5]");
    gc_tensor sce3[2] = {gc_param(kn_shape4(4, 3, 1, 1), GC_CONST, 0), gc_input(KN_I32, kn_shape1(4), GC_LABELS, 3)};
    expect_error("softmax_ce 4-D labels", &kn_op_softmax_ce, &none, sce3, 2, 1, "labels [4,3,1]", "got [4]");
    gc_tensor sce1[2] = {gc_param(kn_shape1(4), GC_CONST, 0), gc_input(KN_I32, kn_shape1(4), GC_LABELS, 3)};
    expect_error("softmax_ce 1-D", &kn_op_softmax_ce, &none, sce1, 2, 1, "rank >= 2", "got [4]");
    gc_tensor scew[3] = {gc_param(kn_shape2(4, 3), GC_CONST, 0), gc_input(KN_I32, kn_shape1(4), GC_LABELS, 3),
                         gc_input(KN_F32, kn_shape1(4), GC_CONST, 1)};
    expect_error("softmax_ce weight", &kn_op_softmax_ce, &none, scew, 3, 1, "class weight (input 2) must be a float32 [3]",
                 "got [4]");
    scew[2] = gc_input(KN_F32, kn_shape1(3), GC_CONST, 1);
    kn_attrs ls = {{0}, {1.5}};
    expect_error("softmax_ce smoothing", &kn_op_softmax_ce, &ls, scew, 3, 1, "label smoothing", "got 1.5");
    expect_error("bce_logits shapes", &kn_op_bce_logits, &none, ab, 2, 1, "same shape", "[4,3]");
    gc_tensor bw[3] = {ab[0], gc_param(kn_shape2(3, 4), GC_CONST, 0), gc_input(KN_F32, kn_shape1(3), GC_CONST, 1)};
    bw[1].name = "t";
    expect_error("bce_logits pos_weight", &kn_op_bce_logits, &none, bw, 3, 1, "pos_weight (input 2) must be a float32 [4]",
                 "got [3]");
    expect_error("l1 shapes", &kn_op_l1, &none, ab, 2, 1, "[3,4]", "[4,3]");
    gc_tensor hs[2] = {ab[0], bw[1]};
    expect_error("huber delta 0", &kn_op_huber, &none, hs, 2, 1, "delta (float attribute 0) must be > 0", "got 0");
    gc_tensor ac[2] = {gc_input(KN_F32, kn_shape2(4, 3), GC_CONST, 0), gc_input(KN_I32, kn_shape1(4), GC_LABELS, 3)};
    kn_attrs k4 = {{4}, {0}};
    expect_error("topk_accuracy k > K", &kn_op_topk_accuracy, &k4, ac, 2, 0, "between 1 and the 3 classes", "got 4");
    ac[1] = gc_input(KN_F32, kn_shape1(4), GC_CONST, 0);
    expect_error("accuracy float labels", &kn_op_accuracy, &none, ac, 2, 0, "int32 labels", "float32");
    expect_error("r2 shapes", &kn_op_r2, &none, ab, 2, 0, "same shape", "[4,3]");
    expect_error("mae int32", &kn_op_mae, &none, (gc_tensor[]){ac[0], gc_input(KN_I32, kn_shape2(4, 3), GC_LABELS, 3)}, 2, 0,
                 "float32", NULL);
    kn_attrs bn = {{0}, {0.1, 1e-5}};
    gc_tensor bni[5] = {gc_param(kn_shape4(2, 3, 2, 2), GC_CONST, 0), gc_param(kn_shape1(4), GC_CONST, 1),
                        gc_param(kn_shape1(3), GC_CONST, 0), gc_state(kn_shape1(3), GC_CONST, 0),
                        gc_state(kn_shape1(3), GC_CONST, 1)};
    expect_error("batchnorm gamma", &kn_op_batchnorm, &bn, bni, 5, 1, "gamma must be a float32 [3]", "got [4]");
    bni[1] = gc_param(kn_shape1(3), GC_CONST, 1);
    bni[0] = gc_param(gc_shape3(2, 3, 4), GC_CONST, 0);
    expect_error("batchnorm 3-D", &kn_op_batchnorm, &bn, bni, 5, 1, "2-D input", "[2,3,4]");
    bni[0] = gc_param(kn_shape2(1, 3), GC_CONST, 0);
    expect_error("batchnorm batch 1", &kn_op_batchnorm, &bn, bni, 5, 1, "more than one value per channel", "[1,3]");
    kn_attrs dp = {{0}, {1.0}};
    expect_error("dropout p=1", &kn_op_dropout, &dp, &ab[0], 1, 1, "[0, 1)", "got 1");
    gc_tensor li = gc_input(KN_I32, kn_shape2(3, 4), GC_LABELS, 3);
    expect_error("relu on int32", &kn_op_relu, &none, &li, 1, 0, "float32", NULL);
}

static void check_primitive_errors(void) {
    kn_attrs none = {{0}, {0}};
    gc_tensor ab[2] = {gc_param(kn_shape2(3, 4), GC_CONST, 0), gc_param(kn_shape2(2, 4), GC_CONST, 0)};
    expect_error("mul shapes", &kn_op_mul, &none, ab, 2, 1, "broadcast", "[2,4]");
    expect_error("matmul inner", &kn_op_matmul, &none, ab, 2, 1, "inner dims do not match", "K = 4");
    gc_tensor mb[2] = {gc_param(gc_shape3(2, 3, 4), GC_CONST, 0), gc_param(gc_shape3(3, 4, 5), GC_CONST, 0)};
    expect_error("matmul batch", &kn_op_matmul, &none, mb, 2, 1, "batch dims", "[3,4,5]");
    expect_error("matmul 1-D", &kn_op_matmul, &none, (gc_tensor[]){gc_param(kn_shape1(4), GC_CONST, 0), ab[0]}, 2, 1,
                 "rank >= 2", "[4]");
    kn_attrs bad = {{0x8}, {0}};
    expect_error("sum axes", &kn_op_sum, &bad, &mb[0], 1, 1, "bitmask", "got 8");
    kn_attrs ax = {{3}, {0}};
    expect_error("softmax axis", &kn_op_softmax, &ax, &mb[0], 1, 1, "between -3 and 2", "got 3");
    kn_attrs pm = {{0, 0, 1}, {0}};
    expect_error("permute", &kn_op_permute, &pm, &mb[0], 1, 1, "permutation", "attribute 1 is 0");
    kn_attrs sl = {{3, 5, 1}, {0}};
    expect_error("slice empty", &kn_op_slice, &sl, &mb[0], 1, 1, "is empty", "axis 0");
    gc_tensor gi[2] = {gc_param(kn_shape2(4, 3), GC_CONST, 0), gc_input(KN_F32, kn_shape1(4), GC_CONST, 0)};
    expect_error("gather float indices", &kn_op_gather, &none, gi, 2, 1, "int32 indices", "float32");
    gc_tensor ln[3] = {gc_param(kn_shape2(3, 4), GC_CONST, 0), gc_param(kn_shape1(3), GC_CONST, 1),
                       gc_param(kn_shape1(4), GC_CONST, 0)};
    kn_attrs eps = {{0}, {1e-5}};
    expect_error("layernorm gamma", &kn_op_layernorm, &eps, ln, 3, 1, "gamma must be a float32 [4]", "got [3]");
    expect_error("layernorm eps", &kn_op_layernorm, &none, ln, 1, 1, "eps", "> 0");
    gc_tensor li[2] = {gc_param(kn_shape4(2, 3, 4, 4), GC_CONST, 0), gc_param(kn_shape2(5, 48), GC_CONST, 0)};
    expect_error("linear on 4-D", &kn_op_linear, &none, li, 2, 1, "expected [out, 4]", "put a flatten layer before it");
}

static void check_flops(void) {
    /* every op reports its FLOPs (zero for pure data movement) */
    gc_tensor x = gc_param(kn_shape4(2, 3, 6, 6), GC_RANDN, 0);
    kn_attrs pool = {{2, 2, 2, 2, 0, 0, 1}, {0.1}};
    const kn_op *ops[] = {&kn_op_maxpool2d, &kn_op_avgpool2d, &kn_op_global_avgpool, &kn_op_relu, &kn_op_leaky_relu,
                          &kn_op_gelu,      &kn_op_silu,      &kn_op_tanh,           &kn_op_sigmoid, &kn_op_dropout};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        gc_graph G;
        if (gc_build(&G, ops[i], &pool, &x, 1, 1, 1)) {
            CHECK(0, "%s build: %s", ops[i]->name, kn_ctx_message(G.ctx));
        } else {
            const kn_node *n = &G.g->n[G.node];
            CHECK(ops[i]->flops_fwd(G.g, n) > 0 && ops[i]->flops_bwd(G.g, n) > 0, "%s reports no FLOPs", ops[i]->name);
        }
        gc_free(&G);
    }
}

static void check_primitive_flops(void) {
    /* the compute primitives report FLOPs (data movement reports 0) */
    gc_tensor x = gc_param(gc_shape3(2, 3, 4), GC_POSITIVE, 0);
    kn_attrs a = {{0}, {1e-5}};
    const kn_op *one[] = {&kn_op_exp, &kn_op_log,  &kn_op_sqrt,    &kn_op_rsqrt,       &kn_op_neg,      &kn_op_square,
                          &kn_op_affine, &kn_op_sum, &kn_op_mean,  &kn_op_max,         &kn_op_softmax,  &kn_op_log_softmax,
                          &kn_op_layernorm};
    for (size_t i = 0; i < sizeof one / sizeof *one; i++) {
        gc_graph G;
        if (gc_build(&G, one[i], &a, &x, 1, 1, 1)) {
            CHECK(0, "%s build: %s", one[i]->name, kn_ctx_message(G.ctx));
        } else {
            const kn_node *n = &G.g->n[G.node];
            CHECK(one[i]->flops_fwd(G.g, n) > 0 && one[i]->flops_bwd(G.g, n) > 0, "%s reports no FLOPs", one[i]->name);
        }
        gc_free(&G);
    }
    gc_tensor ab[2] = {gc_param(gc_shape3(2, 3, 4), GC_POSITIVE, 0), gc_param(gc_shape3(2, 4, 5), GC_POSITIVE, 0)};
    gc_graph G;
    if (!gc_build(&G, &kn_op_matmul, &a, ab, 2, 1, 1)) {
        const kn_node *n = &G.g->n[G.node];
        CHECK(kn_op_matmul.flops_fwd(G.g, n) == 2.0 * 2 * 3 * 4 * 5 && kn_op_matmul.flops_bwd(G.g, n) == 4.0 * 2 * 3 * 4 * 5,
              "matmul FLOPs %g / %g", kn_op_matmul.flops_fwd(G.g, n), kn_op_matmul.flops_bwd(G.g, n));
    } else {
        CHECK(0, "matmul build: %s", kn_ctx_message(G.ctx));
    }
    gc_free(&G);
    const kn_op *bin[] = {&kn_op_sub, &kn_op_mul, &kn_op_div};
    for (int i = 0; i < 3; i++) {
        ab[1] = gc_param(kn_shape1(4), GC_POSITIVE, 0);
        if (!gc_build(&G, bin[i], &a, ab, 2, 1, 1)) {
            const kn_node *n = &G.g->n[G.node];
            CHECK(bin[i]->flops_fwd(G.g, n) == 24, "%s FLOPs %g, want 24 (one per output element)", bin[i]->name,
                  bin[i]->flops_fwd(G.g, n));
        } else {
            CHECK(0, "%s build: %s", bin[i]->name, kn_ctx_message(G.ctx));
        }
        gc_free(&G);
    }
}

int main(void) {
    double t0 = kn_now_seconds();
    kn_set_threads(1);
    check_elementwise();
    check_pools();
    check_batchnorm();
    check_misc();
    check_losses();
    check_linear();
    check_conv();
    check_conv_algorithms();
    check_parallel();
    check_softmax_values();
    check_batchnorm_values();
    check_pool_values();
    check_dropout_values();
    check_loss_determinism();
    check_metric_values();
    check_errors();
    check_primitives();
    check_primitive_errors();
    check_primitives_parallel();
    check_attention_composition();
    check_flops();
    check_primitive_flops();
    printf("%d gradient-check cases in %.1f s\n", g_cases, kn_now_seconds() - t0);
    return kn_test_finish("test_gradcheck");
}
