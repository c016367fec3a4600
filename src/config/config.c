/* kiln — config files: INI parsing (inih), typed getters with precise messages,
 * --set overrides, serialisation and cloning. See config.h. */
#define _POSIX_C_SOURCE 200809L
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Debian's inih is built with INI_MAX_LINE 200: a buffer of 200 bytes holds a line
 * of 198 characters, its '\n' and the NUL. The reader below hands inih one line at a
 * time and refuses longer ones (inih would cut them and read the rest as a new line).
 * Longer values are written in double quotes over indented continuation lines (see
 * docs/CONFIG.md, "Long values and quoting"); the writer wraps at KN_CFG_WRAP. */
#define KN_CFG_MAX_LINE 198
#define KN_CFG_WRAP 120
/* Longest section or key name --set accepts (a header or a key line must fit a line). */
#define KN_CFG_MAX_NAME 128

/* Every kn_config is allocated as the first member of this private struct (by
 * kn_config_load / kn_config_parse_string / kn_cfg_clone), so kn_cfg_list can keep
 * the split copies it hands out alive until kn_config_free. */
typedef struct {
    struct kn_config pub; /* must stay first */
    char **scratch;
    int nscratch, capscratch;
} cfg_impl;

static cfg_impl *impl_of(const kn_config *cfg) { return (cfg_impl *)(void *)cfg; }

static kn_config *cfg_new(void) {
    cfg_impl *im = calloc(1, sizeof *im);
    return im ? &im->pub : NULL;
}

static int oom(kn_ctx *ctx) { return kn_err(ctx, KN_ERR_NOMEM, "out of memory while handling a config"); }

/* ---------- small string helpers ---------- */
static char *trim(char *s) {
    while (*s && isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    return s;
}

static int has_space(const char *s) {
    for (; *s; s++)
        if (isspace((unsigned char)*s)) return 1;
    return 0;
}

/* Case-insensitive Levenshtein distance; -1 when a string is too long to bother. */
static int edit_distance(const char *a, const char *b) {
    enum { M = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la >= M || lb >= M) return -1;
    int prev[M + 1], cur[M + 1];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            int v = prev[j - 1] + cost;
            if (prev[j] + 1 < v) v = prev[j] + 1;
            if (cur[j - 1] + 1 < v) v = cur[j - 1] + 1;
            cur[j] = v;
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb];
}

/* Closest of `choices` to `word`, or NULL when nothing is close enough. */
static const char *suggest(const char *word, const char *const *choices) {
    int len = (int)strlen(word);
    int limit = len <= 2 ? 0 : len <= 4 ? 1 : 2;
    if (len / 3 > limit) limit = len / 3;
    const char *best = NULL;
    int bestd = limit + 1;
    for (int i = 0; choices && choices[i]; i++) {
        int d = edit_distance(word, choices[i]);
        if (d >= 0 && d < bestd) { bestd = d; best = choices[i]; }
    }
    return best;
}

/* "a, b, c" into buf. */
static void join(const char *const *items, char *buf, size_t n) {
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; items && items[i] && k + 1 < n; i++) {
        int w = snprintf(buf + k, n - k, "%s%s", i ? ", " : "", items[i]);
        if (w < 0) break;
        k += (size_t)w;
    }
}

/* Text of line `line` (1-based) of `text`, trimmed and shortened, into buf. */
static const char *line_text(const char *text, int line, char *buf, size_t n) {
    buf[0] = 0;
    if (!text || line < 1 || n < 8) return buf;
    const char *p = text;
    for (int l = 1; l < line && p; l++) {
        p = strchr(p, '\n');
        if (p) p++;
    }
    if (!p) return buf;
    size_t len = strcspn(p, "\r\n");
    if (len > 80) {
        snprintf(buf, n, "%.*s...", 77, p);
    } else {
        snprintf(buf, n, "%.*s", (int)len, p);
    }
    char *t = trim(buf);
    memmove(buf, t, strlen(t) + 1);
    return buf;
}

/* ---------- building and freeing ---------- */
static int sec_add(kn_config *cfg, const char *name, int line) {
    if (cfg->nsec == cfg->cap) {
        int nc = cfg->cap ? cfg->cap * 2 : 8;
        kn_cfg_section *ns = realloc(cfg->sec, sizeof *ns * (size_t)nc);
        if (!ns) return -1;
        cfg->sec = ns;
        cfg->cap = nc;
    }
    kn_cfg_section *s = &cfg->sec[cfg->nsec];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (!s->name) return -1;
    s->line = line;
    return cfg->nsec++;
}

