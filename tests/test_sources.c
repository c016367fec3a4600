/* Tests for the typed data sources (src/data/source.h): IDX of every element type
 * against hand-written big-endian bytes, .npy files written by NumPy itself
 * (tests/fixtures/make_npy.py), CSV/TSV parsing (quoting, whitespace, preambles, gzip),
 * column selection, class mappings, tables, pairing, seeded splits, normalisation and
 * its round trip through text, the [data] source spec, and scikit-learn's bundled CSV
 * files (Debian python3-sklearn) against statistics NumPy computed. Every error path
 * has its message checked. */
#define _POSIX_C_SOURCE 200809L
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "config/config.h"
#include "data/data.h"
#include "data/source.h"
#include "testutil.h"

static kn_ctx *ctx;
static char dir[1024];

static const char *tpath(const char *name) {
    static char buf[8][1200];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}
static const char *fixture(const char *name) {
    static char buf[4][1200];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s", kn_test_src(name));
    return buf[k];
}

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void write_raw(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    fwrite(b, 1, n, f);
    fclose(f);
}
static void write_text(const char *path, const char *s) { write_raw(path, s, strlen(s)); }
static void write_gz(const char *path, const void *b, size_t n) {
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

/* rc is `code` and the message has every given substring */
static void expect(int rc, int code, const char *w1, const char *w2, const char *w3, int line) {
    const char *m = kn_ctx_message(ctx);
    if (getenv("KN_VERBOSE")) printf("  [%d] %s\n", rc, m);
    CHECK(rc == code, "line %d: rc %d, expected %d (%s)", line, rc, code, m);
    if (w1) CHECK(has(m, w1), "line %d: message lacks '%s': %s", line, w1, m);
    if (w2) CHECK(has(m, w2), "line %d: message lacks '%s': %s", line, w2, m);
    if (w3) CHECK(has(m, w3), "line %d: message lacks '%s': %s", line, w3, m);
    kn_ctx_clear(ctx);
}
#define EXPECT(rc, code, w1, w2, w3) expect((rc), (code), (w1), (w2), (w3), __LINE__)

/* ---------------------------------------------------------------- IDX, every type */
static void test_idx_types(void) {
    /* hand-written big-endian files: the reference is the IDX format itself */
    static const uint8_t i16[] = {0, 0, 0x0B, 1, 0, 0, 0, 3, 0x00, 0x01, 0xFF, 0xFE, 0x01, 0x2C};
    static const uint8_t f32[] = {0, 0, 0x0D, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0, 0xC1, 0x20, 0, 0};
    static const uint8_t f64[] = {0, 0, 0x0E, 1, 0, 0, 0, 1, 0xC0, 0, 0, 0, 0, 0, 0, 0};
    static const uint8_t i32[] = {0, 0, 0x0C, 1, 0, 0, 0, 2, 0x80, 0, 0, 0, 0, 0, 0x01, 0x00};
    static const uint8_t i8[] = {0, 0, 0x09, 1, 0, 0, 0, 2, 0x7F, 0x80};
    write_raw(tpath("i16.idx"), i16, sizeof i16);
    write_gz(tpath("f32.idx.gz"), f32, sizeof f32);
    write_raw(tpath("f64.idx"), f64, sizeof f64);
    write_raw(tpath("i32.idx"), i32, sizeof i32);
    write_raw(tpath("i8.idx"), i8, sizeof i8);
    kn_array a;
    CHECK(kn_idx_read(ctx, tpath("i16.idx"), &a) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(a.type == KN_EL_I16 && a.nd == 1 && a.dims[0] == 3 && a.numel == 3, "i16 header");
    if (a.data) CHECK(((int16_t *)a.data)[0] == 1 && ((int16_t *)a.data)[1] == -2 && ((int16_t *)a.data)[2] == 300, "i16 values");
    kn_array_free(&a);
    CHECK(kn_idx_read(ctx, tpath("f32.idx.gz"), &a) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(a.type == KN_EL_F32 && a.nd == 2 && a.dims[0] == 2 && a.dims[1] == 1, "f32 header");
    if (a.data) CHECK(((float *)a.data)[0] == 1.5f && ((float *)a.data)[1] == -10.0f, "f32 values");
    kn_array_free(&a);
    CHECK(kn_idx_read(ctx, tpath("f64.idx"), &a) == KN_OK && a.type == KN_EL_F64 && ((double *)a.data)[0] == -2.0, "f64");
    kn_array_free(&a);
    CHECK(kn_idx_read(ctx, tpath("i32.idx"), &a) == KN_OK && a.type == KN_EL_I32 && ((int32_t *)a.data)[0] == INT32_MIN &&
              ((int32_t *)a.data)[1] == 256, "i32");
    kn_array_free(&a);
    CHECK(kn_idx_read(ctx, tpath("i8.idx"), &a) == KN_OK && a.type == KN_EL_I8 && ((int8_t *)a.data)[0] == 127 &&
              ((int8_t *)a.data)[1] == -128, "i8");
    kn_array_free(&a);

    /* the writer gives the same bytes as the hand-written file, and round-trips every type */
    int16_t v16[3] = {1, -2, 300};
    int64_t d3[1] = {3};
    CHECK(kn_idx_write_typed(ctx, tpath("w16.idx"), KN_EL_I16, 1, d3, v16, 0) == KN_OK, "%s", kn_ctx_message(ctx));
    size_t n;
    uint8_t *raw = read_raw(tpath("w16.idx"), &n);
    CHECK(raw && n == sizeof i16 && memcmp(raw, i16, n) == 0, "i16 bytes written");
    free(raw);
    static const kn_eltype types[] = {KN_EL_U8, KN_EL_I8, KN_EL_I16, KN_EL_I32, KN_EL_F32, KN_EL_F64};
    int64_t d4[4] = {2, 1, 3, 2};
    for (int gz = 0; gz < 2; gz++)
        for (int t = 0; t < 6; t++) {
            uint8_t buf[12 * 8];
            for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(i * 29 + 3 + t);
            if (types[t] == KN_EL_F32)
                for (int i = 0; i < 12; i++) ((float *)buf)[i] = (float)i * 0.5f - 2.0f;
            if (types[t] == KN_EL_F64)
                for (int i = 0; i < 12; i++) ((double *)buf)[i] = (double)i / 3.0;
            const char *p = tpath(gz ? "rt.idx.gz" : "rt.idx");
            CHECK(kn_idx_write_typed(ctx, p, types[t], 4, d4, buf, gz) == KN_OK, "%s", kn_ctx_message(ctx));
            CHECK(kn_idx_read(ctx, p, &a) == KN_OK, "%s", kn_ctx_message(ctx));
            CHECK(a.type == types[t] && a.nd == 4 && a.dims[2] == 3 && a.numel == 12, "round trip %s header", kn_eltype_name(types[t]));
            if (a.data) CHECK(memcmp(a.data, buf, 12 * kn_eltype_size(types[t])) == 0, "round trip %s data", kn_eltype_name(types[t]));
            kn_array_free(&a);
        }
    /* kn_idx_load keeps reading unsigned bytes only */
    kn_idx x;
    EXPECT(kn_idx_load(ctx, tpath("i16.idx"), &x), KN_ERR_FORMAT, "0x0B (short) is not supported", NULL, NULL);
    /* errors */
    static const uint8_t badtype[] = {0, 0, 0x0A, 1, 0, 0, 0, 1, 0};
    write_raw(tpath("badtype.idx"), badtype, sizeof badtype);
    EXPECT(kn_idx_read(ctx, tpath("badtype.idx"), &a), KN_ERR_FORMAT, "badtype.idx: IDX element type 0x0A is not one the format defines",
           "0x0E double", NULL);
    static const uint8_t nd6[] = {0, 0, 0x08, 6};
    write_raw(tpath("nd6.idx"), nd6, sizeof nd6);
    EXPECT(kn_idx_read(ctx, tpath("nd6.idx"), &a), KN_ERR_FORMAT, "declares 6 dimensions", "1 to 5", NULL);
    write_raw(tpath("short32.idx"), i32, sizeof i32 - 1);
    EXPECT(kn_idx_read(ctx, tpath("short32.idx"), &a), KN_ERR_FORMAT, "truncated: header promises 8 bytes", "found 7", NULL);
    uint8_t longer[sizeof f64 + 3];
    memcpy(longer, f64, sizeof f64);
    memset(longer + sizeof f64, 0, 3);
    write_raw(tpath("long64.idx"), longer, sizeof longer);
    EXPECT(kn_idx_read(ctx, tpath("long64.idx"), &a), KN_ERR_FORMAT, "3 unexpected bytes after the data", NULL, NULL);
    static const uint8_t huge[] = {0, 0, 0x0E, 3, 0x7F, 0xFF, 0xFF, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2};
    write_raw(tpath("huge.idx"), huge, sizeof huge);
    EXPECT(kn_idx_read(ctx, tpath("huge.idx"), &a), KN_ERR_FORMAT, "exceed the limit of 2^34 bytes", NULL, NULL);
    EXPECT(kn_idx_read(ctx, tpath("none.idx"), &a), KN_ERR_IO, "none.idx: cannot open", NULL, NULL);
    CHECK(a.data == NULL && a.nd == 0, "output cleared on error");
    EXPECT(kn_idx_write_typed(ctx, tpath("x.idx"), KN_EL_I64, 1, d3, v16, 0), KN_ERR_INVALID, "IDX has no element type for int64",
           NULL, NULL);
}

/* ---------------------------------------------------------------- .npy */
/* a version 1.0 file with the given header dict text (padded with '\n') and data */
static void write_npy(const char *path, const char *dict, const char *data, size_t n) {
    size_t hl = strlen(dict) + 1;
    uint8_t *b = malloc(10 + hl + n);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (uint8_t)(hl & 0xff);
    b[9] = (uint8_t)(hl >> 8);
    memcpy(b + 10, dict, hl - 1);
    b[10 + hl - 1] = '\n';
    if (n) memcpy(b + 10 + hl, data, n);
    write_raw(path, b, 10 + hl + n);
    free(b);
}

static void test_npy(void) {
    kn_array a;
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/f4_2x3.npy"), &a) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(a.type == KN_EL_F32 && a.nd == 2 && a.dims[0] == 2 && a.dims[1] == 3, "f4 shape");
    for (int i = 0; a.data && i < 6; i++) CHECK(((float *)a.data)[i] == (float)i * 0.25f - 1.0f, "f4 value %d", i);
    kn_array_free(&a);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/f8_2x2.npy"), &a) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(a.type == KN_EL_F64 && a.nd == 2 && ((double *)a.data)[0] == 0.1 && ((double *)a.data)[2] == 1.0 / 3.0 &&
              ((double *)a.data)[3] == 12345.678, "f8 values");
    kn_array_free(&a);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/i4_4.npy"), &a) == KN_OK && a.type == KN_EL_I32 && a.nd == 1 &&
              ((int32_t *)a.data)[0] == -2 && ((int32_t *)a.data)[3] == INT32_MAX, "i4");
    kn_array_free(&a);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/i8_3.npy"), &a) == KN_OK && a.type == KN_EL_I64 &&
              ((int64_t *)a.data)[2] == 3, "i8");
    kn_array_free(&a);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/u1_2x2x2.npy"), &a) == KN_OK && a.type == KN_EL_U8 && a.nd == 3 &&
              ((uint8_t *)a.data)[7] == 7, "u1");
    kn_array_free(&a);
    const char *vers[] = {"tests/fixtures/npy/f4_v2.npy", "tests/fixtures/npy/f4_v3.npy"};
    for (int v = 0; v < 2; v++) {
        CHECK(kn_npy_read(ctx, fixture(vers[v]), &a) == KN_OK, "%s", kn_ctx_message(ctx));
        CHECK(a.nd == 2 && a.dims[0] == 4 && a.dims[1] == 1 && a.data && ((float *)a.data)[3] == 3.0f, "version %d", v + 2);
        kn_array_free(&a);
    }
    /* gzip-compressed, and our writer read back (and its bytes match NumPy's for the same array) */
    size_t n;
    uint8_t *raw = read_raw(fixture("tests/fixtures/npy/f4_2x3.npy"), &n);
    write_gz(tpath("f4.npy.gz"), raw, n);
    CHECK(kn_npy_read(ctx, tpath("f4.npy.gz"), &a) == KN_OK && a.numel == 6, "gz: %s", kn_ctx_message(ctx));
    CHECK(kn_npy_write(ctx, tpath("w.npy"), &a) == KN_OK, "%s", kn_ctx_message(ctx));
    size_t n2;
    uint8_t *raw2 = read_raw(tpath("w.npy"), &n2);
    CHECK(raw2 && n2 == n && memcmp(raw, raw2, n) == 0, "writer bytes equal numpy's (%zu vs %zu)", n2, n);
    free(raw2);
    kn_array_free(&a);
    /* errors */
    EXPECT(kn_npy_read(ctx, fixture("tests/fixtures/npy/fortran.npy"), &a), KN_ERR_FORMAT, "Fortran (column-major) order",
           "fortran_order: True", "numpy.ascontiguousarray");
    EXPECT(kn_npy_read(ctx, fixture("tests/fixtures/npy/be_f4.npy"), &a), KN_ERR_FORMAT, "dtype '>f4' is not supported",
           "big-endian", NULL);
    EXPECT(kn_npy_read(ctx, fixture("tests/fixtures/npy/bool.npy"), &a), KN_ERR_FORMAT, "dtype '|b1' is not supported", "'<f4' (float32)",
           NULL);
    EXPECT(kn_npy_read(ctx, fixture("tests/fixtures/npy/scalar.npy"), &a), KN_ERR_FORMAT, "shape ()", NULL, NULL);
    EXPECT(kn_npy_read(ctx, fixture("tests/fixtures/npy/empty.npy"), &a), KN_ERR_FORMAT, "empty (dimension 0 is 0)", NULL, NULL);
    write_raw(tpath("cut.npy"), raw, n - 3);
    EXPECT(kn_npy_read(ctx, tpath("cut.npy"), &a), KN_ERR_FORMAT, "cut.npy: .npy data is 21 bytes", "[2,3] of float32 needs 24",
           "cut short");
    uint8_t *more = malloc(n + 4);
    memcpy(more, raw, n);
    memset(more + n, 1, 4);
    write_raw(tpath("more.npy"), more, n + 4);
    EXPECT(kn_npy_read(ctx, tpath("more.npy"), &a), KN_ERR_FORMAT, "data is 28 bytes", "extra bytes", NULL);
    memcpy(more, raw, n);
    more[6] = 4;
    write_raw(tpath("v4.npy"), more, n);
    EXPECT(kn_npy_read(ctx, tpath("v4.npy"), &a), KN_ERR_FORMAT, "format version 4.0", "1.0, 2.0 and 3.0", NULL);
    memcpy(more, raw, n);
    more[1] = 'X';
    write_raw(tpath("magic.npy"), more, n);
    EXPECT(kn_npy_read(ctx, tpath("magic.npy"), &a), KN_ERR_FORMAT, "not a .npy file", "\\x93NUMPY", NULL);
    memcpy(more, raw, n);
    memcpy(more + 10 + 2, "desc", 4); /* {'desc': ... */
    more[10 + 6] = '\'';
    write_raw(tpath("key.npy"), more, n);
    EXPECT(kn_npy_read(ctx, tpath("key.npy"), &a), KN_ERR_FORMAT, "bad .npy header", NULL, NULL);
    memcpy(more, raw, n);
    more[8] = 0xF0; /* header length beyond the file */
    write_raw(tpath("hlen.npy"), more, n);
    EXPECT(kn_npy_read(ctx, tpath("hlen.npy"), &a), KN_ERR_FORMAT, "truncated .npy file: the header says", NULL, NULL);
    write_npy(tpath("shape.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("shape.npy"), &a), KN_ERR_FORMAT, "expected a dimension (a non-negative integer)", "found 'x), }", NULL);
    write_npy(tpath("miss.npy"), "{'descr': '<f4', 'shape': (1,), }", "\x00\x00\x80\x3f", 4);
    EXPECT(kn_npy_read(ctx, tpath("miss.npy"), &a), KN_ERR_FORMAT, "key 'fortran_order' is missing", NULL, NULL);
    write_npy(tpath("unk.npy"), "{'descr': '<f4', 'x': 1}", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("unk.npy"), &a), KN_ERR_FORMAT, "unknown key 'x'", NULL, NULL);
    write_npy(tpath("twice.npy"), "{'descr': '<f4', 'descr': '<f4'}", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("twice.npy"), &a), KN_ERR_FORMAT, "key 'descr' given twice", NULL, NULL);
    write_npy(tpath("struct.npy"), "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("struct.npy"), &a), KN_ERR_FORMAT, "structured dtype", NULL, NULL);
    write_npy(tpath("nd6.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1), }", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("nd6.npy"), &a), KN_ERR_FORMAT, "more than 5 dimensions", NULL, NULL);
    write_npy(tpath("big.npy"), "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", "", 0);
    EXPECT(kn_npy_read(ctx, tpath("big.npy"), &a), KN_ERR_FORMAT, "larger than kiln reads", NULL, NULL);
    write_npy(tpath("after.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x", "\x00\x00\x80\x3f", 4);
    EXPECT(kn_npy_read(ctx, tpath("after.npy"), &a), KN_ERR_FORMAT, "expected the end of the header after '}'", NULL, NULL);
    free(more);
    free(raw);

    /* into table fields: conversions and their errors */
    kn_table t = {0};
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/f8_big.npy"), &a) == KN_OK, "read f8_big");
    EXPECT(kn_table_add_array(ctx, &t, "f8_big.npy", "features", KN_FIELD_INPUT, KN_F32, &a), KN_ERR_FORMAT,
           "f8_big.npy: element 1 (sample 1) is 1e+300, which is too large for float32", NULL, NULL);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/f8_nan.npy"), &a) == KN_OK, "read f8_nan");
    EXPECT(kn_table_add_array(ctx, &t, "f8_nan.npy", "features", KN_FIELD_INPUT, KN_F32, &a), KN_ERR_FORMAT, "not finite", NULL, NULL);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/i8_big.npy"), &a) == KN_OK, "read i8_big");
    EXPECT(kn_table_add_array(ctx, &t, "i8_big.npy", "label", KN_FIELD_CLASS, KN_I32, &a), KN_ERR_FORMAT,
           "element 1 (sample 1) is 1099511627776, outside the int32 range", NULL, NULL);
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/f4_2x3.npy"), &a) == KN_OK, "read f4");
    EXPECT(kn_table_add_array(ctx, &t, "f4_2x3.npy", "label", KN_FIELD_CLASS, KN_I32, &a), KN_ERR_FORMAT,
           "holds float32 values, but label needs integers", NULL, NULL);
    CHECK(t.nfields == 0 && a.data == NULL, "nothing added, array freed");
    CHECK(kn_npy_read(ctx, fixture("tests/fixtures/npy/i4_4.npy"), &a) == KN_OK, "read i4");
    EXPECT(kn_table_add_array(ctx, &t, "i4_4.npy", "label", KN_FIELD_CLASS, KN_I32, &a), KN_ERR_FORMAT,
           "i4_4.npy: field 'label': sample 0 has class label -2", NULL, NULL);
    int32_t *big = malloc(2 * sizeof *big);
    big[0] = 1;
    big[1] = INT32_MAX;
    kn_shape s0 = {0, {0}};
    EXPECT(kn_table_add(ctx, &t, "label", KN_FIELD_CLASS, KN_I32, &s0, 2, big), KN_ERR_FORMAT,
           "field 'label': sample 1 has class label 2147483647; kiln handles at most 16777216 classes", NULL, NULL);
    CHECK(t.nfields == 0, "not added");
    kn_table_free(&t);
}

/* ---------------------------------------------------------------- CSV */
static kn_csv_opts opts(char delim, int header, int skip) {
    kn_csv_opts o = {delim, header, skip};
    return o;
}

static void test_csv_parse(void) {
    kn_csv c;
    kn_csv_opts o = opts(',', 1, 0);
    const char *t1 = "a, b ,\"c,d\"\n1,2,\"x\"\"y\"\n\n3, 4 ,\"multi\nline\"\r\n5,6,7";
    CHECK(kn_csv_parse(ctx, "t1.csv", t1, (int64_t)strlen(t1), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(c.nrows == 3 && c.ncols == 3, "t1 shape %lld x %d", (long long)c.nrows, c.ncols);
    CHECK(c.header && !strcmp(c.header[0], "a") && !strcmp(c.header[1], "b") && !strcmp(c.header[2], "c,d"), "t1 header");
    CHECK(!strcmp(kn_csv_at(&c, 0, 2), "x\"y"), "doubled quote: %s", kn_csv_at(&c, 0, 2));
    CHECK(!strcmp(kn_csv_at(&c, 1, 1), "4") && !strcmp(kn_csv_at(&c, 1, 2), "multi\nline"), "trim and newline in quotes");
    CHECK(c.line[0] == 2 && c.line[1] == 4 && c.line[2] == 6, "row lines %lld %lld %lld", (long long)c.line[0],
          (long long)c.line[1], (long long)c.line[2]);
    kn_csv_free(&c);
    /* whitespace: runs of blanks and tabs, leading and trailing ones, blank lines */
    o = opts(0, 0, 2);
    const char *t2 = "preamble line 1\npreamble, 2\n  1 \t 2.5\t\t-3  \n\n\t4 5 6e2\n \n";
    CHECK(kn_csv_parse(ctx, "t2.txt", t2, (int64_t)strlen(t2), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(c.nrows == 2 && c.ncols == 3 && !c.header, "t2 shape %lld x %d", (long long)c.nrows, c.ncols);
    int cols[3] = {0, 1, 2};
    float *x = NULL;
    CHECK(kn_csv_numbers(ctx, &c, cols, 3, &x) == KN_OK, "%s", kn_ctx_message(ctx));
    if (x) CHECK(x[0] == 1 && x[1] == 2.5f && x[2] == -3 && x[3] == 4 && x[5] == 600, "t2 numbers");
    free(x);
    CHECK(c.line[0] == 3 && c.line[1] == 5, "t2 lines");
    kn_csv_free(&c);
    /* tab-separated, a UTF-8 byte order mark, semicolon */
    o = opts('\t', 1, 0);
    const char *t3 = "\xEF\xBB\xBFx\ty\n1\t2\n";
    CHECK(kn_csv_parse(ctx, "t3.tsv", t3, (int64_t)strlen(t3), &o, &c) == KN_OK && c.ncols == 2 && !strcmp(c.header[0], "x"), "tsv bom");
    kn_csv_free(&c);
    o = opts(';', 0, 0);
    CHECK(kn_csv_parse(ctx, "t4", "1,5;2\n3;4\n", 10, &o, &c) == KN_OK && c.ncols == 2 && !strcmp(kn_csv_at(&c, 0, 0), "1,5"), "semicolon");
    kn_csv_free(&c);
    /* lone CR line ends count as lines */
    o = opts(',', 0, 0);
    CHECK(kn_csv_parse(ctx, "cr.csv", "1,2\r3,4\r\r5,6\r", 13, &o, &c) == KN_OK && c.nrows == 3 && c.line[2] == 4, "CR lines: %s",
          kn_ctx_message(ctx));
    kn_csv_free(&c);
    EXPECT(kn_csv_parse(ctx, "cr2.csv", "1,2\r3,4\r5\r", 10, &o, &c), KN_ERR_FORMAT, "cr2.csv:3: this row has 1 fields", NULL, NULL);
    /* gzip file */
    const char *t5 = "f1,f2,y\n0.5,1,cat\n1.5,2,dog\n2.5,3,cat\n";
    write_gz(tpath("t5.csv.gz"), t5, strlen(t5));
    o = opts(',', 1, 0);
    CHECK(kn_csv_read(ctx, tpath("t5.csv.gz"), &o, &c) == KN_OK && c.nrows == 3 && c.ncols == 3, "gz: %s", kn_ctx_message(ctx));
    kn_csv_free(&c);

    /* errors, each naming the file and line */
    o = opts(',', 0, 0);
    EXPECT(kn_csv_parse(ctx, "r.csv", "1,2\n3,4\n5\n", 10, &o, &c), KN_ERR_FORMAT, "r.csv:3: this row has 1 fields, but the first row has 2 (line 1)",
           "delimiter", NULL);
    CHECK(c.text == NULL && c.nrows == 0, "cleared on error");
    EXPECT(kn_csv_parse(ctx, "q.csv", "1,\"2\n3,4\n", 9, &o, &c), KN_ERR_FORMAT, "q.csv:1: the file ends inside a quoted field", NULL, NULL);
    EXPECT(kn_csv_parse(ctx, "q2.csv", "1,\"2\"x\n", 7, &o, &c), KN_ERR_FORMAT, "q2.csv:1: malformed quoting", NULL, NULL);
    EXPECT(kn_csv_parse(ctx, "nul.csv", "1,2\n3,\0\n", 7, &o, &c), KN_ERR_FORMAT, "nul.csv:2: a NUL byte", NULL, NULL);
    o = opts(',', 0, 5);
    EXPECT(kn_csv_parse(ctx, "s.csv", "a\nb\n", 4, &o, &c), KN_ERR_FORMAT, "s.csv: skip_lines = 5, but the file has only 2 lines", NULL, NULL);
    o = opts(',', 0, 0);
    EXPECT(kn_csv_parse(ctx, "e.csv", "\n\n", 2, &o, &c), KN_ERR_FORMAT, "e.csv: no rows", NULL, NULL);
    o = opts(',', 1, 0);
    EXPECT(kn_csv_parse(ctx, "h.csv", "a,b\n", 4, &o, &c), KN_ERR_FORMAT, "h.csv: only a header row (line 1), no data rows", NULL, NULL);
    o = opts('"', 0, 0);
    EXPECT(kn_csv_parse(ctx, "d.csv", "1", 1, &o, &c), KN_ERR_INVALID, "delimiter cannot be a quote", NULL, NULL);
    EXPECT(kn_csv_read(ctx, tpath("nofile.csv"), &o, &c), KN_ERR_IO, "nofile.csv: cannot open", NULL, NULL);

    /* numbers: missing and non-numeric cells name line, row and column */
    o = opts(',', 1, 0);
    const char *t6 = "a,b,c\n1,2,3\n4,,6\n7,x8,9\n1e39,1,1\n";
    CHECK(kn_csv_parse(ctx, "n.csv", t6, (int64_t)strlen(t6), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    int c0[1] = {0}, c1[1] = {1};
    float *y = NULL;
    EXPECT(kn_csv_numbers(ctx, &c, c1, 1, &y), KN_ERR_FORMAT, "n.csv:3: row 2, column 1 'b': the cell is empty", "missing values", NULL);
    kn_csv_free(&c);
    const char *t7 = "a,b,c\n1,2,3\n7,x8,9\n1e39,1,1\n";
    CHECK(kn_csv_parse(ctx, "n.csv", t7, (int64_t)strlen(t7), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_csv_numbers(ctx, &c, c1, 1, &y), KN_ERR_FORMAT, "n.csv:3: row 2, column 1 'b': 'x8' is not a number", NULL, NULL);
    EXPECT(kn_csv_numbers(ctx, &c, c0, 1, &y), KN_ERR_FORMAT, "n.csv:4: row 3, column 0 'a': '1e39' is not a finite float32", NULL, NULL);
    CHECK(y == NULL, "no output on error");
    kn_csv_free(&c);
    const char *t8 = "1,nan\n2,0x10\n";
    o = opts(',', 0, 0);
    CHECK(kn_csv_parse(ctx, "m.csv", t8, (int64_t)strlen(t8), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_csv_numbers(ctx, &c, c1, 1, &y), KN_ERR_FORMAT, "m.csv:1: row 1, column 1: 'nan' is not a finite", NULL, NULL);
    kn_csv_free(&c);
}

static void test_csv_select_labels(void) {
    kn_csv c;
    kn_csv_opts o = opts(',', 1, 0);
    const char *t = "id,f1,f2,f3,cls\n0,1,2,3,b\n1,4,5,6,a\n2,7,8,9,c\n3,1,1,1,a\n";
    CHECK(kn_csv_parse(ctx, "s.csv", t, (int64_t)strlen(t), &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    int *cols = NULL, n = 0;
    CHECK(kn_csv_select(ctx, &c, "1:4", NULL, 0, "features", &cols, &n) == KN_OK && n == 3 && cols[0] == 1 && cols[2] == 3, "range");
    free(cols);
    CHECK(kn_csv_select(ctx, &c, "f3, 0, -1", NULL, 0, "features", &cols, &n) == KN_OK && n == 3 && cols[0] == 3 && cols[1] == 0 &&
              cols[2] == 4, "names and indices in order");
    free(cols);
    int ex[2] = {4, 0};
    CHECK(kn_csv_select(ctx, &c, "all", ex, 2, "features", &cols, &n) == KN_OK && n == 3 && cols[0] == 1 && cols[2] == 3, "all but");
    free(cols);
    CHECK(kn_csv_select(ctx, &c, ":-1", ex, 1, "features", &cols, &n) == KN_OK && n == 4 && cols[0] == 0 && cols[3] == 3, ":-1");
    free(cols);
    CHECK(kn_csv_select(ctx, &c, "2:", NULL, 0, "features", &cols, &n) == KN_OK && n == 3 && cols[0] == 2, "2:");
    free(cols);
    EXPECT(kn_csv_select(ctx, &c, "f9", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "features = 'f9': no column is named 'f9' in s.csv",
           "'id', 'f1'", NULL);
    EXPECT(kn_csv_select(ctx, &c, "5", NULL, 0, "target", &cols, &n), KN_ERR_CONFIG, "target = '5': column 5 does not exist; the file has 5 columns",
           NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "1,f1", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "column 1 'f1' is chosen twice", NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "cls", ex, 1, "features", &cols, &n), KN_ERR_CONFIG, "column 4 'cls' is the target", NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "3:2", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "range '3:2' selects no column", NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "a:b", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "range 'a:b' is not START:END", NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "1,,2", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "an empty item", NULL, NULL);
    kn_csv dup;
    CHECK(kn_csv_parse(ctx, "dup.csv", "x,y,x\n1,2,3\n", 12, &o, &dup) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_csv_select(ctx, &dup, "x", NULL, 0, "features", &cols, &n), KN_ERR_CONFIG, "'x' names columns 0 and 2 of dup.csv; choose one by index",
           NULL, NULL);
    kn_csv_free(&dup);
    /* labels: strings in byte order */
    int32_t *y = NULL;
    kn_classmap m;
    CHECK(kn_csv_labels(ctx, &c, 4, &y, &m) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(m.n == 3 && !strcmp(m.names[0], "a") && !strcmp(m.names[1], "b") && !strcmp(m.names[2], "c"), "string order");
    if (y) CHECK(y[0] == 1 && y[1] == 0 && y[2] == 2 && y[3] == 0, "labels");
    free(y);
    char *s = kn_classmap_to_string(&m);
    CHECK(s && !strcmp(s, "[\"a\",\"b\",\"c\"]"), "map string %s", s ? s : "(null)");
    kn_classmap m2;
    CHECK(kn_classmap_from_string(ctx, s, &m2) == KN_OK && m2.n == 3 && !strcmp(m2.names[2], "c") && kn_classmap_find(&m2, "b") == 1,
          "map round trip");
    free(s);
    kn_classmap_free(&m2);
    kn_classmap_free(&m);
    kn_csv_free(&c);
    /* numeric labels by value: 10 after 9 */
    o = opts(',', 0, 0);
    CHECK(kn_csv_parse(ctx, "l.csv", "10\n9\n-1\n9\n", 10, &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_csv_labels(ctx, &c, 0, &y, &m) == KN_OK && m.n == 3 && !strcmp(m.names[0], "-1") && !strcmp(m.names[2], "10"), "numeric order");
    if (y) CHECK(y[0] == 2 && y[1] == 1 && y[2] == 0 && y[3] == 1, "numeric labels");
    free(y);
    kn_classmap_free(&m);
    kn_csv_free(&c);
    CHECK(kn_csv_parse(ctx, "l2.csv", "1\n1.0\n", 6, &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_csv_labels(ctx, &c, 0, &y, &m), KN_ERR_FORMAT, "labels '1' and '1.0' are the same number written two ways", NULL, NULL);
    kn_csv_free(&c);
    CHECK(kn_csv_parse(ctx, "l3.csv", "1,a\n2,\n", 7, &o, &c) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_csv_labels(ctx, &c, 1, &y, &m), KN_ERR_FORMAT, "l3.csv:2: row 2, column 1: the label is empty", NULL, NULL);
    EXPECT(kn_csv_select(ctx, &c, "name", NULL, 0, "target", &cols, &n), KN_ERR_CONFIG, "the file has no header row (header = no)", NULL, NULL);
    kn_csv_free(&c);
    /* mapping strings that are not mappings */
    EXPECT(kn_classmap_from_string(ctx, "{\"a\":1}", &m), KN_ERR_FORMAT, "is not a JSON array of class names", NULL, NULL);
    EXPECT(kn_classmap_from_string(ctx, "[\"a\",\"a\"]", &m), KN_ERR_FORMAT, "'a' appears twice", NULL, NULL);
    EXPECT(kn_classmap_from_string(ctx, "[\"a\",2]", &m), KN_ERR_FORMAT, "entry 1 is not a string", NULL, NULL);
    EXPECT(kn_classmap_from_string(ctx, "[]", &m), KN_ERR_FORMAT, "class mapping is empty", NULL, NULL);
    kn_classmap q = {0};
    char *names[2] = {"a,\"b\"", "c\\d"};
    q.n = 2;
    q.names = names;
    s = kn_classmap_to_string(&q);
    CHECK(s && kn_classmap_from_string(ctx, s, &m) == KN_OK && m.n == 2 && !strcmp(m.names[0], names[0]) && !strcmp(m.names[1], names[1]),
          "escaped names round trip");
    free(s);
    kn_classmap_free(&m);
}

/* ---------------------------------------------------------------- tables, splits */
static void test_tables(void) {
    kn_table a = {0}, b = {0};
    float *x = malloc(6 * sizeof *x);
    for (int i = 0; i < 6; i++) x[i] = (float)i;
    kn_shape s2 = kn_shape1(2), s0 = {0, {0}};
    CHECK(kn_table_add(ctx, &a, "features", KN_FIELD_INPUT, KN_F32, &s2, 3, x) == KN_OK, "%s", kn_ctx_message(ctx));
    int32_t *y = malloc(4 * sizeof *y);
    y[0] = 0; y[1] = 1; y[2] = 1; y[3] = 0;
    EXPECT(kn_table_add(ctx, &a, "label", KN_FIELD_CLASS, KN_I32, &s0, 4, y), KN_ERR_SHAPE,
           "field 'label' has 4 samples but field 'features' has 3", NULL, NULL);
    y = malloc(3 * sizeof *y);
    y[0] = 2; y[1] = 0; y[2] = 1;
    EXPECT(kn_table_add(ctx, &a, "features", KN_FIELD_CLASS, KN_I32, &s0, 3, y), KN_ERR_INVALID, "field 'features' is given twice", NULL, NULL);
    y = malloc(3 * sizeof *y);
    y[0] = 2; y[1] = 0; y[2] = 1;
    CHECK(kn_table_add(ctx, &b, "label", KN_FIELD_CLASS, KN_I32, &s0, 3, y) == KN_OK && b.fields[0].nclasses == 3, "labels");
    CHECK(kn_table_pair(ctx, &a, "x.npy", &b, "y.npy") == KN_OK && a.nfields == 2 && b.nfields == 0, "pair");
    kn_table t1, t2;
    int64_t idx[2] = {2, 0};
    CHECK(kn_table_subset(ctx, &a, idx, 2, &t1) == KN_OK && t1.n == 2, "subset");
    kn_field *f = kn_table_field(&t1, "features"), *l = kn_table_field(&t1, "label");
    CHECK(f && l && ((float *)f->data)[0] == 4 && ((float *)f->data)[3] == 1 && ((int32_t *)l->data)[0] == 1 &&
              ((int32_t *)l->data)[1] == 2, "subset rows");
    kn_table_free(&t1);
    int64_t bad[1] = {3};
    EXPECT(kn_table_subset(ctx, &a, bad, 1, &t1), KN_ERR_INVALID, "index 3 is outside 0..2", NULL, NULL);
    /* pairing mismatch names both files and both counts */
    float *z = calloc(4, sizeof *z);
    kn_shape s1 = kn_shape1(1);
    CHECK(kn_table_add(ctx, &b, "target", KN_FIELD_REAL, KN_F32, &s1, 4, z) == KN_OK, "b");
    EXPECT(kn_table_pair(ctx, &a, "feat.csv", &b, "targ.csv"), KN_ERR_FORMAT, "feat.csv has 3 samples but targ.csv has 4", "row by row", NULL);
    CHECK(a.nfields == 0 && b.nfields == 0, "both freed");

    /* the seeded split is kn_dataset_split's: same permutation, floor(fraction * n) in the second part */
    int64_t *p, *q, np_, nq, *p2, *q2, np2, nq2;
    CHECK(kn_split_indices(ctx, 569, 0.2, 7, &p, &np_, &q, &nq) == KN_OK && np_ == 456 && nq == 113, "split sizes");
    CHECK(kn_dataset_split(ctx, 569, 113, 7, &p2, &np2, &q2, &nq2) == KN_OK, "dataset split");
    CHECK(np2 == np_ && !memcmp(p, p2, (size_t)np_ * 8) && !memcmp(q, q2, (size_t)nq * 8), "same as kn_dataset_split");
    free(p2); free(q2);
    CHECK(kn_split_indices(ctx, 569, 0.2, 8, &p2, &np2, &q2, &nq2) == KN_OK && memcmp(q, q2, (size_t)nq * 8) != 0, "seed changes it");
    free(p); free(q); free(p2); free(q2);
    EXPECT(kn_split_indices(ctx, 10, 1.0, 1, &p, &np_, &q, &nq), KN_ERR_INVALID, "split fraction 1: expected a number from 0 to less than 1",
           NULL, NULL);
    /* table split: the rows of each part are the split's indices */
    x = malloc(10 * sizeof *x);
    for (int i = 0; i < 10; i++) x[i] = (float)i;
    CHECK(kn_table_add(ctx, &a, "v", KN_FIELD_REAL, KN_F32, &s1, 10, x) == KN_OK, "v");
    CHECK(kn_table_split(ctx, &a, 0.3, 5, &t1, &t2) == KN_OK && t1.n == 7 && t2.n == 3, "table split");
    CHECK(kn_split_indices(ctx, 10, 0.3, 5, &p, &np_, &q, &nq) == KN_OK, "idx");
    for (int i = 0; i < 3; i++) CHECK(((float *)t2.fields[0].data)[i] == (float)q[i], "test row %d", i);
    free(p); free(q);
    kn_table_free(&t1);
    kn_table_free(&t2);
    kn_table_free(&a);
}

/* ---------------------------------------------------------------- normalisation */
static void test_norm(void) {
    kn_table t = {0};
    /* 4 samples of shape (2,3): channel 0 = rows of {1,2,3}+k, channel 1 constant 5 */
    float *x = malloc(24 * sizeof *x);
    for (int i = 0; i < 4; i++)
        for (int e = 0; e < 6; e++) x[i * 6 + e] = e < 3 ? (float)(e + 1 + i) : 5.0f;
    kn_shape s = {2, {2, 3}};
    CHECK(kn_table_add(ctx, &t, "image", KN_FIELD_INPUT, KN_F32, &s, 4, x) == KN_OK, "%s", kn_ctx_message(ctx));
    kn_norm z;
    char note[256];
    CHECK(kn_norm_fit(ctx, &t.fields[0], NULL, 4, KN_NORM_PER_FEATURE, &z, note, sizeof note) == KN_OK, "%s", kn_ctx_message(ctx));
    /* feature 0 over samples: 1,2,3,4: mean 2.5, population std sqrt(1.25) */
    CHECK(z.count == 6 && z.inner == 1 && z.mean[0] == 2.5 && fabs(z.std[0] - sqrt(1.25)) < 1e-15 && z.mean[4] == 5 && z.std[4] == 1,
          "per feature");
    CHECK(has(note, "image: 3 features are constant over the training split (the first: feature 3)") && has(note, "taken as 1"), "note: %s", note);
    char *str = kn_norm_to_string(&z);
    kn_norm w;
    CHECK(str && kn_norm_from_string(ctx, str, &w) == KN_OK, "from string: %s", kn_ctx_message(ctx));
    CHECK(w.kind == z.kind && w.count == z.count && w.inner == z.inner && !memcmp(w.mean, z.mean, 48) && !memcmp(w.std, z.std, 48),
          "round trip bit for bit: %s", str ? str : "");
    free(str);
    kn_norm_free(&w);
    kn_norm_free(&z);
    /* training subset only: samples 1 and 3 */
    int64_t idx[2] = {1, 3};
    CHECK(kn_norm_fit(ctx, &t.fields[0], idx, 2, KN_NORM_PER_CHANNEL, &z, note, sizeof note) == KN_OK, "%s", kn_ctx_message(ctx));
    /* channel 0: values {2,3,4, 4,5,6}: mean 4, var (4+1+0+0+1+4)/6 */
    CHECK(z.count == 2 && z.inner == 3 && z.mean[0] == 4 && fabs(z.std[0] - sqrt(10.0 / 6)) < 1e-15 && z.std[1] == 1, "per channel");
    CHECK(has(note, "1 channel is constant (the first: channel 1)") || has(note, "1 channel is constant"), "note %s", note);
    float buf[6] = {4, 4, 4, 5, 5, 5};
    CHECK(kn_norm_apply(ctx, &z, buf, 1, 6) == KN_OK && buf[0] == 0 && buf[3] == 0, "apply");
    EXPECT(kn_norm_apply(ctx, &z, buf, 1, 5), KN_ERR_SHAPE, "statistics are for samples of 6 elements (2 x 3), these have 5", NULL, NULL);
    str = kn_norm_to_string(&z);
    CHECK(str && !strncmp(str, "per_channel;2;3;4,5;", 20), "string form %s", str ? str : "");
    free(str);
    kn_norm_free(&z);
    CHECK(kn_norm_fit(ctx, &t.fields[0], NULL, 4, KN_NORM_GLOBAL, &z, NULL, 0) == KN_OK && z.count == 1 && z.inner == 6, "global");
    kn_norm_free(&z);
    /* from_string errors */
    EXPECT(kn_norm_from_string(ctx, "zscore;1;1;0;1", &w), KN_ERR_FORMAT, "KIND one of none, per_feature", NULL, NULL);
    EXPECT(kn_norm_from_string(ctx, "per_feature;x;1;0;1", &w), KN_ERR_FORMAT, "bad COUNT or INNER", NULL, NULL);
    /* a COUNT beyond what the text holds (fuzz_csv: 1888544163 made a 30 GB allocation) */
    EXPECT(kn_norm_from_string(ctx, "per_feature;001888544163;1;0.5,5;.1", &w), KN_ERR_FORMAT,
           "COUNT 1888544163 is more than the", "checkpoint metadata is damaged", NULL);
    EXPECT(kn_norm_from_string(ctx, "per_feature;2;1;0;1", &w), KN_ERR_FORMAT, "mean 0 of 2 is not a finite decimal number followed by ','",
           NULL, NULL);
    EXPECT(kn_norm_from_string(ctx, "per_feature;1;1;0;0", &w), KN_ERR_FORMAT, "std 0 is 0; it must be positive", NULL, NULL);
    EXPECT(kn_norm_from_string(ctx, "per_feature;1;1;nan;1", &w), KN_ERR_FORMAT, "mean 0 of 1 is not a finite", NULL, NULL);
    /* integer fields and scalars */
    int32_t *y = calloc(4, sizeof *y);
    kn_shape s0 = {0, {0}};
    CHECK(kn_table_add(ctx, &t, "label", KN_FIELD_CLASS, KN_I32, &s0, 4, y) == KN_OK, "label");
    EXPECT(kn_norm_fit(ctx, &t.fields[1], NULL, 4, KN_NORM_PER_FEATURE, &z, NULL, 0), KN_ERR_INVALID, "field 'label' holds integers", NULL, NULL);
    float *r = calloc(4, sizeof *r);
    CHECK(kn_table_add(ctx, &t, "target", KN_FIELD_REAL, KN_F32, &s0, 4, r) == KN_OK, "target");
    EXPECT(kn_norm_fit(ctx, &t.fields[2], NULL, 4, KN_NORM_PER_CHANNEL, &z, NULL, 0), KN_ERR_SHAPE, "needs samples with a channel axis", NULL, NULL);
    EXPECT(kn_norm_fit(ctx, &t.fields[2], NULL, 0, KN_NORM_PER_FEATURE, &z, NULL, 0), KN_ERR_INVALID, "no training samples", NULL, NULL);
    kn_table_free(&t);
}

/* ---------------------------------------------------------------- the [data] spec */
static int spec_from(const char *text, kn_source_spec *s) {
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "m.ini", text, &cfg);
    if (rc) return rc;
    rc = kn_source_spec_read(ctx, cfg, "data", dir, s);
    kn_config_free(cfg);
    return rc;
}

static void test_spec(void) {
    kn_source_spec s;
    CHECK(spec_from("[data]\nsource = csv\npath = t.tsv\ntarget = cls\nfeatures = 1:4\ntest_split = 0.25\nsplit_seed = 3\n"
                    "normalize = none\nheader = no\nskip_lines = 2\nbatch_size = 8\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(s.kind == KN_SRC_CSV && s.csv.delimiter == '\t' && s.csv.header == 0 && s.csv.skip_lines == 2 && s.test_split == 0.25 &&
              s.split_seed == 3 && s.normalize == KN_NORM_NONE && !strcmp(s.features, "1:4") && !strcmp(s.target, "cls") &&
              has(s.path, "/t.tsv") && !strcmp(s.input_name, "features") && !strcmp(s.target_name, "label"), "spec values");
    CHECK(spec_from("[data]\nsource = csv\npath = /abs/x.csv\ndelimiter = whitespace\ntarget_type = real\n", &s) == KN_OK &&
              s.csv.delimiter == 0 && !strcmp(s.path, "/abs/x.csv") && s.target_kind == KN_TARGET_REAL && !strcmp(s.target_name, "target") &&
              s.validation_split == 0.1, "spec 2: %s", kn_ctx_message(ctx));
    CHECK(spec_from("[data]\nsource = csv\npath = x.csv\ndelimiter = :\n", &s) == KN_OK && s.csv.delimiter == ':', "one-char delimiter");
    CHECK(spec_from("[data]\nsource = idx\npath = a\ntargets_path = b\n", &s) == KN_OK && s.normalize == KN_NORM_GLOBAL &&
              !strcmp(s.input_name, "image"), "idx defaults");
    EXPECT(spec_from("[data]\npath = x.csv\n", &s), KN_ERR_CONFIG, "m.ini", "source", NULL);
    EXPECT(spec_from("[data]\nsource = xls\npath = x\n", &s), KN_ERR_CONFIG, "m.ini:2", "xls", "csv");
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ndelimitr = tab\n", &s), KN_ERR_CONFIG, "m.ini:4", "delimitr", "delimiter");
    EXPECT(spec_from("[data]\nsource = npy\npath = x.npy\ntargets_path = y.npy\nheader = yes\n", &s), KN_ERR_CONFIG,
           "m.ini:5: [data] header applies to source = csv only (this section has source = npy)", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = npy\npath = x.npy\n", &s), KN_ERR_CONFIG, "m.ini:3: [data] source = npy needs targets_path", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\n", &s), KN_ERR_CONFIG, "[data] needs path = FILE", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ndelimiter = ab\n", &s), KN_ERR_CONFIG, "m.ini:4: [data] delimiter = 'ab': expected comma, tab",
           NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ntest_split = 1.5\n", &s), KN_ERR_CONFIG, "m.ini:4", "test_split", NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ntest_path = y.csv\ntest_split = 0.2\n", &s), KN_ERR_CONFIG,
           "m.ini:5: [data] test_split with test_path", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ntarget_type = ordinal\n", &s), KN_ERR_CONFIG, "m.ini:4", "ordinal", "class");
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\nnormalize = minmax\n", &s), KN_ERR_CONFIG, "m.ini:4", "minmax", "per_feature");
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ninput_name = my input\n", &s), KN_ERR_CONFIG,
           "input_name = 'my input': expected a name of letters", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ninput_name = label\n", &s), KN_ERR_CONFIG, "input_name and target_name are both 'label'",
           NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ntargets_path = y.csv\ntest_path = t.csv\n", &s), KN_ERR_CONFIG,
           "give test_targets_path too", NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ntest_targets_path = t.csv\n", &s), KN_ERR_CONFIG, "test_targets_path needs test_path",
           NULL, NULL);
    EXPECT(spec_from("[data]\nsource = csv\npath = x.csv\ndir = /tmp\n", &s), KN_ERR_CONFIG, "m.ini:4", "dir", NULL);

    /* loading: csv with string labels and a separate test file (labels in the training order) */
    write_text(tpath("tr.csv"), "x1,x2,kind\n1,2,dog\n3,4,cat\n5,6,dog\n7,8,emu\n");
    write_text(tpath("te.csv"), "x1,x2,kind\n9,9,emu\n0,0,cat\n");
    kn_table tr, te;
    CHECK(spec_from("[data]\nsource = csv\npath = tr.csv\ntest_path = te.csv\ntarget = kind\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, &te) == KN_OK, "%s", kn_ctx_message(ctx));
    kn_field *l = kn_table_field(&tr, "label"), *f = kn_table_field(&tr, "features"), *lt = kn_table_field(&te, "label");
    CHECK(tr.n == 4 && te.n == 2 && f && l && lt && f->sample_numel == 2 && l->sample_shape.nd == 0 && l->nclasses == 3, "loaded");
    if (l && lt) {
        CHECK(((int32_t *)l->data)[0] == 1 && ((int32_t *)l->data)[1] == 0 && ((int32_t *)l->data)[3] == 2, "train labels");
        CHECK(((int32_t *)lt->data)[0] == 2 && ((int32_t *)lt->data)[1] == 0 && lt->classes.n == 3, "test labels in train order");
    }
    if (f) CHECK(f->column_names && !strcmp(f->column_names[1], "x2"), "column names");
    kn_table_free(&tr);
    kn_table_free(&te);
    write_text(tpath("te2.csv"), "x1,x2,kind\n9,9,yak\n");
    CHECK(spec_from("[data]\nsource = csv\npath = tr.csv\ntest_path = te2.csv\ntarget = kind\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, &te), KN_ERR_FORMAT, "te2.csv: class label 'yak' does not occur in the training data", NULL, NULL);
    CHECK(spec_from("[data]\nsource = csv\npath = tr.csv\ntarget = 1:3\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, &te), KN_ERR_CONFIG, "tr.csv: target = '1:3' selects 2 columns; class labels come from one column", NULL, NULL);
    /* regression with several targets */
    CHECK(spec_from("[data]\nsource = csv\npath = tr.csv\ntarget = x1,x2\nfeatures = x1\ntarget_type = real\n", &s) == KN_OK, "%s",
          kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_CONFIG, "tr.csv: features = 'x1': column 0 'x1' is the target", NULL, NULL);
    CHECK(spec_from("[data]\nsource = csv\npath = tr.csv\ntarget = x1,x2\nfeatures = kind\ntarget_type = real\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_FORMAT, "tr.csv:2: row 1, column 2 'kind': 'dog' is not a number", NULL, NULL);
    write_text(tpath("num.csv"), "a,b,c\n1,2,3\n4,5,6\n");
    CHECK(spec_from("[data]\nsource = csv\npath = num.csv\ntarget = 1:\nfeatures = a\ntarget_type = real\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    l = kn_table_field(&tr, "target");
    CHECK(l && l->kind == KN_FIELD_REAL && l->dtype == KN_F32 && l->sample_numel == 2 && ((float *)l->data)[3] == 6, "real targets");
    kn_table_free(&tr);

    /* npy pairs: class labels per sample and per position; counts must match */
    char text[4096];
    snprintf(text, sizeof text, "[data]\nsource = npy\npath = %s\ntargets_path = %s\n", fixture("tests/fixtures/npy/x5.npy"),
             fixture("tests/fixtures/npy/y5.npy"));
    CHECK(spec_from(text, &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    f = kn_table_field(&tr, "features");
    l = kn_table_field(&tr, "label");
    CHECK(tr.n == 5 && f && l && f->sample_numel == 3 && ((float *)f->data)[14] == 14.0f / 7 && l->nclasses == 3 &&
              ((int32_t *)l->data)[1] == 2, "npy pair");
    kn_table_free(&tr);
    snprintf(text, sizeof text, "[data]\nsource = npy\npath = %s\ntargets_path = %s\n", fixture("tests/fixtures/npy/x5.npy"),
             fixture("tests/fixtures/npy/seq5.npy"));
    CHECK(spec_from(text, &s) == KN_OK && kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    l = kn_table_field(&tr, "label");
    CHECK(l && l->sample_shape.nd == 1 && l->sample_shape.d[0] == 4 && l->dtype == KN_I32 && l->nclasses == 3, "labels per position");
    kn_table_free(&tr);
    snprintf(text, sizeof text, "[data]\nsource = npy\npath = %s\ntargets_path = %s\n", fixture("tests/fixtures/npy/x5.npy"),
             fixture("tests/fixtures/npy/y4.npy"));
    CHECK(spec_from(text, &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_FORMAT, "x5.npy has 5 samples but", "y4.npy has 4", NULL);
    /* IDX pair of other element types: float32 features, int16 targets */
    float fx[6] = {0.5f, 1, 1.5f, 2, 2.5f, 3};
    int16_t ly[3] = {1, 0, 1};
    int64_t dx[2] = {3, 2}, dy[1] = {3};
    CHECK(kn_idx_write_typed(ctx, tpath("fx.idx"), KN_EL_F32, 2, dx, fx, 1) == KN_OK && kn_idx_write_typed(ctx, tpath("ly.idx"), KN_EL_I16, 1, dy, ly, 0) == KN_OK,
          "%s", kn_ctx_message(ctx));
    CHECK(spec_from("[data]\nsource = idx\npath = fx.idx\ntargets_path = ly.idx\ntest_split = 0.34\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, &te) == KN_OK && tr.n == 2 && te.n == 1, "%s", kn_ctx_message(ctx));
    f = kn_table_field(&tr, "image");
    CHECK(f && f->sample_numel == 2, "idx image field");
    kn_table_free(&tr);
    kn_table_free(&te);
    uint8_t img[2 * 2 * 3];
    for (int i = 0; i < 12; i++) img[i] = (uint8_t)(i * 20);
    int64_t dimg[3] = {2, 2, 3};
    CHECK(kn_idx_write_typed(ctx, tpath("img.idx.gz"), KN_EL_U8, 3, dimg, img, 1) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(spec_from("[data]\nsource = idx\npath = img.idx.gz\ntargets_path = ly.idx\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_FORMAT, "img.idx.gz has 2 samples but", "ly.idx has 3", NULL);
    int16_t ly2[2] = {1, 0};
    int64_t dy2[1] = {2};
    CHECK(kn_idx_write_typed(ctx, tpath("ly2.idx"), KN_EL_I16, 1, dy2, ly2, 0) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(spec_from("[data]\nsource = idx\npath = img.idx.gz\ntargets_path = ly2.idx\nnormalize = per_channel\n", &s) == KN_OK, "%s",
          kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    f = kn_table_field(&tr, "image");
    CHECK(f && f->sample_shape.nd == 3 && f->sample_shape.d[0] == 1 && f->sample_shape.d[1] == 2 && f->sample_shape.d[2] == 3 &&
              ((float *)f->data)[11] == 220.0f, "u8 images get a channel axis");
    kn_table_free(&tr);
    CHECK(spec_from("[data]\nsource = idx\npath = fx.idx\ntargets_path = fx.idx\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_FORMAT, "fx.idx: label holds float32 values, but label needs integers", NULL, NULL);
    CHECK(spec_from("[data]\nsource = csv\npath = missing.csv\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, &te), KN_ERR_IO, "missing.csv: cannot open", NULL, NULL);
}

/* ---------------------------------------------------------------- scikit-learn's CSVs */
static int read_stats(const char *key, int64_t *n, int64_t *m, double *extra, double *mean, double *std, int cap) {
    FILE *f = fopen(kn_test_src("tests/fixtures/sklearn_stats.txt"), "r");
    if (!f) return 0;
    char line[16384];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char k[64];
        long long a, b;
        double e;
        if (sscanf(line, "%63s %lld %lld %lf", k, &a, &b, &e) == 4 && !strcmp(k, key)) {
            *n = a;
            *m = b;
            *extra = e;
            for (int pass = 0; pass < 2 && fgets(line, sizeof line, f); pass++) {
                char *p = strchr(line, ' ');
                for (int i = 0; p && i < cap && i < b; i++) (pass ? std : mean)[i] = strtod(p, &p);
            }
            found = 1;
            break;
        }
    }
    fclose(f);
    return found;
}

#define SKL "/usr/lib/python3/dist-packages/sklearn/datasets/data/"
static void test_sklearn(void) {
    if (access(SKL "breast_cancer.csv", R_OK) != 0) {
        printf("test_sources: SKIP the scikit-learn data tests: %s not found (install Debian's python3-sklearn)\n", SKL);
        return;
    }
    kn_source_spec s;
    kn_table tr, te;
    int64_t n, m;
    double extra, mean[32], std[32];
    /* breast_cancer.csv: a preamble line "569,30,malignant,benign", no header, 30 features, a 0/1 label */
    CHECK(spec_from("[data]\nsource = csv\npath = " SKL "breast_cancer.csv\nheader = no\nskip_lines = 1\n", &s) == KN_OK, "%s",
          kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    kn_field *f = kn_table_field(&tr, "features"), *l = kn_table_field(&tr, "label");
    CHECK(read_stats("breast_cancer", &n, &m, &extra, mean, std, 32), "stats fixture");
    CHECK(tr.n == 569 && n == 569 && f && f->sample_numel == 30 && l && l->nclasses == 2, "breast cancer shape");
    if (f && l && tr.n == 569) {
        const float *x = f->data;
        const int32_t *y = l->data;
        CHECK(x[0] == 17.99f && x[1] == 10.38f && x[29] == 0.1189f && x[568 * 30] == 7.76f && x[568 * 30 + 29] == 0.07039f, "known values");
        int64_t ones = 0;
        for (int64_t i = 0; i < 569; i++) ones += y[i];
        CHECK(y[0] == 0 && y[568] == 1 && ones == (int64_t)extra, "labels: %lld ones (numpy %g)", (long long)ones, extra);
        kn_norm z;
        CHECK(kn_norm_fit(ctx, f, NULL, 569, KN_NORM_PER_FEATURE, &z, NULL, 0) == KN_OK, "fit");
        double worst = 0;
        for (int i = 0; i < 30; i++) {
            double e1 = fabs(z.mean[i] - mean[i]) / fabs(mean[i]), e2 = fabs(z.std[i] - std[i]) / std[i];
            if (e1 > worst) worst = e1;
            if (e2 > worst) worst = e2;
        }
        CHECK(worst < 1e-12, "mean/std against numpy: worst relative difference %g", worst);
        kn_norm_free(&z);
    }
    kn_table_free(&tr);
    /* the stated 80/20 split */
    CHECK(spec_from("[data]\nsource = csv\npath = " SKL "breast_cancer.csv\nheader = no\nskip_lines = 1\ntest_split = 0.2\nsplit_seed = 1\n", &s) ==
              KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, &te) == KN_OK && tr.n == 456 && te.n == 113, "80/20: %lld/%lld", (long long)tr.n, (long long)te.n);
    kn_table_free(&tr);
    kn_table_free(&te);

    /* wine_data.csv: preamble "178,13,class_0,class_1,class_2", 13 features, labels 0..2 */
    CHECK(spec_from("[data]\nsource = csv\npath = " SKL "wine_data.csv\nheader = no\nskip_lines = 1\ntarget = 13\n", &s) == KN_OK, "%s",
          kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    f = kn_table_field(&tr, "features");
    l = kn_table_field(&tr, "label");
    CHECK(tr.n == 178 && f && f->sample_numel == 13 && l && l->nclasses == 3 && l->classes.n == 3 && !strcmp(l->classes.names[2], "2"),
          "wine shape");
    if (f && l && tr.n == 178) {
        const float *x = f->data;
        const int32_t *y = l->data;
        int cnt[3] = {0, 0, 0};
        for (int i = 0; i < 178; i++) cnt[y[i]]++;
        CHECK(x[0] == 14.23f && x[12] == 1065 && x[177 * 13 + 12] == 560 && y[0] == 0 && y[177] == 2, "wine values");
        CHECK(cnt[0] == 59 && cnt[1] == 71 && cnt[2] == 48, "wine class counts %d %d %d", cnt[0], cnt[1], cnt[2]);
    }
    kn_table_free(&tr);

    /* diabetes: two gzip whitespace-separated files, features and a real target, paired by row */
    CHECK(spec_from("[data]\nsource = csv\npath = " SKL "diabetes_data_raw.csv.gz\ntargets_path = " SKL "diabetes_target.csv.gz\n"
                    "delimiter = whitespace\nheader = no\ntarget_type = real\ntest_split = 0.2\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    CHECK(kn_source_load(ctx, &s, &tr, NULL) == KN_OK, "%s", kn_ctx_message(ctx));
    f = kn_table_field(&tr, "features");
    l = kn_table_field(&tr, "target");
    CHECK(read_stats("diabetes", &n, &m, &extra, mean, std, 32), "stats fixture");
    CHECK(tr.n == 442 && n == 442 && f && f->sample_numel == 10 && l && l->sample_numel == 1 && l->kind == KN_FIELD_REAL, "diabetes shape");
    if (f && l && tr.n == 442) {
        const float *x = f->data, *y = l->data;
        CHECK(x[0] == 59 && x[1] == 2 && x[2] == 32.1f && x[8] == 4.8598f && x[9] == 87 && y[0] == 151 && y[1] == 75, "diabetes values");
        double sum = 0;
        for (int i = 0; i < 442; i++) sum += y[i];
        CHECK(sum == extra, "target sum %.17g, numpy %.17g", sum, extra);
        kn_norm z;
        CHECK(kn_norm_fit(ctx, f, NULL, 442, KN_NORM_PER_FEATURE, &z, NULL, 0) == KN_OK, "fit");
        double worst = 0;
        for (int i = 0; i < 10; i++) {
            double e1 = fabs(z.mean[i] - mean[i]) / fabs(mean[i]), e2 = fabs(z.std[i] - std[i]) / std[i];
            if (e1 > worst) worst = e1;
            if (e2 > worst) worst = e2;
        }
        CHECK(worst < 1e-12, "diabetes mean/std against numpy: worst relative difference %g", worst);
        kn_norm_free(&z);
    }
    kn_table_free(&tr);
    CHECK(kn_source_load(ctx, &s, &tr, &te) == KN_OK && tr.n == 354 && te.n == 88, "diabetes 80/20: %lld/%lld", (long long)tr.n, (long long)te.n);
    kn_table_free(&tr);
    kn_table_free(&te);
    /* the wrong delimiter for the whitespace files is a clear error */
    CHECK(spec_from("[data]\nsource = csv\npath = " SKL "diabetes_data_raw.csv.gz\ntargets_path = " SKL "diabetes_target.csv.gz\n"
                    "header = no\ntarget_type = real\n", &s) == KN_OK, "%s", kn_ctx_message(ctx));
    EXPECT(kn_source_load(ctx, &s, &tr, NULL), KN_ERR_FORMAT, "diabetes_data_raw.csv.gz:1: row 1, column 0: '59 2 32.1", "is not a number", "set delimiter = whitespace");
}

int main(void) {
    ctx = kn_ctx_new();
    snprintf(dir, sizeof dir, "%s", kn_test_tmpdir("test_sources"));
    test_idx_types();
    test_npy();
    test_csv_parse();
    test_csv_select_labels();
    test_tables();
    test_norm();
    test_spec();
    test_sklearn();
    kn_ctx_free(ctx);
    return kn_test_finish("test_sources");
}
