/* The kiln command on bad input and on repeated runs:
 *  - every bad input exits non-zero with ONE message that names the file:line (or
 *    path), the key or layer, and what was expected;
 *  - same seed + same thread count → bit-identical loss sequence and model.
 * The data are small IDX files written by this test. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/data.h"
#include "testutil.h"

static char g_dir[1024];
static char g_out[65536], g_err[65536];




static int run(const char *args) { return kn_test_run_kiln(g_dir, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err); }
static void write_file(const char *name, const char *text) { kn_test_write(g_dir, name, text); }

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* a bad input: non-zero exit, exactly one line on stderr starting "kiln: error:", all needles present */
static void expect_error(const char *what, const char *args, const char *const *needles) {
    int st = run(args);
    CHECK(st == 1, "%s: exit status %d, expected 1 (stderr: %s)", what, st, g_err);
    CHECK(strncmp(g_err, "kiln: error: ", 13) == 0, "%s: stderr does not start with 'kiln: error:': %s", what, g_err);
    CHECK(count_lines(g_err) == 1, "%s: expected one message line, got %d: %s", what, count_lines(g_err), g_err);
    for (int i = 0; needles[i]; i++)
        CHECK(strstr(g_err, needles[i]) != NULL, "%s: message lacks '%s': %s", what, needles[i], g_err);
    printf("%-28s -> %s", what, g_err);
}

static const char *CNN =
    "[data]\n"
    "dir = data\n"
    "batch_size = 16\n"
    "eval_batch_size = 50\n"
    "\n"
    "[train]\n"
    "epochs = 2\n"
    "log_every = 1\n"
    "\n"
    "[optimizer]\n"
    "type = adamw\n"
    "lr = 0.003\n"
    "clip_norm = 5\n"
    "\n"
    "[conv1]\n"          /* line 15 */
    "type = conv2d\n"
    "out_channels = 4\n"
    "kernel = 3\n"
    "padding = 1\n"
    "\n"
    "[bn1]\n"
    "type = batchnorm\n"
    "activation = relu\n"
    "\n"
    "[pool1]\n"
    "type = maxpool2d\n"
    "\n"
    "[flat]\n"
    "type = flatten\n"
    "\n"
    "[drop]\n"
    "type = dropout\n"
    "p = 0.2\n"
    "\n"
    "[fc1]\n"
    "type = linear\n"
    "out = 10\n";

static void test_errors(void) {
    kn_test_make_images(g_dir, "data", 400, 12, 12);
    /* unknown key */
    char cfg[4096];
    snprintf(cfg, sizeof cfg, "%s", CNN);
    char *p = strstr(cfg, "kernel = 3");
    memcpy(p, "kernal", 6);
    write_file("unknown_key.ini", cfg);
    expect_error("unknown key", "train unknown_key.ini",
                 (const char *const[]){"unknown_key.ini:18", "[conv1]", "kernal", "did you mean 'kernel'", NULL});

    /* wrong value type */
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "out_channels = 4");
    memcpy(p + 15, "x", 1);
    write_file("bad_value.ini", cfg);
    expect_error("wrong value type", "train bad_value.ini",
                 (const char *const[]){"bad_value.ini:17", "out_channels", "'x'", "expected an integer", NULL});

    /* unknown layer type */
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "type = maxpool2d");
    memcpy(p + 7, "maxpool3d", 9);
    write_file("bad_type.ini", cfg);
    expect_error("unknown layer type", "train bad_type.ini",
                 (const char *const[]){"bad_type.ini:26", "maxpool3d", "expected one of", "maxpool2d", NULL});

    /* linear after conv without flatten */
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "type = flatten");
    memcpy(p, "type = relu   ", 14);
    write_file("no_flatten.ini", cfg);
    expect_error("linear after conv", "train no_flatten.ini",
                 (const char *const[]){"no_flatten.ini:35", "fc1", "linear", "2-D input", "flatten", NULL});

    /* a layer reading a name that does not exist */
    snprintf(cfg, sizeof cfg, "%s[sum]\ntype = add\ninput = fc1, fc9\n", CNN);
    write_file("bad_input.ini", cfg);
    expect_error("unknown input name", "train bad_input.ini",
                 (const char *const[]){"bad_input.ini:40", "fc9", NULL});

    /* syntax error */
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "[bn1]");
    memcpy(p, "[bn1 ", 5);
    write_file("syntax.ini", cfg);
    expect_error("syntax error", "train syntax.ini", (const char *const[]){"syntax.ini:21", NULL});

    /* missing config */
    expect_error("missing config", "train nowhere.ini", (const char *const[]){"nowhere.ini", "No such file", NULL});

    /* missing data file */
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "dir = data");
    memcpy(p, "dir = nada", 10);
    write_file("missing_data.ini", cfg);
    expect_error("missing data file", "train missing_data.ini",
                 (const char *const[]){"nada/train-images-idx3-ubyte.gz", "No such file", NULL});

    /* corrupt IDX: truncated image file */
    kn_test_make_images(g_dir, "bad", 100, 12, 12);
    char src[2048], cmd[9000];
    snprintf(src, sizeof src, "%s/bad/train-images-idx3-ubyte.gz", g_dir);
    snprintf(cmd, sizeof cmd, "gzip -dc '%s' | head -c 5000 | gzip > '%s.t' && mv '%s.t' '%s'", src, src, src, src);
    CHECK(system(cmd) == 0, "truncate");
    snprintf(cfg, sizeof cfg, "%s", CNN);
    p = strstr(cfg, "dir = data");
    memcpy(p, "dir = bad ", 10);
    write_file("corrupt.ini", cfg);
    expect_error("truncated IDX", "train corrupt.ini",
                 (const char *const[]){"bad/train-images-idx3-ubyte.gz", "truncated", NULL});
    /* corrupt IDX: not an IDX file at all */
    snprintf(cmd, sizeof cmd, "echo 'hello world, not an idx file' > '%s'", src);
    CHECK(system(cmd) == 0, "overwrite");
    expect_error("not an IDX file", "train corrupt.ini",
                 (const char *const[]){"bad/train-images-idx3-ubyte.gz", "IDX", NULL});

    /* bad --set */
    expect_error("bad --set", "train bad_value.ini --set optimizer.lr", (const char *const[]){"--set", "SECTION.KEY=VALUE", NULL});
    write_file("good.ini", CNN);
    expect_error("bad --set value", "train good.ini --set optimizer.lr=fast",
                 (const char *const[]){"--set optimizer.lr", "'fast'", "expected a number", NULL});
    expect_error("bad optimizer", "train good.ini --set optimizer.type=adamm",
                 (const char *const[]){"--set optimizer.type", "adamm", "did you mean 'adam'", NULL});
    /* usage errors: exit 2 */
    CHECK(run("train") == 2, "train without config should exit 2");
    CHECK(run("frobnicate") == 2 && strstr(g_err, "unknown command"), "unknown command: %s", g_err);
    CHECK(run("train good.ini --threads zero") == 2, "bad --threads should exit 2");
    expect_error("eval of nothing", "eval no_such_run", (const char *const[]){"no_such_run", NULL});
}

