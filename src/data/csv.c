/* kiln — CSV/TSV files read with libcsv (strict mode): any one-byte delimiter or
 * whitespace (runs of blanks/tabs), a header row or none, preamble lines skipped, gzip
 * (zlib); cells kept as text, then columns chosen and converted with errors that name
 * the file, line, row and column. */
#define _POSIX_C_SOURCE 200809L
#include <csv.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/input.h"
#include "data/source.h"

#define CSV_MAX_COLS (1 << 20)

typedef struct {
    kn_ctx *ctx;
    kn_csv *c;
    const char *name;
    int ws;                /* whitespace mode: empty unquoted fields (NULL) are separators */
    int rc;                /* first error */
    int64_t line;          /* physical line being fed (1-based) */
    int64_t row_line;      /* line where the current row started, 0 before its first field */
    int row_fields;        /* fields of the current row */
    int64_t rows;          /* rows completed (header included) */
    int64_t cell_cap, row_cap, ncell;
} csv_state;

static int grow(void **p, int64_t *cap, int64_t need, size_t elem) {
    if (need <= *cap) return 0;
    int64_t nc = *cap ? *cap : 256;
    while (nc < need) {
        if (kn_mul_ovf(nc, 2, &nc)) return -1;
    }
    int64_t bytes;
    if (kn_mul_ovf(nc, (int64_t)elem, &bytes)) return -1;
    void *q = realloc(*p, (size_t)bytes);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static void on_field(void *field, size_t len, void *data) {
    csv_state *st = data;
    kn_csv *c = st->c;
    if (st->rc) return;
    if (!field) {
        if (st->ws) return; /* a run of blanks */
        len = 0;
    }
    if (!st->row_line) st->row_line = st->line;
    if (st->row_fields >= CSV_MAX_COLS) {
        st->rc = kn_err(st->ctx, KN_ERR_FORMAT, "%s:%lld: more than %d fields in a row; is the delimiter right?", st->name,
                        (long long)st->row_line, CSV_MAX_COLS);
        return;
    }
    int64_t need;
    if (kn_add_ovf(c->text_len, (int64_t)len + 1, &need) || grow((void **)&c->text, &c->text_cap, need, 1) ||
        grow((void **)&c->cell, &st->cell_cap, st->ncell + 1, sizeof(int64_t))) {
        st->rc = kn_err(st->ctx, KN_ERR_NOMEM, "%s:%lld: out of memory reading the file", st->name, (long long)st->line);
        return;
    }
    c->cell[st->ncell++] = c->text_len;
    if (len) memcpy(c->text + c->text_len, field, len);
    c->text[c->text_len + (int64_t)len] = 0;
    c->text_len = need;
    st->row_fields++;
}

static void on_row(int term, void *data) {
    (void)term;
    csv_state *st = data;
    kn_csv *c = st->c;
    if (st->rc) return;
    if (st->row_fields == 0) { /* a blank line (whitespace mode) */
        st->row_line = 0;
        return;
    }
    if (st->rows == 0) c->ncols = st->row_fields;
    else if (st->row_fields != c->ncols) {
        st->rc = kn_err(st->ctx, KN_ERR_FORMAT,
                        "%s:%lld: this row has %d fields, but the first row has %d (line %lld); every row needs the same columns "
                        "(is the delimiter right? a field with the delimiter in it must be quoted)",
                        st->name, (long long)st->row_line, st->row_fields, c->ncols, (long long)c->line[0]);
        return;
    }
    if (grow((void **)&c->line, &st->row_cap, st->rows + 1, sizeof(int64_t))) {
        st->rc = kn_err(st->ctx, KN_ERR_NOMEM, "%s:%lld: out of memory reading the file", st->name, (long long)st->line);
        return;
    }
    c->line[st->rows++] = st->row_line;
    st->row_fields = 0;
    st->row_line = 0;
}

static int is_blank(unsigned char ch) { return ch == ' ' || ch == '\t'; }
static int no_space(unsigned char ch) { (void)ch; return 0; }

void kn_csv_free(kn_csv *c) {
    if (!c) return;
    if (c->header)
        for (int i = 0; i < c->ncols; i++) free(c->header[i]);
    free(c->header);
    free(c->line);
    free(c->cell);
    free(c->text);
    memset(c, 0, sizeof *c);
}

int kn_csv_parse(kn_ctx *ctx, const char *name, const char *text, int64_t len, const kn_csv_opts *o, kn_csv *out) {
    memset(out, 0, sizeof *out);
    out->path = name;
    if (o->skip_lines < 0) return kn_err(ctx, KN_ERR_INVALID, "%s: skip_lines is %lld; it must be 0 or more", name, (long long)o->skip_lines);
    if (o->delimiter == '"' || o->delimiter == '\n' || o->delimiter == '\r')
        return kn_err(ctx, KN_ERR_INVALID, "%s: the delimiter cannot be a quote or a line break", name);
    int64_t pos = 0, line = 1;
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF) pos = 3;
    for (int64_t k = 0; k < o->skip_lines; k++) {
        const char *nl = pos < len ? memchr(text + pos, '\n', (size_t)(len - pos)) : NULL;
        if (!nl)
            return kn_err(ctx, KN_ERR_FORMAT, "%s: skip_lines = %lld, but the file has only %lld line%s", name,
                          (long long)o->skip_lines, (long long)(k + (pos < len)), k + (pos < len) == 1 ? "" : "s");
        pos = nl - text + 1;
        line++;
    }
    struct csv_parser p;
    if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_EMPTY_IS_NULL) != 0)
        return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory starting the CSV parser", name);
    const int ws = o->delimiter == 0;
    csv_set_delim(&p, ws ? ' ' : (unsigned char)o->delimiter);
    /* blanks around a field are trimmed (not for a blank or tab delimiter) */
    if (ws || o->delimiter == '\t' || o->delimiter == ' ') csv_set_space_func(&p, no_space);
    else csv_set_space_func(&p, is_blank);
    csv_state st = {ctx, out, name, ws, KN_OK, line, 0, 0, 0, 0, 0, 0};
    char *tmp = NULL;
    int64_t tmp_cap = 0;
    int in_quote = 0;
    while (pos < len && !st.rc) {
        /* one physical line: up to LF, CR LF or a lone CR (old Mac files) */
        int64_t end = pos;
        while (end < len && text[end] != '\n' && text[end] != '\r') end++;
        if (end < len) end += (text[end] == '\r' && end + 1 < len && text[end + 1] == '\n') ? 2 : 1;
        const char *seg = text + pos;
        size_t n = (size_t)(end - pos);
        if (memchr(seg, 0, n)) {
            st.rc = kn_err(ctx, KN_ERR_FORMAT, "%s:%lld: a NUL byte; this is not a text (CSV) file", name, (long long)st.line);
            break;
        }
        if (ws) { /* tabs outside quotes separate fields like blanks */
            if (grow((void **)&tmp, &tmp_cap, (int64_t)n, 1)) {
                st.rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", name);
                break;
            }
            for (size_t i = 0; i < n; i++) {
                char ch = seg[i];
                if (ch == '"') in_quote = !in_quote;
                tmp[i] = (ch == '\t' && !in_quote) ? ' ' : ch;
            }
            seg = tmp;
        }
        if (csv_parse(&p, seg, n, on_field, on_row, &st) != n && !st.rc) {
            int e = csv_error(&p);
            st.rc = e == CSV_ENOMEM || e == CSV_ETOOBIG
                        ? kn_err(ctx, KN_ERR_NOMEM, "%s:%lld: out of memory (a field too large)", name, (long long)st.line)
                        : kn_err(ctx, KN_ERR_FORMAT,
                                 "%s:%lld: malformed quoting (libcsv: %s): a quote inside a field must be doubled (\"\") "
                                 "and the field quoted",
                                 name, (long long)st.line, csv_strerror(e));
        }
        pos = end;
        st.line++;
    }
    if (!st.rc && csv_fini(&p, on_field, on_row, &st) != 0 && !st.rc)
        st.rc = kn_err(ctx, KN_ERR_FORMAT, "%s:%lld: the file ends inside a quoted field (a quote is not closed)", name,
                       (long long)(st.row_line ? st.row_line : st.line - 1));
    csv_free(&p);
    free(tmp);
    if (!st.rc && st.rows == 0)
        st.rc = kn_err(ctx, KN_ERR_FORMAT, "%s: no rows%s; expected a table of numbers", name,
                       o->skip_lines ? " after the skipped lines" : "");
    if (!st.rc && o->header) {
        out->header = calloc((size_t)out->ncols, sizeof *out->header);
        for (int i = 0; out->header && i < out->ncols; i++)
            if (!(out->header[i] = strdup(out->text + out->cell[i]))) st.rc = KN_ERR_NOMEM;
        if (!out->header || st.rc) st.rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", name);
        if (!st.rc) {
            memmove(out->cell, out->cell + out->ncols, (size_t)(st.ncell - out->ncols) * sizeof *out->cell);
            memmove(out->line, out->line + 1, (size_t)(st.rows - 1) * sizeof *out->line);
            st.rows--;
            if (st.rows == 0)
                st.rc = kn_err(ctx, KN_ERR_FORMAT, "%s: only a header row (line %lld), no data rows", name,
                               (long long)out->line[0]);
        }
    }
    out->nrows = st.rows;
    if (st.rc) {
        kn_csv_free(out);
        return st.rc;
    }
    return KN_OK;
}

