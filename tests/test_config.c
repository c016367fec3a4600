/* Config parsing: line numbers, typed getters and their messages, --set, round trip. */
#define _POSIX_C_SOURCE 200809L
#include "config/config.h"
#include "testutil.h"

#include <string.h>

static const char *kSample =
    "; a small CNN\n"                 /* 1 */
    "[data]\n"                        /* 2 */
    "dir = /tmp/fmnist\n"             /* 3 */
    "batch = 64   ; inline comment\n" /* 4 */
    "\n"                              /* 5 */
    "# another comment\n"             /* 6 */
    "[conv1]\n"                       /* 7 */
    "type = conv2d\n"                 /* 8 */
    "  out_channels = abc\n"          /* 9: indented */
    "  kernel = 0\n"                  /* 10 */
    "input = data, extra\n"           /* 11 */
    "[optimizer]\n"                   /* 12 */
    "type = adamm\n"                  /* 13 */
    "lr = 0.01\n"                     /* 14 */
    "momentum = 1e-x\n"               /* 15 */
    "nesterov = Yes\n"                /* 16 */
    "wd = nan\n"                      /* 17 */
    "fused = maybe\n"                 /* 18 */
    "[empty]\n"                       /* 19 */
    "[model]\n"                       /* 20 */
    "layers = conv1 , relu1,fc\n"     /* 21 */
    "bad = a,,b\n";                   /* 22 */

static int has(const kn_ctx *ctx, const char *s) { return strstr(kn_ctx_message(ctx), s) != NULL; }

#define HAS(ctx, s) CHECK(has(ctx, s), "message lacks '%s': %s", s, kn_ctx_message(ctx))

