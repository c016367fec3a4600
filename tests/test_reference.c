/* Training matches PyTorch: for an MLP and a CNN with BatchNorm, starting from the
 * same weights and fed the same 10 batches, kiln's loss at every step and the final
 * parameters and BatchNorm running statistics agree with a float64 PyTorch run
 * (tests/fixtures/make_reference.py) within 1e-4 relative, for SGD with momentum,
 * SGD with Nesterov momentum and weight decay, Adam and AdamW.
 *
 * Fixture layout (safetensors): init.<name> (every store entry), x [10,8,1,H,W],
 * y [10,8] (labels as F32), <opt>.loss [10], <opt>.<name> final values; optimizer
 * hyperparameters in the metadata as opt.<opt>.<key>. */
#define _POSIX_C_SOURCE 200809L
#include "config/config.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "testutil.h"
#include "train/checkpoint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TOL 1e-4

/* Layer names are the PyTorch modules' attribute names. */
static const char *kMLP =
    "[train]\nloss = cross_entropy\n"
    "[flat]\ntype = flatten\n"
    "[fc1]\ntype = linear\nout = 32\n"
    "[relu1]\ntype = relu\n"
    "[fc2]\ntype = linear\nout = 32\n"
    "[relu2]\ntype = relu\n"
    "[fc3]\ntype = linear\nout = 10\n";

/* Convolutions followed by BatchNorm have no bias (as in the PyTorch model). */
static const char *kCNN =
    "[train]\nloss = cross_entropy\n"
    "[conv1]\ntype = conv2d\nout_channels = 4\nkernel = 3\npadding = 1\nbias = false\n"
    "[bn1]\ntype = batchnorm\nmomentum = 0.1\neps = 1e-5\n"
    "[relu1]\ntype = relu\n"
    "[pool1]\ntype = maxpool2d\nkernel = 2\n"
    "[conv2]\ntype = conv2d\nout_channels = 8\nkernel = 3\npadding = 1\nbias = false\n"
    "[bn2]\ntype = batchnorm\nmomentum = 0.1\neps = 1e-5\n"
    "[relu2]\ntype = relu\n"
    "[pool2]\ntype = maxpool2d\nkernel = 2\n"
    "[flat]\ntype = flatten\n"
    "[fc1]\ntype = linear\nout = 16\n"
    "[relu3]\ntype = relu\n"
    "[fc2]\ntype = linear\nout = 10\n";

static int verbose;

static double meta_num(const kn_ckpt *ck, const char *opt, const char *key, double def) {
    char k[128];
    snprintf(k, sizeof k, "opt.%s.%s", opt, key);
    const char *v = kn_ckpt_meta_get(ck, k);
    return v ? strtod(v, NULL) : def;
}

static int meta_int(const kn_ckpt *ck, const char *key, int def) {
    const char *v = kn_ckpt_meta_get(ck, key);
    return v ? atoi(v) : def;
}

static int starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* ||a-b|| / ||b|| (absolute when b is zero); max element error in *maxerr. */
static double rel_err(const float *a, const float *b, int64_t n, double *maxerr, int64_t *argmax) {
    double d2 = 0, b2 = 0, mx = 0;
    int64_t am = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        d2 += d * d;
        b2 += (double)b[i] * (double)b[i];
        if (!(fabs(d) <= mx)) { mx = fabs(d); am = i; } /* NaN counts as the worst */
    }
    *maxerr = mx;
    *argmax = am;
    if (isnan(d2)) return INFINITY;
    return b2 > 0 ? sqrt(d2 / b2) : sqrt(d2);
}

/* One training run of `opt` on the model in `ck`. Returns 0 if it ran (the checks
 * record failures), -1 on a setup error. */
