/* One class label per position (the sequence targets of issue 11; the text models of the
 * next issue train on them):
 *  - evaluation of a linear layer over [batch, positions, features] with set weights:
 *    the eval graph's cross-entropy (mean over positions) and accuracy (over positions)
 *    against a closed form computed here in double, with a last batch that is padded;
 *  - training through config only on .npy files written here, features (N, T, F) and
 *    labels (N, T): the test accuracy is high (the rule is learnable per position),
 *    `kiln eval` gives the same figure, and `kn_predict` writes one row per sample and
 *    position from which this test counts exactly the accuracy that training reported;
 *  - a last layer that does not fit the per-position labels is an error that says so. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "data/source.h"
#include "nn/model.h"
#include "train/trainer.h"
#include "testutil.h"

enum { N = 7, T = 3, F = 2, K = 3, EB = 3 };

static double near(double a, double b) { return fabs(a - b) <= 1e-5 * (1.0 + fabs(b)); }

static float xval(int i, int t, int f) { return (float)(0.25 * ((i * 7 + t * 3 + f * 5) % 11) - 1.2); }

static void test_eval_closed_form(void) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "t.ini", "[train]\nmetrics = accuracy, top2_accuracy\n[fc]\ntype = linear\nout = 3\n",
                                    &cfg);
    CHECK(rc == 0, "config: %s", kn_ctx_message(ctx));
    kn_data_desc d;
    memset(&d, 0, sizeof d);
    d.ninputs = 1;
    strcpy(d.in[0].name, "features");
    d.in[0].dtype = KN_F32;
    d.in[0].shape = kn_shape2(T, F);
    d.target = kn_shape1(T);
    d.nclasses = K;
    kn_model m;
    rc = kn_model_build_desc(ctx, cfg, 0, EB, &d, &m);
    kn_config_free(cfg);
    CHECK(rc == 0, "model over [batch, %d, %d] with per-position labels: %s", T, F, kn_ctx_message(ctx));
    if (rc) { kn_ctx_free(ctx); return; }
    const float W[K * F] = {1, -0.5f, 0.25f, 1, -1, 0.5f}, B[K] = {0.1f, 0, -0.2f};
    memcpy(kn_store_data(&m.store, kn_store_find(&m.store, "fc.weight")), W, sizeof W);
    memcpy(kn_store_data(&m.store, kn_store_find(&m.store, "fc.bias")), B, sizeof B);
    float *x = malloc(sizeof(float) * N * T * F);
    int32_t *y = malloc(sizeof(int32_t) * N * T);
    for (int i = 0; i < N; i++)
        for (int t = 0; t < T; t++) {
            for (int f = 0; f < F; f++) x[(i * T + t) * F + f] = xval(i, t, f);
            y[i * T + t] = (i + 2 * t) % K;
        }
    kn_table tab;
    memset(&tab, 0, sizeof tab);
    kn_shape xs = kn_shape2(T, F), ys = kn_shape1(T);
    rc = kn_table_add(ctx, &tab, "features", KN_FIELD_INPUT, KN_F32, &xs, N, x);
    if (!rc) rc = kn_table_add(ctx, &tab, "target", KN_FIELD_CLASS, KN_I32, &ys, N, y);
    kn_loader *L = NULL;
    kn_loader_config lc = {0};
    lc.table = &tab;
    lc.x_field = 0;
    lc.y_field = 1;
    lc.batch = EB;
    if (!rc) rc = kn_loader_create(ctx, &lc, &L);
    CHECK(rc == 0, "table and loader: %s", kn_ctx_message(ctx));
    kn_eval_metrics em;
    rc = rc ? rc : kn_evaluate_metrics(&m, L, 1, &em);
    /* closed form: float32 logits, the loss in double; each batch's loss is the mean over
     * its valid positions, the set's the mean of those weighted by the batch's samples */
    double want = 0;
    int correct = 0, top2 = 0;
    for (int b0 = 0; b0 < N; b0 += EB) {
        const int cnt = b0 + EB <= N ? EB : N - b0;
        double ls = 0;
        for (int i = b0; i < b0 + cnt; i++)
            for (int t = 0; t < T; t++) {
                double z[K], mx = -1e300, s = 0;
                const int lab = y[i * T + t];
                for (int k = 0; k < K; k++) {
                    double v = B[k];
                    for (int f = 0; f < F; f++) v += (double)W[k * F + f] * (double)x[(i * T + t) * F + f];
                    z[k] = (float)v;
                    if (z[k] > mx) mx = z[k];
                }
                for (int k = 0; k < K; k++) s += exp(z[k] - mx);
                ls += mx + log(s) - z[lab];
                int arg = 0, rank = 0;
                for (int k = 1; k < K; k++)
                    if (z[k] > z[arg]) arg = k;
                for (int k = 0; k < K; k++) rank += z[k] > z[lab] || (z[k] == z[lab] && k < lab);
                correct += arg == lab;
                top2 += rank < 2;
            }
        want += ls / (cnt * T) * cnt;
    }
    want /= N;
    CHECK(rc == 0 && em.n == N, "%d samples evaluated (rc %d)", (int)em.n, rc);
    CHECK(near(em.loss, want), "per-position loss %.9g, closed form %.9g", em.loss, want);
    CHECK(near(em.accuracy, (double)correct / (N * T)), "per-position accuracy %.9g, closed form %d/%d", em.accuracy, correct,
          N * T);
    CHECK(em.nmetrics == 2 && near(em.values[1], (double)top2 / (N * T)), "per-position top-2 accuracy %.9g, closed form %d/%d",
          em.nmetrics == 2 ? em.values[1] : NAN, top2, N * T);
    kn_loader_free(L);
    kn_table_free(&tab);
    kn_model_free(&m);
    kn_ctx_free(ctx);
}