int kn_csv_read(kn_ctx *ctx, const char *path, const kn_csv_opts *o, kn_csv *out) {
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    int64_t n;
    int rc = kn_in_slurp(ctx, path, KN_DATA_MAX_BYTES, &buf, &n, NULL);
    if (rc) return rc;
    rc = kn_csv_parse(ctx, path, (const char *)buf, n, o, out);
    free(buf);
    return rc;
}

/* ---------------- columns ---------------- */
static void col_desc(const kn_csv *c, int col, char *buf, size_t n) {
    if (c->header) snprintf(buf, n, "column %d '%.60s'", col, c->header[col]);
    else snprintf(buf, n, "column %d", col);
}

static int parse_int(const char *s, const char *e, long *v) {
    if (s == e) return 0;
    char tmp[32];
    if ((size_t)(e - s) >= sizeof tmp) return 0;
    memcpy(tmp, s, (size_t)(e - s));
    tmp[e - s] = 0;
    char *end;
    errno = 0;
    *v = strtol(tmp, &end, 10);
    return *end == 0 && errno == 0 && (tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'));
}

int kn_csv_select(kn_ctx *ctx, const kn_csv *c, const char *sel, const int *exclude, int n_exclude, const char *what,
                  int **cols_out, int *ncols_out) {
    *cols_out = NULL;
    *ncols_out = 0;
    const int nc = c->ncols;
    int *cols = malloc((size_t)nc * sizeof *cols);
    char *used = calloc((size_t)nc, 1), *excl = calloc((size_t)nc, 1);
    int n = 0, rc = KN_OK;
    if (!cols || !used || !excl) {
        rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_exclude; i++)
        if (exclude[i] >= 0 && exclude[i] < nc) excl[exclude[i]] = 1;
    const char *p = sel;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        const char *q = strchr(p, ',');
        const char *e = q ? q : p + strlen(p);
        const char *te = e;
        while (te > p && (te[-1] == ' ' || te[-1] == '\t')) te--;
        char item[128];
        snprintf(item, sizeof item, "%.*s", (int)(te - p), p);
        long a = 0, b = nc;
        int lo = -1, hi = -1, single = 0; /* range [lo, hi) */
        const char *colon = memchr(p, ':', (size_t)(te - p));
        if (te == p) {
            rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': an empty item; expected column indices, ranges (0:10), names or 'all'", what, sel);
            goto done;
        } else if (!strcmp(item, "all")) {
            lo = 0;
            hi = nc;
        } else if (colon) {
            if ((colon > p && !parse_int(p, colon, &a)) || (te > colon + 1 && !parse_int(colon + 1, te, &b))) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': range '%s' is not START:END with integer bounds (e.g. 0:10, 2:, :-1)",
                            what, sel, item);
                goto done;
            }
            if (a < 0) a += nc;
            if (b < 0) b += nc;
            if (a < 0) a = 0;
            if (b > nc) b = nc;
            if (a >= b) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': range '%s' selects no column (the file has %d columns, 0 to %d)", what,
                            sel, item, nc, nc - 1);
                goto done;
            }
            lo = (int)a;
            hi = (int)b;
        } else if (parse_int(p, te, &a)) {
            if (a < -(long)nc || a >= nc) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': column %ld does not exist; the file has %d columns (0 to %d, or -1 for the last)",
                            what, sel, a, nc, nc - 1);
                goto done;
            }
            lo = (int)(a < 0 ? a + nc : a);
            hi = lo + 1;
            single = 1;
        } else {
            if (!c->header) {
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': '%s' is a column name, but the file has no header row (header = no): name columns by index (0 to %d)",
                            what, sel, item, nc - 1);
                goto done;
            }
            for (int i = 0; i < nc && lo < 0; i++)
                if (!strcmp(c->header[i], item)) lo = i;
            if (lo < 0) {
                char cand[256] = "";
                size_t k = 0;
                for (int i = 0; i < nc && i < 6 && k < sizeof cand; i++)
                    k += (size_t)snprintf(cand + k, sizeof cand - k, "%s'%.30s'", i ? ", " : "", c->header[i]);
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': no column is named '%s' in %s (its header has %s%s)", what, sel, item,
                            c->path, cand, nc > 6 ? ", ..." : "");
                goto done;
            }
            for (int i = lo + 1; i < nc; i++)
                if (!strcmp(c->header[i], item)) {
                    rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': '%s' names columns %d and %d of %s; choose one by index", what, sel,
                                item, lo, i, c->path);
                    goto done;
                }
            hi = lo + 1;
            single = 1;
        }
        for (int i = lo; i < hi; i++) {
            if (excl[i]) {
                if (single) {
                    char d[96];
                    col_desc(c, i, d, sizeof d);
                    rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': %s is the target; it cannot be chosen here too", what, sel, d);
                    goto done;
                }
                continue;
            }
            if (used[i]) {
                char d[96];
                col_desc(c, i, d, sizeof d);
                rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s': %s is chosen twice", what, sel, d);
                goto done;
            }
            used[i] = 1;
            cols[n++] = i;
        }
        if (!q) break;
        p = q + 1;
    }
    if (n == 0) rc = kn_err(ctx, KN_ERR_CONFIG, "%s = '%s' selects no column", what, sel);
