/* Crash safety of training runs, through the kiln command:
 *  - SIGKILL at >= 10 random moments (inside steps and inside checkpoint writes),
 *    resuming each time, ends bit-identical to an uninterrupted run;
 *  - SIGINT / SIGTERM write a checkpoint and exit 130 / 143; resuming matches;
 *  - truncated, corrupted, foreign and missing checkpoints are detected; the previous
 *    good one is used with a warning naming the bad file, or a clear error;
 *  - a full disk (RLIMIT_FSIZE) stops cleanly with every earlier checkpoint intact;
 *  - a changed config is refused with the differing keys; --init-from and inspect work. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/isa.h"
#include "testutil.h"
#include "train/checkpoint.h"

static char D[1024];
static char g_out[65536], g_err[65536];

static const char *CFG =
    "[data]\n"
    "dir = data\n"
    "batch_size = 16\n"
    "eval_batch_size = 100\n"
    "\n"
    "[train]\n"
    "epochs = 3\n"
    "log_every = 1\n"
    "\n"
    "[checkpoint]\n"
    "every_steps = 4\n"
    "keep_last = 3\n"
    "\n"
    "[optimizer]\n"
    "type = adam\n"
    "lr = 0.003\n"
    "\n"
    "[conv1]\n"
    "type = conv2d\n"
    "out_channels = 8\n"
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
    "p = 0.1\n"
    "\n"
    "[fc1]\n"
    "type = linear\n"
    "out = 10\n";


static const char *bin(void) {
    const char *b = getenv("KN_BIN");
    return b ? b : "./kiln";
}


static int run(const char *pre, const char *args) {
    return kn_test_run_kiln(D, pre, args, g_out, sizeof g_out, g_err, sizeof g_err);
}
static void write_cfg(const char *name, const char *text) { kn_test_write(D, name, text); }

static pid_t spawn(const char *run_dir, const char *errfile) {
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(D) != 0) _exit(99);
        int fo = open("/dev/null", O_WRONLY);
        int fe = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        execl(bin(), "kiln", "train", "cfg.ini", "--run-dir", run_dir, "--threads", "2", "--no-progress", (char *)NULL);
        _exit(98);
    }
    return pid;
}

static int wait_status(pid_t pid) {
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000.0 * (double)(time_t)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
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
        if (!ok) fprintf(stderr, "tensor %s differs between %s and %s\n", kn_ckpt_name(ca, i), a, b);
    }
    kn_ckpt_close(ca);
    kn_ckpt_close(cb);
    kn_ctx_free(ctx);
    return ok;
}

static int has_tmp(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *de;
    int found = 0;
    while (!found && (de = readdir(d))) found = strstr(de->d_name, ".tmp.") != NULL;
    closedir(d);
    return found;
}

/* newest step-N checkpoint name in run_dir/checkpoints (static buffer), "" if none */
static const char *newest(const char *run_dir) {
    static char best[256];
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/%s/checkpoints", D, run_dir);
    best[0] = 0;
    long long bs = -1;
    DIR *d = opendir(dir);
    if (!d) return best;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long s;
        if (sscanf(de->d_name, "step-%lld.safetensors", &s) == 1 && !strstr(de->d_name, ".tmp.") && s > bs) {
            bs = s;
            snprintf(best, sizeof best, "%s", de->d_name);
        }
    }
    closedir(d);
    return best;
}

static int count_step_lines(const char *run_dir) {
    char p[2048];
    static char buf[1 << 20];
    snprintf(p, sizeof p, "%s/%s/metrics.jsonl", D, run_dir);
    kn_test_slurp(p, buf, sizeof buf);
    int n = 0;
    for (char *s = buf; (s = strstr(s, "\"event\":\"step\"")); s++) n++;
    return n;
}


