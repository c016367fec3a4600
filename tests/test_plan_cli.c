/* `kiln plan`, `kiln train --budget` and `--fit`, through the command:
 *  - kiln plan prints per-layer rows and the arena peak, the naive total and the
 *    predicted peak resident memory; --json has the same figures (CNN at batch 512 on
 *    Fashion-MNIST when installed: the planned peak is at least 40% below the naive
 *    total);
 *  - kiln train --budget 64M on the CNN at batch 512 (a 2048-sample synthetic data set)
 *    refuses before allocating: non-zero exit, a message naming the biggest consumers
 *    and the largest batch that fits, no run directory, a small peak RSS;
 *  - the same run with --fit trains and its measured peak RSS stays under 64 MiB;
 *  - the MLP with a budget just below what its batch needs, with --fit, trains in
 *    micro-batches and its loss curve matches the unsplit run within 1e-5 relative per
 *    step (gradient accumulation averages the micro-batch gradients);
 *  - bad budgets are usage/config errors. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* sys/wait.h declares wait4 only with _DEFAULT_SOURCE */
extern pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru);

static char g_dir[1024];
static char g_out[1 << 17], g_err[1 << 16];
static long g_rss_kib;


/* Run "$KN_BIN args" in g_dir; stdout/stderr to g_out/g_err; peak RSS to g_rss_kib. */
static int run(const char *args) {
    const char *bin = getenv("KN_BIN");
    if (!bin) bin = "./kiln";
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' %s >'%s/out.txt' 2>'%s/err.txt'", g_dir, bin, args, g_dir, g_dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &st, 0, &ru);
    g_rss_kib = ru.ru_maxrss;
    char p[2048];
    snprintf(p, sizeof p, "%s/out.txt", g_dir);
    kn_test_slurp(p, g_out, sizeof g_out);
    snprintf(p, sizeof p, "%s/err.txt", g_dir);
    kn_test_slurp(p, g_err, sizeof g_err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static double json_num(const cJSON *o, const char *a, const char *b) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

/* losses of the step events in RUN/metrics.jsonl */
static int read_losses(const char *run, double *loss, int max) {
    char p[2048], line[4096];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", g_dir, run);
    FILE *f = fopen(p, "r");
    if (!f) return 0;
    int n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        cJSON *o = cJSON_Parse(line);
        const cJSON *ev = cJSON_GetObjectItemCaseSensitive(o, "event");
        if (cJSON_IsString(ev) && !strcmp(ev->valuestring, "step")) loss[n++] = json_num(o, "loss", NULL);
        cJSON_Delete(o);
    }
    fclose(f);
    return n;
}

static void write_cfg(const char *name, const char *src_rel, const char *extra) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    FILE *in = fopen(kn_test_src(src_rel), "r"), *out = fopen(p, "w");
    if (!in || !out) {
        CHECK(0, "cannot write %s", p);
        if (in) fclose(in);
        if (out) fclose(out);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof line, in)) fputs(line, out);
    fputs(extra, out);
    fclose(in);
    fclose(out);
}

static void case_plan(void) {
    struct stat sb;
    const char *fm = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    char args[2048];
    int real = stat(fm, &sb) == 0;
    /* the real data set when installed, else the synthetic one (same shapes) */
    snprintf(args, sizeof args, "plan '%s' --batch 512 %s", kn_test_src("examples/fashion_mnist_cnn.ini"),
             real ? "" : "--set data.dir=data");
    int st = run(args);
    CHECK(st == 0, "kiln plan: exit %d: %s", st, g_err);
    static const char *const needles[] = {"conv1", "bn1", "pool2", "fc2", "fwd MFLOP", "params B", "grads B", "optim B",
                                          "saved B", "scratch B", "[512,32,28,28]", "arena planned peak", "naive total",
                                          "predicted peak resident memory", NULL};
    for (int i = 0; needles[i]; i++) CHECK(strstr(g_out, needles[i]) != NULL, "kiln plan output lacks '%s':\n%s", needles[i], g_out);
    static char text[sizeof g_out];
    memcpy(text, g_out, sizeof text);
    strncat(args, " --json", sizeof args - strlen(args) - 1);
    st = run(args);
    CHECK(st == 0, "kiln plan --json: exit %d: %s", st, g_err);
    cJSON *o = cJSON_Parse(g_out);
    CHECK(o != NULL, "kiln plan --json is not JSON:\n%s", g_out);
    double peak = json_num(o, "train_graph", "arena_peak_bytes"), naive = json_num(o, "train_graph", "naive_bytes");
    double total = json_num(o, "process", "total"), arena = json_num(o, "process", "arena");
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(o, "layers");
    CHECK(cJSON_GetArraySize(layers) >= 10, "plan JSON: %d layers", cJSON_GetArraySize(layers));
    CHECK(peak > 0 && naive > 0 && peak <= 0.6 * naive, "CNN batch 512: planned peak %.0f, naive %.0f (less than 40%% apart)",
          peak, naive);
    CHECK(total > arena && arena >= peak, "process total %.0f, arena %.0f, train peak %.0f", total, arena, peak);
    /* each convolution names its algorithm; the text marks the Winograd ones */
    int nconv = 0, nwino = 0;
    for (int i = 0; i < cJSON_GetArraySize(layers); i++) {
        const cJSON *l = cJSON_GetArrayItem(layers, i), *nm = cJSON_GetObjectItemCaseSensitive(l, "name");
        const cJSON *al = cJSON_GetObjectItemCaseSensitive(l, "algorithm");
        if (!cJSON_IsString(nm) || strncmp(nm->valuestring, "conv", 4) != 0) continue;
        nconv++;
        CHECK(cJSON_IsString(al) && (!strcmp(al->valuestring, "direct") || !strcmp(al->valuestring, "winograd")),
              "plan JSON: layer %s has no algorithm", nm->valuestring);
        nwino += cJSON_IsString(al) && !strcmp(al->valuestring, "winograd");
    }
    CHECK(nconv == 2, "plan JSON: %d conv layers", nconv);
    CHECK((strstr(text, "(wino)") != NULL) == (nwino > 0), "plan text and JSON disagree on Winograd layers (%d):\n%s",
          nwino, text);
    printf("kiln plan CNN batch 512 (%s data): train arena %.1f MiB, naive %.1f MiB (%.1f%% less), predicted RSS %.1f MiB\n",
           real ? "Fashion-MNIST" : "synthetic", peak / 1048576, naive / 1048576, 100 * (1 - peak / naive),
           total / 1048576);
    cJSON_Delete(o);
}

