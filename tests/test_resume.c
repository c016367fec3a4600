/* The promises of resume, through the kiln command (issue 10, items 1-5, 16, 19, 20 and
 * acceptance 1):
 *  - the kill test: SIGKILL at deterministic points over the whole run - before any step
 *    checkpoint, inside the writes of first, step-N and best (torn writes, before and after
 *    rename/link), inside evaluation, during a stop checkpoint, a second Ctrl-C during it,
 *    the final model write - each followed by `kiln resume` until it completes, ends with
 *    model.safetensors byte-identical to an uninterrupted run's, best.safetensors at the
 *    run's best step, no temporary file left; the same with --seed and --threads given
 *    explicitly (and resumed without them). The kill points come from tests/killshim.c
 *    (LD_PRELOAD, $KN_KILLSHIM) and the CLI's test hook KILN_TEST_HOOK (tools/kiln.c).
 *    `test_resume --full` (ctest label slow) adds the remaining points of every write,
 *    random steps, random writes and chains of kills;
 *  - the seed, thread count and micro-batch split come from the checkpoint; another
 *    --threads on resume warns; another --seed on train is a changed config;
 *  - a run directory in use is refused, naming the holder; the holder's files survive;
 *  - a changed config on the default directory starts runs/NAME-2, -3; --budget is not a
 *    change; --init-from on a directory with checkpoints is never silently ignored;
 *  - kiln eval on an unfinished run falls back to best, then the newest checkpoint;
 *  - metadata floats are decimal; the run summary is printed once; no ETA before a few
 *    steps are measured. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "data/data.h"
#include "train/checkpoint.h"

static char D[1024];
static char g_out[1 << 17], g_err[1 << 17];
static char SHIM[1100];
static int g_full;

/* 712 samples of 12x12, 71 held out for validation (the default split), batch 16: 40 steps per epoch, 120 steps; a checkpoint every 5 steps */
static const char *CFG =
    "[data]\n"
    "dir = data\n"
    "batch_size = 16\n"
    "eval_batch_size = 128\n"
    "\n"
    "[train]\n"
    "epochs = 3\n"
    "log_every = 1\n"
    "\n"
    "[checkpoint]\n"
    "every_steps = 5\n"
    "keep_last = 2\n"
    "\n"
    "[optimizer]\n"
    "type = adam\n"
    "lr = 0.002\n"
    "\n"
    "[flat]\n"
    "type = flatten\n"
    "\n"
    "[fc1]\n"
    "type = linear\n"
    "out = 24\n"
    "activation = relu\n"
    "\n"
    "[drop]\n"
    "type = dropout\n"
    "p = 0.1\n"
    "\n"
    "[fc2]\n"
    "type = linear\n"
    "out = 10\n";

static int run(const char *pre, const char *args) {
    return kn_test_run_kiln(D, pre, args, g_out, sizeof g_out, g_err, sizeof g_err);
}

static int sh(const char *fmt, const char *a) {
    char cmd[4096], inner[3000];
    snprintf(inner, sizeof inner, fmt, a);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s", D, inner);
    return kn_test_system(cmd);
}

/* whole files equal, byte for byte */
static int same_bytes(const char *a, const char *b) {
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/%s", D, a);
    snprintf(pb, sizeof pb, "%s/%s", D, b);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    int ok = fa && fb;
    while (ok) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) ok = 0;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return ok;
}

/* every tensor of a equal, bit for bit, to b's */
static int same_tensors(const char *a, const char *b) {
    char pa[2048], pb[2048];
    snprintf(pa, sizeof pa, "%s/%s", D, a);
    snprintf(pb, sizeof pb, "%s/%s", D, b);
    kn_ctx *ctx = kn_ctx_new();
    kn_ckpt *ca = NULL, *cb = NULL;
    int ok = kn_ckpt_open(ctx, pa, &ca) == 0 && kn_ckpt_open(ctx, pb, &cb) == 0;
    if (!ok) fprintf(stderr, "same_tensors: %s\n", kn_ctx_message(ctx));
    if (ok) ok = kn_ckpt_count(ca) == kn_ckpt_count(cb) && kn_ckpt_count(ca) > 0;
    for (int i = 0; ok && i < kn_ckpt_count(ca); i++) {
        const float *x, *y;
        kn_shape sx, sy;
        ok = kn_ckpt_get(ctx, ca, kn_ckpt_name(ca, i), &x, &sx) == 0 && kn_ckpt_get(ctx, cb, kn_ckpt_name(ca, i), &y, &sy) == 0 &&
             kn_shape_eq(&sx, &sy) && memcmp(x, y, (size_t)kn_shape_numel(&sx) * 4) == 0;
    }
    kn_ckpt_close(ca);
    kn_ckpt_close(cb);
    kn_ctx_free(ctx);
    return ok;
}

/* a metadata value of a checkpoint (static buffer; "" if absent) */
static const char *meta(const char *file, const char *key) {
    static char v[256];
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", D, file);
    v[0] = 0;
    kn_ctx *ctx = kn_ctx_new();
    kn_ckpt *c = NULL;
    if (kn_ckpt_open(ctx, p, &c) == 0) {
        const char *s = kn_ckpt_meta_get(c, key);
        if (s) snprintf(v, sizeof v, "%s", s);
        kn_ckpt_close(c);
    }
    kn_ctx_free(ctx);
    return v;
}