static int kv_add(kn_cfg_section *s, const char *key, const char *value, int line) {
    if (s->nkv == s->cap) {
        int nc = s->cap ? s->cap * 2 : 8;
        kn_cfg_kv *nk = realloc(s->kv, sizeof *nk * (size_t)nc);
        if (!nk) return -1;
        s->kv = nk;
        s->cap = nc;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) { free(k); free(v); return -1; }
    s->kv[s->nkv].key = k;
    s->kv[s->nkv].value = v;
    s->kv[s->nkv].line = line;
    s->nkv++;
    return 0;
}

void kn_config_free(kn_config *cfg) {
    if (!cfg) return;
    for (int i = 0; i < cfg->nsec; i++) {
        kn_cfg_section *s = &cfg->sec[i];
        for (int j = 0; j < s->nkv; j++) { free(s->kv[j].key); free(s->kv[j].value); }
        free(s->kv);
        free(s->name);
    }
    free(cfg->sec);
    free(cfg->path);
    free(cfg->text);
    cfg_impl *im = impl_of(cfg);
    for (int i = 0; i < im->nscratch; i++) free(im->scratch[i]);
    free(im->scratch);
    free(im);
}

kn_cfg_section *kn_cfg_find(const kn_config *cfg, const char *section) {
    if (!cfg || !section) return NULL;
    for (int i = 0; i < cfg->nsec; i++)
        if (strcmp(cfg->sec[i].name, section) == 0) return &cfg->sec[i];
    return NULL;
}

const kn_cfg_kv *kn_cfg_get(const kn_cfg_section *sec, const char *key) {
    if (!sec || !key) return NULL;
    for (int i = 0; i < sec->nkv; i++)
        if (strcmp(sec->kv[i].key, key) == 0) return &sec->kv[i];
    return NULL;
}

/* ---------- quoted values ----------
 * A value that starts with '"' is a quoted string: the text up to the closing '"',
 * in which \\ \" \; \# and \xHH (two hex digits, any byte but 0) stand for one byte.
 * It may continue on indented lines (the pieces are joined with nothing between
 * them). A quoted value keeps leading and trailing blanks, ';' and '#', and any
 * length; kn_cfg_to_text writes every value that needs it this way. */
enum { UQ_ERROR = -1, UQ_OPEN = 0, UQ_CLOSED = 1 };

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The decoder of a quoted value s[0..n) (s[0] is '"'), from index i (1 at the start).
 * Writes the decoded bytes to o[*k...] when o is not NULL (counts them otherwise).
 * UQ_CLOSED at the closing quote; UQ_ERROR with why in err; UQ_OPEN when the text ends
 * first, with *resume = where to go on once more text is appended (the start of an
 * escape cut by the end of the line, else n): a value that grows over many lines is
 * scanned once, not once per line. */
static int uq_run(const char *s, size_t n, size_t i, char *o, size_t *k, size_t *resume, char *err, size_t errn) {
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            if (i + 1 != n) {
                snprintf(err, errn, "text '%.40s' after the closing '\"' of a quoted value", s + i + 1);
                return UQ_ERROR;
            }
            return UQ_CLOSED;
        }
        if (c != '\\') { if (o) o[*k] = (char)c; (*k)++; continue; }
        if (i + 1 >= n) { *resume = i; return UQ_OPEN; } /* the escape continues on the next line */
        unsigned char e = (unsigned char)s[++i];
        if (e == '\\' || e == '"' || e == ';' || e == '#') { if (o) o[*k] = (char)e; (*k)++; continue; }
        if (e == 'x') {
            if (i + 2 >= n) { /* may continue */
                if (i + 1 < n && hexval(s[i + 1]) < 0) goto bad_hex;
                *resume = i - 1;
                return UQ_OPEN;
            }
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) goto bad_hex;
            if (o) o[*k] = (char)(h * 16 + l);
            (*k)++;
            i += 2;
            continue;
        bad_hex:
            snprintf(err, errn, "bad escape '\\x%.2s' in a quoted value (write \\xHH with two hex digits, not 00)",
                     s + i + 1);
            return UQ_ERROR;
        }
        snprintf(err, errn,
                 "unknown escape '\\%c' in a quoted value (inside quotes write \\\\ for a backslash; "
                 "\\\" \\; \\# and \\xHH are the others)",
                 isprint(e) ? e : '?');
        return UQ_ERROR;
    }
    *resume = n;
    return UQ_OPEN;
}

/* s starts with '"'. UQ_CLOSED: *out = the decoded value (malloc'ed); UQ_OPEN: the
 * closing quote has not come yet; UQ_ERROR: why in err. */
static int unquote(const char *s, char **out, char *err, size_t errn) {
    size_t n = strlen(s), k = 0, resume = 0;
    char *o = malloc(n + 1);
    if (!o) { snprintf(err, errn, "out of memory"); return UQ_ERROR; }
    int r = uq_run(s, n, 1, o, &k, &resume, err, errn);
    if (r != UQ_CLOSED) { free(o); return r; }
    o[k] = 0;
    *out = o;
    return UQ_CLOSED;
}

