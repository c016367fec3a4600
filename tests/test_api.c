/* Tests of the public session API (include/kiln.h, src/api/session.c) on a small
 * synthetic CSV regression: a config from code trains exactly as the same config from
 * text, epochs wrap, evaluation and prediction agree, a saved model reopens with the same
 * predictions bit for bit; and the error paths (bad config text, an unknown key, a
 * missing data file, predict with wrong sizes, save to an unwritable path, weights of
 * another model, a split that does not exist) return an error code with a clear message. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <unistd.h>

#include "kiln.h"
#include "testutil.h"

static kn_ctx *ctx;
static char dir[1024], csv[1200];

static int has(const char *sub) { return strstr(kn_ctx_message(ctx), sub) != NULL; }

/* 80 rows of y = 2 x0 - x1 + 0.5 x2 + 3 (+ a little deterministic noise), no header */
static void write_csv(void) {
    snprintf(csv, sizeof csv, "%s/lin.csv", dir);
    FILE *f = fopen(csv, "w");
    if (!f) { perror(csv); exit(1); }
    unsigned s = 12345;
    for (int i = 0; i < 80; i++) {
        double x[3];
        for (int k = 0; k < 3; k++) { s = s * 1103515245u + 12345u; x[k] = (double)((s >> 16) % 2000) / 100.0 - 10.0; }
        s = s * 1103515245u + 12345u;
        double noise = (double)((s >> 16) % 100) / 1000.0 - 0.05;
        fprintf(f, "%.2f,%.2f,%.2f,%.4f\n", x[0], x[1], x[2], 2 * x[0] - x[1] + 0.5 * x[2] + 3 + noise);
    }
    fclose(f);
}

static const char *settings_fmt[] = {"data.source=csv", "data.path=%s", "data.header=false", "data.target_type=real",
                                     "data.test_split=0.25", "data.split_seed=7", "data.batch_size=8", "data.eval_batch_size=16",
                                     "train.epochs=60", "train.seed=3", "optimizer.type=adam", "optimizer.lr=0.3",
                                     "fc1.type=linear", "fc1.out=1", NULL};

static kn_config *config_from_code(const char *path) {
    kn_config *cfg = NULL;
    CHECK(kn_config_new(ctx, "lin (code)", &cfg) == KN_OK, "%s", kn_ctx_message(ctx));
    for (int i = 0; cfg && settings_fmt[i]; i++) {
        char a[1400];
        snprintf(a, sizeof a, settings_fmt[i], path);
        CHECK(kn_config_set(ctx, cfg, a) == KN_OK, "%s: %s", a, kn_ctx_message(ctx));
    }
    return cfg;
}

static kn_config *config_from_text(const char *path, const char *extra) {
    char text[4000];
    snprintf(text, sizeof text,
             "[data]\nsource = csv\npath = %s\nheader = false\ntarget_type = real\ntest_split = 0.25\nsplit_seed = 7\n"
             "batch_size = 8\neval_batch_size = 16\n%s\n[train]\nepochs = 60\nseed = 3\n[optimizer]\ntype = adam\nlr = 0.3\n"
             "[fc1]\ntype = linear\nout = 1\n",
             path, extra ? extra : "");
    kn_config *cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "lin.ini", text, &cfg) == KN_OK, "%s", kn_ctx_message(ctx));
    return cfg;
}