static void test_kill(void) {
    srand(12345);
    int landed = 0, in_write = 0, attempts = 0, rounds = 0;
    char ck[2048], errf[2048];
    snprintf(ck, sizeof ck, "%s/rk/checkpoints", D);
    snprintf(errf, sizeof errf, "%s/rk.err", D);
    while (landed < 12 && attempts < 80) {
        attempts++;
        pid_t pid = spawn("rk", errf);
        int hit_write = 0;
        if (landed % 2 == 1) {
            /* aim inside a checkpoint write: wait for a temporary file to appear */
            double t0 = kn_now_seconds();
            while (kn_now_seconds() - t0 < 3.0 && !(hit_write = has_tmp(ck))) {
                if (waitpid(pid, NULL, WNOHANG) == pid) { pid = -1; break; }
            }
        } else {
            /* aim inside a step: wait for a few more logged steps (progress-based, so
             * the test does not depend on the machine's speed), then a random delay */
            int target = count_step_lines("rk") + 1 + rand() % 6;
            double t0 = kn_now_seconds();
            while (count_step_lines("rk") < target && kn_now_seconds() - t0 < 10.0) {
                if (waitpid(pid, NULL, WNOHANG) == pid) { pid = -1; break; }
                sleep_ms(0.2);
            }
            /* a step takes about 1 ms: a random delay of up to 20 steps, well inside the run */
            if (pid > 0) sleep_ms((double)(rand() % 20) / 1000.0);
        }
        int done = pid < 0 || waitpid(pid, NULL, WNOHANG) == pid;
        if (!done) {
            kill(pid, SIGKILL);
            int st = wait_status(pid);
            if (st == 128 + SIGKILL) {
                landed++;
                in_write += hit_write;
            } else {
                done = 1; /* it completed before the kill */
            }
        }
        if (done) {
            /* the run resumed through every kill to its end before enough kills landed (a
             * loaded machine polls slowly): check it, and start again in a fresh directory */
            CHECK(same_tensors("ref/model.safetensors", "rk/model.safetensors"), "killed run (round %d) differs from the uninterrupted one",
                  rounds + 1);
            rounds++;
            char cmd[2200];
            snprintf(cmd, sizeof cmd, "rm -rf '%s/rk'", D);
            kn_test_system(cmd);
            if (rounds >= 4) break;
        }
    }
    printf("kill test: %d kills landed (%d inside checkpoint writes) in %d attempts\n", landed, in_write, attempts);
    CHECK(landed >= 10, "only %d kills landed before the run completed", landed);
    CHECK(in_write >= 3, "only %d kills hit a checkpoint write", in_write);
    /* finish the run */
    int st = run(NULL, "train cfg.ini --run-dir rk --threads 2 --no-progress");
    CHECK(st == 0, "final resume failed (%d): %s", st, g_err);
    CHECK(same_tensors("ref/model.safetensors", "rk/model.safetensors"),
          "the killed-and-resumed run does not match the uninterrupted run bit for bit");
    CHECK(count_step_lines("rk") == count_step_lines("ref"), "metrics.jsonl has %d step lines, expected %d",
          count_step_lines("rk"), count_step_lines("ref"));
    CHECK(!has_tmp(ck), "temporary files left in %s", ck);
}

static void test_signal(int sig, int expect, const char *run_dir) {
    char errf[2048];
    snprintf(errf, sizeof errf, "%s/%s.err", D, run_dir);
    pid_t pid = spawn(run_dir, errf);
    double t0 = kn_now_seconds();
    while (count_step_lines(run_dir) < 30 && kn_now_seconds() - t0 < 20) sleep_ms(1);
    kill(pid, sig);
    int st = wait_status(pid);
    kn_test_slurp(errf, g_err, sizeof g_err);
    CHECK(st == expect, "signal %d: exit status %d, expected %d (%s)", sig, st, expect, g_err);
    CHECK(strstr(g_err, "kiln resume") != NULL, "signal %d: no resume hint: %s", sig, g_err);
    long long at = -1;
    const char *p = strstr(g_err, "after step ");
    if (p) sscanf(p, "after step %lld", &at);
    char want[64];
    snprintf(want, sizeof want, "step-%09lld.safetensors", at);
    CHECK(at > 0 && strcmp(newest(run_dir), want) == 0, "signal %d: newest checkpoint %s, expected %s", sig, newest(run_dir), want);
    char args[512];
    snprintf(args, sizeof args, "resume %s --threads 2 --no-progress", run_dir);
    st = run(NULL, args);
    CHECK(st == 0, "resume after signal %d failed: %s", sig, g_err);
    char a[512];
    snprintf(a, sizeof a, "%s/model.safetensors", run_dir);
    CHECK(same_tensors("ref/model.safetensors", a), "signal %d: resumed run differs from the uninterrupted run", sig);
}

