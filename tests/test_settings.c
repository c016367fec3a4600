/* Settings (issue 10, items 17 and 26): no value is read and ignored — a value kiln does
 * not support, or a key the rest of the config makes meaningless, is an error naming
 * file:line (or --set), the key and what is allowed; data.mean/std accept what they
 * promise (any finite mean, a positive std) and are used; a leaky_relu activation's
 * slope reaches the op; paths up to PATH_MAX are accepted, longer ones refused. */
#define _POSIX_C_SOURCE 200809L
#include "config/config.h"
#include "nn/model.h"
#include "testutil.h"
#include "train/trainer.h"

#include <math.h>
#include <string.h>

static kn_ctx *ctx;
static char D[1200];

static int has(const char *s) { return strstr(kn_ctx_message(ctx), s) != NULL; }
#define HAS(s) CHECK(has(s), "message lacks '%s': %s", s, kn_ctx_message(ctx))

/* Parse text as t.ini, apply the --set assignments (NULL-terminated), read settings. */
static kn_config *load(const char *text, const char *const *sets) {
    kn_config *cfg = NULL;
    if (kn_config_parse_string(ctx, "t.ini", text, &cfg) != KN_OK) {
        CHECK(0, "parse: %s", kn_ctx_message(ctx));
        return NULL;
    }
    for (int i = 0; sets && sets[i]; i++)
        if (kn_config_set(ctx, cfg, sets[i]) != KN_OK) CHECK(0, "--set %s: %s", sets[i], kn_ctx_message(ctx));
    return cfg;
}

static kn_settings st;

/* kn_settings_read must fail with every needle in the message. */
static void settings_error(const char *what, const char *text, const char *const *sets, const char *const *needles) {
    kn_config *cfg = load(text, sets);
    if (!cfg) return;
    kn_ctx_clear(ctx);
    int rc = kn_settings_read(ctx, cfg, &st);
    CHECK(rc == KN_ERR_CONFIG, "%s: accepted (rc %d)", what, rc);
    for (int i = 0; needles[i]; i++) CHECK(has(needles[i]), "%s: message lacks '%s': %s", what, needles[i], kn_ctx_message(ctx));
    kn_config_free(cfg);
}

static int settings_ok(const char *what, const char *text, const char *const *sets) {
    kn_config *cfg = load(text, sets);
    if (!cfg) return 0;
    int rc = kn_settings_read(ctx, cfg, &st);
    CHECK(rc == KN_OK, "%s: %s", what, kn_ctx_message(ctx));
    kn_config_free(cfg);
    return rc == KN_OK;
}

#define SETS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *kBase = "[data]\ndataset = fashion-mnist\nbatch_size = 8\n[optimizer]\ntype = adam\nlr = 1e-3\n";

static void test_dataset(void) {
    /* the case: --set data.dataset=mnist on a Fashion-MNIST config */
    settings_error("dataset=mnist, no dir", kBase, SETS("data.dataset=mnist"),
                   NEEDLES("--set data.dataset", "dataset = mnist needs dir = DIRECTORY", "holds Fashion-MNIST"));
    settings_error("dataset=idx, no dir", kBase, SETS("data.dataset=idx"), NEEDLES("dataset = idx needs dir"));
    settings_error("unknown dataset", kBase, SETS("data.dataset=cifar10"),
                   NEEDLES("--set data.dataset", "'cifar10'", "one of fashion-mnist, mnist, idx"));
    settings_error("dir and all four files", "[data]\ndir = /x\ntrain_images = a\ntrain_labels = b\ntest_images = c\ntest_labels = d\n",
                   NULL, NEEDLES("t.ini:2: [data] dir has no effect"));
    CHECK(settings_ok("all four files", "[data]\ntrain_images = a\ntrain_labels = b\ntest_images = c\ntest_labels = d\n", NULL),
          "four files");
    CHECK(settings_ok("mnist with dir", kBase, SETS("data.dataset=mnist", "data.dir=/srv/mnist")) && st.dataset == 1 &&
              strcmp(st.train_images, "/srv/mnist/train-images-idx3-ubyte.gz") == 0,
          "mnist with dir: %d %s", st.dataset, st.train_images);

    /* a named data set is checked against the files: 12x12 images are neither MNIST nor Fashion-MNIST */
    kn_test_make_images(D, "data", 64, 12, 12);
    char ini[1600];
    const char *names[] = {"mnist", "fashion-mnist", "idx", NULL};
    for (int i = 0; names[i]; i++) {
        snprintf(ini, sizeof ini,
                 "[data]\ndataset = %s\ndir = %s/data\nbatch_size = 8\n[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n",
                 names[i], D);
        kn_config *cfg = load(ini, NULL);
        if (!cfg) continue;
        kn_job job;
        memset(&job, 0, sizeof job);
        int rc = kn_settings_read(ctx, cfg, &st);
        CHECK(rc == KN_OK, "%s: settings: %s", names[i], kn_ctx_message(ctx));
        rc = rc ? rc : kn_job_open(ctx, cfg, &st, 1, &job);
        if (i < 2) {
            CHECK(rc == KN_ERR_CONFIG, "dataset = %s accepted 12x12 images", names[i]);
            CHECK(has("holds 1x12x12 images") && has("set data.dataset = idx"), "%s: %s", names[i], kn_ctx_message(ctx));
        } else {
            CHECK(rc == KN_OK, "dataset = idx: %s", kn_ctx_message(ctx));
        }
        kn_job_close(&job);
        kn_config_free(cfg);
    }
}

