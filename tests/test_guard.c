/* The non-finite guard, through the kiln command:
 *  - a model built to fail at a known op (BatchNorm with eps = 0 after a layer whose
 *    output is constant: 0/0 in layer 'bn3') is reported with that op, layer and tensor,
 *    under each policy (stop; rollback up to the retry limit; skip);
 *  - an unstable deep plain MLP (12 layers, 50x the stable learning rate) goes NaN without
 *    the guard within its first steps (at 10x it diverged or died depending on the data
 *    order and the CPU's rounding), and with the guard (rollback, learning rate x0.1)
 *    completes, reaching an accuracy within 2 points of the same network with a stable
 *    learning rate;
 *  - guard events are recorded in metrics.jsonl;
 *  - early stopping restores the best checkpoint of a run built to overfit;
 *  - the train/test leakage check counts constructed duplicates;
 *  - a collapsed run (a learning rate that warms up to far too much: every ReLU of a
 *    layer dies, the loss stays at chance) is detected, explained and recovered from by
 *    a rollback with a smaller learning rate — without the collapse check it ends at
 *    chance; a network dead from its initialisation is explained and stopped;
 *  - the default jobs (examples/fashion_mnist_cnn.ini, fashion_mnist_mlp.ini), scaled
 *    down to a synthetic 28x28 set, raise no guard event, no dead-ReLU warning and no
 *    collapse, and validate on a split of the training set;
 *  - an overfitting run is warned about a few times, not at every epoch;
 *  - `kiln health` prints the leakage line once after a run resumed twice. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "train/checkpoint.h"

static char D[1024];
static char g_out[1 << 16], g_err[1 << 16];




static int run(const char *args) { return kn_test_run_kiln(D, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err); }
static void write_file(const char *name, const char *text) { kn_test_write(D, name, text); }

static const char *metrics(const char *run_dir) {
    static char buf[1 << 20];
    char p[2048];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", D, run_dir);
    kn_test_slurp(p, buf, sizeof buf);
    return buf;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *s = hay; (s = strstr(s, needle)); s++) n++;
    return n;
}

/* fc3's weights are all 1e38 and its inputs (after ReLU) are positive: its output
 * overflows float32 to +inf at step 0. The guard must name op 'linear', layer 'fc3'. */
static const char *NAN_CFG =
    "[data]\ndir = data\nbatch_size = 16\n\n"
    "[train]\nepochs = 1\nlog_every = 1\n\n"
    "[optimizer]\ntype = sgd\nlr = 0.01\n\n"
    "[flat]\ntype = flatten\n\n"
    "[fc1]\ntype = linear\nout = 16\nactivation = relu\n\n"
    "[fc2]\ntype = linear\nout = 16\nactivation = relu\n\n"
    "[fc3]\ntype = linear\nout = 8\ninit = constant\ninit_scale = 1e38\n\n"
    "[bn3]\ntype = batchnorm\n\n"
    "[out]\ntype = linear\nout = 10\n";

static void test_known_op(void) {
    write_file("nan.ini", NAN_CFG);
    int st = run("train nan.ini --run-dir nan_stop --threads 2 --no-progress --set guard.policy=stop");
    CHECK(st == 1, "policy stop: exit %d", st);
    CHECK(strstr(g_err, "op 'linear'") && strstr(g_err, "layer 'fc3'") && strstr(g_err, "forward") &&
              strstr(g_err, "step 0"),
          "the report does not name linear/fc3 at step 0: %s", g_err);
    CHECK(strstr(g_err, "'fc3.weight' min 1e+38 max 1e+38"), "the report lacks the input statistics: %s", g_err);
    const char *mj = metrics("nan_stop");
    CHECK(strstr(mj, "\"event\":\"guard\"") && strstr(mj, "\"layer\":\"fc3\"") && strstr(mj, "\"op\":\"linear\"") &&
              strstr(mj, "\"action\":\"stop\""),
          "guard event not recorded: %s", mj);
    /* rollback: the failure repeats whatever the learning rate, so it stops after the retry limit */
    st = run("train nan.ini --run-dir nan_rb --threads 2 --no-progress --set guard.max_retries=3");
    CHECK(st == 1 && strstr(g_err, "retry limit"), "rollback: exit %d: %s", st, g_err);
    CHECK(count(g_err, "rolled back") == 3, "expected 3 rollbacks: %s", g_err);
    CHECK(count(metrics("nan_rb"), "\"action\":\"rollback\"") == 3, "rollback events: %s", metrics("nan_rb"));
    /* skip: every batch is skipped, the run ends */
    st = run("train nan.ini --run-dir nan_skip --threads 2 --no-progress --set guard.policy=skip --set train.max_steps=5");
    CHECK(st == 0 && count(g_err, "skipping this batch") == 5, "skip: exit %d: %s", st, g_err);
    /* a healthy variant of the same network raises no guard event */
    st = run("train nan.ini --run-dir healthy --threads 2 --no-progress --set fc3.init=normal --set fc3.init_scale=0.05");
    CHECK(st == 0 && !strstr(metrics("healthy"), "\"event\":\"guard\""), "healthy run: %d %s", st, g_err);
}

