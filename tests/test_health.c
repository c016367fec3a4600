/* Training health (src/train/health.c):
 *  1. a health step (forward one node at a time + backward) is bit-identical to
 *     kn_model_forward_backward: loss, gradients, parameters and BatchNorm statistics
 *     over several SGD steps of a CNN with BatchNorm, dropout and a residual add;
 *  2. the statistics of a tiny linear+relu model equal values computed here by hand
 *     (activation mean/std, dead ReLU fraction, gradient and weight norms, update ratio)
 *     and appear in the {"event":"health"} line;
 *  3. a deep plain MLP trained with BatchNorm between its layers shows a much smaller
 *     activation drift (post-activation outputs) than the same MLP without BatchNorm;
 *  4. a vanishing-gradient warning fires on a deep sigmoid stack with a tiny
 *     initialisation (once every 10 checks at most), and no warning on a healthy model;
 *  5. leakage: duplicates between constructed datasets (count and index pairs, subsets,
 *     near-duplicates not counted); Fashion-MNIST train vs t10k when installed;
 *  6. kn_health_print on a hand-written metrics.jsonl (table, warnings, guard messages,
 *     leakage, epochs) and on the file written by 4; clear errors for a missing dir / file;
 *     the leakage line once per evaluation set however often the run was resumed;
 *  7. warnings that mean something: a stable 60% of silent ReLU units is not warned about,
 *     units that keep dying are (once, again only when worse); the units of a 4-D output
 *     are channels (either memory layout); a layer with no path to the loss gets no
 *     gradient warning; the overfitting rule (kn_overfit) on constructed and measured
 *     loss curves, and its replay from metrics.jsonl;
 *  8. collapse (guard.h): a gated-off branch at chance-level loss is not a collapse, a
 *     dead layer that cuts the gradient is; the entropy of the labels;
 *  9. the default validation split: 10% of the TRAINING set, seeded by the run seed,
 *     disjoint from the training indices, reproducible. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/cpu/layout.h"
#include "config/config.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "testutil.h"
#include "train/guard.h"
#include "train/health.h"
#include "train/trainer.h"

/* Exact duplicates of t10k images in the training set of Debian's dataset-fashion-mnist
 * (0.0~git20200523): none (also checked with a Python script: no image is repeated
 * within or across the two sets). */
#define FMNIST_DUPLICATES 0

static kn_ctx *ctx;

static int build(const char *name, const char *ini, int batch, int C, int H, int W, int ncls, uint64_t seed,
                 kn_model *m) {
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, name, ini, &cfg);
    CHECK(rc == KN_OK, "%s: config: %s", name, kn_ctx_message(ctx));
    if (rc) return rc;
    rc = kn_model_build(ctx, cfg, batch, batch, C, H, W, ncls, m);
    CHECK(rc == KN_OK, "%s: build: %s", name, kn_ctx_message(ctx));
    kn_config_free(cfg);
    if (rc) { kn_model_free(m); return rc; }
    kn_model_init(m, seed);
    return KN_OK;
}

static void fill_normal(float *x, int64_t n, kn_rng *r) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)kn_rng_normal(r);
}

static int sgd(kn_optimizer *o, int64_t n, double lr, double momentum) {
    kn_opt_config oc;
    kn_opt_defaults(&oc);
    oc.kind = KN_OPT_SGD;
    oc.lr = lr;
    oc.momentum = momentum;
    int rc = kn_opt_init(ctx, o, &oc, n);
    CHECK(rc == KN_OK, "optimizer: %s", kn_ctx_message(ctx));
    return rc;
}

/* Whole file into a malloc'ed string. */
static char *slurp(FILE *f) {
    fflush(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    char *s = malloc((size_t)n + 1);
    rewind(f);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fseek(f, 0, SEEK_END);
    return s;
}

static int count_str(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, sub)) != NULL; p += strlen(sub)) n++;
    return n;
}

static double rel(double a, double b) { return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1e-30); }

/* ---------------- 1. bit-identical ---------------- */
static const char *kCNN =
    "[conv1]\ntype = conv2d\nout_channels = 4\nkernel = 3\npadding = 1\n"
    "[bn1]\ntype = batchnorm\nactivation = relu\n"
    "[conv2]\ntype = conv2d\nout_channels = 4\nkernel = 3\npadding = 1\nactivation = relu\n"
    "[res]\ntype = add\ninput = conv2, bn1\n"
    "[bn2]\ntype = batchnorm\nactivation = relu\n"
    "[pool]\ntype = maxpool2d\nkernel = 2\n"
    "[flat]\ntype = flatten\n"
    "[drop]\ntype = dropout\np = 0.3\n"
    "[fc1]\ntype = linear\nout = 16\nactivation = tanh\n"
    "[fc2]\ntype = linear\nout = 5\n";

/* Forward one step at a time, written here independently of health.c: the mean, std
 * and dead fraction of out[0] of each layer's last node, right after its step. Layers
 * in order of first appearance; returns their count. */
static int manual_stats(kn_model *m, kn_rt *rt, char names[][64], double *mean, double *sd, double *dead) {
    kn_graph *g = m->train;
    int nl = 0;
    for (int s = 0; s < g->nfwd; s++) {
        kn_g_run_steps(g, rt, s, s + 1);
        const kn_node *n = &g->n[g->steps[s].node];
        if (n->out[0] == m->loss) continue;
        int last = 1, li = -1;
        for (int t = s + 1; t < g->nfwd; t++)
            if (!strcmp(g->n[g->steps[t].node].layer, n->layer) && g->n[g->steps[t].node].out[0] != m->loss) last = 0;
        for (int i = 0; i < nl; i++)
            if (!strcmp(names[i], n->layer)) li = i;
        if (li < 0) { li = nl++; snprintf(names[li], 64, "%s", n->layer); }
        if (!last) continue;
        const float *x = kn_ptr(g, n->out[0]);
        int64_t cnt = kn_numel(g, n->out[0]), N = kn_shp(g, n->out[0])->d[0], U = cnt / N;
        double s1 = 0, s2 = 0;
        for (int64_t i = 0; i < cnt; i++) s1 += x[i];
        for (int64_t i = 0; i < cnt; i++) s2 += ((double)x[i] - s1 / cnt) * ((double)x[i] - s1 / cnt);
        mean[li] = s1 / cnt;
        sd[li] = sqrt(s2 / cnt);
        dead[li] = NAN;
        const kn_shape *sh = kn_shp(g, n->out[0]);
        if ((n->op == &kn_op_relu || !strcmp(n->op->name, "batchnorm_relu")) && sh->nd == 4) {
            /* units are channels; element (i, c, p) of a channel-blocked value lies at
             * ((i * C/B + c/B) * HW + p) * B + c%B */
            int64_t C = sh->d[1], HW = sh->d[2] * sh->d[3], nd = 0;
            int B = kn_layout(g, n->out[0]);
            for (int64_t c = 0; c < C; c++) {
                int z = 1;
                for (int64_t i = 0; i < N; i++)
                    for (int64_t p = 0; p < HW; p++)
                        z &= x[B ? ((i * (C / B) + c / B) * HW + p) * B + c % B : (i * C + c) * HW + p] == 0.0f;
                nd += z;
            }
            dead[li] = (double)nd / (double)C;
        } else if (n->op == &kn_op_relu || !strcmp(n->op->name, "batchnorm_relu")) {
            int64_t nd = 0;
            for (int64_t j = 0; j < U; j++) {
                int z = 1;
                for (int64_t i = 0; i < N; i++) z &= x[i * U + j] == 0.0f;
                nd += z;
            }
            dead[li] = (double)nd / (double)U;
        }
    }
    kn_g_backward(g, rt, NULL);
    return nl;
}