static char *write_file(const char *name, const char *text) {
    static char path[1200];
    snprintf(path, sizeof path, "%s/%s", kn_test_tmpdir("test_config"), name);
    FILE *f = fopen(path, "wb");
    if (!f) return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_load_and_lines(kn_ctx *ctx) {
    const char *path = write_file("cnn.ini", kSample);
    CHECK(path != NULL, "cannot write sample");
    kn_config *cfg = NULL;
    int rc = kn_config_load(ctx, path, &cfg);
    CHECK(rc == KN_OK && cfg, "load failed: %s", kn_ctx_message(ctx));
    if (!cfg) return;
    CHECK(strcmp(cfg->path, path) == 0, "path %s", cfg->path);
    CHECK(cfg->text && strcmp(cfg->text, kSample) == 0, "text not kept");
    CHECK(cfg->nsec == 5, "nsec %d", cfg->nsec);
    const char *names[] = {"data", "conv1", "optimizer", "empty", "model"};
    const int hdr[] = {2, 7, 12, 19, 20};
    for (int i = 0; i < 5 && i < cfg->nsec; i++) {
        CHECK(strcmp(cfg->sec[i].name, names[i]) == 0, "section %d is %s", i, cfg->sec[i].name);
        CHECK(cfg->sec[i].line == hdr[i], "section %s line %d", cfg->sec[i].name, cfg->sec[i].line);
    }
    kn_cfg_section *data = kn_cfg_find(cfg, "data");
    kn_cfg_section *conv = kn_cfg_find(cfg, "conv1");
    kn_cfg_section *opt = kn_cfg_find(cfg, "optimizer");
    kn_cfg_section *model = kn_cfg_find(cfg, "model");
    CHECK(kn_cfg_find(cfg, "nope") == NULL, "found missing section");
    CHECK(kn_cfg_get(NULL, "x") == NULL, "get on NULL section");
    const kn_cfg_kv *kv = kn_cfg_get(data, "batch");
    CHECK(kv && kv->line == 4 && strcmp(kv->value, "64") == 0, "batch kv wrong");
    kv = kn_cfg_get(conv, "kernel");
    CHECK(kv && kv->line == 10 && strcmp(kv->value, "0") == 0, "kernel kv wrong");
    kv = kn_cfg_get(model, "bad");
    CHECK(kv && kv->line == 22, "bad kv line");
    CHECK(conv && conv->nkv == 4, "conv1 has %d keys", conv ? conv->nkv : -1);

    char where[256];
    char expect[300];
    snprintf(expect, sizeof expect, "%s:14", path);
    CHECK(strcmp(kn_cfg_where(cfg, opt, "lr", where, sizeof where), expect) == 0, "where %s", where);
    snprintf(expect, sizeof expect, "%s:12", path);
    CHECK(strcmp(kn_cfg_where(cfg, opt, "absent", where, sizeof where), expect) == 0, "where %s", where);

    /* ints */
    int64_t i64 = -1;
    CHECK(kn_cfg_int(ctx, cfg, data, "batch", 1, 1, 4096, &i64) == KN_OK && i64 == 64, "batch %lld", (long long)i64);
    CHECK(kn_cfg_int(ctx, cfg, data, "absent", 7, 1, 10, &i64) == KN_OK && i64 == 7, "default int");
    CHECK(kn_cfg_int(ctx, cfg, NULL, "absent", 9, 1, 10, &i64) == KN_OK && i64 == 9, "default int, no section");
    rc = kn_cfg_int(ctx, cfg, conv, "kernel", 3, 1, 1024, &i64);
    CHECK(rc == KN_ERR_CONFIG && kn_ctx_code(ctx) == KN_ERR_CONFIG, "kernel=0 accepted");
    snprintf(expect, sizeof expect, "%s:10: [conv1] kernel = '0': expected an integer from 1 to 1024", path);
    CHECK(strcmp(kn_ctx_message(ctx), expect) == 0, "got: %s", kn_ctx_message(ctx));
    rc = kn_cfg_int(ctx, cfg, conv, "out_channels", 8, INT64_MIN, INT64_MAX, &i64);
    CHECK(rc == KN_ERR_CONFIG, "abc accepted as int");
    snprintf(expect, sizeof expect, "%s:9: [conv1] out_channels = 'abc': expected an integer", path);
    CHECK(strcmp(kn_ctx_message(ctx), expect) == 0, "got: %s", kn_ctx_message(ctx));
    CHECK(kn_cfg_int(ctx, cfg, opt, "lr", 1, 0, 10, &i64) == KN_ERR_CONFIG, "0.01 accepted as int");
    HAS(ctx, ":14: [optimizer] lr = '0.01': expected an integer");

    /* floats */
    double d = 0;
    CHECK(kn_cfg_float(ctx, cfg, opt, "lr", 0.1, 0, 10, &d) == KN_OK && d == 0.01, "lr %g", d);
    CHECK(kn_cfg_float(ctx, cfg, opt, "absent", 0.5, 0, 1, &d) == KN_OK && d == 0.5, "default float");
    CHECK(kn_cfg_float(ctx, cfg, opt, "lr", 0.1, 0.5, 10, &d) == KN_ERR_CONFIG, "range not checked");
    HAS(ctx, ":14: [optimizer] lr = '0.01': expected a number from 0.5 to 10");
    CHECK(kn_cfg_float(ctx, cfg, opt, "momentum", 0.9, 0, 1, &d) == KN_ERR_CONFIG, "1e-x accepted");
    HAS(ctx, ":15: [optimizer] momentum = '1e-x': expected a number");
    CHECK(kn_cfg_float(ctx, cfg, opt, "wd", 0, -1e300, 1e300, &d) == KN_ERR_CONFIG, "nan accepted");
    HAS(ctx, "[optimizer] wd = 'nan': expected");
    CHECK(kn_cfg_float(ctx, cfg, data, "dir", 0, 0, 1, &d) == KN_ERR_CONFIG, "path accepted as float");

    /* bools */
    int b = -1;
    CHECK(kn_cfg_bool(ctx, cfg, opt, "nesterov", 0, &b) == KN_OK && b == 1, "Yes -> %d", b);
    CHECK(kn_cfg_bool(ctx, cfg, opt, "absent", 0, &b) == KN_OK && b == 0, "default bool");
    CHECK(kn_cfg_bool(ctx, cfg, opt, "fused", 0, &b) == KN_ERR_CONFIG, "maybe accepted");
    HAS(ctx, ":18: [optimizer] fused = 'maybe': expected true or false");

    /* strings */
    const char *s = NULL;
    CHECK(kn_cfg_str(ctx, cfg, data, "dir", NULL, &s) == KN_OK && s && strcmp(s, "/tmp/fmnist") == 0, "dir");
    CHECK(kn_cfg_str(ctx, cfg, data, "absent", "dflt", &s) == KN_OK && strcmp(s, "dflt") == 0, "default str");
    CHECK(kn_cfg_str(ctx, cfg, data, "absent", NULL, &s) == KN_OK && s == NULL, "NULL default str");

    /* enums */
    static const char *const opts[] = {"sgd", "adam", "adamw", NULL};
    static const char *const layers[] = {"conv2d", "dense", NULL};
    int e = -1;
    CHECK(kn_cfg_enum(ctx, cfg, conv, "type", layers, -1, &e) == KN_OK && e == 0, "enum %d", e);
    CHECK(kn_cfg_enum(ctx, cfg, opt, "absent", opts, 2, &e) == KN_OK && e == 2, "default enum");
    CHECK(kn_cfg_enum(ctx, cfg, opt, "type", opts, 0, &e) == KN_ERR_CONFIG, "adamm accepted");
    snprintf(expect, sizeof expect,
             "%s:13: [optimizer] type = 'adamm': expected one of sgd, adam, adamw; did you mean 'adam'?", path);
    CHECK(strcmp(kn_ctx_message(ctx), expect) == 0, "got: %s", kn_ctx_message(ctx));
    CHECK(kn_cfg_enum(ctx, cfg, data, "dir", opts, 0, &e) == KN_ERR_CONFIG, "path accepted as enum");
    CHECK(!has(ctx, "did you mean"), "silly suggestion: %s", kn_ctx_message(ctx));
    CHECK(kn_cfg_enum(ctx, cfg, data, "mode", opts, -1, &e) == KN_ERR_CONFIG, "required enum missing");
    HAS(ctx, ":2: [data] missing required key 'mode'");

    /* lists */
    const char *items[4];
    int n = -1;
    CHECK(kn_cfg_list(ctx, cfg, model, "layers", items, 4, &n) == KN_OK && n == 3, "list n=%d", n);
    if (n == 3)
        CHECK(strcmp(items[0], "conv1") == 0 && strcmp(items[1], "relu1") == 0 && strcmp(items[2], "fc") == 0,
              "items %s|%s|%s", items[0], items[1], items[2]);
    const char *items2[4];
    int n2 = 0;
    CHECK(kn_cfg_list(ctx, cfg, conv, "input", items2, 4, &n2) == KN_OK && n2 == 2, "second list");
    if (n == 3) CHECK(strcmp(items[0], "conv1") == 0, "first list clobbered");
    CHECK(kn_cfg_list(ctx, cfg, model, "layers", items, 2, &n) == KN_ERR_CONFIG, "max not enforced");
    HAS(ctx, "at most 2 names");
    CHECK(kn_cfg_list(ctx, cfg, model, "bad", items, 4, &n) == KN_ERR_CONFIG, "empty item accepted");
    HAS(ctx, ":22: [model] bad = 'a,,b': expected a comma-separated list");
    CHECK(kn_cfg_list(ctx, cfg, model, "absent", items, 4, &n) == KN_OK && n == 0, "absent list");

    /* unknown keys */
    static const char *const conv_keys[] = {"type", "input", "out_channels", "kernel", NULL};
    CHECK(kn_cfg_check_keys(ctx, cfg, conv, conv_keys, "a conv2d layer") == KN_OK, "conv keys");
    static const char *const conv_keys2[] = {"type", "input", "out_channels", "kernel_size", NULL};
    CHECK(kn_cfg_check_keys(ctx, cfg, conv, conv_keys2, "a conv2d layer") == KN_ERR_CONFIG, "unknown key missed");
    HAS(ctx, ":10: [conv1] unknown key 'kernel' for a conv2d layer");
    HAS(ctx, "Allowed keys: type, input, out_channels, kernel_size");
    kn_config_free(cfg);
}

static void test_typo_suggestion(kn_ctx *ctx) {
    kn_config *cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "examples/cnn.ini", "[conv1]\ntype = conv2d\nkernal = 3\n", &cfg) == KN_OK,
          "parse: %s", kn_ctx_message(ctx));
    if (!cfg) return;
    static const char *const keys[] = {"type", "input", "out_channels", "kernel", "stride", NULL};
    CHECK(kn_cfg_check_keys(ctx, cfg, kn_cfg_find(cfg, "conv1"), keys, "a conv2d layer") == KN_ERR_CONFIG, "typo");
    CHECK(strcmp(kn_ctx_message(ctx),
                 "examples/cnn.ini:3: [conv1] unknown key 'kernal' for a conv2d layer; did you mean 'kernel'? "
                 "Allowed keys: type, input, out_channels, kernel, stride") == 0,
          "got: %s", kn_ctx_message(ctx));
    kn_config_free(cfg);
}