static int has_tmp(const char *rd) {
    char dirs[2][2048];
    snprintf(dirs[0], sizeof dirs[0], "%s/%s", D, rd);
    snprintf(dirs[1], sizeof dirs[1], "%s/%s/checkpoints", D, rd);
    int found = 0;
    for (int k = 0; k < 2; k++) {
        DIR *d = opendir(dirs[k]);
        if (!d) continue;
        struct dirent *de;
        while ((de = readdir(d)))
            if (strstr(de->d_name, ".tmp")) found = 1;
        closedir(d);
    }
    return found;
}

/* a file whose name starts with prefix in D/rel */
static int has_file(const char *rel, const char *prefix) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", D, rel);
    DIR *d = opendir(p);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, strlen(prefix))) found = 1;
    closedir(d);
    return found;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *s = hay; (s = strstr(s, needle)); s++) n++;
    return n;
}

static int count_step_lines(const char *rd) {
    char p[2048];
    static char buf[1 << 20];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", D, rd);
    kn_test_slurp(p, buf, sizeof buf);
    return count(buf, "\"event\":\"step\"");
}

/* ---------------- the kill test ---------------- */
typedef struct {
    const char *name;
    const char *env;  /* shim / hook variables for the first (killed) process */
    int expect;       /* its exit status: 137 SIGKILL, 130 SIGINT */
    const char *chain[4]; /* kill points for the following resumes, then plain resumes */
    int lenient;      /* random points: a process may complete before its kill point */
} kill_point;

static const char *g_ref;   /* the uninterrupted run these must match */
static const char *g_flags; /* flags of the first train command */
static const char *g_cfg = "cfg.ini"; /* its config */
static int g_points, g_failed_points;

static void pre_for(const char *env, char *pre, size_t n) {
    if (!env || !*env) { snprintf(pre, n, " "); return; }
    int shim = strstr(env, "KILL_") || strstr(env, "STALL_");
    snprintf(pre, n, "%s %s%s%s", env, shim ? "ASAN_OPTIONS=${ASAN_OPTIONS}:verify_asan_link_order=0 LD_PRELOAD='" : "",
             shim ? SHIM : "", shim ? "'" : "");
}

static void kill_case(const kill_point *kp) {
    const char *rd = "rk";
    char pre[2400], args[1024];
    int failures = kn_test_failures;
    sh("rm -rf %s", rd);
    pre_for(kp->env, pre, sizeof pre);
    snprintf(args, sizeof args, "train %s --run-dir %s %s --no-progress", g_cfg, rd, g_flags);
    int st = run(pre, args);
    CHECK(st == kp->expect || (kp->lenient && st == 0), "[%s] the first process exited %d, expected %d (the kill point was not reached?): %s", kp->name, st,
          kp->expect, g_err);
    /* chained kills in the resumes, then resume until complete */
    int done = 0;
    for (int k = 0; k < 12 && !done; k++) {
        const char *env = k < 4 ? kp->chain[k] : NULL;
        pre_for(env, pre, sizeof pre);
        snprintf(args, sizeof args, "resume %s --no-progress", rd);
        st = run(pre, args);
        if (env && kp->lenient && st == 0) done = 1;
        else if (env) CHECK(st == 137 || st == 130, "[%s] resume %d should have been killed (%s): %d %s", kp->name, k + 1, env, st, g_err);
        else done = st == 0;
        if (!env && st != 0) {
            CHECK(0, "[%s] resume %d failed (%d): %s", kp->name, k + 1, st, g_err);
            break;
        }
    }
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/model.safetensors", g_ref);
    snprintf(b, sizeof b, "%s/model.safetensors", rd);
    CHECK(done && same_bytes(a, b), "[%s] model.safetensors differs from the uninterrupted run's", kp->name);
    snprintf(a, sizeof a, "%s/checkpoints/best.safetensors", g_ref);
    snprintf(b, sizeof b, "%s/checkpoints/best.safetensors", rd);
    char want[64];
    snprintf(want, sizeof want, "%s", meta(a, "step"));
    CHECK(done && same_tensors(a, b) && !strcmp(meta(b, "step"), want), "[%s] best.safetensors is at step %s, expected %s",
          kp->name, meta(b, "step"), want);
    CHECK(count_step_lines(rd) == count_step_lines(g_ref), "[%s] metrics.jsonl has %d step lines, expected %d", kp->name,
          count_step_lines(rd), count_step_lines(g_ref));
    CHECK(!has_tmp(rd), "[%s] temporary files left", kp->name);
    g_points++;
    if (kn_test_failures != failures) g_failed_points++;
}

