/* The checkpoint reader trusts nothing (issue 10, items 7 and 26):
 *  - the crash inputs found by fuzzing (tests/fixtures/readers/): a shape
 *    whose byte count wraps, JSON numbers that are not whole numbers in range (1e30,
 *    1e300, negative), overlapping tensors; `kiln inspect --dump` on them fails cleanly;
 *  - the header structure: duplicates, gaps, bytes after the JSON, non-string metadata,
 *    unknown dtypes; zero-size dimensions are legal safetensors and read safely;
 *  - the metadata is under the whole-file checksum: an edited epoch (craft.py meta_epoch)
 *    or metrics_bytes (meta_metrics) is a checksum mismatch; a checkpoint of an older
 *    kiln (data checksum only) is still read, and every value the trainer reads is
 *    range-checked, and a resume never extends metrics.jsonl;
 *  - --init-from takes a PyTorch state dict with BatchNorm's I64 num_batches_tracked
 *    and names every other tensor it cannot use. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kiln.h"
#include "nn/model.h"
#include "testutil.h"
#include "train/checkpoint.h"

static kn_ctx *ctx;
static char D[1024];
static char g_out[65536], g_err[65536];

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }
static const char *tpath(const char *name) {
    static char buf[8][1200];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", D, name);
    return buf[k];
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}
static void spit(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    fwrite(b, 1, n, f);
    fclose(f);
}

/* A safetensors file from a header (JSON text, padded here) and a data section. */
static void write_st(const char *path, const char *json, const void *data, size_t n) {
    size_t hl = strlen(json), padded = (hl + 7) / 8 * 8;
    unsigned char *b = calloc(8 + padded + n + 1, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(b + 8, json, hl);
    memset(b + 8 + hl, ' ', padded - hl);
    if (n) memcpy(b + 8 + padded, data, n);
    spit(path, b, 8 + padded + n);
    free(b);
}

/* Open must fail with KN_ERR_FORMAT and a message naming the file and `what`. */
static void expect_bad(const char *path, const char *what) {
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    int rc = kn_ckpt_open(ctx, path, &c);
    const char *m = kn_ctx_message(ctx);
    if (getenv("KN_VERBOSE")) printf("  %s: [%d] %s\n", path, rc, m);
    CHECK(rc == KN_ERR_FORMAT && !c, "%s: accepted or wrong code %d: %s", path, rc, m);
    CHECK(has(m, path), "message does not name the file: %s", m);
    if (what) CHECK(has(m, what), "%s: message lacks '%s': %s", path, what, m);
    kn_ckpt_close(c);
}

/* ---- the fuzzing reproducers ---- */
static void test_reproducers(void) {
    static const struct { const char *file, *what; } cases[] = {
        {"wrap_shape.safetensors", "needs more than 2^64 bytes"},
        {"huge_dim.safetensors", "not a whole number from 0 to 2^53"},
        {"nan_off.safetensors", "data_offsets that are not whole numbers"},
        {"neg_shape.safetensors", "not a whole number from 0 to 2^53"},
        {"overlap.safetensors", "tensors 'a' and 'b' overlap"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "tests/fixtures/readers/%s", cases[i].file);
        const char *p = kn_test_src(rel);
        char path[2048];
        snprintf(path, sizeof path, "%s", p);
        expect_bad(path, cases[i].what);
        /* `kiln inspect FILE --dump w` and plain inspect: an error, never a read */
        FILE *null = fopen("/dev/null", "w");
        kn_ctx_clear(ctx);
        CHECK(kn_inspect(ctx, path, "w", null) == KN_ERR_FORMAT, "inspect --dump accepted %s", path);
        kn_ctx_clear(ctx);
        CHECK(kn_inspect(ctx, path, NULL, null) == KN_ERR_FORMAT, "inspect accepted %s", path);
        fclose(null);
    }
    /* zero-size dimensions are legal safetensors: an empty tensor, read safely */
    char path[2048];
    snprintf(path, sizeof path, "%s", kn_test_src("tests/fixtures/readers/zero_elems.safetensors"));
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, path, &c) == KN_OK, "zero_elems: %s", kn_ctx_message(ctx));
    if (c) {
        const float *d;
        kn_shape sh;
        CHECK(kn_ckpt_get(ctx, c, "w", &d, &sh) == KN_OK && sh.nd == 1 && sh.d[0] == 0 && kn_shape_numel(&sh) == 0,
              "zero_elems shape");
        kn_ckpt_close(c);
    }
    char out[64] = "";
    FILE *mf = fmemopen(out, sizeof out, "w");
    kn_ctx_clear(ctx);
    CHECK(kn_inspect(ctx, path, "w", mf) == KN_OK, "dump of an empty tensor: %s", kn_ctx_message(ctx));
    fclose(mf);
    CHECK(out[0] == 0, "dump of an empty tensor printed '%s'", out);
}