static void test_bit_identical(void) {
    kn_model a, b, c;
    if (build("cnn.ini", kCNN, 6, 1, 8, 8, 5, 7, &a)) return;
    if (build("cnn.ini", kCNN, 6, 1, 8, 8, 5, 7, &b)) { kn_model_free(&a); return; }
    if (build("cnn.ini", kCNN, 6, 1, 8, 8, 5, 7, &c)) { kn_model_free(&a); kn_model_free(&b); return; }
    kn_health *h = NULL;
    int rc = kn_health_create(ctx, &b, 1, &h);
    CHECK(rc == KN_OK, "create: %s", kn_ctx_message(ctx));
    kn_optimizer oa, ob;
    sgd(&oa, a.store.nparam, 0.05, 0.9);
    sgd(&ob, b.store.nparam, 0.05, 0.9);
    kn_rng r;
    kn_rng_seed(&r, 99);
    int32_t lab[6];
    int same = 1;
    for (int s = 0; s < 5 && h; s++) {
        int64_t nx = kn_numel(a.train, a.x_train);
        fill_normal(kn_ptr(a.train, a.x_train), nx, &r);
        memcpy(kn_ptr(b.train, b.x_train), kn_ptr(a.train, a.x_train), (size_t)nx * sizeof(float));
        for (int i = 0; i < 6; i++) lab[i] = (int32_t)kn_rng_below(&r, 5);
        kn_model_set_targets(&a, lab);
        kn_model_set_targets(&b, lab);
        kn_rt ra = {0}, rb = {0};
        ra.seed = rb.seed = 3;
        ra.step = rb.step = s;
        float la = kn_model_forward_backward(&a, &ra);
        /* health on steps 0, 2, 4; the plain path on the others */
        float lb = s % 2 == 0 ? kn_health_forward_backward(h, &b, &rb) : kn_model_forward_backward(&b, &rb);
        if (s == 0) { /* the statistics against the ones taken here, step by step */
            char names[16][64];
            double mu[16], sd[16], dd[16];
            memcpy(kn_ptr(c.train, c.x_train), kn_ptr(a.train, a.x_train), (size_t)nx * sizeof(float));
            kn_model_set_targets(&c, lab);
            kn_rt rc_ = {0};
            rc_.seed = 3;
            int nl = manual_stats(&c, &rc_, names, mu, sd, dd);
            CHECK(nl == kn_health_nlayers(h), "%d layers by hand, %d in health", nl, kn_health_nlayers(h));
            for (int i = 0; i < nl && i < kn_health_nlayers(h); i++) {
                const kn_health_layer *l = kn_health_get_layer(h, i);
                CHECK(!strcmp(l->layer, names[i]) && rel(l->act_mean, mu[i]) < 1e-9 && rel(l->act_std, sd[i]) < 1e-9 &&
                          (isnan(dd[i]) ? isnan(l->dead_relu) : l->dead_relu == dd[i]),
                      "layer %s: mean %.9g std %.9g dead %g; by hand (%s) %.9g %.9g %g", l->layer, l->act_mean,
                      l->act_std, l->dead_relu, names[i], mu[i], sd[i], dd[i]);
            }
        }
        CHECK(memcmp(&la, &lb, sizeof la) == 0, "step %d: loss %.9g vs %.9g", s, la, lb);
        int gsame = memcmp(a.store.grad, b.store.grad, (size_t)a.store.nparam * sizeof(float)) == 0;
        int ssame = memcmp(a.store.state, b.store.state, (size_t)a.store.nstate * sizeof(float)) == 0;
        int osame = memcmp(kn_ptr(a.train, a.out_train), kn_ptr(b.train, b.out_train),
                           (size_t)kn_numel(a.train, a.out_train) * sizeof(float)) == 0;
        CHECK(gsame && ssame && osame, "step %d: gradients %s, BatchNorm statistics %s, logits %s", s,
              gsame ? "equal" : "differ", ssame ? "equal" : "differ", osame ? "equal" : "differ");
        same &= gsame && ssame && osame && memcmp(&la, &lb, sizeof la) == 0;
        kn_opt_step(&oa, a.store.param, a.store.grad, 0.05);
        kn_opt_step(&ob, b.store.param, b.store.grad, 0.05);
        if (s % 2 == 0) kn_health_after_update(h, &b, s + 1, NULL, NULL);
        CHECK(memcmp(a.store.param, b.store.param, (size_t)a.store.nparam * sizeof(float)) == 0,
              "step %d: parameters differ after the update", s);
    }
    /* layers: one per config section, in order, with the output of its last node */
    /* (bn2's batchnorm + relu may be one fused node: both end in a ReLU) */
    static const char *names[] = {"conv1", "bn1", "conv2", "res", "bn2", "pool", "flat", "drop", "fc1", "fc2"};
    static const int relu[] = {0, 1, 1, 0, 1, 0, 0, 0, 0, 0};
    CHECK(kn_health_nlayers(h) == 10, "%d layers, expected 10", kn_health_nlayers(h));
    for (int i = 0; i < 10 && i < kn_health_nlayers(h); i++) {
        const kn_health_layer *l = kn_health_get_layer(h, i);
        CHECK(!strcmp(l->layer, names[i]) && relu[i] == !isnan(l->dead_relu), "layer %d: %s (%s, dead %g), expected %s%s",
              i, l->layer, l->op, l->dead_relu, names[i], relu[i] ? " ending in a ReLU" : "");
        CHECK(isfinite(l->drift), "layer %s: no drift after 3 checks", l->layer);
    }
    CHECK(kn_health_nchecks(h) == 3, "%lld checks, expected 3", (long long)kn_health_nchecks(h));
    printf("bit-identical over 5 steps (3 health steps): %s\n", same ? "yes" : "NO");
    kn_opt_free(&oa);
    kn_opt_free(&ob);
    kn_health_free(h);
    kn_model_free(&a);
    kn_model_free(&b);
    kn_model_free(&c);
}

/* ---------------- 2. statistics by hand ---------------- */
static const char *kTiny =
    "[flat]\ntype = flatten\n"
    "[fc]\ntype = linear\nout = 3\nactivation = relu\n";