static void deep_cfg(char *buf, size_t n, int layers) {
    size_t k = (size_t)snprintf(buf, n,
                                "[data]\ndir = data\nbatch_size = 32\n\n[train]\nepochs = 6\nlog_every = 10\n\n"
                                "[optimizer]\ntype = sgd\nlr = 0.01\nmomentum = 0.9\n\n[flat]\ntype = flatten\n\n");
    for (int i = 1; i <= layers; i++)
        k += (size_t)snprintf(buf + k, n - k, "[fc%d]\ntype = linear\nout = 64\nactivation = relu\n\n", i);
    snprintf(buf + k, n - k, "[out]\ntype = linear\nout = 10\ninit = xavier_uniform\n");
}

static double test_acc(void) {
    const char *t = strstr(g_out, "test: loss");
    double l, a = -1;
    if (t) sscanf(t, "test: loss %lf, accuracy %lf", &l, &a);
    return a;
}

static void test_unstable(void) {
    char cfg[16384];
    deep_cfg(cfg, sizeof cfg, 12);
    write_file("deep.ini", cfg);
    /* stable learning rate */
    int st = run("train deep.ini --run-dir deep_stable --threads 2 --no-progress");
    double acc_stable = test_acc();
    CHECK(st == 0 && acc_stable > 60, "stable deep MLP: exit %d, accuracy %.2f: %s", st, acc_stable, g_err);
    /* too large a learning rate, no guard: NaN */
    st = run("train deep.ini --run-dir deep_noguard --threads 2 --no-progress --set optimizer.lr=0.5 --set guard.enabled=false");
    CHECK(strstr(metrics("deep_noguard"), "\"loss\":nan") || strstr(metrics("deep_noguard"), "\"loss\":-nan"),
          "the unstable run did not produce NaN without the guard");
    /* the same with the default guard: completes, close to the stable run */
    st = run("train deep.ini --run-dir deep_guard --threads 2 --no-progress --set optimizer.lr=0.5 --set guard.lr_factor=0.1");
    double acc_guard = test_acc();
    CHECK(st == 0, "guarded unstable run failed: %s", g_err);
    CHECK(strstr(g_err, "rolled back") != NULL, "the guard never acted: %s", g_err);
    CHECK(strstr(g_err, "first non-finite value") && strstr(g_err, "layer '"), "no explanation printed: %s", g_err);
    CHECK(acc_guard > acc_stable - 2.0, "guarded accuracy %.2f%% vs stable %.2f%%", acc_guard, acc_stable);
    printf("deep MLP: stable lr %.2f%%, unstable lr with guard %.2f%%\n", acc_stable, acc_guard);
}

static void test_early_stopping(void) {
    /* few samples, a big network, many epochs: it overfits */
    write_file("over.ini",
               "[data]\ndir = small\nbatch_size = 10\n\n[train]\nepochs = 60\nearly_stopping = 3\n\n"
               "[optimizer]\ntype = adam\nlr = 0.01\n\n[flat]\ntype = flatten\n\n"
               "[fc1]\ntype = linear\nout = 256\nactivation = relu\n\n[fc2]\ntype = linear\nout = 10\n");
    int st = run("train over.ini --run-dir over --threads 2 --no-progress");
    CHECK(st == 0 && strstr(g_out, "early stopping"), "no early stop: %d %s %s", st, g_out, g_err);
    const char *mj = metrics("over");
    CHECK(strstr(mj, "\"event\":\"early_stop\""), "no early_stop event");
    CHECK(count(mj, "\"event\":\"epoch\"") < 60, "ran all epochs");
    CHECK(strstr(g_err, "has not improved"), "no overfitting warning: %s", g_err);
    /* the saved model is the best checkpoint's weights */
    char a[2048], b[2048];
    snprintf(a, sizeof a, "%s/over/model.safetensors", D);
    snprintf(b, sizeof b, "%s/over/checkpoints/best.safetensors", D);
    kn_ctx *ctx = kn_ctx_new();
    kn_ckpt *ca = NULL, *cb = NULL;
    int ok = kn_ckpt_open(ctx, a, &ca) == 0 && kn_ckpt_open(ctx, b, &cb) == 0;
    for (int i = 0; ok && i < kn_ckpt_count(ca); i++) {
        const float *x, *y;
        kn_shape sx, sy;
        ok = kn_ckpt_get(ctx, ca, kn_ckpt_name(ca, i), &x, &sx) == 0 && kn_ckpt_get(ctx, cb, kn_ckpt_name(ca, i), &y, &sy) == 0 &&
             memcmp(x, y, (size_t)kn_shape_numel(&sx) * 4) == 0;
    }
    CHECK(ok, "model.safetensors is not the best checkpoint's weights");
    kn_ckpt_close(ca);
    kn_ckpt_close(cb);
    kn_ctx_free(ctx);
}