/* a .npy version 1.0 file: little-endian float32 or int32, C order */
static int write_npy(const char *path, const char *descr, const int64_t *shape, int nd, const void *data, size_t bytes) {
    char dict[256], sh[128] = "";
    size_t o = 0;
    for (int k = 0; k < nd; k++) o += (size_t)snprintf(sh + o, sizeof sh - o, "%lld,%s", (long long)shape[k], k + 1 < nd ? " " : "");
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    const uint16_t hl = (uint16_t)(n + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hl & 0xff, f);
    fputc(hl >> 8, f);
    fwrite(dict, 1, (size_t)n, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    fwrite(data, 1, bytes, f);
    return fclose(f);
}

enum { TN = 600, SN = 150, ST = 5, SF = 4, SK = 3 };

/* label at a position: the largest of its first three features (the fourth is noise) */
static void make_set(const char *dir, const char *name, int n, uint64_t seed, int32_t **labels_out) {
    float *x = malloc(sizeof(float) * (size_t)n * ST * SF);
    int32_t *y = malloc(sizeof(int32_t) * (size_t)n * ST);
    uint64_t s = seed;
    for (int i = 0; i < n * ST; i++) {
        int arg = 0;
        for (int f = 0; f < SF; f++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            x[i * SF + f] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
            if (f < SK && x[i * SF + f] > x[i * SF + arg]) arg = f;
        }
        y[i] = arg;
    }
    char p[700];
    const int64_t xs[3] = {n, ST, SF}, ys[2] = {n, ST};
    snprintf(p, sizeof p, "%s/%s_x.npy", dir, name);
    CHECK(write_npy(p, "<f4", xs, 3, x, sizeof(float) * (size_t)n * ST * SF) == 0, "write %s", p);
    snprintf(p, sizeof p, "%s/%s_y.npy", dir, name);
    CHECK(write_npy(p, "<i4", ys, 2, y, sizeof(int32_t) * (size_t)n * ST) == 0, "write %s", p);
    free(x);
    *labels_out = y;
}

static const char *CFG =
    "[data]\nsource = npy\npath = %s/train_x.npy\ntargets_path = %s/train_y.npy\n"
    "test_path = %s/test_x.npy\ntest_targets_path = %s/test_y.npy\nbatch_size = 32\n"
    "[train]\nepochs = 15\nseed = 1\n[optimizer]\ntype = adam\nlr = 0.01\n"
    "[fc1]\ntype = linear\nout = 32\nactivation = relu\n[fc2]\ntype = linear\nout = %d\n";

static void test_train_predict(void) {
    const char *dir = kn_test_tmpdir("test_positions");
    int32_t *ytr, *yte;
    make_set(dir, "train", TN, 11, &ytr);
    make_set(dir, "test", SN, 12, &yte);
    free(ytr);
    kn_ctx *ctx = kn_ctx_new();
    char text[2048], rd[700], out[800];
    snprintf(text, sizeof text, CFG, dir, dir, dir, dir, SK);
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "positions.ini", text, &cfg);
    CHECK(rc == 0, "config: %s", kn_ctx_message(ctx));
    snprintf(rd, sizeof rd, "%s/run", dir);
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s-bad'", rd, rd);
    if (system(cmd)) {}
    kn_train_options o;
    kn_train_options_init(&o);
    o.run_dir = rd;
    o.quiet = 1;
    o.threads = 2;
    kn_train_result res;
    memset(&res, 0, sizeof res);
    rc = rc ? rc : kn_train(ctx, cfg, &o, &res);
    CHECK(rc == 0, "train on per-position labels: %s", kn_ctx_message(ctx));
    printf("per-position training: test accuracy %.4f over %lld samples x %d positions\n", res.test_accuracy,
           (long long)res.test_samples, ST);
    CHECK(res.test_accuracy >= 0.9, "per-position test accuracy %.4f < 0.9", res.test_accuracy);
    kn_train_result ev;
    rc = kn_eval(ctx, rd, 2, &ev);
    CHECK(rc == 0 && ev.test_accuracy == res.test_accuracy, "kn_eval gives %.9g, training ended at %.9g (%s)", ev.test_accuracy,
          res.test_accuracy, kn_ctx_message(ctx));
    /* predictions, counted here against the labels */
    char in[700];
    snprintf(in, sizeof in, "%s/test_x.npy", dir);
    snprintf(out, sizeof out, "%s/pred.csv", dir);
    rc = kn_predict(ctx, rd, in, out, 0, 2);
    CHECK(rc == 0, "kn_predict: %s", kn_ctx_message(ctx));
    FILE *f = fopen(out, "r");
    char line[1024];
    int rows = 0, correct = 0, order_ok = 1;
    if (f && fgets(line, sizeof line, f)) {
        CHECK(!strncmp(line, "index,position,class,prob_0,prob_1,prob_2", 41), "header: %s", line);
        while (fgets(line, sizeof line, f)) {
            long i, t, c;
            if (sscanf(line, "%ld,%ld,%ld", &i, &t, &c) != 3) { order_ok = 0; break; }
            if (i != rows / ST || t != rows % ST) order_ok = 0;
            correct += i < SN && t < ST && c == yte[i * ST + t];
            rows++;
        }
    }
    if (f) fclose(f);
    CHECK(order_ok && rows == SN * ST, "%d prediction rows (want %d, one per sample and position, in order)", rows, SN * ST);
    CHECK((double)correct / (SN * ST) == res.test_accuracy, "accuracy from the predictions %d/%d = %.9g, training reported %.9g",
          correct, SN * ST, (double)correct / (SN * ST), res.test_accuracy);
    kn_config_free(cfg);
    /* a model that flattens the positions away cannot fit per-position labels */
    snprintf(text, sizeof text,
             "[data]\nsource = npy\npath = %s/train_x.npy\ntargets_path = %s/train_y.npy\ntest_split = 0.2\n"
             "[flat]\ntype = flatten\n[fc]\ntype = linear\nout = 3\n",
             dir, dir);
    rc = kn_config_parse_string(ctx, "positions.ini", text, &cfg);
    snprintf(rd, sizeof rd, "%s/run-bad", dir);
    o.run_dir = rd;
    rc = rc ? rc : kn_train(ctx, cfg, &o, &res);
    CHECK(rc == KN_ERR_SHAPE && strstr(kn_ctx_message(ctx), "one label per position") &&
              strstr(kn_ctx_message(ctx), "[64,5,3]"),
          "a model whose output does not fit per-position labels: rc %d, %s", rc, kn_ctx_message(ctx));
    kn_config_free(cfg);
    free(yte);
    kn_ctx_free(ctx);
}

int main(void) {
    test_eval_closed_form();
    test_train_predict();
    return kn_test_finish("test_positions");
}