/* Recomputing the CNN's conv blocks: the plan reports the arena it would have without
 * recomputation, which must be what a plan without it says, and its note must say
 * whether recomputation pays (lower arena) or not, by the two numbers. */
static void case_recompute_report(void) {
    static const char *const blocks =
        "--set conv1.block=b1 --set bn1.block=b1 --set relu1.block=b1 --set pool1.block=b1 --set conv2.block=b2 "
        "--set bn2.block=b2 --set relu2.block=b2 --set pool2.block=b2";
    static const char *const which[] = {"b1, b2", "b1, b2", "b2"};
    for (int b = 0; b < 3; b++) {
        const int64_t batch = b ? 512 : 64;
        char args[2048], plain[1024];
        snprintf(plain, sizeof plain, "plan '%s' --batch %lld --set data.dir=data",
                 kn_test_src("examples/fashion_mnist_cnn.ini"), (long long)batch);
        snprintf(args, sizeof args, "%s %s --set 'model.recompute=%s'", plain, blocks, which[b]);
        char json[2100];
        snprintf(json, sizeof json, "%s --json", plain);
        int st = run(json);
        cJSON *o = cJSON_Parse(g_out);
        double without = json_num(o, "train_graph", "arena_peak_bytes");
        CHECK(st == 0 && o && !cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(o, "train_graph"),
                                                                 "arena_peak_bytes_without_recompute"),
              "plain plan: exit %d, or it reports a recompute comparison with nothing recomputed", st);
        cJSON_Delete(o);
        snprintf(json, sizeof json, "%s --json", args);
        st = run(json);
        o = cJSON_Parse(g_out);
        double with = json_num(o, "train_graph", "arena_peak_bytes");
        double reported = json_num(o, "train_graph", "arena_peak_bytes_without_recompute");
        double kept = json_num(o, "train_graph", "saved_activation_bytes");
        double kept_without = json_num(o, "train_graph", "saved_activation_bytes_without_recompute");
        double total = json_num(o, "process", "total");
        double total_without = json_num(o, "train_graph", "predicted_total_without_recompute");
        cJSON_Delete(o);
        CHECK(st == 0 && reported == without && kept < kept_without,
              "recompute %s, batch %lld: arena %.0f, reported without %.0f, planned without %.0f; kept %.0f vs %.0f",
              which[b], (long long)batch, with, reported, without, kept, kept_without);
        st = run(args);
        /* at batch 64 the evaluation graph (batch 500) sets the arena: the training
         * arena falls but the predicted peak does not */
        const char *want = with < without ? (total < total_without ? "recomputation: training arena"
                                                                   : "but not the predicted peak")
                           : with > without ? "recomputation raises the planned peak"
                                            : "recomputation does not lower the planned peak";
        CHECK(total > 0 && total_without > 0 && (with >= without || b > 0 || total == total_without),
              "recompute %s, batch %lld: predicted %.0f, without %.0f", which[b], (long long)batch, total, total_without);
        CHECK(st == 0 && strstr(g_out, want), "recompute %s, batch %lld (arena %.0f with, %.0f without): no '%s' in\n%s",
              which[b], (long long)batch, with, without, want, g_out);
        printf("recompute %s at batch %lld: training arena %.1f MiB with, %.1f MiB without; kept %.1f vs %.1f MiB\n",
               which[b], (long long)batch, with / 1048576, without / 1048576, kept / 1048576, kept_without / 1048576);
    }
}