static void test_stats(void) {
    enum { N = 4, K = 5, O = 3 };
    kn_model m;
    if (build("tiny.ini", kTiny, N, 1, 1, K, O, 1, &m)) return;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 2, &h)) { CHECK(0, "create: %s", kn_ctx_message(ctx)); kn_model_free(&m); return; }
    CHECK(kn_health_due(h, 0) && !kn_health_due(h, 1) && kn_health_due(h, 4), "due(): every 2 steps from step 0");
    float *W = kn_store_data(&m.store, kn_store_find(&m.store, "fc.weight"));
    float *B = kn_store_data(&m.store, kn_store_find(&m.store, "fc.bias"));
    float *gW = m.store.grad + kn_store_find(&m.store, "fc.weight")->offset;
    float *gB = m.store.grad + kn_store_find(&m.store, "fc.bias")->offset;
    /* unit 0 and 1: mixed signs; unit 2: weights 0, bias -1 (dead) */
    static const float w0[O][K] = {{0.5f, -0.25f, 0.125f, 1.0f, -0.5f}, {-0.75f, 0.5f, 0.25f, -0.125f, 1.0f}, {0, 0, 0, 0, 0}};
    static const float b0[O] = {0.1f, -0.2f, -1.0f};
    static const float x[N][K] = {{1, 2, -1, 0.5f, 0}, {-1, 0.5f, 2, -2, 1}, {0.25f, -1, 1, 1, -0.5f}, {2, 0, -0.5f, -1, 1.5f}};
    static const int32_t lab[N] = {0, 2, 1, 0};
    memcpy(W, w0, sizeof w0);
    memcpy(B, b0, sizeof b0);
    memcpy(kn_ptr(m.train, m.x_train), x, sizeof x);
    kn_model_set_targets(&m, lab);
    kn_rt rt = {0};
    float loss = kn_health_forward_backward(h, &m, &rt);

    /* by hand, in double */
    double z[N][O], y[N][O], sx = 0, sxx = 0, sy = 0, syy = 0, L = 0, dW[O][K] = {{0}}, db[O] = {0};
    int alive[O] = {0};
    for (int i = 0; i < N; i++)
        for (int k = 0; k < K; k++) { sx += x[i][k]; sxx += (double)x[i][k] * x[i][k]; }
    for (int i = 0; i < N; i++) {
        double mx = -1e300, se = 0;
        for (int o = 0; o < O; o++) {
            z[i][o] = b0[o];
            for (int k = 0; k < K; k++) z[i][o] += (double)w0[o][k] * x[i][k];
            y[i][o] = z[i][o] > 0 ? z[i][o] : 0;
            alive[o] |= y[i][o] != 0;
            sy += y[i][o];
            syy += y[i][o] * y[i][o];
            if (y[i][o] > mx) mx = y[i][o];
        }
        for (int o = 0; o < O; o++) se += exp(y[i][o] - mx);
        L += -(y[i][lab[i]] - mx - log(se)) / N;
        for (int o = 0; o < O; o++) {
            double p = exp(y[i][o] - mx) / se, dy = (p - (o == lab[i])) / N, dz = z[i][o] > 0 ? dy : 0;
            db[o] += dz;
            for (int k = 0; k < K; k++) dW[o][k] += dz * x[i][k];
        }
    }
    double g2 = 0, w2 = 0;
    for (int o = 0; o < O; o++) {
        g2 += db[o] * db[o];
        w2 += (double)b0[o] * b0[o];
        for (int k = 0; k < K; k++) { g2 += dW[o][k] * dW[o][k]; w2 += (double)w0[o][k] * w0[o][k]; }
    }
    int dead = 0;
    for (int o = 0; o < O; o++) dead += !alive[o];
    double mx_ = sx / (N * K), sdx = sqrt(sxx / (N * K) - mx_ * mx_);
    double my = sy / (N * O), sdy = sqrt(syy / (N * O) - my * my);
    CHECK(dead == 1, "test setup: %d dead units, expected 1", dead);
    CHECK(rel(loss, L) < 1e-5, "loss %.7g, by hand %.7g", loss, L);

    CHECK(kn_health_nlayers(h) == 2, "%d layers, expected 2 (flat, fc)", kn_health_nlayers(h));
    const kn_health_layer *lf = kn_health_get_layer(h, 0), *lc = kn_health_get_layer(h, 1);
    if (!lf || !lc) { kn_health_free(h); kn_model_free(&m); return; }
    CHECK(!strcmp(lf->layer, "flat") && !strcmp(lc->layer, "fc") && (!strcmp(lc->op, "relu") || !strcmp(lc->op, "linear_relu")), "layers %s, %s (%s)",
          lf->layer, lc->layer, lc->op);
    CHECK(rel(lf->act_mean, mx_) < 1e-12 && rel(lf->act_std, sdx) < 1e-12, "flat: mean %.9g std %.9g, by hand %.9g %.9g",
          lf->act_mean, lf->act_std, mx_, sdx);
    CHECK(isnan(lf->dead_relu) && isnan(lf->grad_norm) && lf->nparams == 0, "flat: no relu, no parameters");
    CHECK(rel(lc->act_mean, my) < 1e-6 && rel(lc->act_std, sdy) < 1e-6, "fc: mean %.9g std %.9g, by hand %.9g %.9g",
          lc->act_mean, lc->act_std, my, sdy);
    CHECK(lc->dead_relu == 1.0 / 3.0, "fc: dead fraction %.9g, expected 1/3", lc->dead_relu);
    CHECK(rel(lc->grad_norm, sqrt(g2)) < 1e-5, "fc: grad norm %.9g, by hand %.9g", lc->grad_norm, sqrt(g2));
    CHECK(rel(lc->weight_norm, sqrt(w2)) < 1e-7, "fc: weight norm %.9g, by hand %.9g", lc->weight_norm, sqrt(w2));
    CHECK(lc->nparams == O * K + O, "fc: %lld parameters", (long long)lc->nparams);

    /* plain SGD by hand, then the update ratio = lr * ||g|| / ||w|| */
    const double lr = 0.5;
    double u2 = 0;
    for (int i = 0; i < O * K; i++) { float old = W[i]; W[i] -= (float)lr * gW[i]; u2 += ((double)W[i] - old) * ((double)W[i] - old); }
    for (int i = 0; i < O; i++) { float old = B[i]; B[i] -= (float)lr * gB[i]; u2 += ((double)B[i] - old) * ((double)B[i] - old); }
    FILE *mf = tmpfile();
    kn_health_after_update(h, &m, 1, mf, NULL);
    CHECK(rel(lc->update_ratio, sqrt(u2 / w2)) < 1e-9 && rel(lc->update_ratio, lr * sqrt(g2 / w2)) < 1e-5,
          "fc: update ratio %.9g, by hand %.9g", lc->update_ratio, lr * sqrt(g2 / w2));
    CHECK(isnan(lc->drift) && isnan(kn_health_mean_drift(h)), "drift before two checks: NAN");
    char *s = slurp(mf);
    char want[256];
    snprintf(want, sizeof want, "{\"layer\":\"fc\",\"act_mean\":%.9g,\"act_std\":%.9g,\"dead_relu\":%.9g,\"grad_norm\":%.9g",
             lc->act_mean, lc->act_std, lc->dead_relu, lc->grad_norm);
    CHECK(!strncmp(s, "{\"event\":\"health\",\"step\":1,\"layers\":[{\"layer\":\"flat\"", 50) && strstr(s, want) &&
              strstr(s, "\"dead_relu\":null,\"grad_norm\":null,\"weight_norm\":null,\"update_ratio\":null,\"drift\":null}"),
          "health event: %s", s);
    CHECK(count_str(s, "\n") == 1, "one line (no warning: 1/3 dead is under the threshold): %s", s);
    free(s);

    /* a second check: drift = |dmu|/sigma_prev + |dsigma|/sigma_prev */
    double m0 = lc->act_mean, s0 = lc->act_std;
    memcpy(kn_ptr(m.train, m.x_train), x, sizeof x); /* the caller feeds the input every step */
    kn_model_set_targets(&m, lab);
    kn_health_forward_backward(h, &m, &rt);
    double m1 = lc->act_mean, s1 = lc->act_std;
    kn_health_after_update(h, &m, 3, mf, NULL);
    double d = fabs(m1 - m0) / s0 + fabs(s1 - s0) / s0;
    CHECK(rel(lc->drift, d) < 1e-12 && d > 0, "fc: drift %.9g, by hand %.9g", lc->drift, d);
    CHECK(rel(kn_health_mean_drift(h), (d + 0.0) / 2) < 1e-12, "mean drift %.9g (flat's drift is 0: same input)",
          kn_health_mean_drift(h));
    /* discard: no event, no new drift */
    memcpy(kn_ptr(m.train, m.x_train), x, sizeof x);
    kn_model_set_targets(&m, lab);
    kn_health_forward_backward(h, &m, &rt);
    kn_health_discard(h);
    kn_health_after_update(h, &m, 5, mf, NULL);
    CHECK(kn_health_nchecks(h) == 2, "a discarded check does not count (%lld)", (long long)kn_health_nchecks(h));
    fclose(mf);
    kn_health_free(h);
    kn_model_free(&m);
}

/* ---------------- 3. drift with and without BatchNorm ---------------- */
enum { DEPTH = 8, WIDTH = 64, FEAT = 32, NCLS = 10, DBATCH = 64, POOL = 512 };

static char *mlp_ini(int bn, const char *act, const char *init) {
    static char buf[8192];
    int n = 0;
    n += snprintf(buf + n, sizeof buf - (size_t)n, "[flat]\ntype = flatten\n");
    for (int i = 1; i <= DEPTH; i++) {
        if (bn)
            n += snprintf(buf + n, sizeof buf - (size_t)n, "[fc%d]\ntype = linear\nout = %d\n%s[bn%d]\ntype = batchnorm\nactivation = %s\n",
                          i, WIDTH, init, i, act);
        else
            n += snprintf(buf + n, sizeof buf - (size_t)n, "[fc%d]\ntype = linear\nout = %d\nactivation = %s\n%s", i, WIDTH, act, init);
    }
    snprintf(buf + n, sizeof buf - (size_t)n, "[out]\ntype = linear\nout = %d\n", NCLS);
    return buf;
}

/* Mean drift over the layers whose output is a ReLU's (the post-activation outputs). */
static double relu_drift(const kn_health *h, int *nl) {
    double s = 0;
    *nl = 0;
    for (int i = 0; i < kn_health_nlayers(h); i++) {
        const kn_health_layer *l = kn_health_get_layer(h, i);
        if (isnan(l->dead_relu)) continue; /* not a ReLU output (relu or fused batchnorm_relu) */
        s += l->drift;
        (*nl)++;
    }
    return *nl ? s / *nl : NAN;
}