static void test_leakage(void) {
    /* evaluate on the training file itself: its first 80 samples are all duplicates (of
     * training samples: no validation split here) */
    int st = run("train over.ini --run-dir leakrun --threads 2 --no-progress --set train.epochs=1 --set data.validation_split=0 "
                 "--set data.test_images=small/train-images-idx3-ubyte.gz --set data.test_labels=small/train-labels-idx1-ubyte.gz "
                 "--set data.limit_test=80");
    CHECK(st == 0 && strstr(g_out, "leakage: 80 test sample(s)"), "leakage not reported: %s %s", g_out, g_err);
    CHECK(strstr(metrics("leakrun"), "\"event\":\"leakage\",\"set\":\"test\",\"duplicates\":80"), "leakage event: %s", metrics("leakrun"));
    /* a separate test set: none */
    st = run("train over.ini --run-dir noleak --threads 2 --no-progress --set train.epochs=1");
    CHECK(st == 0 && strstr(g_out, "leakage: no test sample"), "noleak run: %s %s", g_out, g_err);
}

/* SGD with momentum whose learning rate warms up to 10 over 200 steps: the first health
 * checks are healthy, then a layer dies (every unit 0 for every sample) and the loss
 * stays at chance. Without the collapse check this ends at chance level with exit 0. */
static const char *COLLAPSE_CFG =
    "[data]\ndir = data\nbatch_size = 32\n\n"
    "[train]\nepochs = 8\nlog_every = 10\n\n"
    "[optimizer]\ntype = sgd\nmomentum = 0.9\nlr = 10\nwarmup_steps = 200\n\n"
    "[guard]\nsnapshot_every = 10\nlr_factor = 0.1\n\n"
    "[health]\nevery = 10\n\n"
    "[flat]\ntype = flatten\n\n"
    "[fc1]\ntype = linear\nout = 64\nactivation = relu\n\n"
    "[fc2]\ntype = linear\nout = 64\nactivation = relu\n\n"
    "[out]\ntype = linear\nout = 10\n";

static void test_collapse(void) {
    write_file("collapse.ini", COLLAPSE_CFG);
    /* the old behaviour: no collapse check */
    int st = run("train collapse.ini --run-dir col_off --threads 2 --no-progress --set guard.collapse_checks=0");
    double acc_off = test_acc();
    CHECK(st == 0 && acc_off >= 0 && acc_off < 20, "without the collapse check the run should end at chance: exit %d, accuracy %.2f: %s", st, acc_off, g_err);
    CHECK(!strstr(metrics("col_off"), "\"kind\":\"collapse\""), "collapse event with the check off");
    /* the default: detected, explained, rolled back with a smaller learning rate */
    st = run("train collapse.ini --run-dir col_on --threads 2 --no-progress");
    double acc_on = test_acc();
    CHECK(st == 0, "collapse run: exit %d: %s", st, g_err);
    CHECK(strstr(g_err, "kiln: guard: step ") && strstr(g_err, "the run has collapsed") && strstr(g_err, "no better than chance") &&
              (strstr(g_err, "is entirely dead") || strstr(g_err, "gradient has vanished in every layer")) &&
              strstr(g_err, "smaller learning rate"),
          "no explanation of the collapse: %s", g_err);
    CHECK(strstr(g_err, "rolled back from step") && strstr(g_err, "learning rate x0.1"), "no rollback: %s", g_err);
    const char *mj = metrics("col_on");
    CHECK(strstr(mj, "\"kind\":\"collapse\",\"action\":\"rollback\""), "no collapse event in metrics.jsonl");
    CHECK(acc_on > 90, "recovered run: accuracy %.2f%% (without the check %.2f%%)", acc_on, acc_off);
    printf("collapse: without the check %.2f%%, with it %.2f%%\n", acc_off, acc_on);
    /* dead from the start (fc1's weights and bias 0: every unit gives 0): nothing healthy
     * to return to, a smaller learning rate cannot help: explained and stopped */
    st = run("train collapse.ini --run-dir col_init --threads 2 --no-progress --set optimizer.warmup_steps=0 --set optimizer.lr=0.01 "
             "--set fc1.init=zeros --set fc1.bias_init=zeros");
    CHECK(st == 1 && strstr(g_err, "the run has collapsed") && strstr(g_err, "is entirely dead") &&
              strstr(g_err, "no health check of this run was healthy") && strstr(g_err, "leaky_relu"),
          "collapse from the start: exit %d: %s", st, g_err);
    CHECK(strstr(metrics("col_init"), "\"kind\":\"collapse\",\"action\":\"stop\""), "no stop event");
}