static void test_help(void) {
    CHECK(run("--help") == 0, "--help");
    const char *words[] = {"train", "eval", "resume", "inspect", "--dump", "--init-from", "--allow-config-change", "130", "143", "--set", "--run-dir", "--threads", "--seed", "--progress", "--no-progress", "--quiet", "--version", NULL};
    for (int i = 0; words[i]; i++) CHECK(strstr(g_out, words[i]) != NULL, "--help lacks %s", words[i]);
    CHECK(run("--version") == 0 && strstr(g_out, "kiln "), "--version: %s", g_out);
}

/* lines of metrics.jsonl with "event":"step" */
static void step_lines(const char *run_dir, char *buf, size_t n) {
    char p[2048], all[65536];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", g_dir, run_dir);
    kn_test_slurp(p, all, sizeof all);
    buf[0] = 0;
    size_t k = 0;
    for (char *line = strtok(all, "\n"); line; line = strtok(NULL, "\n"))
        if (strstr(line, "\"event\":\"step\"") && k + strlen(line) + 2 < n) k += (size_t)snprintf(buf + k, n - k, "%s\n", line);
}

static int files_equal(const char *a, const char *b) {
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/%s", g_dir, a);
    snprintf(pb, sizeof pb, "%s/%s", g_dir, b);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    int eq = fa && fb;
    while (eq) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) eq = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return eq;
}

static void test_determinism(void) {
    write_file("good.ini", CNN);
    static char a[32768], b[32768], c[32768];
    int s1 = run("train good.ini --threads 2 --seed 7 --run-dir r1 --no-progress");
    CHECK(s1 == 0, "training run 1 failed: %s", g_err);
    CHECK(strstr(g_out, "test: loss") != NULL, "no test line printed: %s", g_out);
    int s2 = run("train good.ini --threads 2 --seed 7 --run-dir r2 --no-progress");
    CHECK(s2 == 0, "training run 2 failed: %s", g_err);
    int s3 = run("train good.ini --threads 2 --seed 8 --run-dir r3 --no-progress");
    CHECK(s3 == 0, "training run 3 failed: %s", g_err);
    step_lines("r1", a, sizeof a);
    step_lines("r2", b, sizeof b);
    step_lines("r3", c, sizeof c);
    /* 400 samples less the default validation split (40): 360 / 16 = 22 steps per epoch */
    CHECK(count_lines(a) == 2 * 22, "expected 44 logged steps, got %d", count_lines(a));
    CHECK(strcmp(a, b) == 0, "same seed and threads gave different loss sequences");
    CHECK(strcmp(a, c) != 0, "a different seed gave the same loss sequence (the seed is ignored?)");
    CHECK(files_equal("r1/model.safetensors", "r2/model.safetensors"), "models differ between identical runs");
    /* eval of the saved model reproduces the final test accuracy printed by train */
    run("train good.ini --threads 2 --seed 7 --run-dir r4 --no-progress");
    char *t = strstr(g_out, "test: loss");
    double l1 = -1, a1 = -1;
    if (t) sscanf(t, "test: loss %lf, accuracy %lf", &l1, &a1);
    CHECK(run("eval r4") == 0, "eval failed: %s", g_err);
    double l2 = -2, a2 = -2;
    sscanf(g_out, "test: loss %lf, accuracy %lf", &l2, &a2);
    CHECK(l1 == l2 && a1 == a2, "eval gives loss %f acc %f, train printed %f %f", l2, a2, l1, a1);
    CHECK(a1 > 50.0, "the synthetic task should be learnt (accuracy %f%%)", a1);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", kn_test_tmpdir("cli"));
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && rm -rf r1 r2 r3 r4 runs", g_dir);
    kn_test_system(cmd);
    test_help();
    test_errors();
    test_determinism();
    return kn_test_finish("test_cli");
}
