/* Tests for the data module: IDX reading/writing (plain and gzip) and every error case,
 * datasets, statistics, splits, and the loader (shuffling, normalisation, drop_last,
 * prefetch == synchronous, resuming mid-epoch). */
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"
#include "testutil.h"

#include <string.h>
#include <unistd.h>
#include <zlib.h>

static kn_ctx *ctx;
static char dir[1024];

static const char *tpath(const char *name) {
    static char buf[8][1200];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void write_raw(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    fwrite(b, 1, n, f);
    fclose(f);
}

static void write_gz(const char *path, const uint8_t *b, size_t n) {
    gzFile f = gzopen(path, "wb");
    if (!f) { perror(path); return; }
    if (n) gzwrite(f, b, (unsigned)n);
    gzclose(f);
}

static uint8_t *read_raw(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { *n = 0; return NULL; }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

/* Load `path`, expect failure with `code`, and check the message names the path and
 * contains each of the given substrings (NULL-terminated). */
static void expect_err(const char *path, int code, const char *w1, const char *w2) {
    kn_idx x;
    kn_ctx_clear(ctx);
    int rc = kn_idx_load(ctx, path, &x);
    const char *m = kn_ctx_message(ctx);
    if (getenv("KN_VERBOSE")) printf("  [%d] %s\n", rc, m);
    CHECK(rc == code, "%s: rc %d, expected %d (%s)", path, rc, code, m);
    CHECK(kn_ctx_code(ctx) == code, "%s: ctx code %d", path, kn_ctx_code(ctx));
    CHECK(strncmp(m, path, strlen(path)) == 0, "message does not start with the path: %s", m);
    if (w1) CHECK(has(m, w1), "message lacks '%s': %s", w1, m);
    if (w2) CHECK(has(m, w2), "message lacks '%s': %s", w2, m);
    CHECK(x.data == NULL && x.nd == 0, "output not cleared on error");
}

/* ---------------------------------------------------------------- IDX */
static void test_idx_roundtrip(void) {
    int64_t dims[3] = {3, 4, 5};
    uint8_t data[60];
    for (int i = 0; i < 60; i++) data[i] = (uint8_t)(i * 37 + 11);
    for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "rt.idx.gz" : "rt.idx");
        CHECK(kn_idx_write(ctx, p, 3, dims, data, gz) == KN_OK, "write: %s", kn_ctx_message(ctx));
        size_t n;
        uint8_t *raw = read_raw(p, &n);
        CHECK(raw != NULL, "cannot reread %s", p);
        if (raw && gz) CHECK(n > 2 && raw[0] == 0x1f && raw[1] == 0x8b, "not gzip");
        if (raw && !gz) {
            CHECK(n == 4 + 12 + 60, "plain size %zu", n);
            static const uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5};
            CHECK(memcmp(raw, hdr, 16) == 0, "plain header bytes");
            CHECK(memcmp(raw + 16, data, 60) == 0, "plain data bytes");
        }
        free(raw);
        kn_idx x;
        int rc = kn_idx_load(ctx, p, &x);
        CHECK(rc == KN_OK, "load %s: %s", p, kn_ctx_message(ctx));
        if (rc == KN_OK) {
            CHECK(x.nd == 3 && x.dims[0] == 3 && x.dims[1] == 4 && x.dims[2] == 5, "dims");
            CHECK(memcmp(x.data, data, 60) == 0, "data");
            kn_idx_free(&x);
            CHECK(x.data == NULL, "free clears");
        }
    }
    /* 1 and 4 dims, a larger gzip file crossing the read buffer */
    int64_t d1[1] = {100000};
    uint8_t *big = malloc(100000);
    for (int i = 0; i < 100000; i++) big[i] = (uint8_t)((i * 2654435761u) >> 24);
    CHECK(kn_idx_write(ctx, tpath("big.gz"), 1, d1, big, 1) == KN_OK, "write big");
    kn_idx x;
    CHECK(kn_idx_load(ctx, tpath("big.gz"), &x) == KN_OK, "load big: %s", kn_ctx_message(ctx));
    CHECK(x.nd == 1 && x.dims[0] == 100000 && x.data && memcmp(x.data, big, 100000) == 0,
          "big data");
    kn_idx_free(&x);
    int64_t d4[4] = {2, 3, 2, 2};
    CHECK(kn_idx_write(ctx, tpath("d4.idx"), 4, d4, big, 0) == KN_OK, "write 4d");
    CHECK(kn_idx_load(ctx, tpath("d4.idx"), &x) == KN_OK, "load 4d");
    CHECK(x.nd == 4 && x.dims[3] == 2 && memcmp(x.data, big, 24) == 0, "4d content");
    kn_idx_free(&x);
    free(big);
    /* write errors name the path */
    kn_ctx_clear(ctx);
    int rc = kn_idx_write(ctx, "/nonexistent-dir-kiln/x.idx", 1, d1, data, 0);
    CHECK(rc == KN_ERR_IO && has(kn_ctx_message(ctx), "/nonexistent-dir-kiln/x.idx"), "%s",
          kn_ctx_message(ctx));
    rc = kn_idx_write(ctx, "/nonexistent-dir-kiln/x.idx.gz", 1, d1, data, 1);
    CHECK(rc == KN_ERR_IO && has(kn_ctx_message(ctx), "/nonexistent-dir-kiln/x.idx.gz"), "%s",
          kn_ctx_message(ctx));
    int64_t bad[1] = {0};
    rc = kn_idx_write(ctx, tpath("bad.idx"), 1, bad, data, 0);
    CHECK(rc == KN_ERR_INVALID && has(kn_ctx_message(ctx), "bad.idx"), "%s", kn_ctx_message(ctx));
}