/* stop a run with SIGTERM part-way, leaving checkpoints */
static void partial_run(const char *run_dir, int steps) {
    char errf[2048], cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/%s'", D, run_dir);
    kn_test_system(cmd);
    snprintf(errf, sizeof errf, "%s/%s.err", D, run_dir);
    pid_t pid = spawn(run_dir, errf);
    double t0 = kn_now_seconds();
    while (count_step_lines(run_dir) < steps && kn_now_seconds() - t0 < 20) sleep_ms(1);
    kill(pid, SIGTERM);
    wait_status(pid);
}

static void corrupt(const char *run_dir, const char *file, const char *how) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s/checkpoints/%s", D, run_dir, file);
    struct stat sb;
    stat(p, &sb);
    if (!strcmp(how, "truncate")) {
        CHECK(truncate(p, sb.st_size / 2) == 0, "truncate %s", p);
    } else {
        FILE *f = fopen(p, "r+b");
        fseek(f, sb.st_size - 7, SEEK_SET); /* inside the data section */
        int c = fgetc(f);
        fseek(f, sb.st_size - 7, SEEK_SET);
        fputc(c ^ 0x10, f);
        fclose(f);
    }
}

static void test_corruption(void) {
    const char *kinds[2] = {"truncate", "flip"};
    const char *words[2] = {"truncated", "checksum mismatch"};
    for (int k = 0; k < 2; k++) {
        partial_run("rc", 40);
        char bad[256];
        snprintf(bad, sizeof bad, "%s", newest("rc"));
        CHECK(bad[0], "no checkpoint to corrupt");
        corrupt("rc", bad, kinds[k]);
        int st = run(NULL, "resume rc --threads 2 --no-progress");
        CHECK(st == 0, "%s: resume failed: %s", kinds[k], g_err);
        CHECK(strstr(g_err, "warning") && strstr(g_err, bad) && strstr(g_err, words[k]),
              "%s: the warning should name %s and say '%s': %s", kinds[k], bad, words[k], g_err);
        CHECK(same_tensors("ref/model.safetensors", "rc/model.safetensors"), "%s: run resumed from the previous checkpoint differs", kinds[k]);
    }
    /* a checkpoint from another model placed as the newest */
    partial_run("rc", 40);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && cp other/checkpoints/first.safetensors rc/checkpoints/step-000099999.safetensors", D);
    CHECK(kn_test_system(cmd) == 0, "copy");
    int st = run(NULL, "resume rc --threads 2 --no-progress");
    CHECK(st == 0, "foreign: resume failed: %s", g_err);
    CHECK(strstr(g_err, "step-000099999") && strstr(g_err, "different model"), "foreign checkpoint not named: %s", g_err);
    CHECK(same_tensors("ref/model.safetensors", "rc/model.safetensors"), "foreign: resumed run differs");
    /* every checkpoint bad: a clear error */
    partial_run("rc", 40);
    snprintf(cmd, sizeof cmd, "cd '%s/rc/checkpoints' && for f in step-*; do head -c 100 $f > t && mv t $f; done", D);
    kn_test_system(cmd);
    st = run(NULL, "resume rc --threads 2 --no-progress");
    CHECK(st == 1 && strstr(g_err, "no usable checkpoint"), "all bad: %d %s", st, g_err);
    /* missing */
    st = run(NULL, "inspect rc/checkpoints/nope.safetensors");
    CHECK(st == 1 && strstr(g_err, "nope.safetensors") && strstr(g_err, "No such file"), "missing: %s", g_err);
    st = run(NULL, "resume nowhere");
    CHECK(st == 1 && strstr(g_err, "nowhere"), "resume of nothing: %s", g_err);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/empty' && cp '%s/cfg.ini' '%s/empty/config.ini'", D, D, D);
    kn_test_system(cmd);
    /* killed before its first checkpoint: resume starts from step 0, bit-exactly */
    st = run(NULL, "resume empty --threads 2 --no-progress");
    CHECK(st == 0 && strstr(g_out, "starting from step 0"), "resume without checkpoints: %s", g_err);
    CHECK(same_tensors("ref/model.safetensors", "empty/model.safetensors"), "resume from nothing differs from the uninterrupted run");
}