/* ---------- parsing ---------- */
typedef struct {
    kn_ctx *ctx;
    kn_config *cfg;
    const char *p; /* next unread character of the text */
    int line;      /* lines handed to inih so far == line of the current one */
    int cur;       /* index of the current section, -1 before the first header */
    int err;       /* first error of ours (kn_status), 0 if none */
    int err_line;
    /* a quoted value whose closing '"' has not come yet */
    int open;      /* 1 while open */
    int open_sec, open_kv, open_line;
    char *acc;     /* its raw text so far (quotes and escapes) */
    size_t acc_len, acc_cap, acc_scan; /* its length, room, and where the scan goes on */
    int cont;      /* the line being parsed continues it */
} parse_state;

static void open_error(parse_state *st) {
    const kn_cfg_section *sec = &st->cfg->sec[st->open_sec];
    st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                     "%s:%d: [%s] %s: the quoted value is not closed (a '\"' is missing at its end; a "
                     "quoted value continues only on indented lines, and inside quotes ';' is written \\;)",
                     st->cfg->path, st->open_line, sec->name, sec->kv[st->open_kv].key);
    st->err_line = st->open_line;
}

/* The raw value of the open quoted value grew: decode it once it is closed. */
static void check_open(parse_state *st) {
    char *dec = NULL, why[256];
    size_t k = 0, resume = st->acc_scan;
    int r = uq_run(st->acc, st->acc_len, st->acc_scan, NULL, &k, &resume, why, sizeof why);
    if (r == UQ_OPEN) { st->acc_scan = resume; return; }
    r = unquote(st->acc, &dec, why, sizeof why); /* once: the decoded value, or the error */
    kn_cfg_section *sec = &st->cfg->sec[st->open_sec];
    kn_cfg_kv *kv = &sec->kv[st->open_kv];
    if (r == UQ_ERROR) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG, "%s:%d: [%s] %s: %s", st->cfg->path, st->line, sec->name, kv->key, why);
        st->err_line = st->line;
    } else {
        free(kv->value);
        kv->value = dec;
    }
    st->open = 0;
    free(st->acc);
    st->acc = NULL;
}

/* A line starting with '[': record the section the way inih will read it. Lines
 * inih rejects (no ']' before an inline comment) are left to its syntax error. */
static void on_header(parse_state *st, const char *s) {
    const char *close = NULL;
    for (const char *q = s + 1; *q; q++) {
        if (*q == ']') { close = q; break; }
        if (*q == ';' && isspace((unsigned char)q[-1])) break;
    }
    if (!close) return;
    const char *path = st->cfg->path;
    const char *r = close + 1;
    while (*r && isspace((unsigned char)*r)) r++;
    if (*r && *r != ';' && *r != '#') {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                         "%s:%d: unexpected text '%s' after the section header '%.*s'", path,
                         st->line, r, (int)(close - s + 1), s);
        st->err_line = st->line;
        return;
    }
    char name[KN_CFG_MAX_LINE + 1];
    snprintf(name, sizeof name, "%.*s", (int)(close - s - 1), s + 1);
    char *nm = trim(name);
    if (!*nm) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG, "%s:%d: empty section name '[]'", path, st->line);
    } else if (has_space(nm) || strchr(nm, '.')) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                         "%s:%d: section name '%s' may not contain spaces or '.'", path, st->line, nm);
    } else {
        const kn_cfg_section *prev = kn_cfg_find(st->cfg, nm);
        if (prev) {
            st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                             "%s:%d: section [%s] appears twice (first at line %d); layer and "
                             "section names must be unique",
                             path, st->line, nm, prev->line);
        } else {
            int idx = sec_add(st->cfg, nm, st->line);
            if (idx < 0) st->err = oom(st->ctx);
            else st->cur = idx;
        }
    }
    if (st->err) st->err_line = st->line;
}

/* fgets-style reader over the in-memory text: one whole line per call (with its
 * '\n', so inih never takes it for a cut one), counting lines. Leading blanks are
 * dropped so that indented lines are never taken for inih's multi-line
 * continuations, except while a quoted value is open: then an indented line is
 * handed over as it is and inih passes it on as a continuation of that value. */