static void test_idx_errors(void) {
    uint8_t buf[64];
    /* missing file */
    const char *missing = tpath("no-such-file.idx.gz");
    unlink(missing);
    expect_err(missing, KN_ERR_IO, "No such file", "dataset-fashion-mnist");
    {
        const char *m = kn_ctx_message(ctx);
        CHECK(has(m, "data.dir"), "missing-file hint: %s", m);
    }
    /* empty file */
    write_raw(tpath("empty.idx"), buf, 0);
    expect_err(tpath("empty.idx"), KN_ERR_FORMAT, "expected an IDX file", "0 bytes");
    /* bad magic */
    const char *txt = "hello, world\n";
    write_raw(tpath("magic.idx"), (const uint8_t *)txt, strlen(txt));
    expect_err(tpath("magic.idx"), KN_ERR_FORMAT,
               "expected an IDX file: first two bytes 0x00 0x00", "found 0x68 0x65");
    /* float element type */
    static const uint8_t f32[] = {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0x80, 0x3f};
    write_raw(tpath("float.idx"), f32, sizeof f32);
    expect_err(tpath("float.idx"), KN_ERR_FORMAT, "IDX element type 0x0D (float) is not supported",
               "unsigned-byte IDX files (type 0x08)");
    /* ndims 0 and 5 */
    static const uint8_t nd0[] = {0, 0, 8, 0};
    write_raw(tpath("nd0.idx"), nd0, sizeof nd0);
    expect_err(tpath("nd0.idx"), KN_ERR_FORMAT, "0 dimensions", "1 to 4");
    static const uint8_t nd5[] = {0, 0, 8, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1,
                                  0, 0, 0, 1, 7};
    write_raw(tpath("nd5.idx"), nd5, sizeof nd5);
    expect_err(tpath("nd5.idx"), KN_ERR_FORMAT, "5 dimensions", "1 to 4");
    /* zero and negative dimension */
    static const uint8_t dz[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 0};
    write_raw(tpath("dimzero.idx"), dz, sizeof dz);
    expect_err(tpath("dimzero.idx"), KN_ERR_FORMAT, "dimension 1 is 0", "at least 1");
    static const uint8_t dn[] = {0, 0, 8, 1, 0xff, 0xff, 0xff, 0xfe};
    write_raw(tpath("dimneg.idx"), dn, sizeof dn);
    expect_err(tpath("dimneg.idx"), KN_ERR_FORMAT, "dimension 0 is -2", NULL);
    /* total size over 2^31 */
    static const uint8_t huge[] = {0, 0, 8, 3, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0};
    write_raw(tpath("huge.idx"), huge, sizeof huge);
    expect_err(tpath("huge.idx"), KN_ERR_FORMAT, "2^31", NULL);
    /* truncated dimension header */
    static const uint8_t th[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0};
    write_raw(tpath("trunchdr.idx"), th, sizeof th);
    expect_err(tpath("trunchdr.idx"), KN_ERR_FORMAT, "truncated", "3 dimensions");
    /* truncated data: 2x3 promises 6 bytes, 4 present */
    static const uint8_t td[] = {0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4};
    write_raw(tpath("trunc.idx"), td, sizeof td);
    expect_err(tpath("trunc.idx"), KN_ERR_FORMAT,
               "truncated: header promises 6 bytes of data", "found 4");
    /* trailing bytes */
    static const uint8_t tr[] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 9, 9, 9};
    write_raw(tpath("trail.idx"), tr, sizeof tr);
    expect_err(tpath("trail.idx"), KN_ERR_FORMAT, "3 unexpected bytes after the data", NULL);

    /* gzip cases: the same checks through zlib */
    write_gz(tpath("trunc.idx.gz"), td, sizeof td);
    expect_err(tpath("trunc.idx.gz"), KN_ERR_FORMAT,
               "truncated: header promises 6 bytes of data", "found 4");
    write_gz(tpath("trail.idx.gz"), tr, sizeof tr);
    expect_err(tpath("trail.idx.gz"), KN_ERR_FORMAT, "3 unexpected bytes after the data", NULL);
    write_gz(tpath("float.idx.gz"), f32, sizeof f32);
    expect_err(tpath("float.idx.gz"), KN_ERR_FORMAT, "IDX element type 0x0D (float)", NULL);
    write_gz(tpath("magic.idx.gz"), (const uint8_t *)txt, strlen(txt));
    expect_err(tpath("magic.idx.gz"), KN_ERR_FORMAT, "expected an IDX file", "found 0x68 0x65");

    int64_t d2[2] = {2, 3};
    static const uint8_t six[6] = {1, 2, 3, 4, 5, 6};
    int64_t d1[1] = {4};
    CHECK(kn_idx_write(ctx, tpath("ok.gz"), 2, d2, six, 1) == KN_OK, "w2");
    size_t n;
    uint8_t *gz = read_raw(tpath("ok.gz"), &n);
    CHECK(gz && n > 20, "gz bytes");
    if (gz && n > 20) {
        /* corrupt CRC-32 in the trailer (bytes n-8..n-5) */
        uint8_t *c = malloc(n);
        memcpy(c, gz, n);
        c[n - 8] ^= 0x55;
        write_raw(tpath("crc.gz"), c, n);
        expect_err(tpath("crc.gz"), KN_ERR_FORMAT, "corrupt gzip stream", "incorrect data check");
        /* corrupt ISIZE */
        memcpy(c, gz, n);
        c[n - 4] ^= 0x01;
        write_raw(tpath("isize.gz"), c, n);
        expect_err(tpath("isize.gz"), KN_ERR_FORMAT, "corrupt gzip stream", NULL);
        /* cut off before the trailer */
        write_raw(tpath("cut.gz"), gz, n - 6);
        expect_err(tpath("cut.gz"), KN_ERR_FORMAT, "gzip", NULL);
        free(c);
    }
    free(gz);
    /* flipped byte inside the compressed data of a larger file */
    {
        enum { N = 4096 };
        uint8_t *d = malloc(N);
        for (int i = 0; i < N; i++) d[i] = (uint8_t)((i * i) % 251);
        int64_t dd[1] = {N};
        CHECK(kn_idx_write(ctx, tpath("big2.gz"), 1, dd, d, 1) == KN_OK, "w3");
        uint8_t *b = read_raw(tpath("big2.gz"), &n);
        if (b && n > 40) {
            b[n / 2] ^= 0x10;
            write_raw(tpath("flip.gz"), b, n);
            expect_err(tpath("flip.gz"), KN_ERR_FORMAT, "corrupt gzip stream", "zlib:");
        } else {
            CHECK(0, "big2.gz too small");
        }
        free(b);
        free(d);
    }
    /* two concatenated gzip members (zlib reads them as one stream), and a member cut
     * in the middle of its deflate data */
    {
        static const uint8_t a[4] = {9, 8, 7, 6};
        CHECK(kn_idx_write(ctx, tpath("m1.gz"), 1, d1, a, 1) == KN_OK, "m1");
        CHECK(kn_idx_write(ctx, tpath("m2.gz"), 1, d1, a, 1) == KN_OK, "m2");
        size_t n1, n2;
        uint8_t *b1 = read_raw(tpath("m1.gz"), &n1), *b2 = read_raw(tpath("m2.gz"), &n2);
        if (b1 && b2) {
            uint8_t *cat = malloc(n1 + n2);
            memcpy(cat, b1, n1);
            memcpy(cat + n1, b2, n2);
            write_raw(tpath("concat.gz"), cat, n1 + n2);
            /* the second member adds 12 bytes (its header + data) after the first's data */
            expect_err(tpath("concat.gz"), KN_ERR_FORMAT, "12 unexpected bytes after the data",
                       NULL);
            /* first member only, cut in the middle of the deflate data */
            write_raw(tpath("cutmid.gz"), b1, n1 - 10);
            expect_err(tpath("cutmid.gz"), KN_ERR_FORMAT, NULL, NULL);
            free(cat);
        }
        free(b1);
        free(b2);
    }
    /* a directory instead of a file */
    expect_err(dir, KN_ERR_IO, NULL, NULL);
}