static void test_config_change(void) {
    partial_run("rcfg", 20);
    char cfg2[8192];
    snprintf(cfg2, sizeof cfg2, "%s", CFG);
    char *p = strstr(cfg2, "lr = 0.003");
    memcpy(p, "lr = 0.004", 10);
    write_cfg("cfg2.ini", cfg2);
    int st = run(NULL, "train cfg2.ini --run-dir rcfg --threads 2 --no-progress");
    CHECK(st == 1 && strstr(g_err, "optimizer.lr") && strstr(g_err, "0.003") && strstr(g_err, "0.004") &&
              strstr(g_err, "--allow-config-change"),
          "config change not refused clearly: %s", g_err);
    st = run(NULL, "train cfg2.ini --run-dir rcfg --threads 2 --no-progress --allow-config-change");
    CHECK(st == 0, "--allow-config-change failed: %s", g_err);
}

/* The algorithm each convolution ran is in the checkpoint's metadata; a resume that
 * runs another one (here: the config changed it; in life another kiln version or CPU)
 * says it will not be bit-identical. */
static void test_algorithms(void) {
    char cfg[8192];
    /* conv1 with 32 channels, then a 32 -> 32 3x3 convolution before [bn1] */
    const char *p = strstr(CFG, "out_channels = 8\n"), *bn = strstr(CFG, "[bn1]");
    CHECK(p != NULL && bn != NULL && p < bn, "CFG has no conv1 with 8 channels before [bn1]");
    if (!p || !bn || bn < p) return;
    const char *after = p + strlen("out_channels = 8\n");
    snprintf(cfg, sizeof cfg, "%.*sout_channels = 32\n%.*s[conv1b]\ntype = conv2d\nout_channels = 32\nkernel = 3\n"
             "padding = 1\n\n%s", (int)(p - CFG), CFG, (int)(bn - after), after, bn);
    write_cfg("alg.ini", cfg);
    int st = run(NULL, "train alg.ini --run-dir ralg --threads 2 --no-progress --set conv1b.algorithm=direct "
                       "--set train.max_steps=6 --set checkpoint.every_steps=3");
    CHECK(st == 0, "algorithm run: %s", g_err);
    st = run(NULL, "inspect ralg/checkpoints/step-000000006.safetensors");
    CHECK(st == 0 && strstr(g_out, "algorithms") && strstr(g_out, "conv1b=direct"),
          "inspect shows no algorithms metadata with conv1b=direct:\n%s%s", g_out, g_err);
    st = run(NULL, "train alg.ini --run-dir ralg --threads 2 --no-progress --allow-config-change --set train.epochs=1");
    CHECK(st == 0, "resume with auto: %s", g_err);
    if (kn_isa_select() == KN_ISA_AVX512) /* Winograd needs AVX-512 (not capped to AVX2: KN_MAX_ISA) */
        CHECK(strstr(g_err, "layer 'conv1b' runs the winograd convolution") && strstr(g_err, "used direct") &&
                  strstr(g_err, "not bit-identically"),
              "resume on Winograd after a direct run: no warning:\n%s", g_err);
    else
        printf("no AVX-512: auto stays direct, no algorithm change to warn about\n");
    CHECK(!strstr(g_err, "conv1' runs"), "a warning about conv1, which did not change:\n%s", g_err);
}