static int run_one(kn_ctx *ctx, const char *model, const char *ini, const kn_ckpt *ck, const char *opt) {
    char label[64];
    snprintf(label, sizeof label, "%s/%s", model, opt);
    const int steps = meta_int(ck, "steps", 10), batch = meta_int(ck, "batch", 8);
    const int H = meta_int(ck, "height", 0), W = meta_int(ck, "width", 0), ncls = meta_int(ck, "nclasses", 10);

    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, model, ini, &cfg);
    CHECK(rc == KN_OK, "%s: config: %s", label, kn_ctx_message(ctx));
    if (rc) return -1;
    kn_model m;
    rc = kn_model_build(ctx, cfg, batch, batch, 1, H, W, ncls, &m);
    CHECK(rc == KN_OK, "%s: build: %s", label, kn_ctx_message(ctx));
    if (rc) { kn_model_free(&m); kn_config_free(cfg); return -1; }

    /* Initial values: every store entry from init.<name>, and nothing left over. */
    int ninit = 0;
    for (int i = 0; i < kn_ckpt_count(ck); i++) ninit += starts_with(kn_ckpt_name(ck, i), "init.");
    CHECK(ninit == m.store.n, "%s: fixture has %d init.* tensors, the model's store %d entries", label, ninit, m.store.n);
    for (int i = 0; i < m.store.n; i++) {
        const kn_store_entry *e = &m.store.e[i];
        char nm[160];
        snprintf(nm, sizeof nm, "init.%s", e->name);
        const float *d;
        kn_shape sh;
        rc = kn_ckpt_get(ctx, ck, nm, &d, &sh);
        CHECK(rc == KN_OK, "%s: %s: %s", label, nm, kn_ctx_message(ctx));
        if (rc) goto fail;
        char s1[64], s2[64];
        CHECK(kn_shape_eq(&sh, &e->shape), "%s: %s has shape %s in the fixture, %s in kiln", label, nm,
              kn_shape_str(&sh, s1, sizeof s1), kn_shape_str(&e->shape, s2, sizeof s2));
        if (!kn_shape_eq(&sh, &e->shape)) goto fail;
        memcpy(kn_store_data(&m.store, e), d, (size_t)e->numel * sizeof(float));
    }

    const float *x, *y, *ref_loss;
    kn_shape xs, ys, ls;
    if ((rc = kn_ckpt_get(ctx, ck, "x", &x, &xs)) || (rc = kn_ckpt_get(ctx, ck, "y", &y, &ys))) {
        CHECK(0, "%s: %s", label, kn_ctx_message(ctx));
        goto fail;
    }
    char ln[96];
    snprintf(ln, sizeof ln, "%s.loss", opt);
    if ((rc = kn_ckpt_get(ctx, ck, ln, &ref_loss, &ls))) {
        CHECK(0, "%s: %s", label, kn_ctx_message(ctx));
        goto fail;
    }
    const int64_t xper = (int64_t)batch * H * W;
    CHECK(kn_shape_numel(&xs) == steps * xper && kn_shape_numel(&ys) == (int64_t)steps * batch &&
              kn_shape_numel(&ls) == steps,
          "%s: fixture x/y/loss sizes do not match steps=%d batch=%d %dx%d", label, steps, batch, H, W);
    if (kn_shape_numel(&xs) != steps * xper || kn_shape_numel(&ys) != (int64_t)steps * batch || kn_shape_numel(&ls) != steps)
        goto fail;

    /* Optimizer settings from the fixture's metadata (torch.optim defaults otherwise). */
    char kk[96];
    snprintf(kk, sizeof kk, "opt.%s.kind", opt);
    const char *kind = kn_ckpt_meta_get(ck, kk);
    CHECK(kind != NULL, "%s: no %s in the fixture metadata", label, kk);
    if (!kind) goto fail;
    kn_opt_config oc;
    kn_opt_defaults(&oc);
    if (!strcmp(kind, "sgd")) oc.kind = KN_OPT_SGD;
    else if (!strcmp(kind, "adam")) oc.kind = KN_OPT_ADAM;
    else if (!strcmp(kind, "adamw")) oc.kind = KN_OPT_ADAMW;
    else { CHECK(0, "%s: unknown optimizer kind '%s'", label, kind); goto fail; }
    oc.lr = meta_num(ck, opt, "lr", NAN);
    oc.momentum = meta_num(ck, opt, "momentum", 0.0);
    oc.nesterov = meta_num(ck, opt, "nesterov", 0.0) != 0.0;
    oc.weight_decay = meta_num(ck, opt, "weight_decay", oc.kind == KN_OPT_ADAMW ? 0.01 : 0.0);
    oc.beta1 = meta_num(ck, opt, "beta1", 0.9);
    oc.beta2 = meta_num(ck, opt, "beta2", 0.999);
    oc.eps = meta_num(ck, opt, "eps", 1e-8);
    CHECK(oc.lr > 0, "%s: no learning rate in the fixture metadata", label);
    kn_optimizer o;
    rc = kn_opt_init(ctx, &o, &oc, m.store.nparam);
    CHECK(rc == KN_OK, "%s: optimizer: %s", label, kn_ctx_message(ctx));
    if (rc) goto fail;

    int32_t *labels = malloc((size_t)batch * sizeof *labels);
    double worst_loss = 0;
    int worst_step = 0;
    float got[64];
    for (int s = 0; s < steps; s++) {
        memcpy(kn_ptr(m.train, m.x_train), x + s * xper, (size_t)xper * sizeof(float));
        for (int i = 0; i < batch; i++) labels[i] = (int32_t)lrintf(y[(int64_t)s * batch + i]);
        kn_model_set_targets(&m, labels);
        kn_rt rt;
        memset(&rt, 0, sizeof rt);
        rt.seed = 1;
        rt.step = s;
        float loss = kn_model_forward_backward(&m, &rt);
        got[s < 64 ? s : 63] = loss;
        double e = fabs((double)loss - ref_loss[s]) / fabs((double)ref_loss[s]);
        if (!(e <= worst_loss)) { worst_loss = e; worst_step = s; }
        CHECK(e <= TOL, "%s: step %d loss %.7g, PyTorch %.7g (relative error %.2e)", label, s, loss, ref_loss[s], e);
        kn_opt_step(&o, m.store.param, m.store.grad, kn_opt_lr(&oc, s));
    }
    free(labels);
    if (verbose || worst_loss > TOL) {
        printf("  %s losses (kiln / PyTorch):", label);
        for (int s = 0; s < steps && s < 64; s++) printf(" %.5f/%.5f", got[s], ref_loss[s]);
        printf("\n");
    }

    /* Final parameters and running statistics: every store entry, every fixture tensor. */
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s.", opt);
    int nfinal = 0;
    for (int i = 0; i < kn_ckpt_count(ck); i++)
        nfinal += starts_with(kn_ckpt_name(ck, i), prefix) && strcmp(kn_ckpt_name(ck, i), ln) != 0;
    CHECK(nfinal == m.store.n, "%s: fixture has %d final tensors, the model's store %d entries", label, nfinal, m.store.n);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.store.n; i++) {
        const kn_store_entry *e = &m.store.e[i];
        char nm[160];
        snprintf(nm, sizeof nm, "%s.%s", opt, e->name);
        const float *ref;
        kn_shape sh;
        rc = kn_ckpt_get(ctx, ck, nm, &ref, &sh);
        CHECK(rc == KN_OK, "%s: %s", label, kn_ctx_message(ctx));
        if (rc || !kn_shape_eq(&sh, &e->shape)) { CHECK(rc, "%s: %s: shape differs", label, nm); continue; }
        const float *a = kn_store_data(&m.store, e);
        double mx;
        int64_t am;
        double r = rel_err(a, ref, e->numel, &mx, &am);
        if (!(r <= worst)) { worst = r; worst_name = e->name; }
        CHECK(r <= TOL, "%s: final %s: relative error %.3e (max element error %.3e at [%lld]: kiln %.7g, PyTorch %.7g)",
              label, e->name, r, mx, (long long)am, a[am], ref[am]);
        if (verbose) printf("    %-20s rel %.2e  max abs %.2e\n", e->name, r, mx);
    }
    printf("%-14s loss: worst relative error %.2e (step %d); final tensors: worst %.2e (%s)\n", label, worst_loss,
           worst_step, worst, worst_name);
    kn_opt_free(&o);
    kn_model_free(&m);
    kn_config_free(cfg);
    return 0;