/* ---------------------------------------------------------------- datasets */
/* Issue 10 item 9: a gzip file whose 8-byte trailer (CRC-32, length) is cut off is
 * rejected even when the deflate data ends exactly where the file does (zlib's gzread
 * then reports plain end of file; kiln checks the trailer itself). The data must be
 * larger than zlib's input buffer and not compress much for that to happen. */
static void test_gzip_trailer(void) {
    enum { N = 3 << 20 };
    uint8_t *d = malloc(N);
    uint64_t z = 12345;
    for (int i = 0; i < N; i++) { z = z * 6364136223846793005ULL + 1442695040888963407ULL; d[i] = (uint8_t)(z >> 56); }
    int64_t dims[3] = {N / 1024, 32, 32};
    CHECK(kn_idx_write(ctx, tpath("trailer.gz"), 3, dims, d, 1) == KN_OK, "write: %s", kn_ctx_message(ctx));
    size_t n;
    uint8_t *b = read_raw(tpath("trailer.gz"), &n);
    CHECK(b && n > (size_t)N, "incompressible: %zu bytes", n);
    if (b) {
        for (int cut = 1; cut <= 8; cut++) {
            char name[64];
            snprintf(name, sizeof name, "trailer-cut%d.gz", cut);
            write_raw(tpath(name), b, n - (size_t)cut);
            expect_err(tpath(name), KN_ERR_FORMAT, "gzip", "cut short");
        }
        /* trailing garbage after the gzip stream is not ignored either */
        uint8_t *g = malloc(n + 3);
        memcpy(g, b, n);
        memcpy(g + n, "xyz", 3);
        write_raw(tpath("trailer-garbage.gz"), g, n + 3);
        expect_err(tpath("trailer-garbage.gz"), KN_ERR_FORMAT, "3 bytes after the end of the gzip stream", NULL);
        free(g);
        /* and the whole file still loads, through the peek too */
        kn_idx x;
        CHECK(kn_idx_load(ctx, tpath("trailer.gz"), &x) == KN_OK && x.nd == 3 && memcmp(x.data, d, N) == 0, "full file: %s",
              kn_ctx_message(ctx));
        kn_idx_free(&x);
    }
    free(b);
    free(d);
}

/* Issue 10 item 8: the header-only peek the planner uses applies the reader's checks
 * (before, the planner took negative or overflowing dimensions from it). The reproducer
 * fuzz_idx_planner_overflow.bin is tests/fixtures/readers/idx_planner_overflow.bin. */
static void test_idx_peek(void) {
    int nd = 0;
    int64_t dims[4];
    static const uint8_t ok[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6};
    write_raw(tpath("peek-ok.idx"), ok, sizeof ok);
    kn_ctx_clear(ctx);
    CHECK(kn_idx_peek(ctx, tpath("peek-ok.idx"), &nd, dims) == KN_OK && nd == 3 && dims[0] == 2 && dims[1] == 3 && dims[2] == 1,
          "peek ok: %s", kn_ctx_message(ctx));
    static const uint8_t neg[] = {0, 0, 8, 3, 0, 0, 0, 2, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 1};
    write_raw(tpath("peek-neg.idx"), neg, sizeof neg);
    kn_ctx_clear(ctx);
    CHECK(kn_idx_peek(ctx, tpath("peek-neg.idx"), &nd, dims) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "dimension 1 is -16"),
          "peek negative: %s", kn_ctx_message(ctx));
    static const uint8_t big[] = {0, 0, 8, 3, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff};
    write_raw(tpath("peek-big.idx"), big, sizeof big);
    kn_ctx_clear(ctx);
    CHECK(kn_idx_peek(ctx, tpath("peek-big.idx"), &nd, dims) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "2^31"),
          "peek too big: %s", kn_ctx_message(ctx));
    kn_ctx_clear(ctx);
    const char *fx = kn_test_src("tests/fixtures/readers/idx_planner_overflow.bin");
    int rc = kn_idx_peek(ctx, fx, &nd, dims);
    CHECK(rc == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "idx_planner_overflow.bin"), "reproducer: rc %d %s", rc, kn_ctx_message(ctx));
}