static const kill_point k_points[] = {
    {"step 1, before any step checkpoint", "KILN_TEST_HOOK=step:1:kill", 137, {0}, 0},
    {"config.ini written, killed before first (rename)", "KILL_CALL=rename KILL_PATH=first.safetensors", 137, {0}, 0},
    {"first: torn write", "KILL_CALL=write KILL_PATH=first.safetensors KILL_HALF=1", 137, {0}, 0},
    {"first: after its rename", "KILL_CALL=rename KILL_PATH=first.safetensors KILL_WHEN=after", 137, {0}, 0},
    {"step checkpoint: torn write", "KILL_CALL=write KILL_PATH=step-000000010 KILL_HALF=1", 137, {0}, 0},
    {"step checkpoint: before rename", "KILL_CALL=rename KILL_PATH=step-000000010", 137, {0}, 0},
    {"step checkpoint: after rename", "KILL_CALL=rename KILL_PATH=step-000000015 KILL_WHEN=after", 137, {0}, 0},
    {"inside evaluation (end of epoch 1)", "KILN_TEST_HOOK=eval:40:kill", 137, {0}, 0},
    {"best (last epoch): before link", "KILL_CALL=link KILL_PATH=best KILL_NTH=3", 137, {0}, 0},
    {"best (epoch 2): linked, before rename", "KILL_CALL=link KILL_PATH=best KILL_NTH=2 KILL_WHEN=after", 137, {0}, 0},
    {"stop checkpoint (SIGINT at step 23): torn write", "KILN_TEST_HOOK=step:23:int KILL_CALL=write KILL_PATH=step-000000023 KILL_HALF=1",
     137, {0}, 0},
    /* the reproduction: Ctrl-C before the first step checkpoint, a second one during
     * the slow stop checkpoint; the run must resume from first */
    {"second Ctrl-C during a slow stop checkpoint", "KILN_TEST_HOOK=step:3:int STALL_PATH=step-000000003 STALL_SEC=1 KILL_CALL=fsync "
     "KILL_PATH=step-000000003 KILL_SIG=INT", 130, {0}, 0},
    {"model.safetensors: before rename", "KILL_CALL=rename KILL_PATH=model.safetensors", 137, {0}, 0},
    {"a chain: step 7, a step rename in resume, evaluation, final test",
     "KILN_TEST_HOOK=step:7:kill", 137,
     {"KILL_CALL=rename KILL_PATH=step-000000030 KILL_WHEN=after", "KILN_TEST_HOOK=eval:80:kill", "KILN_TEST_HOOK=test:120:kill"}, 0},
};

/* the full version: more points of every write, random steps and writes, long chains */
static void full_points(void) {
    static const char *more[] = {
        "KILL_CALL=fsync KILL_PATH=first.safetensors",
        "KILL_CALL=write KILL_PATH=step-000000005",
        "KILL_CALL=fsync KILL_PATH=step-000000005",
        "KILL_CALL=rename KILL_PATH=step-000000040",
        "KILL_CALL=rename KILL_PATH=step-000000040 KILL_WHEN=after",
        "KILL_CALL=link KILL_PATH=best KILL_NTH=1",
        "KILL_CALL=link KILL_PATH=best KILL_NTH=1 KILL_WHEN=after",
        "KILL_CALL=rename KILL_PATH=best.safetensors KILL_NTH=1",
        "KILL_CALL=rename KILL_PATH=best.safetensors KILL_NTH=3 KILL_WHEN=after",
        "KILL_CALL=link KILL_PATH=best KILL_NTH=3 KILL_WHEN=after",
        "KILL_CALL=write KILL_PATH=step-000000080 KILL_HALF=1",
        "KILL_CALL=rename KILL_PATH=step-000000120",
        "KILL_CALL=rename KILL_PATH=step-000000120 KILL_WHEN=after",
        "KILL_CALL=rename KILL_PATH=model.safetensors KILL_WHEN=after",
        "KILL_CALL=write KILL_PATH=model.safetensors KILL_HALF=1",
        "KILL_CALL=rename KILL_PATH=config.ini KILL_WHEN=after",
        "KILN_TEST_HOOK=eval_done:80:kill",
        "KILN_TEST_HOOK=eval:120:kill",
        "KILN_TEST_HOOK=model:120:kill",
        "KILN_TEST_HOOK=step:41:kill",
        "KILN_TEST_HOOK=step:119:kill",
        "KILN_TEST_HOOK=step:40:int KILL_CALL=rename KILL_PATH=step-000000040",
        "KILN_TEST_HOOK=step:40:term", /* a stop request at the end of an epoch, before its evaluation */
        "KILN_TEST_HOOK=step:57:term",
        "KILN_TEST_HOOK=step:23:int STALL_PATH=step-000000023 STALL_SEC=1 KILL_CALL=fsync KILL_PATH=step-000000023 KILL_SIG=INT",
    };
    static char names[64][160], envs[64][300];
    int n = 0;
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++, n++) {
        snprintf(names[n], sizeof names[n], "full: %s", more[i]);
        int expect = strstr(more[i], "KILL_SIG=INT") ? 130 : strstr(more[i], ":term") && !strstr(more[i], "KILL_CALL") ? 143 : 137;
        kill_point kp = {names[n], more[i], expect, {0}, 0};
        kill_case(&kp);
    }
    srand(20261202);
    for (int i = 0; i < 8; i++, n++) {
        if (i % 2 == 0) snprintf(envs[n], sizeof envs[n], "KILN_TEST_HOOK=step:%d:kill", 1 + rand() % 119);
        else snprintf(envs[n], sizeof envs[n], "KILL_CALL=write KILL_NTH=%d%s", 1 + rand() % 300, i % 4 == 1 ? " KILL_HALF=1" : "");
        snprintf(names[n], sizeof names[n], "random: %s", envs[n]);
        kill_point kp = {names[n], envs[n], 137, {0}, 1};
        kill_case(&kp);
    }
    /* chains of random kills in successive resumes */
    static char chain[3][4][120];
    for (int c = 0; c < 3; c++, n++) {
        int at = 1 + rand() % 20;
        snprintf(envs[n], sizeof envs[n], "KILN_TEST_HOOK=step:%d:kill", at);
        for (int k = 0; k < 4; k++) {
            at += 1 + rand() % 25;
            if (at > 120) at = 120;
            if (k % 2) snprintf(chain[c][k], sizeof chain[c][k], "KILN_TEST_HOOK=step:%d:kill,eval:%d:kill,test:%d:kill", at, at, at);
            else snprintf(chain[c][k], sizeof chain[c][k], "KILL_CALL=write KILL_NTH=%d", 1 + rand() % 60);
        }
        snprintf(names[n], sizeof names[n], "random chain %d", c + 1);
        kill_point kp = {names[n], envs[n], 137, {chain[c][0], chain[c][1], chain[c][2], chain[c][3]}, 1};
        kill_case(&kp);
    }
}