static double train_drift(int bn, double *all, double *per_layer) {
    kn_model m;
    *all = NAN;
    if (build(bn ? "mlp_bn.ini" : "mlp.ini", mlp_ini(bn, "relu", ""), DBATCH, 1, 1, FEAT, NCLS, 5, &m)) return NAN;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 5, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return NAN; }
    kn_optimizer o;
    sgd(&o, m.store.nparam, 0.05, 0.9);
    /* a fixed pool of random inputs with random labels (to be memorised) */
    float *px = malloc((size_t)POOL * FEAT * sizeof *px);
    int32_t *py = malloc((size_t)POOL * sizeof *py), lab[DBATCH];
    kn_rng r;
    kn_rng_seed(&r, 2024);
    fill_normal(px, (int64_t)POOL * FEAT, &r);
    for (int i = 0; i < POOL; i++) py[i] = (int32_t)kn_rng_below(&r, NCLS);
    float *x = kn_ptr(m.train, m.x_train);
    for (int s = 0; s < 300; s++) {
        int off = (s * DBATCH) % POOL;
        memcpy(x, px + (size_t)off * FEAT, (size_t)DBATCH * FEAT * sizeof *x);
        memcpy(lab, py + off, sizeof lab);
        kn_model_set_targets(&m, lab);
        kn_rt rt = {0};
        rt.step = s;
        int due = kn_health_due(h, s);
        if (due) kn_health_forward_backward(h, &m, &rt);
        else kn_model_forward_backward(&m, &rt);
        kn_opt_step(&o, m.store.param, m.store.grad, 0.05);
        if (due) kn_health_after_update(h, &m, s + 1, NULL, NULL);
    }
    int nl;
    double d = relu_drift(h, &nl);
    CHECK(nl == DEPTH, "%s: %d ReLU layers, expected %d", bn ? "with BatchNorm" : "without", nl, DEPTH);
    *all = kn_health_mean_drift(h);
    printf("  %s BatchNorm: drift per layer (post-activation):", bn ? "with   " : "without");
    for (int i = 0, k = 0; i < kn_health_nlayers(h); i++) {
        const kn_health_layer *l = kn_health_get_layer(h, i);
        if (isnan(l->dead_relu) || k >= DEPTH) continue;
        printf(" %.4f", l->drift);
        per_layer[k++] = l->drift;
    }
    printf("\n");
    free(px);
    free(py);
    kn_opt_free(&o);
    kn_health_free(h);
    kn_model_free(&m);
    return d;
}

static void test_drift(void) {
    double all_plain, all_bn, lp[DEPTH], lb[DEPTH];
    for (int i = 0; i < DEPTH; i++) lp[i] = lb[i] = NAN;
    double plain = train_drift(0, &all_plain, lp), bn = train_drift(1, &all_bn, lb);
    printf("drift (mean over post-activation layers): without BatchNorm %.4f, with BatchNorm %.4f (ratio %.1f); "
           "all layers: %.4f vs %.4f\n", plain, bn, plain / bn, all_plain, all_bn);
    CHECK(isfinite(plain) && isfinite(bn) && bn > 0, "drifts are finite: %g %g", plain, bn);
    CHECK(bn * 3 < plain, "BatchNorm should reduce the activation drift clearly: with %.4f, without %.4f", bn, plain);
    for (int i = 0; i < DEPTH; i++)
        CHECK(lb[i] * 2 < lp[i], "post-activation layer %d: drift with BatchNorm %.4f, without %.4f", i + 1, lb[i], lp[i]);
    CHECK(all_bn * 2 < all_plain, "kn_health_mean_drift (all layers): with BatchNorm %.4f, without %.4f", all_bn, all_plain);
}

/* ---------------- 4. vanishing gradients ---------------- */
static char *run_warnings(const char *name, const char *ini, int checks, const char *run_dir) {
    kn_model m;
    if (build(name, ini, 16, 1, 1, FEAT, NCLS, 3, &m)) return NULL;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 1, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return NULL; }
    kn_optimizer o;
    sgd(&o, m.store.nparam, 0.01, 0.0);
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    FILE *mf = fopen(path, "w+"), *wf = tmpfile();
    kn_rng r;
    kn_rng_seed(&r, 11);
    int32_t lab[16];
    for (int s = 0; s < checks; s++) {
        fill_normal(kn_ptr(m.train, m.x_train), kn_numel(m.train, m.x_train), &r);
        for (int i = 0; i < 16; i++) lab[i] = (int32_t)kn_rng_below(&r, NCLS);
        kn_model_set_targets(&m, lab);
        kn_rt rt = {0};
        rt.step = s;
        kn_health_forward_backward(h, &m, &rt);
        kn_opt_step(&o, m.store.param, m.store.grad, 0.01);
        kn_health_after_update(h, &m, s + 1, mf, wf);
    }
    char *metrics = slurp(mf), *warns = slurp(wf);
    /* every warning event is printed: in full (at most 2 of a kind per check), or its
     * layer named on the check's "N more layer(s)" line; nothing else is printed */
    int printed = 0, grouped = 0;
    for (const char *q = warns; (q = strstr(q, "kiln: warning: step ")); q++) {
        const char *colon = strchr(q + 20, ':');
        int nm = 0;
        if (colon && sscanf(colon, ": %d more layer(s) with", &nm) == 1) {
            grouped += nm;
            CHECK(strstr(colon, "(each is in metrics.jsonl)") != NULL, "%s: grouped line without its pointer", name);
        } else {
            printed++;
        }
    }
    CHECK(printed + grouped == count_str(metrics, "\"event\":\"warning\""), "%s: %d printed + %d grouped warnings, %d warning events",
          name, printed, grouped, count_str(metrics, "\"event\":\"warning\""));
    CHECK(count_str(metrics, "\"event\":\"health\"") == checks, "%s: %d health events", name, count_str(metrics, "\"event\":\"health\""));
    printf("  %s: %d warnings%s%.*s\n", name, count_str(warns, "\n"), *warns ? ", first: " : "",
           (int)(strchr(warns, '\n') ? strchr(warns, '\n') - warns : 0), warns);
    free(metrics);
    fclose(mf);
    fclose(wf);
    kn_opt_free(&o);
    kn_health_free(h);
    kn_model_free(&m);
    return warns;
}