/* Issue 10 item 9: a label beyond the model's classes (200 with 10) is an error naming
 * the labels file and the sample, not "the last layer's output is [64,10] but the data
 * has 201 classes" blamed on the model; through `kiln plan` and `kiln train` too. */
static void test_label_range(void) {
    enum { N = 12, R = 4, C = 4 };
    uint8_t im[N * R * C], lb[N];
    for (int i = 0; i < N * R * C; i++) im[i] = (uint8_t)(i * 7);
    for (int i = 0; i < N; i++) lb[i] = (uint8_t)(i % 10);
    lb[5] = 200;
    int64_t di[3] = {N, R, C}, dl[1] = {N};
    char sub[1200];
    snprintf(sub, sizeof sub, "%s/badlabel", dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/badlabel-run' '%s/badlabel-run2'; mkdir -p '%s'", dir, dir, sub);
    kn_test_system(cmd);
    CHECK(kn_idx_write(ctx, tpath("badlabel/train-images-idx3-ubyte.gz"), 3, di, im, 1) == KN_OK &&
              kn_idx_write(ctx, tpath("badlabel/t10k-images-idx3-ubyte.gz"), 3, di, im, 1) == KN_OK &&
              kn_idx_write(ctx, tpath("badlabel/train-labels-idx1-ubyte.gz"), 1, dl, lb, 1) == KN_OK,
          "write: %s", kn_ctx_message(ctx));
    lb[5] = 5;
    CHECK(kn_idx_write(ctx, tpath("badlabel/t10k-labels-idx1-ubyte.gz"), 1, dl, lb, 1) == KN_OK, "write");
    kn_dataset d;
    kn_ctx_clear(ctx);
    CHECK(kn_dataset_load(ctx, tpath("badlabel/train-images-idx3-ubyte.gz"), tpath("badlabel/train-labels-idx1-ubyte.gz"), &d) == KN_OK,
          "load: %s", kn_ctx_message(ctx));
    kn_ctx_clear(ctx);
    int rc = kn_dataset_check_labels(ctx, &d, tpath("badlabel/train-labels-idx1-ubyte.gz"), 10);
    const char *m = kn_ctx_message(ctx);
    CHECK(rc == KN_ERR_FORMAT && has(m, "badlabel/train-labels-idx1-ubyte.gz: sample 5 has label 200") && has(m, "10 classes") &&
              has(m, "1 of the 12 labels"),
          "check: %s", m);
    kn_ctx_clear(ctx);
    CHECK(kn_dataset_check_labels(ctx, &d, "x", 201) == KN_OK && d.nclasses == 201, "201 classes fit");
    kn_dataset_free(&d);
    kn_test_write(dir, "badlabel.ini", "[data]\ndir = badlabel\nbatch_size = 4\n[flat]\ntype = flatten\n[fc]\ntype = linear\nout = 10\n");
    static char out[1 << 16], err[1 << 16];
    const char *verbs[] = {"plan badlabel.ini", "train badlabel.ini --run-dir badlabel-run --no-progress"};
    for (int i = 0; i < 2; i++) {
        int st = kn_test_run_kiln(dir, NULL, verbs[i], out, sizeof out, err, sizeof err);
        CHECK(st == 1 && has(err, "badlabel/train-labels-idx1-ubyte.gz: sample 5 has label 200") && !has(err, "last layer's output"),
              "kiln %s: status %d: %s", verbs[i], st, err);
    }
    /* fewer classes in the data than the model has outputs is fine */
    lb[5] = 5;
    for (int i = 0; i < N; i++) lb[i] = (uint8_t)(i % 3);
    CHECK(kn_idx_write(ctx, tpath("badlabel/train-labels-idx1-ubyte.gz"), 1, dl, lb, 1) == KN_OK &&
              kn_idx_write(ctx, tpath("badlabel/t10k-labels-idx1-ubyte.gz"), 1, dl, lb, 1) == KN_OK,
          "write");
    int st = kn_test_run_kiln(dir, NULL, "train badlabel.ini --run-dir badlabel-run2 --no-progress --set train.epochs=1", out, sizeof out,
                              err, sizeof err);
    CHECK(st == 0, "3 classes in the data, 10 outputs: status %d: %s", st, err);
}

static void test_dataset(void) {
    enum { N = 7, R = 2, C = 3 };
    uint8_t im[N * R * C], lb[N];
    for (int i = 0; i < N * R * C; i++) im[i] = (uint8_t)(i * 5);
    for (int i = 0; i < N; i++) lb[i] = (uint8_t)(i % 4);
    int64_t di[3] = {N, R, C}, dl[1] = {N}, dl2[1] = {N - 1};
    CHECK(kn_idx_write(ctx, tpath("im.gz"), 3, di, im, 1) == KN_OK, "w");
    CHECK(kn_idx_write(ctx, tpath("lb"), 1, dl, lb, 0) == KN_OK, "w");
    CHECK(kn_idx_write(ctx, tpath("lb-short"), 1, dl2, lb, 0) == KN_OK, "w");
    kn_dataset d;
    int rc = kn_dataset_load(ctx, tpath("im.gz"), tpath("lb"), &d);
    CHECK(rc == KN_OK, "load: %s", kn_ctx_message(ctx));
    if (rc == KN_OK) {
        CHECK(d.n == N && d.channels == 1 && d.rows == R && d.cols == C, "shape");
        CHECK(d.nclasses == 4, "nclasses %d", d.nclasses);
        CHECK(memcmp(d.images, im, sizeof im) == 0 && memcmp(d.labels, lb, N) == 0, "content");
        kn_dataset_free(&d);
        CHECK(d.images == NULL && d.labels == NULL, "free clears");
    }
    /* 4-D images: N,C,H,W */
    int64_t d4[4] = {N, 3, 1, 2};
    CHECK(kn_idx_write(ctx, tpath("im4"), 4, d4, im, 0) == KN_OK, "w4");
    rc = kn_dataset_load(ctx, tpath("im4"), tpath("lb"), &d);
    CHECK(rc == KN_OK && d.channels == 3 && d.rows == 1 && d.cols == 2, "4-D: %s",
          kn_ctx_message(ctx));
    if (rc == KN_OK) kn_dataset_free(&d);
    /* count mismatch */
    kn_ctx_clear(ctx);
    rc = kn_dataset_load(ctx, tpath("im.gz"), tpath("lb-short"), &d);
    const char *m = kn_ctx_message(ctx);
    CHECK(rc == KN_ERR_FORMAT, "mismatch rc %d", rc);
    CHECK(has(m, tpath("im.gz")) && has(m, "images file has 7 samples but labels file has 6"),
          "%s", m);
    CHECK(d.images == NULL && d.labels == NULL, "cleared on error");
    /* wrong dimensionalities */
    rc = kn_dataset_load(ctx, tpath("lb"), tpath("lb"), &d);
    CHECK(rc == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "expected 3"), "%s", kn_ctx_message(ctx));
    rc = kn_dataset_load(ctx, tpath("im.gz"), tpath("im4"), &d);
    CHECK(rc == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "labels IDX file has 4 dimensions"),
          "%s", kn_ctx_message(ctx));
    /* missing labels file */
    rc = kn_dataset_load(ctx, tpath("im.gz"), tpath("nope-labels"), &d);
    CHECK(rc == KN_ERR_IO && has(kn_ctx_message(ctx), "nope-labels") &&
              has(kn_ctx_message(ctx), "dataset-fashion-mnist"),
          "%s", kn_ctx_message(ctx));
}

