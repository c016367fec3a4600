#define _POSIX_C_SOURCE 200809L
#include "testutil.h"

#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "data/data.h"

int kn_test_failures = 0;
int kn_test_checks = 0;

static void mkdirs(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(tmp, 0755); *p = '/'; }
    mkdir(tmp, 0755);
}

const char *kn_test_tmpdir(const char *test_name) {
    static char buf[1024];
    const char *base = getenv("KN_TMP");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : "/tmp/kiln-tests", test_name);
    mkdirs(buf);
    return buf;
}

const char *kn_test_src(const char *rel) {
    static char buf[1024];
    const char *base = getenv("KN_SRC_DIR");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : ".", rel);
    return buf;
}

int kn_test_finish(const char *name) {
    printf("%s: %d checks, %d failed\n", name, kn_test_checks, kn_test_failures);
    return kn_test_failures ? 1 : 0;
}

void kn_test_make_images(const char *dir, const char *sub, int n, int rows, int cols) {
    kn_test_make_images_noisy(dir, sub, n, rows, cols, 0.0);
}

void kn_test_make_images_noisy(const char *dir, const char *sub, int n, int rows, int cols, double noise) {
    char d[1200], p[1400];
    snprintf(d, sizeof d, "%s/%s", dir, sub);
    mkdirs(d);
    uint8_t *img = malloc((size_t)n * rows * cols), *lab = malloc((size_t)n);
    kn_ctx *ctx = kn_ctx_new();
    int64_t di[3] = {n, rows, cols}, dl[1] = {n};
    const char *names[2][2] = {{"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"},
                               {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}};
    for (int s = 0; s < 2; s++) {
        kn_rng r;
        kn_rng_seed(&r, 42 + (uint64_t)s); /* the test set differs from the training set */
        for (int i = 0; i < n; i++) {
            int k = (int)kn_rng_below(&r, 10);
            lab[i] = (uint8_t)k;
            for (int j = 0; j < rows * cols; j++) {
                int seg = (int)((int64_t)j * 10 / (rows * cols)); /* ten bands, one per class */
                int v = (int)kn_rng_below(&r, 80) + (seg == k ? 150 : 0);
                img[(size_t)i * rows * cols + j] = (uint8_t)(v > 255 ? 255 : v);
            }
        }
        if (s == 0 && noise > 0) {
            kn_rng q;
            kn_rng_seed(&q, 7);
            for (int i = 0; i < n; i++)
                if (kn_rng_uniform(&q) < noise) lab[i] = (uint8_t)kn_rng_below(&q, 10);
        }
        snprintf(p, sizeof p, "%s/%s", d, names[s][0]);
        CHECK(kn_idx_write(ctx, p, 3, di, img, 1) == 0, "write %s", p);
        snprintf(p, sizeof p, "%s/%s", d, names[s][1]);
        CHECK(kn_idx_write(ctx, p, 1, dl, lab, 1) == 0, "write %s", p);
    }
    kn_ctx_free(ctx);
    free(img);
    free(lab);
}

int kn_test_system(const char *cmd) {
    int st = system(cmd);
    if (st == -1) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

void kn_test_slurp(const char *path, char *buf, size_t n) {
    buf[0] = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return;
    size_t k = fread(buf, 1, n - 1, f);
    buf[k] = 0;
    fclose(f);
}

int kn_test_run_kiln(const char *dir, const char *pre, const char *args, char *out, size_t nout, char *err,
                     size_t nerr) {
    const char *bin = getenv("KN_BIN");
    char cmd[8192], p[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' %s >'%s/out.txt' 2>'%s/err.txt'", dir, pre ? pre : "",
             bin ? bin : "./kiln", args, dir, dir);
    int st = kn_test_system(cmd);
    snprintf(p, sizeof p, "%s/out.txt", dir);
    kn_test_slurp(p, out, nout);
    snprintf(p, sizeof p, "%s/err.txt", dir);
    kn_test_slurp(p, err, nerr);
    return st;
}

void kn_test_write(const char *dir, const char *name, const char *text) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) return;
    fputs(text, f);
    fclose(f);
}