static void kill_suite(const char *ref, const char *flags) {
    g_ref = ref;
    g_flags = flags;
    int before = g_points, failed = g_failed_points;
    double t0 = kn_now_seconds();
    for (size_t i = 0; i < sizeof k_points / sizeof k_points[0]; i++) kill_case(&k_points[i]);
    if (g_full) full_points();
    printf("kill test (train %s): %d kill points, %d failed, %.1fs\n", *flags ? flags : "with default flags", g_points - before,
           g_failed_points - failed, kn_now_seconds() - t0);
}

/* ---------------- a guard rollback ---------------- */
/* SGD with momentum warming up to 3: step 67 overflows to NaN, the guard rolls back to
 * step 0 (its anchor) with the learning rate x0.1, and the run then completes. The step
 * checkpoints 60 and 65 (and best, from step 40) belong to the abandoned steps: a resume
 * must never continue them. Before the fix the new step-5 and step-10 were pruned at
 * once (keep_last = 2 kept the abandoned 65 and 60) and a kill resumed step 65. */
static const char *RB_CFG =
    "[data]\ndir = data\nbatch_size = 16\neval_batch_size = 128\n\n"
    "[train]\nepochs = 3\nlog_every = 1\n\n"
    "[checkpoint]\nevery_steps = 5\nkeep_last = 2\n\n"
    "[optimizer]\ntype = sgd\nmomentum = 0.9\nlr = 3\nwarmup_steps = 60\n\n"
    "[guard]\nsnapshot_every = 10\nlr_factor = 0.1\n\n"
    "[flat]\ntype = flatten\n\n"
    "[fc1]\ntype = linear\nout = 24\nactivation = relu\n\n"
    "[fc2]\ntype = linear\nout = 10\n";

static void test_guard_rollback(void) {
    kn_test_write(D, "rb.ini", RB_CFG);
    sh("rm -rf %s", "rbref");
    int st = run(NULL, "train rb.ini --run-dir rbref --no-progress");
    CHECK(st == 0 && strstr(g_err, "rolled back from step 67 to step 0"), "the rollback reference did not roll back at step 67: %d %s",
          st, g_err);
    CHECK(strstr(g_out, "removed 3 checkpoint(s) of the abandoned steps"), "the rollback did not remove step-60, step-65 and best: %s", g_out);
    static const kill_point pts[] = {
        {"rollback: the abandoned checkpoints removed, killed before the restored state's", "KILL_CALL=rename KILL_PATH=step-000000000",
         137, {0}, 0},
        {"rollback: the restored state written", "KILL_CALL=rename KILL_PATH=step-000000000 KILL_WHEN=after", 137, {0}, 0},
        {"rollback: step 10 after it", "KILL_CALL=rename KILL_PATH=step-000000010 KILL_NTH=2 KILL_WHEN=after", 137, {0}, 0},
        {"rollback: step 70 after it", "KILN_TEST_HOOK=step:70:kill", 137, {0}, 0},
    };
    const char *ref = g_ref, *flags = g_flags;
    g_ref = "rbref";
    g_flags = "";
    g_cfg = "rb.ini";
    for (size_t i = 0; i < sizeof pts / sizeof pts[0]; i++) kill_case(&pts[i]);
    g_ref = ref;
    g_flags = flags;
    g_cfg = "cfg.ini";
}

/* ---------------- seed and threads ---------------- */
static void test_seed_threads(void) {
    CHECK(!same_bytes("ref/model.safetensors", "ref7/model.safetensors"), "--seed 7 gave the same model as seed 1");
    /* a resume with another thread count: allowed, with a warning */
    sh("rm -rf %s", "rt");
    int st = run("KILN_TEST_HOOK=step:30:kill", "train cfg.ini --run-dir rt --seed 7 --threads 1 --no-progress");
    CHECK(st == 137, "threads: not killed: %d", st);
    st = run(NULL, "resume rt --threads 2 --no-progress");
    CHECK(st == 0 && strstr(g_err, "--threads 2 differs from the 1 thread") && strstr(g_err, "not bit-identical"),
          "resume with another --threads: no warning: %d %s", st, g_err);
    /* another --seed on the same (explicit) run directory is a changed config */
    sh("rm -rf %s", "rs");
    st = run("KILN_TEST_HOOK=step:30:kill", "train cfg.ini --run-dir rs --seed 7 --threads 1 --no-progress");
    st = run(NULL, "train cfg.ini --run-dir rs --seed 8 --no-progress");
    CHECK(st == 1 && strstr(g_err, "train.seed") && strstr(g_err, "'7'") && strstr(g_err, "'8'"),
          "train --seed 8 on a seed-7 run: not refused as a config change: %d %s", st, g_err);
    st = run(NULL, "train cfg.ini --run-dir rs --no-progress");
    CHECK(st == 1 && strstr(g_err, "train.seed"), "train without --seed on a seed-7 run: not refused: %d %s", st, g_err);
    st = run(NULL, "train cfg.ini --run-dir rs --seed 7 --threads 1 --no-progress");
    CHECK(st == 0 && same_bytes("ref7/model.safetensors", "rs/model.safetensors"), "train --seed 7 again: %d %s", st, g_err);
}