static void test_stats(void) {
    /* 16 images of 4x4 = 256 pixels holding 0..255 once each: mean 0.5,
     * variance ((256^2 - 1)/12) / 255^2. */
    uint8_t im[256], lb[16] = {0};
    for (int i = 0; i < 256; i++) im[i] = (uint8_t)(255 - i);
    kn_dataset d = {16, 1, 4, 4, 1, im, lb};
    double mean, sd;
    kn_dataset_stats(&d, &mean, &sd);
    double want = sqrt((65536.0 - 1.0) / 12.0) / 255.0;
    CHECK(fabs(mean - 0.5) < 1e-12, "mean %.15f", mean);
    CHECK(fabs(sd - want) < 1e-12, "std %.15f want %.15f", sd, want);
    /* constant image: std 0 */
    memset(im, 51, sizeof im);
    kn_dataset_stats(&d, &mean, &sd);
    CHECK(fabs(mean - 0.2) < 1e-12 && sd < 1e-12, "constant: %g %g", mean, sd);
    /* a subset: images 0 and 2 of a 1x2 dataset {0,255}, {51,51}, {255,255}:
     * pixels 0,255,255,255 -> mean 0.75, std sqrt(0.1875) = 0.4330127... */
    uint8_t im2[6] = {0, 255, 51, 51, 255, 255}, lb2[3] = {0};
    kn_dataset d2 = {3, 1, 1, 2, 1, im2, lb2};
    int64_t pick[2] = {2, 0};
    kn_dataset_stats_subset(&d2, pick, 2, &mean, &sd);
    CHECK(fabs(mean - 0.75) < 1e-12 && fabs(sd - sqrt(0.1875)) < 1e-12, "subset: %.15f %.15f", mean, sd);
    kn_dataset_stats_subset(&d2, NULL, 1, &mean, &sd); /* the first sample only */
    CHECK(fabs(mean - 0.5) < 1e-12 && fabs(sd - 0.5) < 1e-12, "first sample: %.15f %.15f", mean, sd);
}

static void test_split(void) {
    int64_t *tr, *va, nt, nv;
    const int64_t N = 1000, V = 150;
    CHECK(kn_dataset_split(ctx, N, V, 42, &tr, &nt, &va, &nv) == KN_OK, "split");
    CHECK(nt == N - V && nv == V, "sizes %lld %lld", (long long)nt, (long long)nv);
    char *seen = calloc((size_t)N, 1);
    int ok = 1, sorted = 1;
    for (int64_t i = 0; i < nt; i++) {
        if (tr[i] < 0 || tr[i] >= N || seen[tr[i]]) ok = 0; else seen[tr[i]] = 1;
        if (i && tr[i] <= tr[i - 1]) sorted = 0;
    }
    for (int64_t i = 0; i < nv; i++) {
        if (va[i] < 0 || va[i] >= N || seen[va[i]]) ok = 0; else seen[va[i]] = 2;
        if (i && va[i] <= va[i - 1]) sorted = 0;
    }
    for (int64_t i = 0; i < N; i++) if (!seen[i]) ok = 0;
    CHECK(ok, "train and validation are disjoint and cover 0..n-1");
    CHECK(sorted, "index lists ascending");
    /* validation is not simply the tail */
    CHECK(va[0] < N - V, "validation looks shuffled");
    int64_t *tr2, *va2, nt2, nv2;
    CHECK(kn_dataset_split(ctx, N, V, 42, &tr2, &nt2, &va2, &nv2) == KN_OK, "split2");
    CHECK(nt2 == nt && memcmp(tr, tr2, (size_t)nt * 8) == 0 && memcmp(va, va2, (size_t)nv * 8) == 0,
          "same seed, same split");
    free(tr2);
    free(va2);
    CHECK(kn_dataset_split(ctx, N, V, 43, &tr2, &nt2, &va2, &nv2) == KN_OK, "split3");
    CHECK(memcmp(va, va2, (size_t)nv * 8) != 0, "different seed, different split");
    free(tr2);
    free(va2);
    free(tr);
    free(va);
    free(seen);
    /* edges */
    CHECK(kn_dataset_split(ctx, 10, 0, 1, &tr, &nt, &va, &nv) == KN_OK && nt == 10 && nv == 0,
          "nval 0");
    for (int i = 0; i < 10; i++) CHECK(tr[i] == i, "nval 0 keeps all in order");
    free(tr);
    free(va);
    CHECK(kn_dataset_split(ctx, 10, 10, 1, &tr, &nt, &va, &nv) == KN_OK && nt == 0 && nv == 10,
          "nval n");
    free(tr);
    free(va);
    kn_ctx_clear(ctx);
    CHECK(kn_dataset_split(ctx, 10, 11, 1, &tr, &nt, &va, &nv) == KN_ERR_INVALID &&
              tr == NULL && va == NULL,
          "nval > n rejected: %s", kn_ctx_message(ctx));
}