static void expect_parse_error(kn_ctx *ctx, const char *text, int code, const char *part1, const char *part2) {
    kn_config *cfg = (kn_config *)&cfg; /* must be reset to NULL */
    kn_ctx_clear(ctx);
    int rc = kn_config_parse_string(ctx, "t.ini", text, &cfg);
    CHECK(rc == code, "rc %d (want %d) for %s", rc, code, text);
    CHECK(cfg == NULL, "cfg not NULL after error");
    if (part1) HAS(ctx, part1);
    if (part2) HAS(ctx, part2);
    if (rc == KN_OK) kn_config_free(cfg);
}

static void test_errors(kn_ctx *ctx) {
    expect_parse_error(ctx, "[a]\nx = 1\n[conv1]\ny=2\n\n[conv1]\nz=3\n", KN_ERR_CONFIG,
                       "t.ini:6: section [conv1] appears twice (first at line 3); layer and section names must be unique",
                       NULL);
    expect_parse_error(ctx, "[a]\n[b]\n[a]\n", KN_ERR_CONFIG, "t.ini:3: section [a] appears twice (first at line 1)", NULL);
    expect_parse_error(ctx, "[a]\nx = 1\ny = 2\n  x = 3\n", KN_ERR_CONFIG, "t.ini:4: [a] key 'x' appears twice",
                       "first at line 2");
    expect_parse_error(ctx, "; hi\nx = 1\n[a]\n", KN_ERR_CONFIG, "t.ini:2: key 'x' is outside any [section]", NULL);
    expect_parse_error(ctx, "[a]\nx = 1\nthis is not ini\ny = 2\n", KN_ERR_CONFIG,
                       "t.ini:3: syntax error: expected 'key = value' or '[section]'", "this is not ini");
    expect_parse_error(ctx, "[a]\n[b\n", KN_ERR_CONFIG, "t.ini:2: syntax error", "[b");
    /* first error wins: syntax error before a duplicate key */
    expect_parse_error(ctx, "[a]\nnope\nx=1\nx=2\n", KN_ERR_CONFIG, "t.ini:2: syntax error", NULL);
    expect_parse_error(ctx, "[a]\nx=1\nx=2\nnope\n", KN_ERR_CONFIG, "t.ini:3: [a] key 'x' appears twice", NULL);
    expect_parse_error(ctx, "[]\nx=1\n", KN_ERR_CONFIG, "t.ini:1: empty section name", NULL);
    expect_parse_error(ctx, "[a.b]\nx=1\n", KN_ERR_CONFIG, "t.ini:1: section name 'a.b'", NULL);
    expect_parse_error(ctx, "[a] junk\nx=1\n", KN_ERR_CONFIG, "t.ini:1: unexpected text 'junk'", NULL);
    expect_parse_error(ctx, "[a]\n= 1\n", KN_ERR_CONFIG, "t.ini:2: missing key name", NULL);

    char longtext[400];
    char filler[251];
    memset(filler, 'v', 250);
    filler[250] = 0;
    snprintf(longtext, sizeof longtext, "[a]\nx = 1\ny = %s\n", filler);
    expect_parse_error(ctx, longtext, KN_ERR_CONFIG, "t.ini:3: line too long (254 characters, at most 198)",
                       "write a long value in double quotes over indented continuation lines");
    /* exactly 198 characters is fine, and the next line is read as itself */
    snprintf(longtext, sizeof longtext, "[a]\ny = %.*s\r\nz = 1\n", 194, filler);
    kn_config *cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "t.ini", longtext, &cfg) == KN_OK, "198 chars: %s", kn_ctx_message(ctx));
    if (cfg) {
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "y");
        CHECK(kv && strlen(kv->value) == 194, "long value truncated");
        kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "z");
        CHECK(kv && kv->line == 3 && strcmp(kv->value, "1") == 0, "line after a 198-character line");
        kn_config_free(cfg);
    }

    /* empty text and comment-only text are valid, empty configs */
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, NULL, "", &cfg) == KN_OK && cfg && cfg->nsec == 0, "empty text");
    kn_config_free(cfg);
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "c", "; only\n# comments\n", &cfg) == KN_OK && cfg && cfg->nsec == 0, "comments");
    kn_config_free(cfg);
    /* BOM and CRLF, last line without newline */
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "c", "\xEF\xBB\xBF[a]\r\nx = 1\r\ny = 2", &cfg) == KN_OK && cfg, "bom: %s",
          kn_ctx_message(ctx));
    if (cfg) {
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "y");
        CHECK(kv && kv->line == 3 && strcmp(kv->value, "2") == 0, "crlf value");
        kn_config_free(cfg);
    }

    /* missing file */
    cfg = (kn_config *)&cfg;
    const char *missing = "/nonexistent-dir/none.ini";
    CHECK(kn_config_load(ctx, missing, &cfg) == KN_ERR_IO && cfg == NULL, "missing file");
    HAS(ctx, "cannot open config '/nonexistent-dir/none.ini': No such file or directory");

    /* a duplicate found in a real file names the file */
    const char *path = write_file("dup.ini", "[x]\na=1\n[x]\n");
    cfg = NULL;
    CHECK(kn_config_load(ctx, path, &cfg) == KN_ERR_CONFIG && cfg == NULL, "dup in file");
    CHECK(strncmp(kn_ctx_message(ctx), path, strlen(path)) == 0 && has(ctx, ":3: section [x]"), "got: %s",
          kn_ctx_message(ctx));
}