static void test_optimizer_keys(void) {
    settings_error("momentum with adam", "[optimizer]\ntype = adam\nmomentum = 0.9\n", NULL,
                   NEEDLES("t.ini:3: [optimizer] momentum has no effect with type = adam (t.ini:2)", "applies to type = sgd"));
    settings_error("nesterov with the default (adam)", "[optimizer]\nnesterov = true\n", NULL,
                   NEEDLES("t.ini:2: [optimizer] nesterov has no effect with type = adam (the default)"));
    settings_error("beta2 with sgd", "[optimizer]\ntype = adam\nbeta2 = 0.99\n", SETS("optimizer.type=sgd"),
                   NEEDLES("t.ini:3: [optimizer] beta2 has no effect with type = sgd (--set optimizer.type)",
                           "applies to type = adam or adamw"));
    settings_error("gamma without step", "[optimizer]\ngamma = 0.5\n", NULL,
                   NEEDLES("t.ini:2: [optimizer] gamma has no effect with schedule = constant", "schedule = step"));
    settings_error("min_lr with step", "[optimizer]\nschedule = step\nmin_lr = 0.1\n", NULL,
                   NEEDLES("[optimizer] min_lr has no effect with schedule = step", "schedule = cosine"));
    settings_error("step_size with cosine", "[optimizer]\nschedule = cosine\nstep_size = 10\n", NULL,
                   NEEDLES("[optimizer] step_size has no effect with schedule = cosine"));
    settings_error("guard key with the guard off", "[guard]\npolicy = skip\n", SETS("guard.enabled=false"),
                   NEEDLES("t.ini:2: [guard] policy has no effect with enabled = false"));
    CHECK(settings_ok("guard off", "[guard]\nenabled = false\n", NULL), "guard off");
    CHECK(settings_ok("sgd keys", "[optimizer]\ntype = sgd\nmomentum = 0.5\nnesterov = true\nschedule = step\ngamma = 0.5\n", NULL),
          "sgd");
    CHECK(settings_ok("adam keys", "[optimizer]\ntype = adamw\nbeta1 = 0.8\nbeta2 = 0.99999\neps = 1e-6\nschedule = cosine\nmin_lr = 1e-5\n",
                      NULL),
          "adamw");
}