/* ---------------------------------------------------------------- loader */
/* Dataset where each 1x2x2 image encodes its sample id: px0 = id & 255, px1 = id >> 8,
 * px2 = 255 - (id & 255), px3 = 7; label = id % 10. */
enum { LN = 103 };
static uint8_t lim[LN * 4], llb[LN];
static kn_dataset lds = {LN, 1, 2, 2, 10, lim, llb};
static const float LMEAN = 0.25f, LSTD = 0.5f;

static void init_loader_ds(void) {
    for (int i = 0; i < LN; i++) {
        lim[i * 4 + 0] = (uint8_t)(i & 255);
        lim[i * 4 + 1] = (uint8_t)(i >> 8);
        lim[i * 4 + 2] = (uint8_t)(255 - (i & 255));
        lim[i * 4 + 3] = 7;
        llb[i] = (uint8_t)(i % 10);
    }
}

static int decode_id(const float *x) {
    float v0 = (x[0] * LSTD + LMEAN) * 255.0f, v1 = (x[1] * LSTD + LMEAN) * 255.0f;
    return (int)lroundf(v0) + 256 * (int)lroundf(v1);
}

static kn_loader *mk(const int64_t *idx, int64_t n, int batch, int shuffle, int drop_last,
                     uint64_t seed, int prefetch) {
    kn_loader_config c = {&lds, idx, n, batch, shuffle, drop_last, seed, LMEAN, LSTD, prefetch, NULL, 0, 0};
    kn_loader *L = NULL;
    int rc = kn_loader_create(ctx, &c, &L);
    CHECK(rc == KN_OK && L, "loader create: %s", kn_ctx_message(ctx));
    return L;
}