static void test_set(kn_ctx *ctx) {
    kn_config *cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "run.ini", "[optimizer]\ntype = sgd\nlr = 0.1\n[conv1]\nkernel = 3\n", &cfg) == KN_OK,
          "parse");
    if (!cfg) return;
    CHECK(kn_config_set(ctx, cfg, "optimizer.lr=0.5") == KN_OK, "set lr");
    CHECK(kn_config_set(ctx, cfg, " optimizer.momentum = 0.9 ") == KN_OK, "set new key");
    CHECK(kn_config_set(ctx, cfg, "train.epochs=3") == KN_OK, "set new section");
    CHECK(kn_config_set(ctx, cfg, "conv1.kernel=0") == KN_OK, "set kernel");
    CHECK(kn_config_set(ctx, cfg, "data.path=a=b") == KN_OK, "value with '='");

    kn_cfg_section *opt = kn_cfg_find(cfg, "optimizer");
    CHECK(opt && opt->nkv == 3, "optimizer keys");
    if (opt && opt->nkv == 3) {
        CHECK(strcmp(opt->kv[1].key, "lr") == 0 && strcmp(opt->kv[1].value, "0.5") == 0 && opt->kv[1].line == 0,
              "override keeps position, line 0");
        CHECK(strcmp(opt->kv[2].key, "momentum") == 0 && strcmp(opt->kv[2].value, "0.9") == 0, "new key appended");
    }
    kn_cfg_section *train = kn_cfg_find(cfg, "train");
    CHECK(train && train->line == 0 && cfg->nsec == 4, "new section");
    const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "data"), "path");
    CHECK(kv && strcmp(kv->value, "a=b") == 0, "value with =");

    char where[128];
    CHECK(strcmp(kn_cfg_where(cfg, opt, "lr", where, sizeof where), "--set optimizer.lr") == 0, "where %s", where);
    CHECK(strcmp(kn_cfg_where(cfg, opt, "type", where, sizeof where), "run.ini:2") == 0, "where %s", where);
    int64_t k = 0;
    CHECK(kn_cfg_int(ctx, cfg, kn_cfg_find(cfg, "conv1"), "kernel", 3, 1, 1024, &k) == KN_ERR_CONFIG, "kernel 0");
    CHECK(strcmp(kn_ctx_message(ctx), "--set conv1.kernel: [conv1] kernel = '0': expected an integer from 1 to 1024") == 0,
          "got: %s", kn_ctx_message(ctx));
    CHECK(kn_cfg_int(ctx, cfg, train, "epochs", 1, 1, 100, &k) == KN_OK && k == 3, "epochs");

    const char *bad[] = {"optimizer", "optimizer.lr", "lr=0.1", ".lr=1", "optimizer.=1", "a b.c=1", "a.b c=1", "a.b=1\n2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kn_ctx_clear(ctx);
        CHECK(kn_config_set(ctx, cfg, bad[i]) == KN_ERR_INVALID, "accepted '%s'", bad[i]);
        HAS(ctx, "expected SECTION.KEY=VALUE (e.g. optimizer.lr=0.01)");
    }
    CHECK(kn_config_set(ctx, cfg, "lr=0.1") == KN_ERR_INVALID, "no dot");
    CHECK(strncmp(kn_ctx_message(ctx), "--set 'lr=0.1': expected SECTION.KEY=VALUE (e.g. optimizer.lr=0.01)", 67) == 0,
          "got: %s", kn_ctx_message(ctx));
    /* names inih could not read back: ':' splits a key line, long names overflow a line */
    CHECK(kn_config_set(ctx, cfg, "a.b:c=1") == KN_ERR_INVALID, "':' in a key accepted");
    char longname[300];
    memset(longname, 'k', 129);
    snprintf(longname + 129, sizeof longname - 129, ".x=1");
    CHECK(kn_config_set(ctx, cfg, longname) == KN_ERR_INVALID, "129-character section name accepted");
    HAS(ctx, "at most 128 characters");
    CHECK(cfg->nsec == 4, "malformed --set changed the config");
    kn_config_free(cfg);
}