done:
    free(used);
    free(excl);
    if (rc) {
        free(cols);
        return rc;
    }
    *cols_out = cols;
    *ncols_out = n;
    return KN_OK;
}

/* a cell as a finite float32; 0 if it is not one (why: 1 empty, 2 not a number, 3 out of range) */
static int cell_number(const char *s, float *out, int *why) {
    while (*s == ' ' || *s == '\t') s++;
    if (!*s) { *why = 1; return 0; }
    char *e;
    errno = 0;
    double v = strtod(s, &e);
    while (*e == ' ' || *e == '\t' || *e == '\r') e++;
    if (e == s || *e || (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))) { *why = 2; return 0; }
    if (!isfinite(v) || fabs(v) > 3.4028234663852886e38 || (errno == ERANGE && fabs(v) > 1)) { *why = 3; return 0; }
    *out = (float)v;
    return 1;
}

int kn_csv_numbers(kn_ctx *ctx, const kn_csv *c, const int *cols, int ncols, float **out) {
    *out = NULL;
    int64_t total;
    if (kn_mul_ovf(c->nrows, ncols, &total) || total > KN_MAX_BYTES / 4)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: too many cells", c->path);
    float *x = malloc((size_t)(total > 0 ? total : 1) * sizeof *x);
    if (!x) return kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory for %lld numbers", c->path, (long long)total);
    for (int64_t r = 0; r < c->nrows; r++)
        for (int j = 0; j < ncols; j++) {
            const char *s = kn_csv_at(c, r, cols[j]);
            int why = 0;
            if (!cell_number(s, &x[r * ncols + j], &why)) {
                char d[96];
                col_desc(c, cols[j], d, sizeof d);
                free(x);
                const char *b = s;
                while (*b == ' ' || *b == '\t') b++;
                const int blanks = why == 2 && strpbrk(b, " \t") != NULL;
                return kn_err(ctx, KN_ERR_FORMAT, "%s:%lld: row %lld, %s: %s%.40s%s; %s", c->path, (long long)c->line[r],
                              (long long)r + 1, d, why == 1 ? "the cell is empty" : "'", why == 1 ? "" : s,
                              why == 1 ? "" : why == 2 ? "' is not a number" : "' is not a finite float32 number",
                              why == 1 ? "missing values are not allowed: fill them in or remove the row"
                              : blanks ? "the cell holds blanks or tabs: if the file is whitespace-separated, set delimiter = "
                                         "whitespace"
                                       : "expected a decimal number such as 3.25 or -1e-3 (choose other columns with the "
                                         "features/target keys if this is not a number column)");
            }
        }
    *out = x;
    return KN_OK;
}