/* ---- the header's structure ---- */
static void test_structure(void) {
    static const float two[4] = {1, 2, 3, 4};
    write_st(tpath("dup.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             two, 16);
    expect_bad(tpath("dup.safetensors"), "tensor 'a' appears twice");
    write_st(tpath("gap.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
             two, 12);
    expect_bad(tpath("gap.safetensors"), "no tensor covers bytes 4..8");
    write_st(tpath("short.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", two, 8);
    expect_bad(tpath("short.safetensors"), "8 data bytes but the tensors cover 4");
    write_st(tpath("frac.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("frac.safetensors"), "not a whole number");
    write_st(tpath("big.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5e27],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("big.safetensors"), "not a whole number");
    write_st(tpath("garbage.safetensors"), "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}xx", two, 4);
    expect_bad(tpath("garbage.safetensors"), "bytes after the JSON header");
    write_st(tpath("metanum.safetensors"),
             "{\"__metadata__\":{\"epoch\":3},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("metanum.safetensors"), "metadata 'epoch' is not a string");
    write_st(tpath("metadup.safetensors"),
             "{\"__metadata__\":{\"epoch\":\"3\",\"epoch\":\"4\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", two,
             4);
    expect_bad(tpath("metadup.safetensors"), "metadata 'epoch' appears twice");
    write_st(tpath("dtype.safetensors"), "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("dtype.safetensors"), "'F33', which is not a safetensors dtype");
    /* a short whole-file checksum at the right place (was a heap over-read under ASan) */
    write_st(tpath("shortcrc.safetensors"),
             "{\"__metadata__\":{\"kiln_file_crc32\":\"abc\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("shortcrc.safetensors"), "'kiln_file_crc32' = 'abc' is not 8 hex digits");
    write_st(tpath("shortcrc2.safetensors"),
             "{\"__metadata__\":{\"kiln_crc32\":\"abc\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", two, 4);
    expect_bad(tpath("shortcrc2.safetensors"), "'kiln_crc32' = 'abc' is not 8 hex digits");
    /* header length beyond the file */
    unsigned char hb[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    spit(tpath("hlen.safetensors"), hb, sizeof hb);
    expect_bad(tpath("hlen.safetensors"), "header length 65535");
    /* another dtype: read, listed apart, never handed out as floats */
    write_st(tpath("i64.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]}}",
             two, 16);
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, tpath("i64.safetensors"), &c) == KN_OK, "I64 tensor: %s", kn_ctx_message(ctx));
    if (c) {
        CHECK(kn_ckpt_count(c) == 1 && kn_ckpt_other_count(c) == 1, "counts %d %d", kn_ckpt_count(c), kn_ckpt_other_count(c));
        const char *dt = NULL;
        kn_shape sh;
        CHECK(!strcmp(kn_ckpt_other(c, 0, &dt, &sh), "n") && !strcmp(dt, "I64") && sh.nd == 0, "other tensor");
        const float *d;
        CHECK(kn_ckpt_get(ctx, c, "n", &d, NULL) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "dtype I64"), "I64 get: %s",
              kn_ctx_message(ctx));
        CHECK(kn_ckpt_checksum(c) == 0, "no checksum in a foreign file");
        kn_ckpt_close(c);
    }
    char txt[4096] = "";
    FILE *mf = fmemopen(txt, sizeof txt - 1, "w");
    kn_ctx_clear(ctx);
    CHECK(kn_inspect(ctx, tpath("i64.safetensors"), NULL, mf) == KN_OK, "inspect: %s", kn_ctx_message(ctx));
    fclose(mf);
    CHECK(has(txt, "2 tensors, checksum absent") && has(txt, "(I64: not read by kiln)"), "inspect lists the I64 tensor: %s", txt);
}

/* ---- a small model and kiln's own checkpoints of it ---- */
static const char *MODEL =
    "[conv1]\ntype = conv2d\nout_channels = 2\nkernel = 3\npadding = 1\n"
    "[bn1]\ntype = batchnorm\nactivation = relu\n"
    "[flat]\ntype = flatten\n"
    "[fc]\ntype = linear\nout = 3\n";

static int build(kn_model *m) {
    kn_config *cfg = NULL;
    int rc = kn_config_parse_string(ctx, "model.ini", MODEL, &cfg);
    if (!rc) rc = kn_model_build(ctx, cfg, 2, 2, 1, 4, 4, 3, m);
    kn_config_free(cfg);
    if (!rc) kn_model_init(m, 5);
    return rc;
}

/* A kiln training checkpoint of the model (parameters, optimizer moments, metadata). */
static void save_train(kn_model *m, const char *path, const char *epoch) {
    kn_ckpt_tensor_in ex[64];
    char names[64][160];
    int nex = 0;
    for (int i = 0; i < m->store.n && nex < 62; i++) {
        const kn_store_entry *e = &m->store.e[i];
        if (e->is_state) continue;
        snprintf(names[nex], sizeof names[nex], "optimizer.m.%s", e->name);
        ex[nex] = (kn_ckpt_tensor_in){names[nex], e->shape, m->store.param + e->offset};
        nex++;
    }
    kn_ckpt_meta meta[] = {{"kind", "train"},         {"step", "12"},           {"epoch", epoch},
                           {"batch_in_epoch", "2"},   {"seed", "7"},            {"optimizer_t", "12"},
                           {"epoch_loss_sum", "0x1.8p+1"}, {"epoch_steps", "2"}, {"best_val_loss", "inf"},
                           {"best_step", "-1"},       {"metrics_bytes", "1234"}, {"optimizer_kind", "1"},
                           {"guard_lr_scale", "1"},   {"guard_events", "0"},    {"bad_epochs", "0"},
                           {"data_mean", "0.25"},     {"data_std", "0.5"},      {"config", MODEL}};
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_save(ctx, path, &m->store, ex, nex, meta, (int)(sizeof meta / sizeof meta[0])) == KN_OK, "save: %s",
          kn_ctx_message(ctx));
}

/* Rewrite the JSON header of a file with `from` replaced by `to` (lengths may differ;
 * the data section is kept), as craft.py does. */
static void rewrite(const char *src, const char *dst, const char *from, const char *to) {
    size_t n;
    unsigned char *b = slurp(src, &n);
    if (!b || n < 8) { CHECK(0, "cannot read %s", src); free(b); return; }
    uint64_t hl = 0;
    for (int i = 0; i < 8; i++) hl |= (uint64_t)b[i] << (8 * i);
    char *h = calloc(hl + strlen(to) + 1, 1);
    memcpy(h, b + 8, hl);
    while (hl > 0 && h[hl - 1] == ' ') h[--hl] = 0;
    char *at = strstr(h, from);
    CHECK(at != NULL, "'%s' not in the header of %s", from, src);
    if (at) {
        char *nh = calloc(hl + strlen(to) + 1, 1);
        memcpy(nh, h, (size_t)(at - h));
        strcat(nh, to);
        strcat(nh, at + strlen(from));
        write_st(dst, nh, NULL, 0); /* the header; then the data section as it was */
        size_t padded0 = 0;
        for (int i = 0; i < 8; i++) padded0 |= (size_t)b[i] << (8 * i);
        FILE *f = fopen(dst, "ab");
        fwrite(b + 8 + padded0, 1, n - 8 - padded0, f);
        fclose(f);
        free(nh);
    }
    free(h);
    free(b);
}

static void test_kiln_files(void) {
    kn_model m;
    memset(&m, 0, sizeof m);
    CHECK(build(&m) == KN_OK, "model: %s", kn_ctx_message(ctx));
    char good[1200];
    snprintf(good, sizeof good, "%s", tpath("good.safetensors"));
    save_train(&m, good, "3");
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, good, &c) == KN_OK, "open: %s", kn_ctx_message(ctx));
    if (c) {
        CHECK(kn_ckpt_checksum(c) == 2, "whole-file checksum verified: %d", kn_ckpt_checksum(c));
        CHECK(kn_ckpt_check_train_meta(ctx, c) == KN_OK, "train meta: %s", kn_ctx_message(ctx));
        int64_t v = -5;
        double f = 0;
        CHECK(kn_ckpt_meta_int(ctx, c, "best_step", &v) == KN_OK && v == -1, "best_step %lld", (long long)v);
        CHECK(kn_ckpt_meta_num(ctx, c, "epoch_loss_sum", &f) == KN_OK && f == 3.0, "hex float %g", f);
        CHECK(kn_ckpt_meta_num(ctx, c, "best_val_loss", &f) == KN_OK && f > 1e308, "inf %g", f);
        kn_ckpt_close(c);
    }
    {
        char txt[16384] = "";
        FILE *mf = fmemopen(txt, sizeof txt - 1, "w");
        kn_ctx_clear(ctx);
        CHECK(kn_inspect(ctx, good, NULL, mf) == KN_OK, "inspect: %s", kn_ctx_message(ctx));
        fclose(mf);
        CHECK(has(txt, "checksum ok (crc32 of the whole file verified)"), "inspect says what it verified: %.300s", txt);
    }
    /* craft.py meta_epoch / meta_metrics: metadata edited, data untouched */
    rewrite(good, tpath("meta_epoch.safetensors"), "\"epoch\":\"3\"", "\"epoch\":\"-1000000000000\"");
    expect_bad(tpath("meta_epoch.safetensors"), "checksum mismatch");
    rewrite(good, tpath("meta_metrics.safetensors"), "\"metrics_bytes\":\"1234\"", "\"metrics_bytes\":\"1000000000000\"");
    expect_bad(tpath("meta_metrics.safetensors"), "checksum mismatch");
    rewrite(good, tpath("meta_same_len.safetensors"), "\"epoch\":\"3\"", "\"epoch\":\"9\"");
    expect_bad(tpath("meta_same_len.safetensors"), "checksum mismatch");
    /* craft.py overlap_m: Adam's moment reads the weights' bytes */
    {
        size_t n;
        unsigned char *b = slurp(good, &n);
        char *h = b ? strndup((char *)b + 8, 4096) : NULL;
        char *w = h ? strstr(h, "\"fc.weight\":") : NULL;
        char *o = w ? strstr(w, "\"data_offsets\":[") : NULL;
        if (o) {
            char offs[64];
            snprintf(offs, sizeof offs, "%.*s", (int)(strchr(o, ']') - o + 1), o);
            char *mo = strstr(h, "\"optimizer.m.fc.weight\":");
            char *mo2 = mo ? strstr(mo, "\"data_offsets\":[") : NULL;
            char from[64];
            snprintf(from, sizeof from, "%.*s", (int)(strchr(mo2, ']') - mo2 + 1), mo2);
            char pre[200], pto[200];
            snprintf(pre, sizeof pre, "\"optimizer.m.fc.weight\":{\"dtype\":\"F32\",\"shape\":[3,32],%s", from);
            snprintf(pto, sizeof pto, "\"optimizer.m.fc.weight\":{\"dtype\":\"F32\",\"shape\":[3,32],%s", offs);
            rewrite(good, tpath("overlap_m.safetensors"), pre, pto);
            expect_bad(tpath("overlap_m.safetensors"), "overlap");
        } else {
            CHECK(0, "no fc.weight offsets in %s", good);
        }
        free(h);
        free(b);
    }
    /* craft.py hugeshape: 2^62+1 elements, x4 bytes wraps to 4 */
    rewrite(good, tpath("hugeshape.safetensors"), "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[3,32]",
            "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[242243305,19037413721]");
    expect_bad(tpath("hugeshape.safetensors"), "needs more than 2^64 bytes");
    rewrite(good, tpath("negshape.safetensors"), "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[3,32]",
            "\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[-3,-32]");
    expect_bad(tpath("negshape.safetensors"), "not a whole number");

    /* a checkpoint of the previous format (data checksum only): read, and its metadata
     * is range-checked value by value */
    rewrite(good, tpath("old.safetensors"), "\"kiln_file_crc32\":\"", "\"kiln_old_file_crc32\":\"");
    rewrite(tpath("old.safetensors"), tpath("old_epoch.safetensors"), "\"epoch\":\"3\"", "\"epoch\":\"-1000000000000\"");
    kn_ctx_clear(ctx);
    c = NULL;
    CHECK(kn_ckpt_open(ctx, tpath("old_epoch.safetensors"), &c) == KN_OK, "old format: %s", kn_ctx_message(ctx));
    if (c) {
        CHECK(kn_ckpt_checksum(c) == 1, "data checksum only: %d", kn_ckpt_checksum(c));
        int64_t v = 0;
        kn_ctx_clear(ctx);
        CHECK(kn_ckpt_meta_int(ctx, c, "epoch", &v) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "'epoch' = '-1000000000000' is out of range"),
              "epoch -1e12: %s", kn_ctx_message(ctx));
        kn_ctx_clear(ctx);
        CHECK(kn_ckpt_check_train_meta(ctx, c) == KN_ERR_FORMAT, "train meta accepted epoch -1e12");
        kn_ckpt_close(c);
    }
    /* each value the trainer reads: strict syntax, range */
    static const struct { const char *key, *value; int ok; } vals[] = {
        {"step", "12abc", 0},         {"step", " 12", 0},          {"step", "1e3", 0},
        {"step", "+5", 0},            {"step", "", 0},             {"step", "9223372036854775808", 0},
        {"step", "9007199254740993", 0}, {"step", "9007199254740992", 1}, {"optimizer_kind", "3", 0},
        {"best_step", "-2", 0},       {"epoch", "1000001", 0},     {"guard_lr_scale", "0", 0},
        {"guard_lr_scale", "1.5", 0}, {"guard_lr_scale", "0x1p-3", 1}, {"best_val_loss", "nan", 0},
        {"epoch_loss_sum", "nan", 1}, {"data_std", "0", 0},        {"data_std", "-1", 0},
        {"data_mean", "inf", 0},      {"data_mean", "-0.5", 1},    {"metrics_bytes", "-1", 0},
    };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        char from[128], to[128];
        const char *orig = NULL;
        static const char *const k[][2] = {{"step", "12"}, {"optimizer_kind", "1"}, {"best_step", "-1"}, {"epoch", "3"},
                                           {"guard_lr_scale", "1"}, {"best_val_loss", "inf"}, {"epoch_loss_sum", "0x1.8p+1"},
                                           {"data_std", "0.5"}, {"data_mean", "0.25"}, {"metrics_bytes", "1234"}};
        for (size_t j = 0; j < sizeof k / sizeof k[0]; j++)
            if (!strcmp(k[j][0], vals[i].key)) orig = k[j][1];
        snprintf(from, sizeof from, "\"%s\":\"%s\"", vals[i].key, orig);
        snprintf(to, sizeof to, "\"%s\":\"%s\"", vals[i].key, vals[i].value);
        rewrite(tpath("old.safetensors"), tpath("val.safetensors"), from, to);
        c = NULL;
        kn_ctx_clear(ctx);
        if (kn_ckpt_open(ctx, tpath("val.safetensors"), &c) != KN_OK) { CHECK(0, "open: %s", kn_ctx_message(ctx)); continue; }
        int64_t iv;
        double fv;
        int isf = !strcmp(vals[i].key, "guard_lr_scale") || !strcmp(vals[i].key, "best_val_loss") ||
                  !strcmp(vals[i].key, "epoch_loss_sum") || !strcmp(vals[i].key, "data_std") || !strcmp(vals[i].key, "data_mean");
        kn_ctx_clear(ctx);
        int rc = isf ? kn_ckpt_meta_num(ctx, c, vals[i].key, &fv) : kn_ckpt_meta_int(ctx, c, vals[i].key, &iv);
        CHECK((rc == KN_OK) == vals[i].ok, "%s = '%s': rc %d (%s)", vals[i].key, vals[i].value, rc, kn_ctx_message(ctx));
        if (!vals[i].ok) CHECK(has(kn_ctx_message(ctx), vals[i].key), "message lacks the key: %s", kn_ctx_message(ctx));
        kn_ctx_clear(ctx);
        CHECK((kn_ckpt_check_train_meta(ctx, c) == KN_OK) == vals[i].ok, "train meta with %s = '%s'", vals[i].key, vals[i].value);
        kn_ckpt_close(c);
    }
    kn_model_free(&m);
}

/* ---- --init-from with a PyTorch state dict ---- */
static void torch_file(const kn_model *m, const char *path, const char *extra_name, const char *extra_dtype) {
    char json[8192];
    size_t k = 0, off = 0;
    static unsigned char data[65536];
    k += (size_t)snprintf(json + k, sizeof json - k, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < m->store.n; i++) {
        const kn_store_entry *e = &m->store.e[i];
        char sh[160];
        kn_shape_str(&e->shape, sh, sizeof sh);
        size_t bytes = (size_t)e->numel * 4;
        k += (size_t)snprintf(json + k, sizeof json - k, ",\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}", e->name,
                              sh, off, off + bytes);
        for (size_t j = 0; j < bytes / 4; j++) {
            float v = 0.01f * (float)j;
            memcpy(data + off + 4 * j, &v, 4);
        }
        off += bytes;
    }
    /* BatchNorm's step counter, as torch.save(model.state_dict()) has it */
    k += (size_t)snprintf(json + k, sizeof json - k, ",\"bn1.num_batches_tracked\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[%zu,%zu]}",
                          off, off + 8);
    memset(data + off, 0, 8);
    data[off] = 200;
    off += 8;
    if (extra_name) {
        size_t es = !strcmp(extra_dtype, "F64") ? 8 : 4;
        k += (size_t)snprintf(json + k, sizeof json - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[2],\"data_offsets\":[%zu,%zu]}", extra_name,
                              extra_dtype, off, off + 2 * es);
        memset(data + off, 0, 2 * es);
        off += 2 * es;
    }
    snprintf(json + k, sizeof json - k, "}");
    write_st(path, json, data, off);
}

static void test_init_from(void) {
    kn_model m;
    memset(&m, 0, sizeof m);
    CHECK(build(&m) == KN_OK, "model: %s", kn_ctx_message(ctx));
    kn_ckpt *c = NULL;
    torch_file(&m, tpath("torch.safetensors"), NULL, NULL);
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, tpath("torch.safetensors"), &c) == KN_OK, "torch file: %s", kn_ctx_message(ctx));
    if (c) {
        kn_ctx_clear(ctx);
        CHECK(kn_ckpt_load_init(ctx, c, &m.store) == KN_OK, "num_batches_tracked not ignored: %s", kn_ctx_message(ctx));
        const kn_store_entry *e = kn_store_find(&m.store, "fc.weight");
        CHECK(e && kn_store_data(&m.store, e)[5] == 0.01f * 5.0f, "values loaded");
        kn_ckpt_close(c);
    }
    /* something else it cannot use: named */
    torch_file(&m, tpath("torch_extra.safetensors"), "head.weight", "F32");
    c = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, tpath("torch_extra.safetensors"), &c) == KN_OK, "open: %s", kn_ctx_message(ctx));
    if (c) {
        kn_ctx_clear(ctx);
        CHECK(kn_ckpt_load_init(ctx, c, &m.store) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "'head.weight' (F32 [2])") &&
                  has(kn_ctx_message(ctx), "not used by this model"),
              "extra tensor: %s", kn_ctx_message(ctx));
        kn_ckpt_close(c);
    }
    torch_file(&m, tpath("torch_f64.safetensors"), "bn1.extra_stat", "F64");
    c = NULL;
    kn_ctx_clear(ctx);
    CHECK(kn_ckpt_open(ctx, tpath("torch_f64.safetensors"), &c) == KN_OK, "open: %s", kn_ctx_message(ctx));
    if (c) {
        kn_ctx_clear(ctx);
        CHECK(kn_ckpt_load_init(ctx, c, &m.store) == KN_ERR_FORMAT && has(kn_ctx_message(ctx), "'bn1.extra_stat' (F64 [2])"),
              "F64 tensor: %s", kn_ctx_message(ctx));
        kn_ckpt_close(c);
    }
    kn_model_free(&m);
}