static void test_roundtrip_clone(kn_ctx *ctx) {
    kn_config *cfg = NULL;
    const char *src = "[data]\ndir = /x/y  ; c\nbatch=32\n\n[relu1]\n[fc]\ntype = dense\nname =\ninput = relu1\n";
    CHECK(kn_config_parse_string(ctx, "rt.ini", src, &cfg) == KN_OK, "parse: %s", kn_ctx_message(ctx));
    if (!cfg) return;
    CHECK(kn_config_set(ctx, cfg, "fc.units=10") == KN_OK, "set");
    char *text = kn_cfg_to_text(cfg);
    CHECK(text && strcmp(text, "[data]\ndir = /x/y\nbatch = 32\n\n[relu1]\n\n[fc]\ntype = dense\nname =\ninput = relu1\nunits = 10\n") == 0,
          "to_text: %s", text ? text : "(null)");
    kn_config *back = NULL;
    CHECK(text && kn_config_parse_string(ctx, "back.ini", text, &back) == KN_OK, "reparse: %s", kn_ctx_message(ctx));
    if (back) {
        CHECK(back->nsec == cfg->nsec, "section count %d vs %d", back->nsec, cfg->nsec);
        for (int i = 0; i < cfg->nsec && i < back->nsec; i++) {
            const kn_cfg_section *a = &cfg->sec[i], *b = &back->sec[i];
            CHECK(strcmp(a->name, b->name) == 0 && a->nkv == b->nkv, "section %s differs", a->name);
            for (int j = 0; j < a->nkv && j < b->nkv; j++)
                CHECK(strcmp(a->kv[j].key, b->kv[j].key) == 0 && strcmp(a->kv[j].value, b->kv[j].value) == 0,
                      "[%s] %s differs", a->name, a->kv[j].key);
        }
        kn_config_free(back);
    }
    free(text);

    /* list pointers handed out before cloning belong to the original */
    const char *items[2];
    int n = 0;
    CHECK(kn_cfg_list(ctx, cfg, kn_cfg_find(cfg, "fc"), "input", items, 2, &n) == KN_OK && n == 1, "list");

    kn_config *c = kn_cfg_clone(cfg);
    CHECK(c != NULL, "clone");
    if (c) {
        CHECK(c->path != cfg->path && strcmp(c->path, "rt.ini") == 0, "clone path");
        CHECK(c->text != cfg->text && strcmp(c->text, src) == 0, "clone text");
        CHECK(c->nsec == cfg->nsec, "clone sections");
        kn_cfg_section *fc = kn_cfg_find(c, "fc");
        const kn_cfg_kv *kv = kn_cfg_get(fc, "units");
        CHECK(kv && kv->line == 0 && strcmp(kv->value, "10") == 0, "clone kv");
        CHECK(fc && fc->line == 6 && kn_cfg_get(fc, "type")->line == 7, "clone lines");
        CHECK(kn_config_set(ctx, c, "fc.units=20") == KN_OK, "set on clone");
        CHECK(strcmp(kn_cfg_get(kn_cfg_find(cfg, "fc"), "units")->value, "10") == 0, "clone shares memory");
        CHECK(kn_cfg_list(ctx, c, fc, "input", items, 2, &n) == KN_OK && n == 1, "list on clone");
        kn_config_free(c);
    }
    kn_config_free(cfg);
    kn_config_free(NULL);
}

/* ---- item 6: every value --set accepts is written and read back as itself ---- */

/* Same sections, keys and values in the same order. */
static int same_config(const kn_config *a, const kn_config *b, char *why, size_t n) {
    if (a->nsec != b->nsec) { snprintf(why, n, "%d sections, read back %d", a->nsec, b->nsec); return 0; }
    for (int i = 0; i < a->nsec; i++) {
        const kn_cfg_section *x = &a->sec[i], *y = &b->sec[i];
        if (strcmp(x->name, y->name) || x->nkv != y->nkv) {
            snprintf(why, n, "section [%s] (%d keys) read back as [%s] (%d keys)", x->name, x->nkv, y->name, y->nkv);
            return 0;
        }
        for (int j = 0; j < x->nkv; j++)
            if (strcmp(x->kv[j].key, y->kv[j].key) || strcmp(x->kv[j].value, y->kv[j].value)) {
                snprintf(why, n, "[%s] %.60s = '%.80s' (%zu bytes) read back as %.60s = '%.80s' (%zu bytes)", x->name,
                         x->kv[j].key, x->kv[j].value, strlen(x->kv[j].value), y->kv[j].key, y->kv[j].value,
                         strlen(y->kv[j].value));
                return 0;
            }
    }
    return 1;
}