/* the convolution algorithm of the run is used by its resume: trained where auto means
 * direct (oneDNN capped to AVX2: no Winograd), resumed where auto means Winograd */
static void test_algorithm_resume(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        printf("no AVX-512: auto is direct with and without the cap; the algorithm resume test does not apply\n");
        return;
    }
    kn_test_write(D, "alg.ini",
                  "[data]\ndir = data\nbatch_size = 16\n\n[train]\nmax_steps = 6\nlog_every = 1\n\n[checkpoint]\nevery_steps = 2\n\n"
                  "[optimizer]\ntype = adam\nlr = 0.002\n\n[conv1]\ntype = conv2d\nout_channels = 32\nkernel = 3\npadding = 1\n"
                  "activation = relu\n\n[conv1b]\ntype = conv2d\nout_channels = 32\nkernel = 3\npadding = 1\n\n"
                  "[pool]\ntype = global_avgpool\n\n[fc]\ntype = linear\nout = 10\n");
    sh("rm -rf %s", "ra");
    int st = run("DNNL_MAX_CPU_ISA=AVX2 KILN_TEST_HOOK=step:3:kill", "train alg.ini --run-dir ra --no-progress");
    CHECK(st == 137, "algorithm: not killed: %d %s", st, g_err);
    CHECK(strstr(meta("ra/checkpoints/step-000000002.safetensors", "algorithms"), "conv1b=direct") != NULL,
          "the capped run did not record conv1b=direct: %s", meta("ra/checkpoints/step-000000002.safetensors", "algorithms"));
    st = run(NULL, "resume ra --no-progress");
    CHECK(st == 0 && !strstr(g_err, "winograd"), "resume on a CPU where auto is Winograd: %d %s", st, g_err);
    CHECK(strstr(meta("ra/checkpoints/step-000000004.safetensors", "algorithms"), "conv1b=direct") != NULL,
          "the resume did not keep the run's algorithm: %s", meta("ra/checkpoints/step-000000004.safetensors", "algorithms"));
}

/* the micro-batch split chosen by --fit is kept by a resume under another budget */
static void test_micro_batch(void) {
    int st = run(NULL, "plan cfg.ini --json");
    const char *p = strstr(g_out, "\"predicted_peak_rss_bytes\":");
    long long need = p ? atoll(p + strlen("\"predicted_peak_rss_bytes\":")) : 0;
    CHECK(st == 0 && need > 0, "plan --json: no predicted_peak_rss_bytes: %s", g_out);
    if (need <= 0) return;
    char args[512];
    sh("rm -rf %s", "rm rmref");
    /* one byte short of the unsplit batch: --fit splits it */
    snprintf(args, sizeof args, "train cfg.ini --run-dir rmref --budget %lld --fit --no-progress", need - 1);
    st = run(NULL, args);
    CHECK(st == 0 && strstr(g_out, "micro-batches of 8"), "--fit did not split the batch into micro-batches of 8: %d %s%s", st, g_out, g_err);
    snprintf(args, sizeof args, "train cfg.ini --run-dir rm --budget %lld --fit --no-progress", need - 1);
    st = run("KILN_TEST_HOOK=step:30:kill", args);
    CHECK(st == 137, "micro-batch: not killed: %d", st);
    st = run(NULL, "resume rm --budget 4G --no-progress");
    CHECK(st == 0 && strstr(g_out, "micro-batches of 8"), "resume --budget 4G did not keep the micro-batches of 8: %d %s", st, g_out);
    CHECK(same_tensors("rmref/model.safetensors", "rm/model.safetensors"), "resume under another budget differs from the uninterrupted fitted run");
}

/* ---------------- the lock ---------------- */
static void test_lock(void) {
    sh("rm -rf %s", "rl");
    char pre[2400];
    /* a holder stalled 3 s in the fsync of its step-10 checkpoint */
    snprintf(pre, sizeof pre, "ASAN_OPTIONS=${ASAN_OPTIONS}:verify_asan_link_order=0 STALL_PATH=step-000000010 STALL_SEC=3 LD_PRELOAD='%s'",
             SHIM);
    pid_t pid = fork();
    if (pid == 0) {
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' train cfg.ini --run-dir rl --no-progress >rl.out 2>rl.err", D, pre,
                 getenv("KN_BIN"));
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(98);
    }
    /* wait until it is inside the stalled write */
    char tmpseen = 0;
    double t0 = kn_now_seconds();
    while (!tmpseen && kn_now_seconds() - t0 < 30) {
        tmpseen = (char)has_file("rl/checkpoints", "step-000000010.safetensors.tmp.");
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    CHECK(tmpseen, "the holder never started its step-10 write");
    int st = run(NULL, "resume rl --no-progress");
    CHECK(st == 1 && strstr(g_err, "in use") && strstr(g_err, "PID") && strstr(g_err, "host") && strstr(g_err, "started"),
          "a resume beside a running train was not refused naming the holder: %d %s", st, g_err);
    st = run(NULL, "train cfg.ini --run-dir rl --seed 3 --no-progress");
    CHECK(st == 1 && strstr(g_err, "in use"), "a second train on a directory in use was not refused: %d %s", st, g_err);
    CHECK(has_file("rl/checkpoints", "step-000000010.safetensors.tmp."), "the holder's temporary file was deleted by the refused process");
    int ws;
    waitpid(pid, &ws, 0);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the holder failed: status %d", ws);
    CHECK(same_bytes("ref/model.safetensors", "rl/model.safetensors"), "the holder's run differs from the uninterrupted run");
}