static void test_mean_std(void) {
    /* any finite mean; a positive std */
    CHECK(settings_ok("negative mean", "[data]\nmean = -0.5\nstd = 0.25\n", NULL) && st.mean == -0.5 && st.std == 0.25,
          "mean %g std %g", st.mean, st.std);
    CHECK(settings_ok("large mean", "[data]\nmean = 3.5\nstd = 20\n", NULL) && st.mean == 3.5 && st.std == 20, "large");
    CHECK(settings_ok("absent", "[data]\n", NULL) && isnan(st.mean) && isnan(st.std), "absent: %g %g", st.mean, st.std);
    const char *bad_std[] = {"0", "-1", "-0.5", "nan", "inf", "x"};
    for (int i = 0; i < 6; i++) {
        char set[64];
        snprintf(set, sizeof set, "data.std=%s", bad_std[i]);
        settings_error(set, "[data]\n", SETS(set), NEEDLES("--set data.std", "[data] std = '"));
        if (i < 3) HAS("expected a positive number");
    }
    settings_error("mean inf", "[data]\nmean = inf\n", NULL, NEEDLES("t.ini:2: [data] mean = 'inf': expected a number from"));
    /* beyond float32 (the loader's arithmetic): named errors, not a cast's undefined behaviour */
    settings_error("mean 1e300", "[data]\nmean = 1e300\n", NULL, NEEDLES("t.ini:2: [data] mean = '1e300'"));
    settings_error("std 1e300", "[data]\nstd = 1e300\n", NULL, NEEDLES("t.ini:2: [data] std = '1e300'"));
    settings_error("std 1e-300", "[data]\nstd = 1e-300\n", NULL, NEEDLES("t.ini:2: [data] std = '1e-300'", "at least"));

    /* the values are used, not replaced by the data's */
    char ini[1600];
    snprintf(ini, sizeof ini, "[data]\ndir = %s/data\nbatch_size = 8\nmean = -0.5\nstd = 0.125\n[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n", D);
    kn_config *cfg = load(ini, NULL);
    if (!cfg) return;
    kn_job job;
    memset(&job, 0, sizeof job);
    int rc = kn_settings_read(ctx, cfg, &st);
    rc = rc ? rc : kn_job_open(ctx, cfg, &st, 1, &job);
    CHECK(rc == KN_OK, "job: %s", kn_ctx_message(ctx));
    if (rc == KN_OK) CHECK(job.mean == -0.5f && job.std == 0.125f, "job normalises with %g, %g", job.mean, job.std);
    kn_job_close(&job);
    kn_config_free(cfg);
}