static void case_budget(void) {
    int sanitized = getenv("KN_SANITIZED") != NULL;
    /* CNN, batch 512, synthetic data: needs far more than 64 MiB unsplit */
    write_cfg("cnn.ini", "examples/fashion_mnist_cnn.ini", "");
    int st = run("train cnn.ini --budget 64M --set data.dir=data --set data.batch_size=512 --set train.max_steps=2 "
                 "--set train.epochs=1 --threads 2 --no-progress --run-dir refused");
    CHECK(st != 0 && st != 2, "over budget: exit %d", st);
    CHECK(strstr(g_err, "not enough memory") && strstr(g_err, "biggest consumers: arena") &&
              strstr(g_err, "the largest batch that fits is") && strstr(g_err, "--fit"),
          "refusal message: %s", g_err);
    struct stat sb;
    char p[2048];
    snprintf(p, sizeof p, "%s/refused", g_dir);
    CHECK(stat(p, &sb) != 0, "the refused run created its run directory");
    if (!sanitized)
        CHECK(g_rss_kib < 48 * 1024, "the refused run reached %ld KiB: it allocated before refusing", g_rss_kib);
    printf("refused (exit %d, peak RSS %.1f MiB): %s", st, g_rss_kib / 1024.0, g_err);

    st = run("train cnn.ini --budget 64M --fit --set data.dir=data --set data.batch_size=512 --set train.max_steps=2 "
             "--set train.epochs=1 --set train.log_every=1 --threads 2 --no-progress --run-dir fitted");
    CHECK(st == 0, "--fit: exit %d: %s", st, g_err);
    CHECK(strstr(g_out, "micro-batches of") && strstr(g_out, "note: BatchNorm"), "--fit output:\n%s", g_out);
    if (!sanitized) /* the sanitizer's shadow memory is not the program's */
        CHECK(g_rss_kib > 0 && g_rss_kib < 64 * 1024, "--fit run peak RSS %ld KiB is over the 64 MiB budget", g_rss_kib);
    double l[4];
    int n = read_losses("fitted", l, 4);
    CHECK(n == 2 && isfinite(l[0]) && isfinite(l[1]), "--fit run: %d losses", n);
    printf("--budget 64M --fit: peak RSS %.1f MiB\n%s", g_rss_kib / 1024.0, g_out);

    /* bad budgets */
    st = run("train cnn.ini --budget lots --set data.dir=data");
    CHECK(st == 1 && strstr(g_err, "budget") && strstr(g_err, "512M"), "bad budget: exit %d: %s", st, g_err);
    st = run("train cnn.ini --budget");
    CHECK(st == 2, "--budget without a value: exit %d", st);
    st = run("plan cnn.ini --batch 0");
    CHECK(st == 2, "plan --batch 0: exit %d", st);
}

static void case_mlp_curve(void) {
    write_cfg("mlp.ini", "examples/fashion_mnist_mlp.ini", "");
    const char *common = "--set data.dir=data --set data.batch_size=256 --set train.max_steps=40 --set train.epochs=6 "
                         "--set train.log_every=1 --threads 2 --no-progress";
    char args[2048];
    /* what the unsplit batch needs: a budget one byte below forces micro-batches */
    snprintf(args, sizeof args, "plan mlp.ini --json %s", "--set data.dir=data --set data.batch_size=256 --threads 2");
    int st = run(args);
    cJSON *o = cJSON_Parse(g_out);
    double need = json_num(o, "process", "total");
    cJSON_Delete(o);
    CHECK(st == 0 && need > 0, "plan: exit %d, need %g", st, need);
    snprintf(args, sizeof args, "train mlp.ini %s --run-dir whole", common);
    st = run(args);
    CHECK(st == 0, "unsplit: exit %d: %s", st, g_err);
    snprintf(args, sizeof args, "train mlp.ini %s --budget %.0f --fit --run-dir split", common, need - 1);
    st = run(args);
    CHECK(st == 0, "--fit: exit %d: %s", st, g_err);
    CHECK(strstr(g_out, "micro-batches of") != NULL, "--fit did not split the batch:\n%s", g_out);
    CHECK(strstr(g_out, "note: BatchNorm") == NULL, "BatchNorm note without BatchNorm:\n%s", g_out);
    double a[64], b[64];
    int na = read_losses("whole", a, 64), nb = read_losses("split", b, 64);
    CHECK(na == 40 && nb == 40, "%d and %d losses", na, nb);
    double worst = 0;
    for (int i = 0; i < na && i < nb; i++) {
        double r = fabs(a[i] - b[i]) / fabs(a[i]);
        if (r > worst) worst = r;
    }
    CHECK(worst <= 1e-5, "loss curves differ by up to %.3g relative", worst);
    printf("MLP batch 256, --fit under %.0f bytes: 40 losses, worst relative difference to the unsplit run %.3g\n",
           need - 1, worst);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "%s", kn_test_tmpdir("test_plan_cli"));
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/refused' '%s/fitted' '%s/whole' '%s/split'", g_dir, g_dir, g_dir, g_dir);
    if (system(cmd) != 0) return 1;
    kn_test_make_images(g_dir, "data", 2048, 28, 28);
    case_plan();
    case_recompute_report();
    case_budget();
    case_mlp_curve();
    return kn_test_finish("test_plan_cli");
}