/* ---------------- versions of the default run directory ---------------- */
static void test_versions(void) {
    sh("rm -rf %s", "runs");
    int st = run(NULL, "train v.ini --no-progress");
    CHECK(st == 0, "v.ini: %s", g_err);
    st = run(NULL, "train v.ini --set optimizer.lr=0.001 --no-progress");
    CHECK(st == 0 && strstr(g_err, "runs/v-2") && strstr(g_err, "optimizer.lr"), "a changed config did not start runs/v-2: %d %s", st,
          g_err);
    CHECK(same_bytes("runs/v/model.safetensors", "runs/v/model.safetensors") && !same_bytes("runs/v/model.safetensors", "runs/v-2/model.safetensors"),
          "runs/v-2 holds the same model as runs/v");
    st = run(NULL, "train v.ini --set optimizer.lr=0.0005 --no-progress");
    CHECK(st == 0 && strstr(g_err, "runs/v-3"), "a second change did not start runs/v-3: %d %s", st, g_err);
    st = run(NULL, "train v.ini --set optimizer.lr=0.001 --no-progress");
    CHECK(st == 0 && strstr(g_out, "already complete") && strstr(g_err, "runs/v-2") && !strstr(g_err, "runs/v-4"),
          "the lr=0.001 config again should continue runs/v-2: %d %s %s", st, g_out, g_err);
    st = run(NULL, "train v.ini --budget 4G --no-progress");
    CHECK(st == 0 && strstr(g_out, "already complete") && !strstr(g_err, "runs/v-"), "--budget is a config change: %d %s", st, g_err);
    st = run(NULL, "train v.ini --fit --no-progress");
    CHECK(st == 0 && strstr(g_out, "already complete") && !strstr(g_err, "runs/v-"), "--fit is a config change: %d %s", st, g_err);
    st = run(NULL, "resume runs/v --budget 4G --no-progress");
    CHECK(st == 0, "resume --budget: %d %s", st, g_err);
    /* --init-from on a directory with checkpoints: a new version, said; with --run-dir, an error */
    st = run(NULL, "train v.ini --init-from runs/v-2:first --no-progress");
    CHECK(st == 0 && strstr(g_err, "runs/v-4") && strstr(g_err, "init-from") && strstr(g_out, "initialised from"),
          "--init-from on runs/v: %d %s %s", st, g_out, g_err);
    st = run(NULL, "train v.ini --run-dir runs/v --init-from runs/v-2:first --no-progress");
    CHECK(st == 1 && strstr(g_err, "--init-from") && strstr(g_err, "already holds checkpoints"),
          "--init-from on an explicit directory with checkpoints was not refused: %d %s", st, g_err);
    /* an explicit directory with another config: refused, naming the keys */
    st = run(NULL, "train v.ini --run-dir runs/v --set optimizer.lr=0.001 --no-progress");
    CHECK(st == 1 && strstr(g_err, "optimizer.lr") && strstr(g_err, "--allow-config-change"), "explicit dir, changed config: %d %s", st,
          g_err);
}

/* ---------------- what must survive a kill besides the tensors ---------------- */
static const char *path_in(const char *rel) {
    static char p[2048];
    snprintf(p, sizeof p, "%s/%s", D, rel);
    return p;
}

static int run_env(const char *env, const char *args) {
    char pre[2400];
    pre_for(env, pre, sizeof pre);
    return run(pre, args);
}