static char *reader(char *str, int num, void *stream) {
    parse_state *st = stream;
    st->cont = 0;
    if (st->err || !*st->p || num < 3) return NULL;
    const char *s = st->p;
    const char *nl = strchr(s, '\n');
    size_t len = nl ? (size_t)(nl - s) : strlen(s);
    st->p = nl ? nl + 1 : s + len;
    st->line++;
    if (st->line == 1 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) { s += 3; len -= 3; }
    if (len && s[len - 1] == '\r') len--;
    int maxlen = num - 2 < KN_CFG_MAX_LINE ? num - 2 : KN_CFG_MAX_LINE;
    if (len > (size_t)maxlen) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                         "%s:%d: line too long (%zu characters, at most %d); write a long value in double "
                         "quotes over indented continuation lines (docs/CONFIG.md, \"Long values and quoting\")",
                         st->cfg->path, st->line, len, maxlen);
        st->err_line = st->line;
        return NULL;
    }
    int indented = len && isspace((unsigned char)*s);
    if (st->open) {
        size_t b = 0;
        while (b < len && isspace((unsigned char)s[b])) b++;
        if (!indented || b == len) {
            open_error(st);
            return NULL;
        }
        st->cont = 1;
    } else {
        while (len && isspace((unsigned char)*s)) { s++; len--; }
    }
    memcpy(str, s, len);
    str[len] = 0;
    if (str[0] == '[') on_header(st, str);
    if (st->err) return NULL;
    str[len] = '\n';
    str[len + 1] = 0;
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value) {
    parse_state *st = user;
    (void)section; /* we track sections ourselves (with their header lines) */
    if (st->err) return 0;
    const char *path = st->cfg->path;
    if (!value) value = "";
    if (st->cont) { /* an indented line inside an open quoted value (name is inih's copy, cut at 50) */
        size_t a = st->acc_len, b = strlen(value);
        if (a + b + 1 > st->acc_cap) { /* geometric growth: appending stays linear */
            size_t cap = st->acc_cap * 2 > a + b + 1 ? st->acc_cap * 2 : a + b + 1;
            char *n = realloc(st->acc, cap);
            if (!n) { st->err = oom(st->ctx); st->err_line = st->line; return 0; }
            st->acc = n;
            st->acc_cap = cap;
        }
        memcpy(st->acc + a, value, b + 1);
        st->acc_len = a + b;
        check_open(st);
        return st->err ? 0 : 1;
    }
    if (st->cur < 0) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG, "%s:%d: key '%s' is outside any [section]", path,
                         st->line, name);
    } else if (!*name) {
        st->err = kn_err(st->ctx, KN_ERR_CONFIG, "%s:%d: missing key name before '='", path,
                         st->line);
    } else {
        kn_cfg_section *sec = &st->cfg->sec[st->cur];
        const kn_cfg_kv *prev = kn_cfg_get(sec, name);
        if (prev) {
            st->err = kn_err(st->ctx, KN_ERR_CONFIG,
                             "%s:%d: [%s] key '%s' appears twice (first at line %d, again at line %d)",
                             path, st->line, sec->name, name, prev->line, st->line);
        } else if (kv_add(sec, name, value, st->line) != 0) {
            st->err = oom(st->ctx);
        } else if (value[0] == '"') {
            st->open = 1;
            st->open_sec = st->cur;
            st->open_kv = sec->nkv - 1;
            st->open_line = st->line;
            st->acc = strdup(value);
            st->acc_len = strlen(value);
            st->acc_cap = st->acc_len + 1;
            st->acc_scan = 1;
            if (!st->acc) st->err = oom(st->ctx);
            else check_open(st);
        }
    }
    if (st->err) { if (!st->err_line) st->err_line = st->line; return 0; }
    return 1;
}

/* A config saved as UTF-16 or UTF-32 (Windows editors offer it) reads as garbage with
 * NUL bytes: say what it is. NULL when the text looks like a byte encoding. */
static const char *wide_encoding(const unsigned char *b, size_t n) {
    if (n >= 4 && b[0] == 0xFF && b[1] == 0xFE && b[2] == 0 && b[3] == 0) return "UTF-32 (little-endian)";
    if (n >= 4 && b[0] == 0 && b[1] == 0 && b[2] == 0xFE && b[3] == 0xFF) return "UTF-32 (big-endian)";
    if (n >= 2 && b[0] == 0xFF && b[1] == 0xFE) return "UTF-16 (little-endian)";
    if (n >= 2 && b[0] == 0xFE && b[1] == 0xFF) return "UTF-16 (big-endian)";
    /* no byte-order mark: ASCII text in UTF-16 has every other byte NUL */
    if (n >= 2 && memchr(b, 0, n)) {
        size_t even = 0, odd = 0, m = n < 4096 ? n : 4096;
        for (size_t i = 0; i < m; i++)
            if (!b[i]) { if (i % 2) odd++; else even++; }
        if (odd * 2 >= m / 2 && even == 0) return "UTF-16 (little-endian)";
        if (even * 2 >= m / 2 && odd == 0) return "UTF-16 (big-endian)";
    }
    return NULL;
}

static int encoding_error(kn_ctx *ctx, const char *name, const char *enc) {
    return kn_err(ctx, KN_ERR_FORMAT,
                  "config %s is %s encoded; kiln reads UTF-8 (or ASCII) configs: save it as UTF-8 "
                  "(e.g. iconv -f %.6s -t UTF-8 %s > new.ini)",
                  name, enc, enc, name);
}