static void test_layer_keys(void) {
    static const char *const cases[][3] = {
        {"[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\ninit_scale = 0.1\n", "t.ini:6: [fc] init_scale has no effect",
         "with init = kaiming_uniform"},
        {"[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\nbias = false\nbias_init = ones\n",
         "t.ini:7: [fc] bias_init has no effect", "with bias = false"},
        {"[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\nactivation = relu\nslope = 0.2\n",
         "t.ini:7: [fc] slope has no effect", "unless activation = leaky_relu"},
        {"[c]\ntype = conv2d\nout_channels = 4\nkernel = 3\nslope = 0.2\n[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n",
         "t.ini:5: [c] slope has no effect", "unless activation = leaky_relu"},
        {"[p]\ntype = maxpool2d\ncount_include_pad = false\n[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n",
         "t.ini:3: [p] count_include_pad has no effect", "on a maxpool2d layer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_config *cfg = load(cases[i][0], NULL);
        if (!cfg) continue;
        kn_model m;
        memset(&m, 0, sizeof m);
        kn_ctx_clear(ctx);
        int rc = kn_model_build(ctx, cfg, 4, 4, 1, 8, 8, 10, &m);
        CHECK(rc == KN_ERR_CONFIG, "case %zu accepted", i);
        kn_model_free(&m); /* the caller frees a model whose build failed, too */
        CHECK(has(cases[i][1]) && has(cases[i][2]), "case %zu: %s", i, kn_ctx_message(ctx));
        kn_config_free(cfg);
    }
}

/* activation = leaky_relu with slope = 0.2 on linear, conv2d and batchnorm: the op gets it */
static void test_leaky_slope(void) {
    const char *ini =
        "[c]\ntype = conv2d\nout_channels = 2\nkernel = 1\nactivation = leaky_relu\nslope = 0.3\n"
        "[bn]\ntype = batchnorm\nactivation = leaky_relu\nslope = -0.25\n"
        "[f]\ntype = flatten\n"
        "[fc]\ntype = linear\nout = 10\nactivation = leaky_relu\nslope = 0.2\ninit = constant\ninit_scale = -1\n"
        "[fc2]\ntype = linear\nout = 10\nactivation = leaky_relu\n";
    kn_config *cfg = load(ini, NULL);
    if (!cfg) return;
    kn_model m;
    memset(&m, 0, sizeof m);
    int rc = kn_model_build(ctx, cfg, 4, 4, 1, 3, 3, 10, &m);
    CHECK(rc == KN_OK, "build: %s", kn_ctx_message(ctx));
    if (rc) { kn_model_free(&m); kn_config_free(cfg); return; }
    const double want[] = {0.3, -0.25, 0.2, 0.01};
    for (int gi = 0; gi < 2; gi++) {
        kn_graph *g = gi ? m.eval : m.train;
        int k = 0;
        for (int i = 0; i < g->nn; i++) {
            if (g->n[i].op != &kn_op_leaky_relu) continue;
            CHECK(k < 4 && g->n[i].a.f[0] == want[k], "%s graph: leaky_relu %d has slope %g, want %g", gi ? "eval" : "train", k,
                  g->n[i].a.f[0], k < 4 ? want[k] : 0.0);
            k++;
        }
        CHECK(k == 4, "%s graph: %d leaky_relu ops", gi ? "eval" : "train", k);
    }
    kn_model_free(&m);
    kn_config_free(cfg);
}

/* data paths up to PATH_MAX are accepted; longer ones are refused, never cut */
static void test_long_paths(void) {
    static char set[6000];
    int n = snprintf(set, sizeof set, "data.dir=");
    for (int k = 0; k < 4096; k++) set[n++] = k % 50 == 0 ? '/' : 'd';
    set[n] = 0;
    CHECK(settings_ok("4096-character dir", "[data]\n", SETS(set)), "4096");
    CHECK(strlen(st.train_images) == 4096 + strlen("/train-images-idx3-ubyte.gz"), "train_images has %zu characters",
          strlen(st.train_images));
    for (int k = 0; k < 10; k++) set[n++] = 'e';
    set[n] = 0;
    settings_error("4106-character dir", "[data]\n", SETS(set), NEEDLES("--set data.dir", "too long", "at most 4096"));
    memcpy(set, "data.train_images=", 18);
    settings_error("long train_images", "[data]\n", SETS(set), NEEDLES("--set data.train_images", "too long"));
}

/* Item 6 end to end: a data.dir of 300+ characters with blanks, ';' and '#' given with
 * --set is written into the run's config.ini and read back by resume and eval. */
static void test_run_dir_roundtrip(void) {
    char sub[600] = "long";
    for (int i = 0; i < 6; i++) {
        size_t n = strlen(sub);
        snprintf(sub + n, sizeof sub - n, "/segment %d ; with # and \"quote\" and = signs ;%.20s", i, "xxxxxxxxxxxxxxxxxxxx");
    }
    kn_test_make_images(D, sub, 64, 12, 12);
    char dir[1400];
    snprintf(dir, sizeof dir, "%s/%s", D, sub);
    CHECK(strlen(dir) > 206, "path of %zu characters", strlen(dir));
    kn_test_write(D, "rt.ini",
                  "[data]\nbatch_size = 16\n[train]\nepochs = 1\n[checkpoint]\nevery_seconds = 0\n[health]\nleakage_check = false\n"
                  "[f]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n");
    static char out[1 << 16], err[1 << 16], args[4096];
    snprintf(args, sizeof args, "train rt.ini --run-dir rt_run --threads 1 --quiet --set 'data.dir=%s'", dir);
    int st = kn_test_run_kiln(D, "rm -rf rt_run &&", args, out, sizeof out, err, sizeof err);
    CHECK(st == 0, "train with a long data.dir: exit %d: %s", st, err);
    char p[1400];
    snprintf(p, sizeof p, "%s/rt_run/config.ini", D);
    kn_config *cfg = NULL;
    CHECK(kn_config_load(ctx, p, &cfg) == KN_OK, "config.ini: %s", kn_ctx_message(ctx));
    const kn_cfg_kv *kv = cfg ? kn_cfg_get(kn_cfg_find(cfg, "data"), "dir") : NULL;
    CHECK(kv && strcmp(kv->value, dir) == 0, "config.ini's data.dir reads back as '%s'", kv ? kv->value : "(none)");
    kn_config_free(cfg);
    st = kn_test_run_kiln(D, NULL, "resume rt_run --threads 1 --quiet", out, sizeof out, err, sizeof err);
    CHECK(st == 0, "resume: exit %d: %s", st, err);
    st = kn_test_run_kiln(D, NULL, "eval rt_run --threads 1", out, sizeof out, err, sizeof err);
    CHECK(st == 0 && strstr(out, "test: loss"), "eval: exit %d: %s%s", st, out, err);
}

int main(void) {
    ctx = kn_ctx_new();
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("test_settings"));
    test_dataset();
    test_optimizer_keys();
    test_mean_std();
    test_layer_keys();
    test_leaky_slope();
    test_long_paths();
    test_run_dir_roundtrip();
    kn_ctx_free(ctx);
    return kn_test_finish("test_settings");
}