static void test_train_predict_save(void) {
    kn_config *a = config_from_code(csv), *b = config_from_text(csv, NULL);
    if (!a || !b) return;
    char *text = kn_config_to_text(a);
    CHECK(text && strstr(text, "[fc1]") && strstr(text, "type = linear"), "config text: %s", text ? text : "(null)");
    free(text);
    kn_session *s = NULL, *t = NULL;
    CHECK(kn_session_new(ctx, a, NULL, &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_session_new(ctx, b, NULL, &t) == KN_OK, "%s", kn_ctx_message(ctx));
    kn_config_free(a); /* the session keeps its own copy */
    kn_config_free(b);
    if (!s || !t) { kn_session_free(s); kn_session_free(t); return; }
    /* 80 rows: 60 train+validation, 0.1 of them (6) validation, 54 training rows, 6 batches of 8 */
    CHECK(kn_session_steps_per_epoch(s) == 6, "steps per epoch %lld", (long long)kn_session_steps_per_epoch(s));
    CHECK(kn_session_input_size(s) == 3 && kn_session_output_size(s) == 1, "sizes %lld %lld",
          (long long)kn_session_input_size(s), (long long)kn_session_output_size(s));
    CHECK(kn_session_epochs(s) == 60, "epochs %lld", (long long)kn_session_epochs(s));
    /* step by step (from code) and epoch by epoch (from text): the same losses */
    int same = 1;
    for (int e = 0; e < 60; e++) {
        double sum = 0, l = 0, m = 0;
        for (int k = 0; k < 6; k++) {
            CHECK(kn_session_train_step(s, &l) == KN_OK, "%s", kn_ctx_message(ctx));
            sum += l;
        }
        CHECK(kn_session_epoch(s) == e + 1, "epoch %lld after %d", (long long)kn_session_epoch(s), e + 1);
        CHECK(kn_session_train_epoch(t, &m) == KN_OK, "%s", kn_ctx_message(ctx));
        same = same && sum / 6 == m;
    }
    CHECK(same, "config from code and from text trained differently");
    CHECK(kn_session_steps_done(s) == 360 && kn_session_steps_done(t) == 360, "steps %lld %lld",
          (long long)kn_session_steps_done(s), (long long)kn_session_steps_done(t));
    kn_metrics v, te;
    CHECK(kn_session_evaluate(s, KN_SPLIT_VALIDATION, &v) == KN_OK && v.n == 6, "%s", kn_ctx_message(ctx));
    CHECK(kn_session_evaluate(s, KN_SPLIT_TEST, &te) == KN_OK && te.n == 20, "%s", kn_ctx_message(ctx));
    CHECK(te.r2 > 0.95 && isnan(te.accuracy), "test R^2 %g accuracy %g", te.r2, te.accuracy);
    /* a partial epoch, then train_epoch finishes it */
    double l;
    CHECK(kn_session_train_step(s, &l) == KN_OK && kn_session_train_epoch(s, &l) == KN_OK && kn_session_steps_done(s) == 366 &&
              kn_session_epoch(s) == 61, "steps %lld epoch %lld", (long long)kn_session_steps_done(s), (long long)kn_session_epoch(s));

    /* predictions: an exact line y = 2 x0 - x1 + 0.5 x2 + 3 is learnt closely */
    const float x[6] = {1, 2, 3, -4, 0, 2};
    float p[2] = {0, 0}, q[2] = {1, 1};
    CHECK(kn_session_predict(s, x, 2, 3, p, 2) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(fabs(p[0] - 4.5) < 0.5 && fabs(p[1] - (-4.0)) < 0.5, "predictions %g %g", p[0], p[1]);
    /* more samples than one evaluation batch (16): in chunks, each as when predicted alone */
    float xs[40 * 3], ys[40], y1;
    for (int i = 0; i < 40 * 3; i++) xs[i] = (float)((i * 37) % 19) - 9.0f;
    CHECK(kn_session_predict(s, xs, 40, 3, ys, 40) == KN_OK, "%s", kn_ctx_message(ctx));
    int alike = 1;
    for (int i = 0; i < 40; i++) alike = alike && kn_session_predict(s, xs + 3 * i, 1, 3, &y1, 1) == KN_OK && y1 == ys[i];
    CHECK(alike, "40 samples at once differ from one at a time");
    /* save, open into a fresh session and load into another: the same bits */
    char model[1300], other[1300];
    snprintf(model, sizeof model, "%s/lin.safetensors", dir);
    CHECK(kn_session_save(s, model) == KN_OK, "%s", kn_ctx_message(ctx));
    kn_session *r = NULL;
    CHECK(kn_session_open(ctx, model, NULL, &r) == KN_OK, "%s", kn_ctx_message(ctx));
    if (r) {
        CHECK(kn_session_predict(r, x, 2, 3, q, 2) == KN_OK && memcmp(p, q, sizeof p) == 0, "reopened: %.9g %.9g vs %.9g %.9g", q[0],
              q[1], p[0], p[1]);
        kn_metrics rt;
        CHECK(kn_session_evaluate(s, KN_SPLIT_TEST, &te) == KN_OK && kn_session_evaluate(r, KN_SPLIT_TEST, &rt) == KN_OK &&
                  rt.r2 == te.r2 && rt.loss == te.loss,
              "reopened test R^2 %.17g vs %.17g", rt.r2, te.r2);
        kn_session_free(r);
    }
    q[0] = q[1] = 0;
    CHECK(kn_session_load_weights(t, model) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_session_predict(t, x, 2, 3, q, 2) == KN_OK && memcmp(p, q, sizeof p) == 0, "loaded: %.9g %.9g", q[0], q[1]);
    /* kiln eval reads the saved model */
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "\"%s\" eval \"%s\" >/dev/null 2>&1", getenv("KN_BIN") ? getenv("KN_BIN") : "./kiln", model);
    CHECK(kn_test_system(cmd) == 0, "%s failed", cmd);

    /* ---- errors ---- */
    /* predict with wrong sizes */
    CHECK(kn_session_predict(s, x, 2, 4, p, 2) == KN_ERR_SHAPE && has("4 floats") && has("3 per sample"), "%s", kn_ctx_message(ctx));
    CHECK(kn_session_predict(s, x, 2, 3, p, 1) == KN_ERR_SHAPE && has("room for 1") && has("need 2"), "%s", kn_ctx_message(ctx));
    CHECK(kn_session_predict(s, x, -1, 3, p, 2) == KN_ERR_INVALID && has("n < 0"), "%s", kn_ctx_message(ctx));
    CHECK(kn_session_predict(s, NULL, 2, 3, p, 2) == KN_ERR_INVALID && has("x is NULL"), "%s", kn_ctx_message(ctx));
    CHECK(kn_session_predict(s, x, 0, 3, NULL, 0) == KN_OK, "n = 0: %s", kn_ctx_message(ctx));
    /* save to an unwritable path */
    CHECK(kn_session_save(s, "/nonexistent-kiln-dir/m.safetensors") == KN_ERR_IO && has("/nonexistent-kiln-dir"), "%s",
          kn_ctx_message(ctx));
    CHECK(kn_session_save(s, NULL) == KN_ERR_INVALID && has("no path"), "%s", kn_ctx_message(ctx));
    /* weights that are not there, or of another model */
    CHECK(kn_session_load_weights(s, "/nonexistent-kiln-dir/m.safetensors") == KN_ERR_IO && has("/nonexistent-kiln-dir"), "%s",
          kn_ctx_message(ctx));
    kn_config *c2 = config_from_text(csv, NULL);
    kn_session *w = NULL;
    if (c2 && kn_config_set(ctx, c2, "fc1.out=8") == KN_OK && kn_config_set(ctx, c2, "fc2.type=linear") == KN_OK &&
        kn_config_set(ctx, c2, "fc2.out=1") == KN_OK && kn_session_new(ctx, c2, NULL, &w) == KN_OK) {
        snprintf(other, sizeof other, "%s/mlp.safetensors", dir);
        CHECK(kn_session_save(w, other) == KN_OK, "%s", kn_ctx_message(ctx));
        CHECK(kn_session_load_weights(s, other) != KN_OK && kn_ctx_message(ctx)[0], "loading another model's weights: %d",
              kn_ctx_code(ctx));
        CHECK(kn_session_predict(s, x, 2, 3, q, 2) == KN_OK, "%s", kn_ctx_message(ctx));
    } else {
        CHECK(0, "second model: %s", kn_ctx_message(ctx));
    }
    kn_session_free(w);
    kn_config_free(c2);
    CHECK(kn_session_evaluate(s, (kn_split)9, &v) == KN_ERR_INVALID && has("which = 9"), "%s", kn_ctx_message(ctx));
    kn_session_free(s);
    kn_session_free(t);

    /* no validation split: evaluating it says so */
    kn_config *nv = config_from_text(csv, "validation_split = 0");
    kn_session *n = NULL;
    CHECK(nv && kn_session_new(ctx, nv, NULL, &n) == KN_OK, "%s", kn_ctx_message(ctx));
    if (n) CHECK(kn_session_evaluate(n, KN_SPLIT_VALIDATION, &v) == KN_ERR_INVALID && has("validation_split"), "%s", kn_ctx_message(ctx));
    kn_session_free(n);
    kn_config_free(nv);
}

static void test_config_errors(void) {
    kn_config *cfg = NULL;
    /* bad config text */
    CHECK(kn_config_parse_string(ctx, "bad.ini", "[data\nsource = csv\n", &cfg) == KN_ERR_CONFIG && has("bad.ini"), "%s",
          kn_ctx_message(ctx));
    CHECK(cfg == NULL, "no config on error");
    CHECK(kn_config_new(ctx, "x", &cfg) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_config_set(ctx, cfg, "no dot or equals") == KN_ERR_INVALID && kn_ctx_message(ctx)[0], "%s", kn_ctx_message(ctx));
    kn_config_free(cfg);
    /* an unknown key: the session refuses it, naming it */
    cfg = config_from_text(csv, "batch_sizee = 4");
    kn_session *s = (kn_session *)1;
    CHECK(cfg && kn_session_new(ctx, cfg, NULL, &s) == KN_ERR_CONFIG && has("batch_sizee") && s == NULL, "%s", kn_ctx_message(ctx));
    kn_config_free(cfg);
    /* a missing data file */
    cfg = config_from_text("/nonexistent-kiln-dir/data.csv", NULL);
    s = NULL;
    CHECK(cfg && kn_session_new(ctx, cfg, NULL, &s) == KN_ERR_IO && has("/nonexistent-kiln-dir/data.csv") && s == NULL, "%d %s",
          kn_ctx_code(ctx), kn_ctx_message(ctx));
    kn_config_free(cfg);
    /* no config, no out */
    CHECK(kn_session_new(ctx, NULL, NULL, &s) == KN_ERR_INVALID && has("no config"), "%s", kn_ctx_message(ctx));
    /* a model file that is not one */
    char junk[1300];
    snprintf(junk, sizeof junk, "%s/junk.safetensors", dir);
    kn_test_write(dir, "junk.safetensors", "not a safetensors file");
    CHECK(kn_session_open(ctx, junk, NULL, &s) != KN_OK && has("junk.safetensors") && s == NULL, "%s", kn_ctx_message(ctx));
    CHECK(kn_session_open(ctx, "/nonexistent-kiln-dir/m.safetensors", NULL, &s) == KN_ERR_IO, "%s", kn_ctx_message(ctx));
    /* NULL sessions are refused, not dereferenced */
    CHECK(kn_session_train_step(NULL, NULL) == KN_ERR_INVALID && kn_session_steps_per_epoch(NULL) == 0, "NULL session");
    kn_session_free(NULL);
}

int main(void) {
    ctx = kn_ctx_new();
    snprintf(dir, sizeof dir, "%s", kn_test_tmpdir("api"));
    write_csv();
    test_config_errors();
    test_train_predict_save();
    kn_ctx_free(ctx);
    return kn_test_finish("test_api");
}