/* Run one epoch, recording the ids in order (returns count); checks values/labels. */
static int run_epoch(kn_loader *L, int64_t epoch, int64_t first, int batch, int *ids, int cap) {
    float *x = malloc((size_t)batch * 4 * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    kn_loader_start_epoch(L, epoch, first);
    int total = 0, r, bad = 0;
    while ((r = kn_loader_next(L, x, y)) > 0) {
        CHECK(r <= batch, "batch size %d", r);
        for (int i = 0; i < r; i++) {
            int id = decode_id(x + i * 4);
            if (id < 0 || id >= LN) { bad++; continue; }
            float want[4];
            for (int k = 0; k < 4; k++)
                want[k] = (float)(((double)lim[id * 4 + k] / 255.0 - LMEAN) / LSTD);
            for (int k = 0; k < 4; k++)
                if (fabsf(x[i * 4 + k] - want[k]) > 1e-6f) bad++;
            if (y[i] != llb[id]) bad++;
            if (total < cap) ids[total] = id;
            total++;
        }
        for (int i = r; i < batch; i++)
            if (y[i] != 0 || x[i * 4] != 0.0f) bad++;
    }
    CHECK(bad == 0, "%d wrong values/labels/padding in epoch %lld", bad, (long long)epoch);
    CHECK(kn_loader_next(L, x, y) == 0, "stays at end of epoch");
    free(x);
    free(y);
    return total;
}

static int is_perm(const int *ids, int n, int N) {
    char *seen = calloc((size_t)N, 1);
    int ok = 1;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= N || seen[ids[i]]) ok = 0;
        else seen[ids[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_loader_basic(void) {
    int a[LN], b[LN], c[LN];
    kn_loader *L = mk(NULL, 0, 10, 1, 0, 7, 0);
    if (!L) return;
    CHECK(kn_loader_batches(L) == 11, "batches %lld", (long long)kn_loader_batches(L));
    CHECK(run_epoch(L, 0, 0, 10, a, LN) == LN, "epoch 0 size");
    CHECK(is_perm(a, LN, LN), "every sample once in epoch 0");
    CHECK(run_epoch(L, 1, 0, 10, b, LN) == LN && is_perm(b, LN, LN), "epoch 1");
    CHECK(memcmp(a, b, sizeof a) != 0, "different epochs, different orders");
    int sorted = 1;
    for (int i = 1; i < LN; i++) if (a[i] < a[i - 1]) sorted = 0;
    CHECK(!sorted, "epoch 0 is shuffled");
    CHECK(run_epoch(L, 0, 0, 10, c, LN) == LN && memcmp(a, c, sizeof a) == 0,
          "epoch 0 again, same order");
    kn_loader_free(L);

    kn_loader *L2 = mk(NULL, 0, 10, 1, 0, 7, 0);
    kn_loader *L3 = mk(NULL, 0, 10, 1, 0, 8, 0);
    if (L2 && L3) {
        run_epoch(L2, 1, 0, 10, c, LN);
        CHECK(memcmp(b, c, sizeof b) == 0, "same seed, same order");
        run_epoch(L3, 1, 0, 10, c, LN);
        CHECK(memcmp(b, c, sizeof b) != 0, "different seed, different order");
    }
    kn_loader_free(L2);
    kn_loader_free(L3);

    /* drop_last: 103 / 10 -> 10 full batches, 100 distinct samples */
    L = mk(NULL, 0, 10, 1, 1, 7, 0);
    if (L) {
        CHECK(kn_loader_batches(L) == 10, "drop_last batches");
        int n = run_epoch(L, 0, 0, 10, a, LN);
        CHECK(n == 100 && is_perm(a, n, LN), "drop_last epoch has %d samples", n);
        kn_loader_free(L);
    }
    L = mk(NULL, 0, 200, 1, 1, 7, 0);
    if (L) {
        CHECK(kn_loader_batches(L) == 0 && run_epoch(L, 0, 0, 200, a, LN) == 0,
              "drop_last with batch > n gives no batches");
        kn_loader_free(L);
    }
    /* no shuffle: sequential, last batch of 3 padded */
    L = mk(NULL, 0, 10, 0, 0, 7, 0);
    if (L) {
        CHECK(run_epoch(L, 3, 0, 10, a, LN) == LN, "sequential size");
        int seq = 1;
        for (int i = 0; i < LN; i++) if (a[i] != i) seq = 0;
        CHECK(seq, "shuffle=0 gives 0..n-1");
        kn_loader_free(L);
    }
    /* next() before any start_epoch gives epoch 0 (sync and prefetch) */
    for (int pf = 0; pf < 2; pf++) {
        L = mk(NULL, 0, 10, 1, 0, 7, pf);
        kn_loader *R = mk(NULL, 0, 10, 1, 0, 7, 0);
        if (L && R) {
            float x[40];
            int32_t y[10];
            run_epoch(R, 0, 0, 10, a, LN);
            int ok = kn_loader_next(L, x, y) == 10;
            for (int i = 0; i < 10; i++) if (decode_id(x + 4 * i) != a[i]) ok = 0;
            CHECK(ok, "implicit epoch 0 (prefetch %d)", pf);
        }
        kn_loader_free(L);
        kn_loader_free(R);
    }
    /* subset via indices: odd samples only */
    int64_t odd[51];
    for (int i = 0; i < 51; i++) odd[i] = 2 * i + 1;
    L = mk(odd, 51, 8, 1, 0, 3, 0);
    if (L) {
        CHECK(kn_loader_batches(L) == 7, "subset batches");
        int n = run_epoch(L, 0, 0, 8, a, LN);
        int ok = n == 51 && is_perm(a, n, LN);
        for (int i = 0; i < n; i++) if (a[i] % 2 != 1) ok = 0;
        CHECK(ok, "subset: each odd sample once");
        kn_loader_free(L);
    }
    /* normalisation of known pixel values (also checked per sample in run_epoch) */
    L = mk(NULL, 0, 103, 0, 0, 0, 0);
    if (L) {
        float *x = malloc(103 * 4 * sizeof *x);
        int32_t y[103];
        kn_loader_start_epoch(L, 0, 0);
        CHECK(kn_loader_next(L, x, y) == 103, "one batch");
        CHECK(fabsf(x[3] - (7.0f / 255.0f - 0.25f) / 0.5f) < 1e-6f, "x=7 -> %g", x[3]);
        CHECK(fabsf(x[0] - (-0.5f)) < 1e-6f, "x=0 -> %g", x[0]);        /* sample 0 px0 */
        CHECK(fabsf(x[2] - 1.5f) < 1e-6f, "x=255 -> %g", x[2]);          /* sample 0 px2 */
        CHECK(y[102] == 2, "label of sample 102");
        free(x);
        kn_loader_free(L);
    }
    /* bad configurations */
    kn_loader_config cfg = {&lds, NULL, 0, 0, 1, 0, 1, 0.f, 1.f, 0, NULL, 0, 0};
    kn_loader *bad = NULL;
    CHECK(kn_loader_create(ctx, &cfg, &bad) == KN_ERR_INVALID && !bad, "batch 0 rejected");
    cfg.batch = 4;
    cfg.std = 0.f;
    CHECK(kn_loader_create(ctx, &cfg, &bad) == KN_ERR_INVALID && !bad, "std 0 rejected");
    cfg.std = 1.f;
    int64_t oob[2] = {0, LN};
    cfg.indices = oob;
    cfg.n = 2;
    CHECK(kn_loader_create(ctx, &cfg, &bad) == KN_ERR_INVALID && !bad &&
              has(kn_ctx_message(ctx), "outside the dataset"),
          "index out of range rejected: %s", kn_ctx_message(ctx));
}

/* Collect a full epoch of raw batches (x, y, counts) from a loader. */
typedef struct {
    float *x;
    int32_t *y;
    int cnt[64];
    int nb;
} epoch_rec;

static void record(kn_loader *L, int64_t epoch, int64_t first, int batch, epoch_rec *r) {
    size_t bx = (size_t)batch * 4;
    r->x = calloc(64 * bx, sizeof(float));
    r->y = calloc(64 * (size_t)batch, sizeof(int32_t));
    r->nb = 0;
    kn_loader_start_epoch(L, epoch, first);
    int c;
    while (r->nb < 64 && (c = kn_loader_next(L, r->x + r->nb * bx, r->y + r->nb * batch)) > 0)
        r->cnt[r->nb++] = c;
}

static void rec_free(epoch_rec *r) {
    free(r->x);
    free(r->y);
}

static int rec_eq(const epoch_rec *a, int a0, const epoch_rec *b, int batch) {
    /* b's batches equal a's batches a0.. */
    if (a->nb - a0 != b->nb) return 0;
    size_t bx = (size_t)batch * 4;
    for (int i = 0; i < b->nb; i++) {
        if (a->cnt[a0 + i] != b->cnt[i]) return 0;
        if (memcmp(a->x + (a0 + i) * bx, b->x + i * bx, bx * sizeof(float)) != 0) return 0;
        if (memcmp(a->y + (size_t)(a0 + i) * batch, b->y + (size_t)i * batch,
                   (size_t)batch * sizeof(int32_t)) != 0)
            return 0;
    }
    return 1;
}

static void test_loader_prefetch(void) {
    const int batch = 8;
    kn_loader *S = mk(NULL, 0, batch, 1, 0, 99, 0);
    if (!S) return;
    for (int depth = 1; depth <= 4; depth++) {
        kn_loader *P = mk(NULL, 0, batch, 1, 0, 99, depth);
        if (!P) continue;
        for (int e = 0; e < 3; e++) {
            epoch_rec a, b;
            record(S, e, 0, batch, &a);
            record(P, e, 0, batch, &b);
            CHECK(a.nb == 13 && rec_eq(&a, 0, &b, batch),
                  "prefetch depth %d epoch %d identical to synchronous", depth, e);
            rec_free(&a);
            rec_free(&b);
        }
        kn_loader_free(P);
    }
    /* resuming: start_epoch(e, k) == batches k.. of a full epoch, in both modes */
    kn_loader *P = mk(NULL, 0, batch, 1, 0, 99, 3);
    if (P) {
        for (int k = 0; k <= 13; k += 3) {
            epoch_rec full, s, p;
            record(S, 2, 0, batch, &full);
            record(S, 2, k, batch, &s);
            record(P, 2, k, batch, &p);
            CHECK(rec_eq(&full, k, &s, batch), "sync resume at batch %d", k);
            CHECK(rec_eq(&full, k, &p, batch), "prefetch resume at batch %d", k);
            rec_free(&full);
            rec_free(&s);
            rec_free(&p);
        }
        /* restart mid-epoch with pending batches in the ring, many times */
        float x[8 * 4];
        int32_t y[8];
        for (int it = 0; it < 50; it++) {
            kn_loader_start_epoch(P, it % 5, it % 3);
            for (int j = 0; j < it % 4; j++) kn_loader_next(P, x, y);
        }
        kn_loader_start_epoch(P, 4, 0);
        kn_loader_next(P, x, y);
        epoch_rec a, b;
        record(S, 1, 0, batch, &a);
        record(P, 1, 0, batch, &b);
        CHECK(rec_eq(&a, 0, &b, batch), "prefetch after many restarts");
        rec_free(&a);
        rec_free(&b);
        /* free while the producer has work pending */
        kn_loader_start_epoch(P, 0, 0);
        kn_loader_next(P, x, y);
        kn_loader_free(P);
    }
    /* drop_last and a subset with prefetch */
    int64_t idx[40];
    for (int i = 0; i < 40; i++) idx[i] = (i * 7) % LN;
    kn_loader *S2 = mk(idx, 40, 6, 1, 1, 5, 0), *P2 = mk(idx, 40, 6, 1, 1, 5, 2);
    if (S2 && P2) {
        for (int e = 0; e < 3; e++) {
            epoch_rec a, b;
            record(S2, e, 0, 6, &a);
            record(P2, e, 0, 6, &b);
            CHECK(a.nb == 6 && rec_eq(&a, 0, &b, 6), "drop_last subset prefetch epoch %d", e);
            rec_free(&a);
            rec_free(&b);
        }
    }
    kn_loader_free(S2);
    kn_loader_free(P2);
    /* a prefetch loader that is never used */
    kn_loader_free(mk(NULL, 0, batch, 1, 0, 1, 2));
    kn_loader_free(S);
}

/* ---------------------------------------------------------------- Fashion-MNIST */
static void test_fashion_mnist(void) {
    const char *fm = "/usr/share/datasets/fashion-mnist";
    char ti[512], tl[512], vi[512], vl[512];
    snprintf(ti, sizeof ti, "%s/train-images-idx3-ubyte.gz", fm);
    snprintf(tl, sizeof tl, "%s/train-labels-idx1-ubyte.gz", fm);
    snprintf(vi, sizeof vi, "%s/t10k-images-idx3-ubyte.gz", fm);
    snprintf(vl, sizeof vl, "%s/t10k-labels-idx1-ubyte.gz", fm);
    if (access(ti, R_OK) != 0) {
        printf("note: %s not found; skipping the Fashion-MNIST checks\n", ti);
        return;
    }
    kn_dataset tr, te;
    int rc = kn_dataset_load(ctx, ti, tl, &tr);
    CHECK(rc == KN_OK, "train: %s", kn_ctx_message(ctx));
    if (rc == KN_OK) {
        CHECK(tr.n == 60000 && tr.channels == 1 && tr.rows == 28 && tr.cols == 28 &&
                  tr.nclasses == 10,
              "train shape");
        double m, s;
        kn_dataset_stats(&tr, &m, &s);
        CHECK(fabs(m - 0.2860) < 1e-3 && fabs(s - 0.3530) < 1e-3, "train stats %f %f", m, s);
        int counts[10] = {0};
        for (int64_t i = 0; i < tr.n; i++) counts[tr.labels[i]]++;
        for (int c = 0; c < 10; c++) CHECK(counts[c] == 6000, "class %d: %d", c, counts[c]);
        kn_dataset_free(&tr);
    }
    rc = kn_dataset_load(ctx, vi, vl, &te);
    CHECK(rc == KN_OK, "t10k: %s", kn_ctx_message(ctx));
    if (rc == KN_OK) {
        CHECK(te.n == 10000 && te.channels == 1 && te.rows == 28 && te.cols == 28 &&
                  te.nclasses == 10,
              "t10k shape");
        kn_dataset_free(&te);
    }
}

int main(void) {
    ctx = kn_ctx_new();
    snprintf(dir, sizeof dir, "%s", kn_test_tmpdir("test_data"));
    init_loader_ds();
    test_idx_roundtrip();
    test_idx_errors();
    test_gzip_trailer();
    test_idx_peek();
    test_label_range();
    test_dataset();
    test_stats();
    test_split();
    test_loader_basic();
    test_loader_prefetch();
    test_fashion_mnist();
    kn_ctx_free(ctx);
    return kn_test_finish("test_data");
}