/* to_text -> parse -> compare; also to_text of the result is the same text. */
static int roundtrips(kn_ctx *ctx, const kn_config *cfg, const char *what) {
    char *text = kn_cfg_to_text(cfg);
    CHECK(text != NULL, "%s: to_text", what);
    if (!text) return 0;
    kn_config *back = NULL;
    int ok = 1;
    if (kn_config_parse_string(ctx, "config.ini", text, &back) != KN_OK) {
        CHECK(0, "%s: the written config does not parse: %s", what, kn_ctx_message(ctx));
        ok = 0;
    } else {
        char why[512];
        ok = same_config(cfg, back, why, sizeof why);
        CHECK(ok, "%s: %s", what, why);
        char *again = kn_cfg_to_text(back);
        CHECK(again && strcmp(again, text) == 0, "%s: writing the read-back config gives other text", what);
        free(again);
        /* no written line is longer than inih reads */
        int line = 1;
        for (const char *p = text; *p; line++) {
            size_t len = strcspn(p, "\n");
            CHECK(len <= 198, "%s: written line %d has %zu characters", what, line, len);
            p += len;
            if (*p) p++;
        }
    }
    kn_config_free(back);
    free(text);
    return ok;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A random value: printable characters with extra weight on the ones INI treats
 * specially, sometimes blanks at either end, tabs, control and non-ASCII bytes. */
static void random_value(uint64_t *r, char *v, size_t maxlen) {
    static const char special[] = ";#=\"'\\[]: ,./\t";
    size_t len;
    uint64_t kind = rng_next(r) % 10;
    if (kind == 0) len = 0;
    else if (kind < 5) len = 1 + rng_next(r) % 40;
    else if (kind < 8) len = 150 + rng_next(r) % 300;
    else len = 1 + rng_next(r) % maxlen;
    for (size_t i = 0; i < len; i++) {
        uint64_t c = rng_next(r) % 100;
        if (c < 30) v[i] = special[rng_next(r) % (sizeof special - 1)];
        else if (c < 40) v[i] = ' ';
        else if (c < 43) v[i] = (char)(1 + rng_next(r) % 31); /* control bytes, newline included */
        else if (c < 47) v[i] = (char)(0x80 + rng_next(r) % 128);
        else v[i] = (char)(0x20 + rng_next(r) % 95);
    }
    v[len] = 0;
    if (kind == 9 && len > 2) { v[0] = ' '; v[len - 1] = ' '; }
    if (kind == 8 && len > 1) { v[0] = ';'; }
    if (kind == 7 && len > 1) { v[0] = '"'; }
}

static void test_roundtrip_property(kn_ctx *ctx) {
    uint64_t r = 0x9E3779B97F4A7C15ULL;
    static char v[4200];
    int fails = 0;
    for (int round = 0; round < 300 && fails < 5; round++) {
        kn_config *cfg = NULL;
        CHECK(kn_config_parse_string(ctx, "p.ini", "[data]\ndir = /x\n", &cfg) == KN_OK, "parse");
        if (!cfg) return;
        int nkeys = 1 + (int)(rng_next(&r) % 12);
        for (int k = 0; k < nkeys; k++) {
            char sec[40], key[140];
            snprintf(sec, sizeof sec, "s%d", (int)(rng_next(&r) % 4));
            if (rng_next(&r) % 8 == 0) { /* a long key name */
                memset(key, 'k', 128);
                key[128] = 0;
                key[0] = (char)('a' + k);
            } else {
                snprintf(key, sizeof key, "key%d_%c'\"!", k, (char)('a' + rng_next(&r) % 26));
            }
            random_value(&r, v, 4096);
            CHECK(kn_config_set_value(ctx, cfg, sec, key, v) == KN_OK, "set_value: %s", kn_ctx_message(ctx));
        }
        char what[64];
        snprintf(what, sizeof what, "random config %d", round);
        if (!roundtrips(ctx, cfg, what)) fails++;
        kn_config_free(cfg);
    }

    /* what --set accepts (blanks around the value dropped, a quoted value unquoted) round-trips */
    static char assign[4400];
    for (int i = 0; i < 300 && fails < 10; i++) {
        kn_config *cfg = NULL;
        CHECK(kn_config_parse_string(ctx, "p.ini", "[data]\ndir = /x\n", &cfg) == KN_OK, "parse");
        if (!cfg) return;
        random_value(&r, v, 4096);
        for (char *q = v; *q; q++)
            if (*q == '\n' || *q == '\r') *q = 'n';
        snprintf(assign, sizeof assign, "data.dir=%s", v);
        if (kn_config_set(ctx, cfg, assign) == KN_OK) {
            char what[64];
            snprintf(what, sizeof what, "--set value %d", i);
            if (!roundtrips(ctx, cfg, what)) fails++;
        }
        kn_config_free(cfg);
    }

    /* paths: 206 characters (the case) and PATH_MAX = 4096 */
    const int lens[] = {206, 4095, 4096};
    for (int i = 0; i < 3; i++) {
        kn_config *cfg = NULL;
        CHECK(kn_config_parse_string(ctx, "p.ini", "[data]\nbatch_size = 8\n", &cfg) == KN_OK, "parse");
        if (!cfg) return;
        char *p = v;
        p += sprintf(p, "data.dir=");
        for (int k = 0; k < lens[i]; k++) *p++ = k % 16 == 0 ? '/' : (char)('a' + k % 26);
        *p = 0;
        CHECK(kn_config_set(ctx, cfg, v) == KN_OK, "--set of a %d-character path: %s", lens[i], kn_ctx_message(ctx));
        char what[64];
        snprintf(what, sizeof what, "data.dir of %d characters", lens[i]);
        roundtrips(ctx, cfg, what);
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "data"), "dir");
        CHECK(kv && strlen(kv->value) == (size_t)lens[i], "dir length");
        kn_config_free(cfg);
    }
}

/* The reproducers of the issue (configs whose config.ini did not read back). */
static void test_roundtrip_fixtures(kn_ctx *ctx) {
    for (int i = 1; i <= 3; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "tests/fixtures/roundtrip_%d.ini", i);
        kn_config *cfg = NULL;
        int rc = kn_config_load(ctx, kn_test_src(rel), &cfg);
        CHECK(rc == KN_OK, "%s: %s", rel, kn_ctx_message(ctx));
        if (rc) continue;
        roundtrips(ctx, cfg, rel);
        kn_config_free(cfg);
    }
    /* roundtrip_2's last key: a value that starts with ';' right after '=' */
    kn_config *cfg = NULL;
    if (kn_config_load(ctx, kn_test_src("tests/fixtures/roundtrip_2.ini"), &cfg) == KN_OK) {
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "train"), "init");
        CHECK(kv && kv->value[0] == ';', "value starting with ';'");
        kn_config_free(cfg);
    }
}