static void test_vanishing(const char *dir) {
    char d1[1100], d2[1100];
    snprintf(d1, sizeof d1, "%s/vanish", dir);
    snprintf(d2, sizeof d2, "%s/healthy", dir);
    mkdir(d1, 0755);
    mkdir(d2, 0755);
    /* 10 sigmoid layers, weights N(0, 0.01): the gradient shrinks ~100x per layer */
    static char deep[4096];
    int n = snprintf(deep, sizeof deep, "[flat]\ntype = flatten\n");
    for (int i = 1; i <= 10; i++)
        n += snprintf(deep + n, sizeof deep - (size_t)n, "[fc%d]\ntype = linear\nout = 16\nactivation = sigmoid\ninit = normal\ninit_scale = 0.01\n", i);
    snprintf(deep + n, sizeof deep - (size_t)n, "[out]\ntype = linear\nout = %d\n", NCLS);
    char *w = run_warnings("deep_sigmoid.ini", deep, 25, d1);
    if (w) {
        CHECK(strstr(w, "kiln: warning: step 1: layer 'fc1': vanishing gradient: gradient norm ") != NULL,
              "deep sigmoid stack: no vanishing-gradient warning for fc1 at step 1:\n%s", w);
        /* 25 checks, at most one warning per 10 checks: steps 1, 11, 21 */
        CHECK(count_str(w, "layer 'fc1': vanishing gradient") == 3 && strstr(w, "step 11: layer 'fc1'") &&
                  strstr(w, "step 21: layer 'fc1'"),
              "fc1 should be warned at steps 1, 11 and 21 only:\n%s", w);
        CHECK(strstr(w, "layer 'fc10': vanishing") == NULL, "the last hidden layer gets a gradient:\n%s", w);
        free(w);
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", d1);
    FILE *f = fopen(path, "r");
    char *m = f ? slurp(f) : NULL;
    if (f) fclose(f);
    CHECK(m && strstr(m, "{\"event\":\"warning\",\"step\":1,\"kind\":\"vanishing_gradient\",\"layer\":\"fc1\",\"grad_norm\":"),
          "warning event in %s", path);
    free(m);
    w = run_warnings("healthy.ini", mlp_ini(0, "relu", ""), 25, d2);
    if (w) {
        CHECK(*w == 0, "a healthy ReLU MLP should get no warning:\n%s", w);
        free(w);
    }
}

/* ---------------- 5. leakage ---------------- */
static void test_leakage(void) {
    enum { NA = 40, NB = 12, SZ = 6 };
    kn_dataset a = {0}, b = {0};
    a.n = NA; a.channels = 1; a.rows = 2; a.cols = 3; a.nclasses = 2;
    b = a;
    b.n = NB;
    a.images = malloc(NA * SZ);
    b.images = malloc(NB * SZ);
    kn_rng r;
    kn_rng_seed(&r, 5);
    for (int i = 0; i < NA * SZ; i++) a.images[i] = (uint8_t)kn_rng_below(&r, 256);
    for (int i = 0; i < NB * SZ; i++) b.images[i] = (uint8_t)kn_rng_below(&r, 256);
    memcpy(a.images + 30 * SZ, a.images + 5 * SZ, SZ); /* a[30] == a[5] */
    memcpy(b.images + 2 * SZ, a.images + 5 * SZ, SZ);  /* b[2] == a[5] == a[30] */
    memcpy(b.images + 7 * SZ, a.images + 13 * SZ, SZ); /* b[7] == a[13] */
    memcpy(b.images + 9 * SZ, a.images + 21 * SZ, SZ); /* b[9] == a[21] */
    memcpy(b.images + 4 * SZ, a.images + 3 * SZ, SZ);  /* b[4] == a[3] but one byte */
    b.images[4 * SZ + 5] ^= 1;
    kn_leak_report rep;
    int rc = kn_leakage_check(ctx, &a, NULL, 0, &b, NULL, 0, &rep);
    CHECK(rc == KN_OK && rep.count == 3 && rep.nexamples == 3, "count %lld (%d examples), expected 3", (long long)rep.count,
          rep.nexamples);
    CHECK(rep.examples[0][0] == 5 && rep.examples[0][1] == 2 && rep.examples[1][0] == 13 && rep.examples[1][1] == 7 &&
              rep.examples[2][0] == 21 && rep.examples[2][1] == 9,
          "pairs (%lld,%lld) (%lld,%lld) (%lld,%lld), expected (5,2) (13,7) (21,9)", (long long)rep.examples[0][0],
          (long long)rep.examples[0][1], (long long)rep.examples[1][0], (long long)rep.examples[1][1],
          (long long)rep.examples[2][0], (long long)rep.examples[2][1]);
    /* subsets: a without 5 and 13 (30 still holds b[2]'s image); b without 9 */
    int64_t ai[NA], bi[NB], nai = 0, nbi = 0;
    for (int i = NA - 1; i >= 0; i--)
        if (i != 5 && i != 13) ai[nai++] = i;
    for (int i = 0; i < NB; i++)
        if (i != 9) bi[nbi++] = i;
    rc = kn_leakage_check(ctx, &a, ai, nai, &b, bi, nbi, &rep);
    CHECK(rc == KN_OK && rep.count == 1 && rep.examples[0][0] == 30 && rep.examples[0][1] == 2,
          "subsets: count %lld, first pair (%lld,%lld), expected 1, (30,2)", (long long)rep.count,
          (long long)rep.examples[0][0], (long long)rep.examples[0][1]);
    /* more than 5 duplicates: count all, report 5 */
    rc = kn_leakage_check(ctx, &a, NULL, 0, &a, NULL, 0, &rep);
    CHECK(rc == KN_OK && rep.count == NA && rep.nexamples == 5 && rep.examples[4][1] == 4,
          "a against itself: count %lld, %d examples", (long long)rep.count, rep.nexamples);
    int64_t bad = NA;
    rc = kn_leakage_check(ctx, &a, &bad, 1, &b, NULL, 0, &rep);
    CHECK(rc == KN_ERR_INVALID && strstr(kn_ctx_message(ctx), "outside"), "bad index: %s", kn_ctx_message(ctx));
    free(a.images);
    free(b.images);

    /* The README's sentence about Fashion-MNIST's duplicates states the count above
     * (it once said the sets shared some images; byte for byte they share none) */
    static char readme[1 << 17];
    kn_test_slurp(kn_test_src("README.md"), readme, sizeof readme);
    CHECK(*readme && !strstr(readme, "Fashion-MNIST has some") &&
              strstr(readme, FMNIST_DUPLICATES == 0 ? "Fashion-MNIST has none" : "Fashion-MNIST has some"),
          "README.md must say that Fashion-MNIST's training and test sets share %s image", FMNIST_DUPLICATES ? "some" : "no");

    /* Fashion-MNIST, when installed: train vs t10k */
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char p1[256], p2[256], p3[256], p4[256];
    snprintf(p1, sizeof p1, "%s/train-images-idx3-ubyte.gz", dir);
    snprintf(p2, sizeof p2, "%s/train-labels-idx1-ubyte.gz", dir);
    snprintf(p3, sizeof p3, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(p4, sizeof p4, "%s/t10k-labels-idx1-ubyte.gz", dir);
    if (access(p1, R_OK) || access(p3, R_OK)) { printf("Fashion-MNIST not installed: skipping its leakage check\n"); return; }
    kn_dataset tr, te;
    if (kn_dataset_load(ctx, p1, p2, &tr)) { CHECK(0, "%s", kn_ctx_message(ctx)); return; }
    if (kn_dataset_load(ctx, p3, p4, &te)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_dataset_free(&tr); return; }
    double t0 = kn_now_seconds();
    rc = kn_leakage_check(ctx, &tr, NULL, 0, &te, NULL, 0, &rep);
    double t1 = kn_now_seconds();
    CHECK(rc == KN_OK, "%s", kn_ctx_message(ctx));
    int lab_diff = 0;
    for (int i = 0; i < rep.nexamples; i++)
        lab_diff += tr.labels[rep.examples[i][0]] != te.labels[rep.examples[i][1]];
    printf("Fashion-MNIST: %lld of %lld t10k images also in train (%.3f s); e.g. (train,test)", (long long)rep.count,
           (long long)te.n, t1 - t0);
    for (int i = 0; i < rep.nexamples; i++)
        printf(" (%lld,%lld)", (long long)rep.examples[i][0], (long long)rep.examples[i][1]);
    printf("; %d of those with different labels\n", lab_diff);
    for (int i = 0; i < rep.nexamples; i++)
        CHECK(!memcmp(tr.images + rep.examples[i][0] * 784, te.images + rep.examples[i][1] * 784, 784), "pair %d differs", i);
    CHECK(rep.count == FMNIST_DUPLICATES, "Fashion-MNIST: %lld duplicates, expected %d", (long long)rep.count, FMNIST_DUPLICATES);
    kn_dataset_free(&tr);
    kn_dataset_free(&te);
}

/* ---------------- 6. kiln health RUN_DIR ---------------- */
static char *print_to_string(const char *dir, int *rc) {
    FILE *f = tmpfile();
    *rc = kn_health_print(ctx, dir, f);
    char *s = slurp(f);
    fclose(f);
    return s;
}

static void test_print(const char *base) {
    char dir[1100], path[1200];
    snprintf(dir, sizeof dir, "%s/run", base);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"event\":\"step\",\"step\":10,\"epoch\":0,\"loss\":2.3,\"lr\":0.01}\n"
          "{\"event\":\"health\",\"step\":10,\"layers\":[{\"layer\":\"old\",\"act_mean\":1,\"act_std\":1,\"dead_relu\":null,\"grad_norm\":1,\"weight_norm\":1,\"update_ratio\":1,\"drift\":null}]}\n"
          "{\"event\":\"warning\",\"step\":10,\"kind\":\"dead_relu\",\"layer\":\"relu3\",\"dead_relu\":0.75,\"message\":\"layer 'relu3': 75.0% of its units are zero\"}\n"
          "{\"event\":\"guard\",\"step\":15,\"kind\":\"nonfinite\",\"action\":\"skip\",\"op\":\"linear\",\"layer\":\"fc2\",\"tensor\":\"fc2.weight.grad\",\"message\":\"NaN in the gradient of fc2.weight (op linear); step skipped\"}\n"
          "{\"event\":\"guard\",\"step\":17,\"kind\":\"grad_spike\",\"action\":\"clip\",\"op\":\"conv2d\",\"layer\":\"conv1\",\"tensor\":\"conv1.weight.grad\"}\n"
          "not json at all\n"
          "{\"event\":\"epoch\",\"epoch\":1,\"step\":20,\"train_loss\":0.5,\"val_loss\":0.625,\"val_accuracy\":0.8125,\"seconds\":1}\n"
          "{\"event\":\"leakage\",\"set\":\"test\",\"duplicates\":3,\"examples\":[[5,2],[13,7],[21,9]]}\n"
          "{\"event\":\"leakage\",\"set\":\"validation\",\"duplicates\":0,\"examples\":[]}\n"
          "{\"event\":\"leakage\",\"set\":\"test\",\"duplicates\":3,\"examples\":[[5,2],[13,7],[21,9]]}\n"
          "{\"event\":\"leakage\",\"set\":\"validation\",\"duplicates\":0,\"examples\":[]}\n"
          "{\"event\":\"leakage\",\"set\":\"test\",\"duplicates\":3,\"examples\":[[5,2],[13,7],[21,9]]}\n"
          "{\"event\":\"epoch\",\"epoch\":2,\"step\":40,\"train_loss\":0.25,\"val_loss\":0.5,\"val_accuracy\":0.875,\"gap\":0.25,\"seconds\":1}\n"
          "{\"event\":\"health\",\"step\":20,\"layers\":[{\"layer\":\"fc1\",\"act_mean\":0.25,\"act_std\":0.5,\"dead_relu\":0.125,\"grad_norm\":0.0123,\"weight_norm\":4.5,\"update_ratio\":0.00125,\"drift\":0.0625},"
          "{\"layer\":\"fc2\",\"act_mean\":-0.5,\"act_std\":2,\"dead_relu\":null,\"grad_norm\":null,\"weight_norm\":null,\"update_ratio\":null,\"drift\":null}]}\n"
          "{\"event\":\"warning\",\"step\":20,\"kind\":\"vanishing_gradient\",\"layer\":\"fc7\",\"message\":\"layer 'fc7': vanishing gradient: gradient norm 1e-12\"}\n",
          f);
    fclose(f);
    int rc;
    char *s = print_to_string(dir, &rc);
    CHECK(rc == KN_OK, "print: %s", kn_ctx_message(ctx));
    const char *want[] = {"health at step 20 (latest of 2 checks)",
                          "layer",
                          "act mean",
                          "dead relu",
                          "update ratio",
                          "drift",
                          "\nfc1                     0.25         0.5     12.5%   1.230e-02   4.500e+00    1.250e-03    0.0625\n",
                          "\nfc2                     -0.5           2         -           -           -            -         -\n",
                          "warnings: 2",
                          "  step 10: layer 'relu3': 75.0% of its units are zero",
                          "  step 20: layer 'fc7': vanishing gradient: gradient norm 1e-12",
                          "guard events: 2",
                          "  step 15: NaN in the gradient of fc2.weight (op linear); step skipped",
                          "  step 17: grad_spike (action: clip) at op conv2d, layer 'conv1', tensor conv1.weight.grad",
                          "epoch 1 (step 20): train loss 0.5000  val loss 0.6250  gap (val - train) +0.1250  val accuracy 81.25%",
                          "epoch 2 (step 40): train loss 0.2500  val loss 0.5000  gap (val - train) +0.2500  val accuracy 87.50%",
                          "leakage: 3 test sample(s) also in the training set",
                          "1 unreadable lines"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) CHECK(strstr(s, want[i]) != NULL, "print: no '%s' in:\n%s", want[i], s);
    CHECK(strstr(s, "old") == NULL, "only the latest health event is shown:\n%s", s);
    /* the run was started and resumed twice: each time the check was recorded again */
    CHECK(count_str(s, "leakage: 3 test sample(s)") == 1 && count_str(s, "leakage: 0 validation sample(s)") == 1 &&
              count_str(s, "leakage: ") == 2,
          "one leakage line per set:\n%s", s);
    free(s);

    /* the file written by test 4 */
    snprintf(dir, sizeof dir, "%s/vanish", base);
    s = print_to_string(dir, &rc);
    CHECK(rc == KN_OK && strstr(s, "health at step 25 (latest of 25 checks)") && strstr(s, "\nfc1 ") &&
              strstr(s, "\nfc10 ") && strstr(s, "warnings: ") && strstr(s, "step 21: layer 'fc1': vanishing gradient") &&
              strstr(s, "guard events: 0"),
          "print of a real run (rc %d):\n%s", rc, s);
    free(s);

    /* errors */
    snprintf(dir, sizeof dir, "%s/no-such-run", base);
    s = print_to_string(dir, &rc);
    CHECK(rc == KN_ERR_IO && strstr(kn_ctx_message(ctx), dir) && strstr(kn_ctx_message(ctx), "not found") &&
              strstr(kn_ctx_message(ctx), "runs/NAME"),
          "missing dir: rc %d, '%s'", rc, kn_ctx_message(ctx));
    free(s);
    snprintf(dir, sizeof dir, "%s/empty", base);
    mkdir(dir, 0755);
    s = print_to_string(dir, &rc);
    CHECK(rc == KN_ERR_IO && strstr(kn_ctx_message(ctx), "metrics.jsonl") && strstr(kn_ctx_message(ctx), "kiln train"),
          "missing metrics.jsonl: rc %d, '%s'", rc, kn_ctx_message(ctx));
    free(s);
}

/* ---------------- 7. warnings that mean something ---------------- */
/* One health check on the current parameters (SGD lr 0: nothing moves unless the test
 * moves it); warnings go to wf. */
static void one_check(kn_health *h, kn_model *m, kn_rng *r, int64_t step, FILE *mf, FILE *wf) {
    fill_normal(kn_ptr(m->train, m->x_train), kn_numel(m->train, m->x_train), r);
    int32_t lab[64];
    int64_t nb = kn_shp(m->train, m->x_train)->d[0];
    for (int64_t i = 0; i < nb && i < 64; i++) lab[i] = (int32_t)kn_rng_below(r, NCLS);
    kn_model_set_targets(m, lab);
    kn_rt rt = {0};
    rt.step = step;
    kn_health_forward_backward(h, m, &rt);
    kn_health_after_update(h, m, step + 1, mf, wf);
}

static void test_dead_rule(void) {
    enum { U = 20 };
    char ini[512];
    snprintf(ini, sizeof ini, "[flat]\ntype = flatten\n[fc]\ntype = linear\nout = %d\nactivation = relu\n[out]\ntype = linear\nout = %d\n", U, NCLS);
    kn_model m;
    if (build("dead.ini", ini, 16, 1, 1, FEAT, NCLS, 5, &m)) return;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 1, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return; }
    float *W = kn_store_data(&m.store, kn_store_find(&m.store, "fc.weight"));
    float *B = kn_store_data(&m.store, kn_store_find(&m.store, "fc.bias"));
    /* units 0..11 (60%) never fire: weights 0, bias -100; the others always fire on some sample */
    for (int u = 0; u < U; u++) B[u] = u < 12 ? -100.0f : 1.0f;
    for (int u = 0; u < 12; u++) memset(W + u * FEAT, 0, FEAT * sizeof(float));
    FILE *wf = tmpfile();
    kn_rng r;
    kn_rng_seed(&r, 3);
    int64_t step = 0;
    for (int k = 0; k < 20; k++) one_check(h, &m, &r, step++, NULL, wf);
    const kn_health_layer *fc = NULL;
    for (int i = 0; i < kn_health_nlayers(h); i++)
        if (!strcmp(kn_health_get_layer(h, i)->layer, "fc")) fc = kn_health_get_layer(h, i);
    char *w = slurp(wf);
    CHECK(fc && fc->dead_relu == 0.6 && fc->dead_sustained == 0.6, "setup: fc dead %.3f sustained %.3f", fc ? fc->dead_relu : -1,
          fc ? fc->dead_sustained : -1);
    /* the old rule (more than half dead on a batch) warned at checks 1 and 11 */
    CHECK(count_str(w, "dead ReLUs") == 0, "a stable 60%% of silent units is no warning:\n%s", w);
    free(w);
    /* now one more unit dies at every check until all are dead, then they stay dead */
    long at = ftell(wf);
    for (int u = 12; u < U; u++) {
        B[u] = -100.0f;
        memset(W + u * FEAT, 0, FEAT * sizeof(float));
        one_check(h, &m, &r, step++, NULL, wf);
    }
    for (int k = 0; k < 4; k++) one_check(h, &m, &r, step++, NULL, wf);
    w = slurp(wf);
    int nd = count_str(w + at, "dead ReLUs");
    CHECK(nd >= 2 && nd <= 5 && strstr(w + at, "layer 'fc': 100.0% of its 20 units"), "dying units: %d warnings (want 2..5, the last at 100%%):\n%s", nd, w + at);
    free(w);
    at = ftell(wf);
    for (int k = 0; k < 20; k++) one_check(h, &m, &r, step++, NULL, wf);
    w = slurp(wf);
    CHECK(count_str(w + at, "dead ReLUs") == 0, "an unchanged dead layer is warned about once:\n%s", w + at);
    free(w);
    fclose(wf);
    kn_health_free(h);
    kn_model_free(&m);
}