static void test_durability(void) {
    int st;
    /* early stopping decided at the end of epoch 3 (step 120), killed before the final
     * test: the resume stops too (before the fix it trained epochs 4 to 8) */
    const char *es = "--set optimizer.lr=0.02 --set train.epochs=8 --set train.early_stopping=1 --no-progress";
    char args[512];
    sh("rm -rf %s", "esref es");
    snprintf(args, sizeof args, "train cfg.ini --run-dir esref %s", es);
    st = run(NULL, args);
    CHECK(st == 0 && strstr(g_out, "early stopping:") && strstr(g_out, "after 120 steps"),
          "the early-stopping reference did not stop after 120 steps: %d %s", st, g_out);
    snprintf(args, sizeof args, "train cfg.ini --run-dir es %s", es);
    st = run("KILN_TEST_HOOK=test:120:kill", args);
    CHECK(st == 137, "early stop: not killed before the final test: %d %s", st, g_err);
    st = run(NULL, "resume es --no-progress");
    CHECK(st == 0 && strstr(g_out, "early stopping:") && strstr(g_out, "after 120 steps"),
          "the resume of an early-stopped run trained on: %d %s", st, g_out);
    CHECK(same_bytes("esref/model.safetensors", "es/model.safetensors"), "early stop: model differs from the uninterrupted run's");

    /* --init-from, killed before first.safetensors: the resume starts from those weights
     * (config.ini records train.init_from; before, it started from random weights) */
    sh("rm -rf %s", "iref ik");
    st = run(NULL, "train v.ini --run-dir iref --init-from ref:best --no-progress");
    CHECK(st == 0 && strstr(g_out, "initialised from"), "init-from reference: %d %s", st, g_err);
    st = run_env("KILL_CALL=rename KILL_PATH=first.safetensors", "train v.ini --run-dir ik --init-from ref:best --no-progress");
    CHECK(st == 137, "init-from: not killed at first: %d %s", st, g_err);
    st = run(NULL, "resume ik --no-progress");
    CHECK(st == 0 && strstr(g_out, "initialised from"), "the resume did not initialise from the --init-from weights: %d %s", st, g_out);
    CHECK(same_bytes("iref/model.safetensors", "ik/model.safetensors"), "init-from: model differs from the uninterrupted run's");

    /* keep_epochs: killed between the end-of-epoch step checkpoint and epoch-0001 */
    sh("rm -rf %s", "ke");
    st = run_env("KILL_CALL=rename KILL_PATH=epoch-0001", "train v.ini --run-dir ke --set checkpoint.keep_epochs=true --no-progress");
    CHECK(st == 137, "keep_epochs: not killed at epoch-0001: %d %s", st, g_err);
    CHECK(access(path_in("ke/checkpoints/epoch-0001.safetensors"), F_OK) != 0, "epoch-0001 exists before the resume");
    /* a temporary of a dead process that is the user's, and one of kiln's */
    sh("touch %s", "ke/checkpoints/notes.tmp.999999 ke/checkpoints/step-000000001.safetensors.tmp.999999");
    st = run(NULL, "resume ke --no-progress");
    CHECK(st == 0 && access(path_in("ke/checkpoints/epoch-0001.safetensors"), F_OK) == 0, "the resume did not write the missing epoch-0001: %d %s", st, g_out);
    CHECK(same_tensors("ke/checkpoints/epoch-0001.safetensors", "ref/checkpoints/step-000000040.safetensors") ||
              !strcmp(meta("ke/checkpoints/epoch-0001.safetensors", "step"), "40"),
          "epoch-0001 is not the state at the end of epoch 1 (step %s)", meta("ke/checkpoints/epoch-0001.safetensors", "step"));
    CHECK(has_file("ke/checkpoints", "notes.tmp.999999"), "cleanup deleted a file that kiln did not write");
    CHECK(!has_file("ke/checkpoints", "step-000000001.safetensors.tmp"), "cleanup left a dead process's checkpoint temporary");
}

/* ---------------- eval of an unfinished run ---------------- */
static void test_eval_fallback(void) {
    sh("rm -rf %s", "re");
    char pre[2400];
    pre_for("KILL_CALL=rename KILL_PATH=step-000000050", pre, sizeof pre);
    int st = run(pre, "train cfg.ini --run-dir re --no-progress");
    CHECK(st == 137, "eval: not killed");
    st = run(NULL, "eval re");
    CHECK(st == 0 && strstr(g_err, "best.safetensors") && strstr(g_out, "accuracy"), "eval of an interrupted run (best): %d %s", st, g_err);
    sh("rm -rf %s", "re");
    pre_for("KILL_CALL=rename KILL_PATH=step-000000015", pre, sizeof pre);
    st = run(pre, "train cfg.ini --run-dir re --no-progress");
    st = run(NULL, "eval re");
    CHECK(st == 0 && strstr(g_err, "step-000000010") && strstr(g_err, "newest"), "eval of an interrupted run (newest): %d %s", st, g_err);
}

/* ---------------- output and metadata ---------------- */
static void test_output(void) {
    /* metadata floats: decimal, readable by strtod and Python's float() alike (no hex) */
    const char *keys[] = {"best_val_loss", "epoch_loss_sum", "data_mean", "data_std", "guard_lr_scale"};
    for (int i = 0; i < 5; i++) {
        const char *v = meta("ref/checkpoints/step-000000115.safetensors", keys[i]);
        char *end;
        strtod(v, &end);
        CHECK(*v && !*end && !strchr(v, 'x') && !strchr(v, 'p'), "metadata %s = '%s' is not a decimal number", keys[i], v);
    }
    int st = run(NULL, "inspect ref/checkpoints/best.safetensors");
    CHECK(st == 0 && strstr(g_out, "best_val_loss") && !strstr(g_out, "0x"), "inspect shows hex floats:\n%s", g_out);
    /* the summary once; no ETA from the first (warm-up) step */
    sh("rm -rf %s", "ro");
    st = run(NULL, "train cfg.ini --run-dir ro --threads 2 --no-progress --set train.max_steps=8");
    CHECK(st == 0, "ro: %s", g_err);
    CHECK(count(g_out, "2 threads") == 1 && count(g_out, "parameters,") == 1, "the run summary is printed more than once:\n%s", g_out);
    const char *first = strstr(g_out, "ETA ");
    CHECK(first && !strncmp(first, "ETA --:--", 9), "the first ETA is not --:-- :\n%s", g_out);
    const char *last = NULL;
    for (const char *s = g_out; (s = strstr(s, "ETA ")); s++) last = s;
    CHECK(last && strncmp(last, "ETA --:--", 9) != 0, "no ETA after 8 steps:\n%s", g_out);
}