/* ---------------- labels ---------------- */
typedef struct {
    const char *s;
    double v;
} label_ent;

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }
static int cmp_num(const void *a, const void *b) {
    const label_ent *x = a, *y = b;
    return (x->v > y->v) - (x->v < y->v);
}

int kn_csv_labels(kn_ctx *ctx, const kn_csv *c, int col, int32_t **labels_out, kn_classmap *map) {
    *labels_out = NULL;
    memset(map, 0, sizeof *map);
    const int64_t n = c->nrows;
    char d[96];
    col_desc(c, col, d, sizeof d);
    const char **v = malloc((size_t)n * sizeof *v);
    int32_t *y = malloc((size_t)n * sizeof *y);
    label_ent *u = NULL;
    int rc = KN_OK;
    if (!v || !y) { rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", c->path); goto fail; }
    for (int64_t r = 0; r < n; r++) {
        v[r] = kn_csv_at(c, r, col);
        const char *s = v[r];
        while (*s == ' ' || *s == '\t') s++;
        if (!*s) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "%s:%lld: row %lld, %s: the label is empty; every row needs a class label",
                        c->path, (long long)c->line[r], (long long)r + 1, d);
            goto fail;
        }
    }
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) { rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", c->path); goto fail; }
    memcpy(sorted, v, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || strcmp(sorted[i], sorted[k - 1])) sorted[k++] = sorted[i];
    if (k > INT32_MAX / 2) {
        free(sorted);
        rc = kn_err(ctx, KN_ERR_FORMAT, "%s: %s has %lld different labels; too many classes", c->path, d, (long long)k);
        goto fail;
    }
    /* all numbers? then order by value */
    u = malloc((size_t)k * sizeof *u);
    if (!u) { free(sorted); rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", c->path); goto fail; }
    int numeric = 1;
    for (int64_t i = 0; i < k; i++) {
        float f;
        int why;
        u[i].s = sorted[i];
        if (cell_number(sorted[i], &f, &why)) u[i].v = strtod(sorted[i], NULL);
        else numeric = 0;
    }
    if (numeric) {
        qsort(u, (size_t)k, sizeof *u, cmp_num);
        for (int64_t i = 1; i < k; i++)
            if (u[i].v == u[i - 1].v) {
                rc = kn_err(ctx, KN_ERR_FORMAT, "%s: %s: labels '%.30s' and '%.30s' are the same number written two ways; write every class label the same way",
                            c->path, d, u[i - 1].s, u[i].s);
                free(sorted);
                goto fail;
            }
    }
    /* rank of each distinct string (sorted[] is in strcmp order) */
    int32_t *rank = malloc((size_t)k * sizeof *rank);
    map->names = calloc((size_t)k, sizeof *map->names);
    if (!rank || !map->names) {
        free(rank);
        free(sorted);
        rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", c->path);
        goto fail;
    }
    for (int64_t i = 0; i < k; i++) {
        const char **pos = bsearch(&u[i].s, sorted, (size_t)k, sizeof *sorted, cmp_str);
        rank[pos - sorted] = (int32_t)i;
        map->names[i] = strdup(u[i].s);
        map->n = (int)i + 1;
        if (!map->names[i]) {
            map->n = (int)i;
            free(rank);
            free(sorted);
            rc = kn_err(ctx, KN_ERR_NOMEM, "%s: out of memory", c->path);
            goto fail;
        }
    }
    for (int64_t r = 0; r < n; r++) {
        const char **pos = bsearch(&v[r], sorted, (size_t)k, sizeof *sorted, cmp_str);
        y[r] = rank[pos - sorted];
    }
    free(rank);
    free(sorted);
    free(u);
    free(v);
    *labels_out = y;
    return KN_OK;
fail:
    free(u);
    free(v);
    free(y);
    kn_classmap_free(map);
    return rc;
}
