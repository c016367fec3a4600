/* Checked size arithmetic (issue 10, item 8):
 *  - kn_shape_numel and kn_shape_check never overflow (-1 / an error instead);
 *  - a config with 4.6e18 parameters (tests/fixtures/readers/b_param_*.ini, from the
 *    fuzzing reports) is a clear error naming the layer and the tensor, not a plan that
 *    "fits" and a segfault; `kiln plan` on it exits non-zero without "fits";
 *  - a reshape whose dims multiply past int64 is an error (found by fuzz_config);
 *  - IDX header dimensions are validated before the planner uses them: the images file
 *    of fuzz_idx_planner_overflow.bin (6 x 943670861 x 1415249923) is refused by
 *    `kiln plan` and `kiln train` with the reader's message naming the file. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln.h"
#include "nn/model.h"
#include "testutil.h"

static kn_ctx *ctx;
static char D[1024];
static char g_out[65536], g_err[65536];

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void test_numel(void) {
    kn_shape s = kn_shape2((int64_t)1 << 40, (int64_t)1 << 40);
    CHECK(kn_shape_numel(&s) == -1, "2^80 elements: %lld", (long long)kn_shape_numel(&s));
    s = kn_shape2(242243305, 19037413721LL); /* 4.6e18: fits int64, not as bytes */
    CHECK(kn_shape_numel(&s) == 242243305LL * 19037413721LL, "4.6e18 elements");
    kn_ctx_clear(ctx);
    CHECK(kn_shape_check(ctx, &s, 1, 4, "tensor 'w'", NULL) == KN_ERR_SHAPE && has(kn_ctx_message(ctx), "tensor 'w'") &&
              has(kn_ctx_message(ctx), "2^48"),
          "4.6e18 floats: %s", kn_ctx_message(ctx));
    s = kn_shape2(-1, -1);
    CHECK(kn_shape_numel(&s) == -1, "negative dims");
    kn_ctx_clear(ctx);
    CHECK(kn_shape_check(ctx, &s, 1, 4, "x", NULL) == KN_ERR_SHAPE && has(kn_ctx_message(ctx), "dimension 0 is -1"), "%s",
          kn_ctx_message(ctx));
    s = kn_shape4(64, 1, 28, 28);
    int64_t n = 0;
    kn_ctx_clear(ctx);
    CHECK(kn_shape_check(ctx, &s, 1, 4, "x", &n) == KN_OK && n == 64 * 28 * 28, "ordinary shape");
    int64_t r;
    CHECK(kn_mul_ovf(INT64_MAX / 2, 3, &r) && !kn_mul_ovf(1 << 20, 1 << 20, &r) && r == (int64_t)1 << 40, "kn_mul_ovf");
    CHECK(kn_add_ovf(INT64_MAX, 1, &r) && !kn_add_ovf(1, 2, &r) && r == 3, "kn_add_ovf");
}

static char *read_fixture(const char *rel) {
    static char buf[8192];
    kn_test_slurp(kn_test_src(rel), buf, sizeof buf);
    return buf;
}

static void test_param_overflow(void) {
    static const char *const files[] = {"tests/fixtures/readers/b_param_wrap.ini", "tests/fixtures/readers/b_param_overflow.ini"};
    for (int i = 0; i < 2; i++) {
        const char *text = read_fixture(files[i]);
        CHECK(strlen(text) > 100, "fixture %s", files[i]);
        kn_config *cfg = NULL;
        kn_ctx_clear(ctx);
        if (kn_config_parse_string(ctx, files[i], text, &cfg) != KN_OK) { CHECK(0, "parse: %s", kn_ctx_message(ctx)); continue; }
        kn_model m;
        kn_ctx_clear(ctx);
        int rc = kn_model_plan(ctx, cfg, 1, 1, 1, 28, 28, 10, &m);
        const char *msg = kn_ctx_message(ctx);
        CHECK(rc == KN_ERR_SHAPE && has(msg, "layer 'c2'") && has(msg, "'c2.weight'") && has(msg, "[1048576,1048576,1024,1024]") &&
                  has(msg, "2^48"),
              "%s: rc %d, parameters %lld: %s", files[i], rc, (long long)m.store.nparam, msg);
        kn_model_free(&m);
        kn_config_free(cfg);
        /* through `kiln plan`, with a small data set */
        char cfgname[64], args[256];
        snprintf(cfgname, sizeof cfgname, "bp%d.ini", i);
        char *copy = strdup(text), *dir = strstr(copy, "dir = ");
        if (dir) { /* dir = $HELDOUT_WORK/...: point it at the synthetic set */
            char *eol = strchr(dir, '\n');
            memmove(dir + 10, eol, strlen(eol) + 1);
            memcpy(dir, "dir = data", 10);
        }
        kn_test_write(D, cfgname, copy);
        free(copy);
        snprintf(args, sizeof args, "plan %s", cfgname);
        int st = kn_test_run_kiln(D, NULL, args, g_out, sizeof g_out, g_err, sizeof g_err);
        CHECK(st == 1 && !has(g_out, "fits") && has(g_err, "'c2.weight'"), "kiln plan %s: status %d: %s%s", cfgname, st, g_out, g_err);
    }
}