int kn_config_parse_string(kn_ctx *ctx, const char *name, const char *text, kn_config **out) {
    if (!out) return kn_err(ctx, KN_ERR_INVALID, "kn_config_parse_string: out is NULL");
    *out = NULL;
    if (!name) name = "<string>";
    if (!text) return kn_err(ctx, KN_ERR_INVALID, "%s: no config text given", name);
    const char *enc = wide_encoding((const unsigned char *)text, strlen(text));
    if (enc) return encoding_error(ctx, name, enc);

    kn_config *cfg = cfg_new();
    if (!cfg) return oom(ctx);
    cfg->path = strdup(name);
    cfg->text = strdup(text);
    if (!cfg->path || !cfg->text) { kn_config_free(cfg); return oom(ctx); }

    parse_state st;
    memset(&st, 0, sizeof st);
    st.ctx = ctx;
    st.cfg = cfg;
    st.p = cfg->text;
    st.cur = -1;
    int rc = ini_parse_stream(reader, &st, handler, &st);
    if (!st.err && rc == 0 && st.open) open_error(&st);
    free(st.acc);
    if (rc > 0 && (!st.err || rc < st.err_line)) {
        char buf[128];
        line_text(cfg->text, rc, buf, sizeof buf);
        int r = kn_err(ctx, KN_ERR_CONFIG,
                       "%s:%d: syntax error: expected 'key = value' or '[section]', got '%s'",
                       name, rc, buf);
        kn_config_free(cfg);
        return r;
    }
    if (st.err) { kn_config_free(cfg); return st.err; }
    if (rc < 0) { kn_config_free(cfg); return oom(ctx); }
    *out = cfg;
    return KN_OK;
}

int kn_config_load(kn_ctx *ctx, const char *path, kn_config **out) {
    if (!out) return kn_err(ctx, KN_ERR_INVALID, "kn_config_load: out is NULL");
    *out = NULL;
    if (!path) return kn_err(ctx, KN_ERR_INVALID, "kn_config_load: no path given");
    FILE *f = fopen(path, "rb");
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot open config '%s': %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); return oom(ctx); }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(f); return oom(ctx); }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        int e = errno;
        free(buf);
        fclose(f);
        return kn_err(ctx, KN_ERR_IO, "cannot read config '%s': %s", path, strerror(e));
    }
    fclose(f);
    buf[n] = 0;
    const char *enc = wide_encoding((const unsigned char *)buf, n);
    if (enc) { free(buf); return encoding_error(ctx, path, enc); }
    const char *nul = memchr(buf, 0, n);
    if (nul) {
        int line = 1;
        for (const char *q = buf; q < nul; q++) line += *q == '\n';
        free(buf);
        return kn_err(ctx, KN_ERR_FORMAT, "%s:%d: contains a NUL byte; is it a text file? (kiln reads UTF-8 configs)",
                      path, line);
    }
    int rc = kn_config_parse_string(ctx, path, buf, out);
    free(buf);
    return rc;
}

/* ---------- overrides ---------- */
/* A section or key name that a header or key line can hold and inih reads back:
 * no blanks, none of [ ] = : ; # (inih splits a line at the first '=' or ':'). */
static int name_ok(const char *s) {
    if (!*s || strlen(s) > KN_CFG_MAX_NAME) return 0;
    for (; *s; s++)
        if (isspace((unsigned char)*s) || strchr("[]=:;#", *s)) return 0;
    return 1;
}

static int set_malformed(kn_ctx *ctx, const char *assignment) {
    return kn_err(ctx, KN_ERR_INVALID,
                  "--set '%.300s': expected SECTION.KEY=VALUE (e.g. optimizer.lr=0.01); section and key "
                  "names have at most %d characters, no blanks and none of [ ] = : ; #",
                  assignment, KN_CFG_MAX_NAME);
}

static int set_apply(kn_ctx *ctx, kn_config *cfg, const char *sn, const char *kn, const char *vn) {
    kn_cfg_section *sec = kn_cfg_find(cfg, sn);
    if (!sec) {
        int idx = sec_add(cfg, sn, 0);
        if (idx < 0) return oom(ctx);
        sec = &cfg->sec[idx];
    }
    for (int i = 0; i < sec->nkv; i++) {
        kn_cfg_kv *kv = &sec->kv[i];
        if (strcmp(kv->key, kn) != 0) continue;
        char *v = strdup(vn);
        if (!v) return oom(ctx);
        free(kv->value);
        kv->value = v;
        kv->line = 0; /* messages now say "--set section.key" */
        return KN_OK;
    }
    return kv_add(sec, kn, vn, 0) == 0 ? KN_OK : oom(ctx);
}