/* A 4-D ReLU output: a unit is a channel (0 at every position for every sample). */
static void test_dead_channels(void) {
    enum { C = 16, HH = 4, WW = 4, NB = 8 };
    char ini[512];
    snprintf(ini, sizeof ini, "[conv]\ntype = conv2d\nout_channels = %d\nkernel = 1\nactivation = relu\n[flat]\ntype = flatten\n[out]\ntype = linear\nout = %d\n", C, NCLS);
    kn_model m;
    if (build("conv.ini", ini, NB, 1, HH, WW, NCLS, 5, &m)) return;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 1, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return; }
    float *W = kn_store_data(&m.store, kn_store_find(&m.store, "conv.weight"));
    const kn_store_entry *be = kn_store_find(&m.store, "conv.bias");
    float *B = be ? kn_store_data(&m.store, be) : NULL;
    for (int c = 0; c < C; c++) {
        W[c] = c == 3 ? 0.0f : 1.0f;
        if (B) B[c] = c == 3 ? -1.0f : 0.0f;
    }
    /* the left half of every image is negative: half of every channel's positions are 0
     * for every sample, but only channel 3 is dead */
    float *x = kn_ptr(m.train, m.x_train);
    kn_rng r;
    kn_rng_seed(&r, 9);
    for (int n = 0; n < NB; n++)
        for (int p = 0; p < HH * WW; p++) {
            float v = (float)fabs(kn_rng_normal(&r)) + 0.01f;
            x[n * HH * WW + p] = p % WW < WW / 2 ? -v : v;
        }
    int32_t lab[NB] = {0};
    kn_model_set_targets(&m, lab);
    kn_rt rt = {0};
    kn_health_forward_backward(h, &m, &rt);
    kn_health_after_update(h, &m, 1, NULL, NULL);
    const kn_health_layer *cl = kn_health_get_layer(h, 0);
    CHECK(cl && !strcmp(cl->layer, "conv") && cl->dead_relu == 1.0 / C, "conv: dead fraction %.4f, want 1/16 (channel 3 only)",
          cl ? cl->dead_relu : -1);
    kn_health_free(h);
    kn_model_free(&m);
}