fail:
    kn_model_free(&m);
    kn_config_free(cfg);
    return -1;
}

static void run_model(kn_ctx *ctx, const char *model, const char *ini, const char *fixture) {
    kn_ckpt *ck = NULL;
    const char *path = kn_test_src(fixture);
    int rc = kn_ckpt_open(ctx, path, &ck);
    CHECK(rc == KN_OK, "cannot open the fixture (regenerate with /usr/bin/python3 tests/fixtures/make_reference.py): %s",
          kn_ctx_message(ctx));
    if (rc) return;
    const char *opts = kn_ckpt_meta_get(ck, "optimizers");
    CHECK(opts != NULL, "%s: no 'optimizers' in the metadata", path);
    int nrun = 0;
    if (opts) {
        char buf[256];
        kn_strlcpy(buf, opts, sizeof buf);
        for (char *save = NULL, *o = strtok_r(buf, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
            kn_ctx_clear(ctx);
            run_one(ctx, model, ini, ck, o);
            nrun++;
        }
    }
    CHECK(nrun >= 4, "%s: expected runs for sgd, nesterov, adam, adamw; found %d", path, nrun);
    kn_ckpt_close(ck);
}

/* ---- Adam/AdamW arithmetic against torch.optim (issue 10, item 25) ----
 * tests/fixtures/adam_ref.txt (make_adam_reference.py): 64 float32 parameters, 20 given
 * gradients, the state after 20 float32 steps of torch.optim.Adam / AdamW (default CPU
 * implementation). kiln's update must agree within 1e-6 relative per element — at
 * beta2 = 0.99999, where 1 - beta2 taken in float32 (0.99999f) is 0.13% off. */
#define ADAM_TOL 1e-6
#define ADAM_N 64
#define ADAM_STEPS 20

static int read_floats(char *line, const char *tag, float *out, int n) {
    size_t lt = strlen(tag);
    if (strncmp(line, tag, lt) != 0 || line[lt] != ' ') return -1;
    char *p = line + lt, *end;
    for (int i = 0; i < n; i++) {
        out[i] = strtof(p, &end);
        if (end == p) return -1;
        p = end;
    }
    return 0;
}

static double worst_rel(const float *a, const float *b, int n, int *at) {
    double w = 0;
    *at = 0;
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double r = d == 0 ? 0 : d / fmax(fabs((double)b[i]), 1e-30);
        if (r > w) { w = r; *at = i; }
    }
    return w;
}