/* The default jobs on a synthetic 28x28 set, health checks every 5 steps. */
static void test_defaults_quiet(void) {
    kn_test_make_images(D, "data28", 1600, 28, 28);
    static const char *const ex[2][2] = {{"examples/fashion_mnist_cnn.ini", "2"}, {"examples/fashion_mnist_mlp.ini", "4"}};
    for (int k = 0; k < 2; k++) {
        char args[2048];
        snprintf(args, sizeof args, "train '%s' --run-dir def%d --threads 2 --no-progress --set data.dir=data28 --set train.epochs=%s --set health.every=5",
                 kn_test_src(ex[k][0]), k, ex[k][1]);
        int st = run(args);
        char rd[16];
        snprintf(rd, sizeof rd, "def%d", k);
        const char *mj = metrics(rd);
        CHECK(st == 0, "%s: exit %d: %s", ex[k][0], st, g_err);
        CHECK(count(mj, "\"event\":\"health\"") >= 8, "%s: %d health checks", ex[k][0], count(mj, "\"event\":\"health\""));
        CHECK(!strstr(mj, "\"event\":\"guard\"") && !strstr(g_err, "kiln: guard"), "%s: guard event: %s", ex[k][0], g_err);
        CHECK(!strstr(g_err, "dead ReLUs") && !strstr(mj, "\"kind\":\"dead_relu\""), "%s: dead-ReLU warning: %s", ex[k][0], g_err);
        CHECK(strstr(g_out, "data: 1440 training samples, 160 validation samples"), "%s: no validation split: %s", ex[k][0], g_out);
    }
}

static void test_overfit_warnings(void) {
    /* over.ini without early stopping for 20 epochs: the old rule warned at 16 of them */
    int st = run("train over.ini --run-dir overlong --threads 2 --no-progress --set train.early_stopping=0 --set train.epochs=20");
    int n = count(metrics("overlong"), "\"kind\":\"overfitting\"");
    CHECK(st == 0 && n >= 1 && n <= 3 && count(g_err, "the model is overfitting") == n, "overfitting warnings: %d (want 1..3): %s", n, g_err);
}

static void test_health_leakage_once(void) {
    int st = run("train over.ini --run-dir resumed --threads 2 --no-progress --set train.early_stopping=0 --set train.max_steps=5");
    CHECK(st == 0, "first part: %s", g_err);
    for (int k = 0; k < 2; k++) {
        st = run("resume resumed --threads 2 --no-progress");
        CHECK(st == 0, "resume %d: exit %d: %s", k, st, g_err);
    }
    CHECK(count(metrics("resumed"), "\"event\":\"leakage\",\"set\":\"test\"") >= 2, "the run did not resume (one start recorded)");
    st = run("health resumed");
    CHECK(st == 0 && count(g_out, "leakage: 0 test sample(s)") == 1 && count(g_out, "leakage: 0 validation sample(s)") == 1,
          "kiln health: %s", g_out);
}

int main(void) {
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("guard"));
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && rm -rf nan_* healthy deep_* over leak* noleak col_* def? overlong resumed", D);
    kn_test_system(cmd);
    kn_test_make_images(D, "data", 1600, 12, 12);
    kn_test_make_images_noisy(D, "small", 100, 12, 12, 0.6);
    test_known_op();
    test_unstable();
    test_early_stopping();
    test_leakage();
    test_collapse();
    test_defaults_quiet();
    test_overfit_warnings();
    test_health_leakage_once();
    return kn_test_finish("test_guard");
}