/* A layer with no path to the loss receives no gradient by design: no warning. */
static void test_no_flow(const char *dir) {
    char d[1100];
    snprintf(d, sizeof d, "%s/noflow", dir);
    mkdir(d, 0755);
    char ini[512];
    snprintf(ini, sizeof ini, "[flat]\ntype = flatten\n[side]\ntype = linear\nout = 8\nactivation = relu\n[fc]\ntype = linear\ninput = flat\nout = %d\n", NCLS);
    char *w = run_warnings("side.ini", ini, 12, d);
    if (w) {
        CHECK(strstr(w, "layer 'side'") == NULL, "a layer that does not lead to the loss is no vanishing gradient:\n%s", w);
        free(w);
    }
    kn_model m;
    if (build("side.ini", ini, 16, 1, 1, FEAT, NCLS, 3, &m)) return;
    kn_health *h = NULL;
    if (!kn_health_create(ctx, &m, 1, &h)) {
        for (int i = 0; i < kn_health_nlayers(h); i++) {
            const kn_health_layer *p = kn_health_get_layer(h, i);
            CHECK(p->no_flow == !strcmp(p->layer, "side"), "layer %s: no_flow %d", p->layer, p->no_flow);
        }
    }
    kn_health_free(h);
    kn_model_free(&m);
}

static int overfit_count(const double *t, const double *v, int n, int64_t patience, int *first) {
    kn_overfit o;
    kn_overfit_init(&o, patience);
    int c = 0;
    *first = 0;
    char msg[768];
    for (int e = 0; e < n; e++)
        if (kn_overfit_epoch(&o, t[e], v[e], msg, sizeof msg)) {
            if (!c) *first = e + 1;
            c++;
        }
    return c;
}

static void test_overfit(const char *dir) {
    int first;
    /* examples/fashion_mnist_mlp.ini, measured (validation split 0.1, seed 1): one warning, at epoch 7 */
    static const double mt[10] = {0.4562, 0.3476, 0.3101, 0.2852, 0.2639, 0.2461, 0.2354, 0.2217, 0.2090, 0.1966};
    static const double mv[10] = {0.3676, 0.3474, 0.3459, 0.3363, 0.3097, 0.3269, 0.3206, 0.3204, 0.3167, 0.3247};
    int c = overfit_count(mt, mv, 10, 2, &first);
    CHECK(c == 1 && first == 7, "the MLP's curve: %d warnings (first at epoch %d), want 1 at epoch 7", c, first);
    /* a noisy plateau within 2% of the best: none */
    double t[20], v[20];
    for (int e = 0; e < 20; e++) { t[e] = 0.5 - 0.01 * e; v[e] = 0.5 + (e % 2 ? 0.004 : -0.002) + (e == 3 ? -0.004 : 0); }
    c = overfit_count(t, v, 20, 2, &first);
    CHECK(c == 0, "a plateau: %d warnings", c);
    /* a steady rise from epoch 3 on (+0.04 per epoch): warned when the excess reaches 0.08, 0.16, 0.32, 0.64 */
    for (int e = 0; e < 20; e++) { t[e] = 0.5 - 0.01 * e; v[e] = e < 3 ? 1.0 - 0.1 * e : 0.8 + 0.04 * (e - 2); }
    c = overfit_count(t, v, 20, 2, &first);
    CHECK(c == 4 && first == 5, "a steady rise: %d warnings (first at epoch %d), want 4 from epoch 5", c, first);
    /* training loss rising as much as validation: no growing gap, no overfitting */
    double t2[20];
    for (int e = 0; e < 20; e++) t2[e] = v[e] - 0.1;
    c = overfit_count(t2, v, 20, 2, &first);
    CHECK(c == 0, "both losses rising (no gap growth): %d warnings", c);
    /* patience 0: off */
    c = overfit_count(t, v, 20, 0, &first);
    CHECK(c == 0, "warn_worse_epochs = 0: %d warnings", c);
    /* replay: the state after epochs 1..8 read back from metrics.jsonl continues as if uninterrupted */
    char path[1200];
    snprintf(path, sizeof path, "%s/overfit-metrics.jsonl", dir);
    FILE *f = fopen(path, "w");
    for (int e = 0; e < 8; e++)
        fprintf(f, "{\"event\":\"step\",\"step\":%d,\"loss\":1}\n{\"event\":\"epoch\",\"epoch\":%d,\"step\":%d,\"train_loss\":%.17g,\"val_loss\":%.17g,\"val_accuracy\":0.5}\n",
                e, e + 1, e, t[e], v[e]);
    fclose(f);
    kn_overfit a, b;
    kn_overfit_init(&a, 2);
    kn_overfit_init(&b, 2);
    for (int e = 0; e < 8; e++) kn_overfit_epoch(&a, t[e], v[e], NULL, 0);
    CHECK(kn_overfit_replay(&b, path) == 8, "replay fed %lld epochs", (long long)b.epochs);
    int same = 1;
    for (int e = 8; e < 20; e++) same &= kn_overfit_epoch(&a, t[e], v[e], NULL, 0) == kn_overfit_epoch(&b, t[e], v[e], NULL, 0);
    CHECK(same && a.best == b.best && a.warned_excess == b.warned_excess, "the replayed state differs");
}