static void test_full_disk(void) {
    partial_run("rf", 30);
    char before[256];
    snprintf(before, sizeof before, "%s", newest("rf"));
    /* the checkpoint is ~20 KB; metrics.jsonl stays under 12 KB */
    int st = run("ulimit -f 12 &&", "resume rf --threads 2 --no-progress");
    CHECK(st == 1, "full disk: exit status %d (%s)", st, g_err);
    CHECK(strstr(g_err, "checkpoint") && (strstr(g_err, "too large") || strstr(g_err, "No space")) && strstr(g_err, "intact"),
          "full disk: unclear message: %s", g_err);
    CHECK(strcmp(newest("rf"), before) == 0, "full disk: newest checkpoint changed from %s to %s", before, newest("rf"));
    char p[2048];
    snprintf(p, sizeof p, "rf/checkpoints/%s", before);
    char args[2300];
    snprintf(args, sizeof args, "inspect %s", p);
    CHECK(run(NULL, args) == 0 && strstr(g_out, "checksum ok"), "earlier checkpoint damaged: %s %s", g_out, g_err);
    /* without the limit the run completes and matches */
    st = run(NULL, "resume rf --threads 2 --no-progress");
    CHECK(st == 0, "resume after full disk failed: %s", g_err);
    CHECK(same_tensors("ref/model.safetensors", "rf/model.safetensors"), "run after full disk differs");
    /* on_error = continue: training goes on with warnings */
    partial_run("rf2", 30);
    char cfg3[8192];
    snprintf(cfg3, sizeof cfg3, "%s", CFG);
    char *q = strstr(cfg3, "keep_last = 3\n");
    char tail[8192];
    snprintf(tail, sizeof tail, "%s", q + strlen("keep_last = 3\n"));
    snprintf(q, sizeof cfg3 - (size_t)(q - cfg3), "keep_last = 3\non_error = continue\n%s", tail);
    write_cfg("cfg3.ini", cfg3);
    st = run("ulimit -f 12 &&", "train cfg3.ini --run-dir rf2 --threads 2 --no-progress --allow-config-change");
    /* stdout is under the same file-size limit: count the warnings instead */
    int warnings = 0;
    for (const char *w = g_err; (w = strstr(w, "training continues")); w++) warnings++;
    CHECK(warnings >= 15, "on_error=continue: %d warnings; training did not go on: %s", warnings, g_err);
}

static void test_versions(void) {
    int st = run(NULL, "train cfg.ini --run-dir rinit --threads 2 --no-progress --init-from ref:first --set train.epochs=1");
    CHECK(st == 0, "--init-from failed: %s", g_err);
    CHECK(same_tensors("ref/checkpoints/first.safetensors", "rinit/checkpoints/first.safetensors") ||
              strstr(g_out, "initialised from"),
          "--init-from did not start from ref's first weights");
    st = run(NULL, "train cfg.ini --run-dir rinit2 --threads 2 --no-progress --init-from ref:best --set train.epochs=1");
    CHECK(st == 0 && strstr(g_out, "best.safetensors"), "--init-from :best: %s %s", g_out, g_err);
    st = run(NULL, "train cfg.ini --run-dir rinit3 --threads 2 --no-progress --init-from other:first");
    CHECK(st == 1 && strstr(g_err, "different model"), "--init-from a different model: %s", g_err);
    st = run(NULL, "inspect ref/checkpoints/best.safetensors");
    CHECK(st == 0 && strstr(g_out, "checksum ok") && strstr(g_out, "conv1.weight") && strstr(g_out, "optimizer.m.fc1.weight") &&
              strstr(g_out, "bn1.running_var") && strstr(g_out, "step"),
          "inspect output: %s %s", g_out, g_err);
    st = run(NULL, "inspect ref/checkpoints/best.safetensors --dump bn1.running_mean");
    int lines = 0;
    for (char *s = g_out; *s; s++) lines += *s == '\n';
    CHECK(st == 0 && lines == 8, "dump: %d lines: %s", lines, g_err);
}

int main(void) {
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("checkpoint"));
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && rm -rf ref rk rs rt rc rf rf2 rcfg ralg rinit rinit2 rinit3 other empty", D);
    kn_test_system(cmd);
    kn_test_make_images(D, "data", 640, 12, 12);
    write_cfg("cfg.ini", CFG);
    /* a different model, for "checkpoint from another model" */
    char other[8192];
    snprintf(other, sizeof other, "%s", CFG);
    char *p = strstr(other, "out_channels = 8");
    memcpy(p, "out_channels = 6", 16);
    write_cfg("other.ini", other);
    CHECK(run(NULL, "train other.ini --run-dir other --threads 2 --no-progress --set train.epochs=1") == 0, "other: %s", g_err);

    double t0 = kn_now_seconds();
    int st = run(NULL, "train cfg.ini --run-dir ref --threads 2 --no-progress");
    double ref_seconds = kn_now_seconds() - t0;
    CHECK(st == 0, "reference run failed: %s", g_err);
    printf("reference run: %.2fs, %d steps\n", ref_seconds, count_step_lines("ref"));

    test_kill();
    test_signal(SIGINT, 130, "rs");
    test_signal(SIGTERM, 143, "rt");
    test_corruption();
    test_config_change();
    test_algorithms();
    test_full_disk();
    test_versions();
    return kn_test_finish("test_checkpoint");
}