int kn_config_set_value(kn_ctx *ctx, kn_config *cfg, const char *section, const char *key, const char *value) {
    if (!cfg || !section || !key || !value)
        return kn_err(ctx, KN_ERR_INVALID, "kn_config_set_value: missing argument");
    if (!name_ok(section) || !name_ok(key) || strchr(section, '.')) {
        char a[300];
        snprintf(a, sizeof a, "%.140s.%.140s=...", section, key);
        return set_malformed(ctx, a);
    }
    return set_apply(ctx, cfg, section, key, value);
}

int kn_config_set(kn_ctx *ctx, kn_config *cfg, const char *assignment) {
    if (!cfg || !assignment) return kn_err(ctx, KN_ERR_INVALID, "kn_config_set: no config or assignment");
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    if (!eq || !dot || strpbrk(assignment, "\r\n")) return set_malformed(ctx, assignment);
    char *sbuf = strndup(assignment, (size_t)(dot - assignment));
    char *kbuf = strndup(dot + 1, (size_t)(eq - dot - 1));
    char *vbuf = strdup(eq + 1);
    char *dec = NULL;
    int rc;
    if (!sbuf || !kbuf || !vbuf) {
        rc = oom(ctx);
    } else {
        char *sn = trim(sbuf), *kn = trim(kbuf), *vn = trim(vbuf);
        if (!name_ok(sn) || !name_ok(kn)) {
            rc = set_malformed(ctx, assignment);
        } else if (vn[0] == '"') { /* a quoted value, read as in a file */
            char why[256];
            int r = unquote(vn, &dec, why, sizeof why);
            if (r == UQ_CLOSED) rc = set_apply(ctx, cfg, sn, kn, dec);
            else if (r == UQ_OPEN)
                rc = kn_err(ctx, KN_ERR_INVALID,
                            "--set %s.%s: the quoted value has no closing '\"' (a value that starts with '\"' "
                            "is a quoted string: write \\\" for a quote inside it)",
                            sn, kn);
            else rc = kn_err(ctx, KN_ERR_INVALID, "--set %s.%s: %s", sn, kn, why);
        } else {
            rc = set_apply(ctx, cfg, sn, kn, vn);
        }
    }
    free(dec);
    free(sbuf);
    free(kbuf);
    free(vbuf);
    return rc;
}

/* ---------- locations and messages ---------- */
const char *kn_cfg_where(const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                         char *buf, size_t n) {
    if (!buf || !n) return buf;
    const char *path = cfg && cfg->path ? cfg->path : "<config>";
    const kn_cfg_kv *kv = key ? kn_cfg_get(sec, key) : NULL;
    if (kv) {
        if (kv->line > 0) snprintf(buf, n, "%s:%d", path, kv->line);
        else snprintf(buf, n, "--set %s.%s", sec->name, kv->key);
    } else if (sec) {
        if (sec->line > 0) snprintf(buf, n, "%s:%d", path, sec->line);
        else snprintf(buf, n, "--set %s", sec->name);
    } else {
        snprintf(buf, n, "%s", path);
    }
    return buf;
}

static int bad_value(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec,
                     const kn_cfg_kv *kv, const char *expected) {
    char where[512];
    kn_cfg_where(cfg, sec, kv->key, where, sizeof where);
    return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] %s = '%s': expected %s", where, sec->name, kv->key,
                  kv->value, expected);
}

/* ---------- typed getters ---------- */
static void int_expect(int64_t min, int64_t max, char *buf, size_t n) {
    if (min > INT64_MIN && max < INT64_MAX)
        snprintf(buf, n, "an integer from %lld to %lld", (long long)min, (long long)max);
    else if (min > INT64_MIN)
        snprintf(buf, n, "an integer of at least %lld", (long long)min);
    else if (max < INT64_MAX)
        snprintf(buf, n, "an integer of at most %lld", (long long)max);
    else
        snprintf(buf, n, "an integer");
}

int kn_cfg_int(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
               int64_t def, int64_t min, int64_t max, int64_t *out) {
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    if (!kv) { *out = def; return KN_OK; }
    char expect[128];
    int_expect(min, max, expect, sizeof expect);
    const char *s = kv->value;
    const char *d = s + (*s == '+' || *s == '-');
    if (!*d) return bad_value(ctx, cfg, sec, kv, expect);
    for (const char *q = d; *q; q++)
        if (!isdigit((unsigned char)*q)) return bad_value(ctx, cfg, sec, kv, expect);
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE || v < min || v > max) {
        if (strcmp(expect, "an integer") == 0)
            snprintf(expect, sizeof expect, "an integer from %lld to %lld", (long long)INT64_MIN,
                     (long long)INT64_MAX);
        return bad_value(ctx, cfg, sec, kv, expect);
    }
    *out = (int64_t)v;
    return KN_OK;
}