/* The documented form users write: quotes, escapes, continuation lines. */
static void test_quoted_values(kn_ctx *ctx) {
    const char *text =
        "[data]\n"                                          /* 1 */
        "dir = \"/very/long/path/\n"                        /* 2 */
        "       that/continues/\n"                          /* 3 */
        "   ; a comment line inside\n"                      /* 4 */
        "       here\"\n"                                   /* 5 */
        "name = \"  padded \\; with \\; semicolons \\# \\\" \\\\ \\x41\"  ; comment\n" /* 6 */
        "  plain = a \"b\" c\n"                             /* 7: indented key, as before */
        "empty = \"\"\n"                                     /* 8 */
        "spaces = \"a\n"                                    /* 9 */
        "    # a comment line too\n"                         /* 9b */
        "    \\x20b\"\n";                                   /* 10 */
    kn_config *cfg = NULL;
    /* inside a continuation line ';' and '#' are kept (docs/CONFIG.md) */
    CHECK(kn_config_parse_string(ctx, "t.ini", "[a]\nx = \"/p\n  q ;s #t\n  \\;r\"\n", &cfg) == KN_OK, "continuation ';': %s",
          kn_ctx_message(ctx));
    const kn_cfg_kv *ckv = cfg ? kn_cfg_get(kn_cfg_find(cfg, "a"), "x") : NULL;
    CHECK(ckv && !strcmp(ckv->value, "/pq ;s #t;r"), "continuation ';' and '\\;': '%s'", ckv ? ckv->value : "(none)");
    kn_config_free(cfg);
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "q.ini", text, &cfg) == KN_OK, "quoted: %s", kn_ctx_message(ctx));
    if (cfg) {
        kn_cfg_section *d = kn_cfg_find(cfg, "data");
        const kn_cfg_kv *kv = kn_cfg_get(d, "dir");
        CHECK(kv && strcmp(kv->value, "/very/long/path/that/continues/here") == 0 && kv->line == 2, "dir: %s",
              kv ? kv->value : "(none)");
        kv = kn_cfg_get(d, "name");
        CHECK(kv && strcmp(kv->value, "  padded ; with ; semicolons # \" \\ A") == 0 && kv->line == 6, "name: '%s'", kv ? kv->value : "(none)");
        kv = kn_cfg_get(d, "plain");
        CHECK(kv && strcmp(kv->value, "a \"b\" c") == 0 && kv->line == 7, "plain");
        kv = kn_cfg_get(d, "empty");
        CHECK(kv && strcmp(kv->value, "") == 0, "empty quoted");
        kv = kn_cfg_get(d, "spaces");
        CHECK(kv && strcmp(kv->value, "a b") == 0, "\\x20 at a line start: '%s'", kv ? kv->value : "(none)");
        kn_config_free(cfg);
    }
    /* escapes cut by a line end go on on the next line; a value of 20,000 lines is read
     * in one pass (each line was once decoded again with all those before it: 80 s for
     * 3 MB) and an error in its last line is named there */
    {
        enum { NL = 20000 };
        size_t cap = (size_t)NL * 24 + 64, len = 0;
        char *big = malloc(cap);
        len += (size_t)snprintf(big + len, cap - len, "[a]\nx = \"ab\\\n    x41c\\\n    \\\n");
        for (int i = 0; i < NL; i++) len += (size_t)snprintf(big + len, cap - len, "    0123456789\n");
        snprintf(big + len, cap - len, "    end\"\n");
        cfg = NULL;
        CHECK(kn_config_parse_string(ctx, "big.ini", big, &cfg) == KN_OK, "20,000 lines: %s", kn_ctx_message(ctx));
        if (cfg) {
            const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "x");
            CHECK(kv && strlen(kv->value) == 5 + (size_t)NL * 10 + 3 && !strncmp(kv->value, "abAc\\0123", 9) &&
                      !strcmp(kv->value + strlen(kv->value) - 13, "0123456789end"),
                  "20,000 lines: %zu bytes, '%.12s'", kv ? strlen(kv->value) : 0, kv ? kv->value : "");
            kn_config_free(cfg);
        }
        snprintf(big + len, cap - len, "    e\\qnd\"\n");
        char want[64];
        snprintf(want, sizeof want, "big.ini:%d: [a] x: unknown escape '\\q'", NL + 5);
        cfg = NULL;
        CHECK(kn_config_parse_string(ctx, "big.ini", big, &cfg) == KN_ERR_CONFIG && strstr(kn_ctx_message(ctx), want),
              "an error in line %d: %s", NL + 5, kn_ctx_message(ctx));
        kn_config_free(cfg);
        free(big);
    }
    /* escapes inside quotes; the closing quote may not be followed by text */
    /* ' ; q...' is an inline comment even inside quotes: the value is cut there and the quote is not closed */
    expect_parse_error(ctx, "[a]\nx = \"p ; q\\; r\\# s\\\" t\\\\ u\\x3bv\"\n", KN_ERR_CONFIG,
                       "t.ini:2: [a] x: the quoted value is not closed", "inside quotes ';' is written \\;");
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "q.ini", "[a]\nx = \"p \\; q\\; r\\# s\\\" t\\\\ u\\x3bv\"\n", &cfg) == KN_OK,
          "escapes: %s", kn_ctx_message(ctx));
    if (cfg) {
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "x");
        CHECK(kv && strcmp(kv->value, "p ; q; r# s\" t\\ u;v") == 0, "escapes: '%s'", kv ? kv->value : "");
        kn_config_free(cfg);
    }
    expect_parse_error(ctx, "[a]\nx = \"abc\" d\n", KN_ERR_CONFIG, "t.ini:2: [a] x: text ' d' after the closing", NULL);
    expect_parse_error(ctx, "[a]\nx = \"a\\qb\"\n", KN_ERR_CONFIG, "t.ini:2: [a] x: unknown escape '\\q'", NULL);
    expect_parse_error(ctx, "[a]\nx = \"a\\x0g\"\n", KN_ERR_CONFIG, "t.ini:2: [a] x: bad escape", NULL);
    expect_parse_error(ctx, "[a]\nx = \"a\\x00\"\n", KN_ERR_CONFIG, "bad escape", NULL);
    /* not closed: the next line is not indented, a blank line, or the end of the file */
    expect_parse_error(ctx, "[a]\nx = \"abc\ny = 1\n", KN_ERR_CONFIG, "t.ini:2: [a] x: the quoted value is not closed",
                       NULL);
    expect_parse_error(ctx, "[a]\nx = \"abc\n\n  y\"\n", KN_ERR_CONFIG, "t.ini:2: [a] x: the quoted value is not closed",
                       NULL);
    expect_parse_error(ctx, "[a]\nx = 1\ny = \"abc\n   def", KN_ERR_CONFIG, "t.ini:3: [a] y: the quoted value is not closed",
                       NULL);
    /* --set reads a quoted value the same way */
    cfg = NULL;
    CHECK(kn_config_parse_string(ctx, "q.ini", "[a]\n", &cfg) == KN_OK, "parse");
    if (cfg) {
        CHECK(kn_config_set(ctx, cfg, "a.x=\"  two ; three \\\"\"") == KN_OK, "--set quoted: %s", kn_ctx_message(ctx));
        const kn_cfg_kv *kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "x");
        CHECK(kv && strcmp(kv->value, "  two ; three \"") == 0, "--set quoted: '%s'", kv ? kv->value : "");
        CHECK(kn_config_set(ctx, cfg, "a.y=\"open") == KN_ERR_INVALID, "--set unclosed quote");
        HAS(ctx, "--set a.y: the quoted value has no closing");
        CHECK(kn_config_set(ctx, cfg, "a.y=sem;i \\ \"colon") == KN_OK, "--set plain");
        kv = kn_cfg_get(kn_cfg_find(cfg, "a"), "y");
        CHECK(kv && strcmp(kv->value, "sem;i \\ \"colon") == 0, "--set plain value kept");
        roundtrips(ctx, cfg, "--set quoted");
        kn_config_free(cfg);
    }
}