static void test_reshape_overflow(void) {
    const char *text = "[data]\nbatch_size = 2\n[r]\ntype = reshape\nshape = 5, 4611686018427387904, 4\n[fc]\ntype = linear\nout = 4\n";
    kn_config *cfg = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_config_parse_string(ctx, "r.ini", text, &cfg) == KN_OK, "parse");
    kn_model m;
    kn_ctx_clear(ctx);
    int rc = kn_model_plan(ctx, cfg, 2, 2, 1, 8, 8, 4, &m);
    CHECK(rc == KN_ERR_SHAPE && has(kn_ctx_message(ctx), "more than 2^48 elements"), "reshape overflow: rc %d %s", rc,
          kn_ctx_message(ctx));
    kn_model_free(&m);
    kn_config_free(cfg);
    /* a dimension beyond int64 is not a dimension */
    text = "[data]\nbatch_size = 2\n[r]\ntype = reshape\nshape = 5, 99999999999999999999999\n[fc]\ntype = linear\nout = 4\n";
    cfg = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_config_parse_string(ctx, "r2.ini", text, &cfg) == KN_OK, "parse");
    kn_ctx_clear(ctx);
    rc = kn_model_plan(ctx, cfg, 2, 2, 1, 8, 8, 4, &m);
    CHECK(rc == KN_ERR_CONFIG && has(kn_ctx_message(ctx), "is not a dimension"), "huge dim: rc %d %s", rc, kn_ctx_message(ctx));
    kn_model_free(&m);
    kn_config_free(cfg);
}

static void test_idx_header(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/ovf' && cd '%s/ovf' && f='%s' && "
             "dd if=\"$f\" bs=1 skip=3 count=67 of=train-images-idx3-ubyte.gz 2>/dev/null && cp train-images-idx3-ubyte.gz t10k-images-idx3-ubyte.gz && "
             "dd if=\"$f\" bs=1 skip=73 of=train-labels-idx1-ubyte.gz 2>/dev/null && cp train-labels-idx1-ubyte.gz t10k-labels-idx1-ubyte.gz",
             D, D, kn_test_src("tests/fixtures/readers/idx_planner_overflow.bin"));
    CHECK(kn_test_system(cmd) == 0, "cannot set up the data set");
    kn_test_write(D, "ovf.ini", "[data]\ndir = ovf\nbatch_size = 2\n[flat]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n");
    const char *verbs[] = {"plan ovf.ini", "train ovf.ini --run-dir ovf-run --no-progress"};
    for (int i = 0; i < 2; i++) {
        int st = kn_test_run_kiln(D, NULL, verbs[i], g_out, sizeof g_out, g_err, sizeof g_err);
        CHECK(st == 1 && has(g_err, "ovf/train-images-idx3-ubyte.gz: IDX dimensions 6x943670861x... exceed the limit of 2^31 bytes"),
              "kiln %s: status %d: %s", verbs[i], st, g_err);
    }
}

int main(void) {
    ctx = kn_ctx_new();
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("test_sizes"));
    kn_test_make_images(D, "data", 16, 28, 28);
    test_numel();
    test_param_overflow();
    test_reshape_overflow();
    test_idx_header();
    kn_ctx_free(ctx);
    return kn_test_finish("test_sizes");
}