static void test_adam_arithmetic(kn_ctx *ctx) {
    const char *path = kn_test_src("tests/fixtures/adam_ref.txt");
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot open %s (regenerate with python3 tests/fixtures/make_adam_reference.py)", path);
    if (!f) return;
    static char line[8192];
    static float init[ADAM_N], grads[ADAM_STEPS][ADAM_N], ref[3][ADAM_N];
    int ngrad = 0, ncase = 0, ncosine = 0;
    kn_opt_config oc;
    char name[64] = "";
    int have = 0; /* lines of the current case read */
    while (fgets(line, sizeof line, f)) {
        int t;
        if (!strncmp(line, "init ", 5)) {
            CHECK(read_floats(line, "init", init, ADAM_N) == 0, "bad init line");
        } else if (sscanf(line, "grad %d", &t) == 1 && t >= 0 && t < ADAM_STEPS) {
            char tag[16];
            snprintf(tag, sizeof tag, "grad %d", t);
            CHECK(read_floats(line, tag, grads[t], ADAM_N) == 0, "bad grad line %d", t);
            ngrad++;
        } else if (!strncmp(line, "case ", 5)) {
            char kind[16];
            kn_opt_defaults(&oc);
            int got = sscanf(line, "case %63s %15s lr %lf beta1 %lf beta2 %lf eps %lf weight_decay %lf", name, kind, &oc.lr,
                             &oc.beta1, &oc.beta2, &oc.eps, &oc.weight_decay);
            CHECK(got == 7, "bad case line: %s", line);
            oc.kind = !strcmp(kind, "adamw") ? KN_OPT_ADAMW : KN_OPT_ADAM;
            have = 0;
        } else if (!strncmp(line, "cosine ", 7)) {
            /* the cosine schedule against torch's CosineAnnealingLR(T_max = T - 1), alone and after a warm-up */
            char *q = line + 7, *e;
            int T = (int)strtol(q, &e, 10);
            kn_opt_config sc;
            kn_opt_defaults(&sc);
            sc.schedule = KN_SCHED_COSINE;
            sc.lr = strtod(e, &e);
            sc.min_lr = strtod(e, &e);
            for (int W = 0; W <= 4; W += 4) {
                sc.warmup_steps = W;
                sc.total_steps = T + W;
                char *r = e;
                double worst = 0;
                for (int k = 0; k < T; k++) {
                    double want = strtod(r, &r), got = kn_opt_lr(&sc, W + k);
                    double err = fabs(got - want) / fmax(fabs(want), 1e-300);
                    if (want == 0) err = fabs(got);
                    if (err > worst) worst = err;
                    CHECK(err <= 1e-12, "cosine T=%d warmup %d: step %d lr %.17g, torch %.17g", T, W, W + k, got, want);
                }
                CHECK(kn_opt_lr(&sc, W + T - 1) == sc.min_lr, "cosine T=%d: the last step's lr %.17g is not min_lr %.17g", T,
                      kn_opt_lr(&sc, W + T - 1), sc.min_lr);
                printf("cosine T=%-3d warm-up %d: worst relative difference to torch CosineAnnealingLR %.1e\n", T, W, worst);
                /* warm-up: lr * (step + 1) / W, closed form */
                for (int k = 0; k < W; k++)
                    CHECK(kn_opt_lr(&sc, k) == sc.lr * (k + 1) / W, "warm-up step %d: %.17g", k, kn_opt_lr(&sc, k));
            }
            ncosine++;
        } else if (!read_floats(line, "param", ref[0], ADAM_N)) {
            have |= 1;
        } else if (!read_floats(line, "exp_avg", ref[1], ADAM_N)) {
            have |= 2;
        } else if (!read_floats(line, "exp_avg_sq", ref[2], ADAM_N)) {
            have |= 4;
        }
        if (have != 7) continue;
        have = 0;
        ncase++;
        CHECK(ngrad == ADAM_STEPS, "%s: %d gradients in the fixture", name, ngrad);
        kn_optimizer o;
        if (kn_opt_init(ctx, &o, &oc, ADAM_N) != KN_OK) { CHECK(0, "init: %s", kn_ctx_message(ctx)); continue; }
        memset(o.m, 0, sizeof(float) * ADAM_N);
        memset(o.v, 0, sizeof(float) * ADAM_N);
        float p[ADAM_N];
        memcpy(p, init, sizeof p);
        for (int s = 0; s < ADAM_STEPS; s++) kn_opt_step(&o, p, grads[s], kn_opt_lr(&oc, s));
        const float *got[3] = {p, o.m, o.v};
        const char *what[3] = {"param", "exp_avg", "exp_avg_sq"};
        for (int k = 0; k < 3; k++) {
            int at;
            double r = worst_rel(got[k], ref[k], ADAM_N, &at);
            CHECK(r <= ADAM_TOL, "%s (beta2 = %.8g): %s after %d steps: relative error %.3e at [%d] (kiln %.9g, PyTorch %.9g)",
                  name, oc.beta2, what[k], ADAM_STEPS, r, at, got[k][at], ref[k][at]);
            printf("%-16s %-10s worst relative difference to torch.optim after %d steps: %.2e\n", name, what[k],
                   ADAM_STEPS, r);
        }
        kn_opt_free(&o);
    }
    fclose(f);
    CHECK(ncase >= 4, "%s: %d cases", path, ncase);
    CHECK(ncosine >= 3, "%s: %d cosine schedules", path, ncosine);
    /* the step schedule: torch StepLR's closed form, after a warm-up of 3 */
    kn_opt_config sc;
    kn_opt_defaults(&sc);
    sc.schedule = KN_SCHED_STEP;
    sc.lr = 0.1;
    sc.gamma = 0.5;
    sc.step_size = 4;
    sc.warmup_steps = 3;
    for (int k = 0; k < 20; k++) {
        double want = k < 3 ? 0.1 * (k + 1) / 3 : 0.1 * pow(0.5, (double)((k - 3) / 4));
        CHECK(fabs(kn_opt_lr(&sc, k) - want) <= 1e-15, "step schedule, step %d: %.17g, want %.17g", k, kn_opt_lr(&sc, k), want);
    }
}

int main(void) {
    const char *v = getenv("KN_TEST_VERBOSE");
    verbose = v && *v && strcmp(v, "0") != 0;
    kn_ctx *ctx = kn_ctx_new();
    test_adam_arithmetic(ctx);
    run_model(ctx, "mlp", kMLP, "tests/fixtures/mlp_ref.safetensors");
    run_model(ctx, "cnn", kCNN, "tests/fixtures/cnn_ref.safetensors");
    kn_ctx_free(ctx);
    return kn_test_finish("test_reference");
}