/* ---------------- 8. collapse ---------------- */
static void test_collapse_rule(void) {
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[flat]\ntype = flatten\n"
             "[br]\ntype = linear\nout = 8\nactivation = relu\n"
             "[gate]\ntype = linear\nout = %d\ninit = zeros\n"
             "[fc1]\ntype = linear\ninput = flat\nout = 16\nactivation = relu\n"
             "[head]\ntype = linear\nout = %d\n"
             "[sum]\ntype = add\ninput = gate, head\n",
             NCLS, NCLS);
    kn_model m;
    if (build("gate.ini", ini, 16, 1, 1, FEAT, NCLS, 4, &m)) return;
    kn_health *h = NULL;
    if (kn_health_create(ctx, &m, 1, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return; }
    kn_rng r;
    kn_rng_seed(&r, 5);
    double chance = log((double)NCLS);
    kn_collapse c;
    kn_collapse_init(&c, chance, 1);
    char msg[1024];
    /* the gate is closed (weights 0): no gradient reaches 'br', the rest learns; even at a
     * loss forced to chance level this is no collapse */
    one_check(h, &m, &r, 0, NULL, NULL);
    const kn_health_layer *br = kn_health_get_layer(h, 1);
    CHECK(br && !strcmp(br->layer, "br") && br->grad_norm == 0 && br->weight_norm > 0, "setup: br gets no gradient (%g)", br ? br->grad_norm : -1);
    CHECK(!kn_collapse_check(&c, h, 0, chance, msg, sizeof msg), "a gated-off branch is no collapse: %s", msg);
    /* the main path dies (fc1: weights 0, bias -1): nothing but the head's bias learns */
    float *W = kn_store_data(&m.store, kn_store_find(&m.store, "fc1.weight"));
    float *B = kn_store_data(&m.store, kn_store_find(&m.store, "fc1.bias"));
    memset(W, 0, (size_t)16 * FEAT * sizeof(float));
    for (int u = 0; u < 16; u++) B[u] = -1.0f;
    one_check(h, &m, &r, 1, NULL, NULL);
    CHECK(kn_collapse_check(&c, h, 1, chance, msg, sizeof msg) && strstr(msg, "layer 'fc1' is entirely dead"),
          "a dead main path at chance-level loss is a collapse: '%s'", msg);
    /* the same with a loss well below chance: the run still learns */
    one_check(h, &m, &r, 2, NULL, NULL);
    CHECK(!kn_collapse_check(&c, h, 2, 0.5 * chance, msg, sizeof msg), "a loss below chance is no collapse: %s", msg);
    /* need = 2: one collapsed check is not yet a collapse */
    kn_collapse_init(&c, chance, 2);
    one_check(h, &m, &r, 3, NULL, NULL);
    CHECK(!kn_collapse_check(&c, h, 3, chance, msg, sizeof msg) && c.streak == 1, "need 2: the first check");
    one_check(h, &m, &r, 4, NULL, NULL);
    CHECK(kn_collapse_check(&c, h, 4, chance, msg, sizeof msg) && c.first_step == 3 && c.last_healthy == -1, "need 2: the second check");
    kn_health_free(h);
    kn_model_free(&m);
    /* nearly dead and stuck: 19 of 20 units dead, the gradient still flows through the
     * last one; a collapse only after 5 checks at chance in a row */
    snprintf(ini, sizeof ini, "[flat]\ntype = flatten\n[fc]\ntype = linear\nout = 20\nactivation = relu\n[out]\ntype = linear\nout = %d\n", NCLS);
    if (build("stuck.ini", ini, 16, 1, 1, FEAT, NCLS, 4, &m)) return;
    if (kn_health_create(ctx, &m, 1, &h)) { CHECK(0, "%s", kn_ctx_message(ctx)); kn_model_free(&m); return; }
    W = kn_store_data(&m.store, kn_store_find(&m.store, "fc.weight"));
    B = kn_store_data(&m.store, kn_store_find(&m.store, "fc.bias"));
    for (int u = 0; u < 20; u++) B[u] = u ? -100.0f : 100.0f;
    memset(W + FEAT, 0, (size_t)19 * FEAT * sizeof(float));
    kn_collapse_init(&c, chance, 1);
    int fired = 0, at = -1;
    for (int k = 0; k < 6 && !fired; k++) {
        one_check(h, &m, &r, k, NULL, NULL);
        fired = kn_collapse_check(&c, h, k, chance, msg, sizeof msg);
        at = k;
    }
    CHECK(fired && at == KN_COLLAPSE_STUCK - 1 && strstr(msg, "95.0% of the ReLU units of layer 'fc' are dead") && c.last_healthy == -1,
          "nearly dead and stuck: fired %d at check %d: '%s'", fired, at, msg);
    kn_collapse_init(&c, chance, 1);
    for (int k = 0; k < 8; k++) {
        one_check(h, &m, &r, k, NULL, NULL);
        CHECK(!kn_collapse_check(&c, h, k, 0.8 * chance, msg, sizeof msg), "nearly dead but learning (loss below chance): %s", msg);
    }
    kn_health_free(h);
    kn_model_free(&m);
    uint8_t lab[10] = {0, 1, 0, 1, 0, 1, 0, 1, 0, 1};
    CHECK(fabs(kn_label_entropy(lab, NULL, 10, 10) - log(2.0)) < 1e-12, "entropy of two balanced classes");
    int64_t idx[2] = {0, 2};
    CHECK(kn_label_entropy(lab, idx, 2, 10) == 0, "entropy of one class");
}

/* ---------------- 9. the default validation split ---------------- */
static void test_val_split(const char *dir) {
    /* the default job, examples/fashion_mnist_cnn.ini (seed 1), on a synthetic 28x28 set */
    kn_test_make_images(dir, "vdata", 500, 28, 28);
    char dset[1200];
    snprintf(dset, sizeof dset, "data.dir=%s/vdata", dir);
    kn_config *cfg = NULL;
    kn_settings st;
    kn_job a, b, c2;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c2, 0, sizeof c2);
    int rc = kn_config_load(ctx, kn_test_src("examples/fashion_mnist_cnn.ini"), &cfg);
    rc = rc ? rc : kn_config_set(ctx, cfg, dset);
    rc = rc ? rc : kn_settings_read(ctx, cfg, &st);
    CHECK(rc == KN_OK && st.val_split == 0.1, "default validation_split %.3f: %s", rc ? -1 : st.val_split, kn_ctx_message(ctx));
    if (!rc) rc = kn_job_open(ctx, cfg, &st, 1, &a);
    if (!rc) rc = kn_job_open(ctx, cfg, &st, 1, &b);
    CHECK(rc == KN_OK, "job: %s", kn_ctx_message(ctx));
    if (!rc) {
        CHECK(a.val_loader && a.nval == 50 && a.ntrain == 450, "validation %lld, training %lld of 500", (long long)a.nval, (long long)a.ntrain);
        unsigned char seen[500] = {0};
        int ok = 1;
        for (int64_t i = 0; i < a.ntrain; i++) { ok &= a.train_idx[i] >= 0 && a.train_idx[i] < 500 && !seen[a.train_idx[i]]; seen[a.train_idx[i]] = 1; }
        for (int64_t i = 0; i < a.nval; i++) { ok &= a.val_idx[i] >= 0 && a.val_idx[i] < 500 && !seen[a.val_idx[i]]; seen[a.val_idx[i]] = 2; }
        CHECK(ok, "training and validation indices overlap or repeat");
        CHECK(b.nval == a.nval && !memcmp(a.val_idx, b.val_idx, (size_t)a.nval * sizeof *a.val_idx), "the split is not reproducible");
        st.seed = 2;
        if (kn_job_open(ctx, cfg, &st, 1, &c2) == KN_OK)
            CHECK(memcmp(a.val_idx, c2.val_idx, (size_t)a.nval * sizeof *a.val_idx) != 0, "another seed, the same split");
        /* the test set is another file: the validation samples are training samples */
        CHECK(a.test_ds.n == 500 && a.test_ds.images != a.train_ds.images, "test set");
    }
    kn_job_close(&a);
    kn_job_close(&b);
    kn_job_close(&c2);
    kn_config_free(cfg);
}

int main(void) {
    ctx = kn_ctx_new();
    const char *dir = kn_test_tmpdir("health");
    double t = kn_now_seconds();
    test_bit_identical();
    printf("[%.2f s]\n", kn_now_seconds() - t);
    test_stats();
    printf("[%.2f s]\n", kn_now_seconds() - t);
    /* 3 and 4 train small models for hundreds of steps: one thread (threads only add
     * synchronisation there, and much of it on a busy machine); 1 and 5 use them all */
    int threads = kn_get_threads();
    kn_set_threads(1);
    test_drift();
    printf("[%.2f s]\n", kn_now_seconds() - t);
    test_vanishing(dir);
    printf("[%.2f s]\n", kn_now_seconds() - t);
    kn_set_threads(threads);
    test_leakage();
    printf("[%.2f s]\n", kn_now_seconds() - t);
    test_print(dir);
    kn_set_threads(1);
    test_dead_rule();
    test_dead_channels();
    test_no_flow(dir);
    test_overfit(dir);
    test_collapse_rule();
    kn_set_threads(threads);
    test_val_split(dir);
    printf("(%.1f s)\n", kn_now_seconds() - t);
    kn_ctx_free(ctx);
    return kn_test_finish("test_health");
}