/* ---- item 9: a config saved as UTF-16 gets an error that says so ---- */
static void test_encodings(kn_ctx *ctx) {
    const char *ascii = "[data]\nbatch_size = 8\n";
    size_t n = strlen(ascii);
    static unsigned char buf[256];
    const char *names[] = {"utf16le_bom.ini", "utf16be_bom.ini", "utf16le.ini"};
    const char *want[] = {"is UTF-16 (little-endian) encoded", "is UTF-16 (big-endian) encoded",
                          "is UTF-16 (little-endian) encoded"};
    for (int kind = 0; kind < 3; kind++) {
        size_t k = 0;
        if (kind == 0) { buf[k++] = 0xFF; buf[k++] = 0xFE; }
        if (kind == 1) { buf[k++] = 0xFE; buf[k++] = 0xFF; }
        for (size_t i = 0; i < n; i++) {
            if (kind == 1) { buf[k++] = 0; buf[k++] = (unsigned char)ascii[i]; }
            else { buf[k++] = (unsigned char)ascii[i]; buf[k++] = 0; }
        }
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", kn_test_tmpdir("test_config"), names[kind]);
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL, "write %s", path);
        if (!f) continue;
        fwrite(buf, 1, k, f);
        fclose(f);
        kn_config *cfg = (kn_config *)&cfg;
        CHECK(kn_config_load(ctx, path, &cfg) == KN_ERR_FORMAT && cfg == NULL, "%s accepted", names[kind]);
        HAS(ctx, want[kind]);
        HAS(ctx, "save it as UTF-8");
        CHECK(strstr(kn_ctx_message(ctx), path) != NULL, "message names the file: %s", kn_ctx_message(ctx));
    }
    /* a stray NUL in a UTF-8 file: its line */
    const char *path = write_file("nul.ini", "[a]\nx = 1\n");
    FILE *f = fopen(path, "ab");
    if (f) { fwrite("y = \0\n", 1, 6, f); fclose(f); }
    kn_config *cfg = NULL;
    CHECK(kn_config_load(ctx, path, &cfg) == KN_ERR_FORMAT, "NUL accepted");
    HAS(ctx, ":3: contains a NUL byte");
    /* a UTF-8 byte-order mark is fine */
    path = write_file("bom8.ini", "\xEF\xBB\xBF[a]\nx = 1\n");
    cfg = NULL;
    CHECK(kn_config_load(ctx, path, &cfg) == KN_OK && cfg && kn_cfg_find(cfg, "a"), "UTF-8 BOM: %s", kn_ctx_message(ctx));
    kn_config_free(cfg);
}

int main(void) {
    kn_ctx *ctx = kn_ctx_new();
    test_load_and_lines(ctx);
    test_typo_suggestion(ctx);
    test_errors(ctx);
    test_set(ctx);
    test_roundtrip_clone(ctx);
    test_roundtrip_property(ctx);
    test_roundtrip_fixtures(ctx);
    test_quoted_values(ctx);
    test_encodings(ctx);
    kn_ctx_free(ctx);
    return kn_test_finish("test_config");
}