int kn_cfg_float(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                 double def, double min, double max, double *out) {
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    if (!kv) { *out = def; return KN_OK; }
    int lo = !(isnan(min) || min <= -DBL_MAX), hi = !(isnan(max) || max >= DBL_MAX);
    char expect[128];
    if (lo && hi) snprintf(expect, sizeof expect, "a number from %g to %g", min, max);
    else if (lo) snprintf(expect, sizeof expect, "a number of at least %g", min);
    else if (hi) snprintf(expect, sizeof expect, "a number of at most %g", max);
    else snprintf(expect, sizeof expect, "a finite number");
    const char *s = kv->value;
    char *end = NULL;
    errno = 0;
    double v = *s ? strtod(s, &end) : 0.0;
    if (!*s || !end || *end || !isfinite(v)) return bad_value(ctx, cfg, sec, kv, expect);
    if ((lo && v < min) || (hi && v > max)) return bad_value(ctx, cfg, sec, kv, expect);
    *out = v;
    return KN_OK;
}

int kn_cfg_bool(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                int def, int *out) {
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    if (!kv) { *out = def; return KN_OK; }
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(kv->value, yes[i]) == 0) { *out = 1; return KN_OK; }
        if (strcasecmp(kv->value, no[i]) == 0) { *out = 0; return KN_OK; }
    }
    return bad_value(ctx, cfg, sec, kv, "true or false (or yes/no, on/off, 1/0)");
}

int kn_cfg_str(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
               const char *def, const char **out) {
    (void)ctx;
    (void)cfg;
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    *out = kv ? kv->value : def;
    return KN_OK;
}

int kn_cfg_enum(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                const char *const *choices, int def_index, int *out) {
    char list[1024];
    join(choices, list, sizeof list);
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    if (!kv) {
        if (def_index >= 0) { *out = def_index; return KN_OK; }
        char where[512];
        kn_cfg_where(cfg, sec, NULL, where, sizeof where);
        if (sec)
            return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] missing required key '%s' (one of %s)", where,
                          sec->name, key, list);
        return kn_err(ctx, KN_ERR_CONFIG, "%s: missing required key '%s' (one of %s)", where, key,
                      list);
    }
    for (int i = 0; choices && choices[i]; i++)
        if (strcasecmp(kv->value, choices[i]) == 0) { *out = i; return KN_OK; }
    char expect[1200];
    const char *s = suggest(kv->value, choices);
    if (s) snprintf(expect, sizeof expect, "one of %s; did you mean '%s'?", list, s);
    else snprintf(expect, sizeof expect, "one of %s", list);
    return bad_value(ctx, cfg, sec, kv, expect);
}

int kn_cfg_list(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec, const char *key,
                const char **names, int max, int *count) {
    *count = 0;
    const kn_cfg_kv *kv = kn_cfg_get(sec, key);
    if (!kv) return KN_OK;
    cfg_impl *im = impl_of(cfg);
    if (im->nscratch == im->capscratch) {
        int nc = im->capscratch ? im->capscratch * 2 : 8;
        char **ns = realloc(im->scratch, sizeof *ns * (size_t)nc);
        if (!ns) return oom(ctx);
        im->scratch = ns;
        im->capscratch = nc;
    }
    char *copy = strdup(kv->value);
    if (!copy) return oom(ctx);
    im->scratch[im->nscratch++] = copy;

    char expect[256];
    int n = 0;
    char *p = copy;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        char *item = trim(p);
        if (!*item) {
            snprintf(expect, sizeof expect, "a comma-separated list of names (item %d is empty)", n + 1);
            return bad_value(ctx, cfg, sec, kv, expect);
        }
        if (has_space(item)) {
            snprintf(expect, sizeof expect,
                     "a comma-separated list of names ('%.100s' contains a space)", item);
            return bad_value(ctx, cfg, sec, kv, expect);
        }
        if (n >= max) {
            snprintf(expect, sizeof expect, "a comma-separated list of at most %d names", max);
            return bad_value(ctx, cfg, sec, kv, expect);
        }
        names[n++] = item;
        if (!comma) break;
        p = comma + 1;
    }
    *count = n;
    return KN_OK;
}

int kn_cfg_check_keys(kn_ctx *ctx, const kn_config *cfg, const kn_cfg_section *sec,
                      const char *const *allowed, const char *what) {
    if (!sec) return KN_OK;
    for (int i = 0; i < sec->nkv; i++) {
        const char *k = sec->kv[i].key;
        int ok = 0;
        for (int j = 0; allowed && allowed[j]; j++)
            if (strcmp(k, allowed[j]) == 0) { ok = 1; break; }
        if (ok) continue;
        char where[512], list[1024], hint[200] = "";
        kn_cfg_where(cfg, sec, k, where, sizeof where);
        join(allowed, list, sizeof list);
        const char *s = suggest(k, allowed);
        if (s) snprintf(hint, sizeof hint, " did you mean '%s'?", s);
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [%s] unknown key '%s'%s%s;%s Allowed keys: %s", where,
                      sec->name, k, what ? " for " : "", what ? what : "", hint,
                      *list ? list : "(none)");
    }
    return KN_OK;
}

