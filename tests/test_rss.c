/* The predicted peak resident memory is an upper bound: for the examples, `kiln plan
 * --json` (process.total) must be at least the peak RSS of a short `kiln train` run
 * (ru_maxrss from wait4: steps, validation, test pass and checkpoint writes) and at
 * most 5% above it. The suite runs it on the machine's path and again capped to AVX2
 * (scripts/test.sh), so both ISAs are covered.
 *   test_rss        MLP and CNN at batch 64, 10 steps, 2 threads
 *   test_rss full   (ctest test_rss_full, label slow) batches 64 and 512, 30 steps
 * Needs Debian's dataset-fashion-mnist (the examples' data); without it the test says
 * so and passes. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char D[1024];
static char g_out[1 << 20], g_err[65536];

static const char *bin(void) {
    const char *b = getenv("KN_BIN");
    return b ? b : "./kiln";
}

/* peak RSS in bytes of `kiln train` with these arguments, -1 on failure */
static long long train_rss(const char *cfg, int batch, int steps) {
    char b[64], s[64], rd[1100];
    snprintf(b, sizeof b, "data.batch_size=%d", batch);
    snprintf(s, sizeof s, "train.max_steps=%d", steps);
    snprintf(rd, sizeof rd, "%s/run-%d", D, batch);
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", rd);
    kn_test_system(cmd);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
        execl(bin(), "kiln", "train", cfg, "--set", b, "--set", s, "--set", "train.epochs=1", "--threads", "2",
              "--quiet", "--run-dir", rd, (char *)NULL);
        _exit(98);
    }
    int st;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
    return (long long)ru.ru_maxrss * 1024;
}

static long long predicted(const char *cfg, int batch) {
    char args[1400];
    snprintf(args, sizeof args, "plan '%s' --batch %d --threads 2 --json", cfg, batch);
    if (kn_test_run_kiln(D, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err) != 0) return -1;
    const char *p = strstr(g_out, "\"process\"");
    p = p ? strstr(p, "\"total\"") : NULL;
    p = p ? strchr(p, ':') : NULL;
    return p ? (long long)strtod(p + 1, NULL) : -1;
}

int main(int argc, char **argv) {
    const int full = argc > 1 && !strcmp(argv[1], "full");
    snprintf(D, sizeof D, "%s", kn_test_tmpdir(full ? "test_rss_full" : "test_rss"));
    if (getenv("KN_SANITIZED")) { /* ASan's shadow memory and quarantine are not kiln's: the plain build checks it */
        printf("sanitizer build: resident memory is ASan's, not kiln's; nothing checked\n");
        return kn_test_finish("test_rss");
    }
    struct stat sb;
    if (stat("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", &sb) != 0) {
        printf("Debian's dataset-fashion-mnist is not installed: the examples cannot run; nothing checked\n");
        return kn_test_finish("test_rss");
    }
    const char *cfgs[2] = {"examples/fashion_mnist_mlp.ini", "examples/fashion_mnist_cnn.ini"};
    const int batches[2] = {64, 512};
    for (int c = 0; c < 2; c++)
        for (int b = 0; b < (full ? 2 : 1); b++) {
            char cfg[1024];
            snprintf(cfg, sizeof cfg, "%s", kn_test_src(cfgs[c]));
            long long pred = predicted(cfg, batches[b]), rss = train_rss(cfg, batches[b], full ? 30 : 10);
            CHECK(pred > 0 && rss > 0, "%s batch %d: plan or train failed: %s", cfgs[c], batches[b], g_err);
            if (pred <= 0 || rss <= 0) continue;
            const double r = (double)pred / (double)rss;
            printf("%-32s batch %3d: predicted %.1f MiB, measured %.1f MiB, predicted/measured %.3f\n", cfgs[c],
                   batches[b], pred / 1048576.0, rss / 1048576.0, r);
            CHECK(pred >= rss, "%s batch %d: predicted %.1f MiB is below the measured peak %.1f MiB", cfgs[c],
                  batches[b], pred / 1048576.0, rss / 1048576.0);
            CHECK(r <= 1.05, "%s batch %d: predicted %.1f MiB is more than 5%% above the measured %.1f MiB", cfgs[c],
                  batches[b], pred / 1048576.0, rss / 1048576.0);
        }
    return kn_test_finish(full ? "test_rss full" : "test_rss");
}