/* ---------------- a full disk ---------------- */
static void test_full_disk(void) {
    /* the disk fills before the first step checkpoint (only first exists): the message
     * says to free space and resume, and that resume works, bit-exactly */
    sh("rm -rf %s", "rd");
    char pre[2400];
    pre_for("KILL_CALL=rename KILL_PATH=step-000000005", pre, sizeof pre);
    int st = run(pre, "train cfg.ini --run-dir rd --no-progress");
    CHECK(st == 137, "full disk: not killed: %d", st);
    st = run("ulimit -f 20 &&", "resume rd --no-progress --quiet");
    CHECK(st == 1 && strstr(g_err, "free space and run 'kiln resume"), "full disk: %d %s", st, g_err);
    st = run(NULL, "resume rd --no-progress");
    CHECK(st == 0 && same_bytes("ref/model.safetensors", "rd/model.safetensors"), "resume after a full disk, as the message says: %d %s", st,
          g_err);
    /* even first does not fit */
    sh("rm -rf %s", "rd");
    st = run("ulimit -f 20 &&", "train cfg.ini --run-dir rd --no-progress --quiet");
    CHECK(st == 1 && strstr(g_err, "free space and run 'kiln resume"), "full disk at first: %d %s", st, g_err);
    st = run(NULL, "resume rd --no-progress");
    CHECK(st == 0 && same_bytes("ref/model.safetensors", "rd/model.safetensors"), "resume after a full disk at first: %d %s", st, g_err);
}

/* Normalisation statistics come from the training split only: the checkpoint's
 * data_mean/data_std equal those of the 641 training samples of the default seeded
 * split, not those of the whole file (the 71 validation samples must not leak in). */
static void test_norm_train_split(void) {
    kn_ctx *ctx = kn_ctx_new();
    kn_dataset ds;
    char pi[1100], pl[1100];
    snprintf(pi, sizeof pi, "%s/data/train-images-idx3-ubyte.gz", D);
    snprintf(pl, sizeof pl, "%s/data/train-labels-idx1-ubyte.gz", D);
    CHECK(kn_dataset_load(ctx, pi, pl, &ds) == KN_OK, "load: %s", kn_ctx_message(ctx));
    int64_t *tr = NULL, *va = NULL, nt = 0, nv = 0;
    const int64_t nval = (int64_t)floor(0.1 * (double)ds.n);
    CHECK(kn_dataset_split(ctx, ds.n, nval, 1 ^ 0x5EEDULL, &tr, &nt, &va, &nv) == KN_OK, "split");
    double m, s, mall, sall;
    kn_dataset_stats_subset(&ds, tr, nt, &m, &s);
    kn_dataset_stats(&ds, &mall, &sall);
    const double cm = atof(meta("ref/checkpoints/best.safetensors", "data_mean"));
    const double cs = atof(meta("ref/checkpoints/best.safetensors", "data_std"));
    CHECK(fabs(mall - m) > 1e-9, "the split changes the mean (%.17g vs %.17g): the test cannot tell them apart", m, mall);
    CHECK(fabs(cm - (double)(float)m) < 1e-12 && fabs(cs - (double)(float)s) < 1e-12,
          "checkpoint normalisation %.17g/%.17g, training split %.17g/%.17g, whole file %.17g/%.17g", cm, cs, m, s, mall,
          sall);
    free(tr);
    free(va);
    kn_dataset_free(&ds);
    kn_ctx_free(ctx);
}

int main(int argc, char **argv) {
    g_full = argc > 1 && !strcmp(argv[1], "--full");
    snprintf(D, sizeof D, "%s", kn_test_tmpdir(g_full ? "resume_full" : "resume"));
    const char *shim = getenv("KN_KILLSHIM");
    if (!shim || access(shim, R_OK) != 0) {
        fprintf(stderr, "test_resume: KN_KILLSHIM (the path of libkillshim.so) is not set: run it through ctest\n");
        return 1;
    }
    snprintf(SHIM, sizeof SHIM, "%s", shim);
    sh("rm -rf %s", "ref ref7 rk rt rs rl re ro rd runs");
    kn_test_make_images(D, "data", 712, 12, 12);
    kn_test_write(D, "cfg.ini", CFG);
    char v[4096];
    snprintf(v, sizeof v, "%s", CFG);
    char *e = strstr(v, "epochs = 3\n");
    memcpy(e, "epochs = 1\n", 11);
    kn_test_write(D, "v.ini", v);

    double t0 = kn_now_seconds();
    int st = run(NULL, "train cfg.ini --run-dir ref --no-progress");
    CHECK(st == 0, "reference run: %s", g_err);
    printf("reference run: %.2fs\n", kn_now_seconds() - t0);
    CHECK(!strcmp(meta("ref/checkpoints/best.safetensors", "step"), "120"),
          "the reference's best is at step %s: the config must improve every epoch for the best-link kill points",
          meta("ref/checkpoints/best.safetensors", "step"));
    st = run(NULL, "train cfg.ini --run-dir ref7 --seed 7 --threads 1 --no-progress");
    CHECK(st == 0, "reference run --seed 7 --threads 1: %s", g_err);

    test_norm_train_split();
    kill_suite("ref", "");
    kill_suite("ref7", "--seed 7 --threads 1");
    test_guard_rollback();
    test_seed_threads();
    test_algorithm_resume();
    test_micro_batch();
    test_lock();
    test_versions();
    test_durability();
    test_eval_fallback();
    test_output();
    test_full_disk();
    return kn_test_finish(g_full ? "test_resume --full" : "test_resume");
}