/* ---------- serialising and copying ---------- */
/* A growing string for the writer. */
typedef struct { char *p; size_t n, cap; int bad; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->bad) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (b->n + n + 1 > nc) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->bad = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

/* Does `v` need the quoted form to read back as itself on one plain line? */
static int needs_quotes(const char *key, const char *v) {
    size_t n = strlen(v);
    if (!n) return 0;
    if (v[0] == '"' || isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1])) return 1;
    if (strlen(key) + 3 + n > KN_CFG_WRAP) return 1;
    for (const unsigned char *q = (const unsigned char *)v; *q; q++)
        if (*q == ';' || *q < 0x20 || *q == 0x7f) return 1;
    return 0;
}

/* One byte of a quoted value as written: itself or an escape. Returns its width. */
static size_t quoted_atom(unsigned char c, char atom[8]) {
    if (c == '\\' || c == '"' || c == ';' || c == '#') snprintf(atom, 8, "\\%c", c);
    else if (c < 0x20 || c == 0x7f) snprintf(atom, 8, "\\x%02X", c);
    else { atom[0] = (char)c; atom[1] = 0; }
    return strlen(atom);
}

/* `key = "..."`, escaped, wrapped onto lines indented by four blanks, no line longer
 * than KN_CFG_WRAP. The pieces read back joined with nothing between them; a blank
 * that starts or ends a piece (inih would drop it) is written as \x20. */
static void put_quoted(sbuf *b, const char *key, const char *v) {
    sb_str(b, key);
    sb_str(b, " = \"");
    size_t col = strlen(key) + 4;
    const size_t room = KN_CFG_WRAP - 1; /* the closing quote may follow any atom */
    for (const unsigned char *q = (const unsigned char *)v; *q; q++) {
        char atom[8], next[8];
        size_t w = quoted_atom(*q, atom);
        if (*q == ' ') {
            /* the next atom is at most 4 wide (a blank may become \x20) */
            size_t wn = q[1] == ' ' ? 4 : q[1] ? quoted_atom(q[1], next) : 0;
            int ends_line = q[1] && col + 1 + wn > room;
            if (ends_line || col + 1 > room) { strcpy(atom, "\\x20"); w = 4; }
        }
        if (col + w > room) {
            sb_str(b, "\n    ");
            col = 4;
            if (*q == ' ') { strcpy(atom, "\\x20"); w = 4; }
        }
        sb_str(b, atom);
        col += w;
    }
    sb_str(b, "\"\n");
}

char *kn_cfg_to_text(const kn_config *cfg) {
    if (!cfg) return NULL;
    sbuf b = {0};
    sb_str(&b, "");
    for (int i = 0; i < cfg->nsec; i++) {
        const kn_cfg_section *s = &cfg->sec[i];
        if (i) sb_str(&b, "\n");
        sb_str(&b, "[");
        sb_str(&b, s->name);
        sb_str(&b, "]\n");
        for (int j = 0; j < s->nkv; j++) {
            const char *k = s->kv[j].key, *v = s->kv[j].value;
            if (needs_quotes(k, v)) {
                put_quoted(&b, k, v);
            } else if (*v) {
                sb_str(&b, k);
                sb_str(&b, " = ");
                sb_str(&b, v);
                sb_str(&b, "\n");
            } else {
                sb_str(&b, k);
                sb_str(&b, " =\n");
            }
        }
    }
    if (b.bad) { free(b.p); return NULL; }
    return b.p;
}

kn_config *kn_cfg_clone(const kn_config *cfg) {
    if (!cfg) return NULL;
    kn_config *c = cfg_new();
    if (!c) return NULL;
    c->path = cfg->path ? strdup(cfg->path) : NULL;
    c->text = cfg->text ? strdup(cfg->text) : NULL;
    if ((cfg->path && !c->path) || (cfg->text && !c->text)) goto fail;
    for (int i = 0; i < cfg->nsec; i++) {
        const kn_cfg_section *s = &cfg->sec[i];
        int idx = sec_add(c, s->name, s->line);
        if (idx < 0) goto fail;
        for (int j = 0; j < s->nkv; j++)
            if (kv_add(&c->sec[idx], s->kv[j].key, s->kv[j].value, s->kv[j].line) != 0) goto fail;
    }
    return c;
fail:
    kn_config_free(c);
    return NULL;
}