/* ---- through the kiln command: --init-from, and a resume never extends metrics.jsonl ---- */
static const char *CFG =
    "[data]\ndir = data\nbatch_size = 8\neval_batch_size = 50\n"
    "[train]\nepochs = 1\nlog_every = 1\nthreads = 1\n"
    "[checkpoint]\nevery_steps = 2\n"
    "[health]\nevery = 0\nleakage_check = false\n"
    "[conv1]\ntype = conv2d\nout_channels = 2\nkernel = 3\npadding = 1\n"
    "[bn1]\ntype = batchnorm\nactivation = relu\n"
    "[flat]\ntype = flatten\n"
    "[fc]\ntype = linear\nout = 10\n";

static void test_cli(void) {
    char rm[2048];
    snprintf(rm, sizeof rm, "rm -rf '%s/r1'", D);
    kn_test_system(rm);
    kn_test_make_images(D, "data", 48, 4, 4);
    kn_test_write(D, "cfg.ini", CFG);
    /* a PyTorch state dict for this model (fc has 10 outputs here) */
    kn_model m;
    memset(&m, 0, sizeof m);
    kn_config *cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "cfg.ini", CFG, &cfg) == KN_OK && kn_model_build(ctx, cfg, 8, 8, 1, 4, 4, 10, &m) == KN_OK,
          "model: %s", kn_ctx_message(ctx));
    kn_config_free(cfg);
    torch_file(&m, tpath("pt.safetensors"), NULL, NULL);
    kn_model_free(&m);
    int st = kn_test_run_kiln(D, NULL, "train cfg.ini --run-dir r1 --init-from pt.safetensors --no-progress", g_out, sizeof g_out, g_err,
                              sizeof g_err);
    CHECK(st == 0 && has(g_out, "initialised from"), "--init-from a state dict with num_batches_tracked (%d): %s%s", st, g_out, g_err);

    /* an older-format checkpoint (data checksum only) whose metrics_bytes says 1e12:
     * resume cuts metrics.jsonl back to a recorded length, never extends it */
    char src[2048], dst[2048], mpath[2048];
    snprintf(src, sizeof src, "%s/r1/checkpoints/step-000000002.safetensors", D);
    snprintf(dst, sizeof dst, "%s/r1/checkpoints/step-000000004.safetensors", D);
    snprintf(mpath, sizeof mpath, "%s/r1/metrics.jsonl", D);
    struct stat sb;
    CHECK(stat(src, &sb) == 0, "no %s", src);
    /* the config must stay the run's own; only the metadata changes */
    size_t n;
    unsigned char *b = slurp(src, &n);
    if (b) {
        char *h = strndup((char *)b + 8, 200000);
        char *mb = h ? strstr(h, "\"metrics_bytes\":\"") : NULL;
        if (mb) {
            char from[64];
            snprintf(from, sizeof from, "%.*s", (int)(strchr(mb + 17, '"') - mb + 1), mb);
            rewrite(src, tpath("tmp1.safetensors"), "\"kiln_file_crc32\":\"", "\"kiln_old_file_crc32\":\"");
            rewrite(tpath("tmp1.safetensors"), dst, from, "\"metrics_bytes\":\"1000000000000\"");
        } else {
            CHECK(0, "no metrics_bytes in %s", src);
        }
        free(h);
        free(b);
        /* the final checkpoints must not win over it: remove what is newer */
        char cmd[4096];
        snprintf(cmd, sizeof cmd, "cd '%s/r1/checkpoints' && for f in step-*.safetensors; do [ \"$f\" = step-000000002.safetensors ] || [ \"$f\" = step-000000004.safetensors ] || rm -f \"$f\"; done; rm -f ../model.safetensors",
                 D);
        kn_test_system(cmd);
    }
    st = kn_test_run_kiln(D, NULL, "resume r1 --no-progress", g_out, sizeof g_out, g_err, sizeof g_err);
    CHECK(stat(mpath, &sb) == 0 && sb.st_size < (1 << 20), "metrics.jsonl is %lld bytes after the resume (%d): %s",
          (long long)sb.st_size, st, g_err);
    unlink(mpath);
}

int main(void) {
    ctx = kn_ctx_new();
    kn_set_threads(1);
    snprintf(D, sizeof D, "%s", kn_test_tmpdir("test_ckpt_reader"));
    test_reproducers();
    test_structure();
    test_kiln_files();
    test_init_from();
    test_cli();
    kn_ctx_free(ctx);
    return kn_test_finish("test_ckpt_reader");
}
