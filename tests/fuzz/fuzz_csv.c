/* Fuzz harness: the CSV/TSV reader (libcsv; plain or gzip, told from the content), column
 * selection, numbers, class labels, and the normalisation statistics and class mapping
 * that come from a table and go into checkpoint metadata as text.
 * Input: one flags byte, then the file. flags & 3: delimiter (',' '\t' ';' whitespace);
 * flags & 4: header row; (flags >> 3) & 3: preamble lines to skip; flags & 0x20: the
 * file is also read as a normalisation string and as a class-mapping string. */
#include "fuzz_common.h"

#include "data/source.h"

static void text_readers(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return;
    memcpy(s, data, size);
    s[size] = 0;
    kn_ctx *ctx = kn_ctx_new();
    kn_norm z;
    if (kn_norm_from_string(ctx, s, &z) == KN_OK) {
        /* what reads back writes out as itself */
        char *t = kn_norm_to_string(&z);
        kn_norm w;
        if (!t || kn_norm_from_string(ctx, t, &w) != KN_OK) abort();
        if (w.count != z.count || w.inner != z.inner || w.kind != z.kind) abort();
        for (int64_t i = 0; i < z.count; i++)
            if (w.mean[i] != z.mean[i] || w.std[i] != z.std[i]) abort();
        kn_norm_free(&w);
        free(t);
        kn_norm_free(&z);
    }
    kn_classmap m;
    if (kn_classmap_from_string(ctx, s, &m) == KN_OK) {
        char *t = kn_classmap_to_string(&m);
        kn_classmap m2;
        if (!t || kn_classmap_from_string(ctx, t, &m2) != KN_OK || m2.n != m.n) abort();
        for (int i = 0; i < m.n; i++)
            if (strcmp(m.names[i], m2.names[i]) || kn_classmap_find(&m2, m.names[i]) != i) abort();
        kn_classmap_free(&m2);
        free(t);
        kn_classmap_free(&m);
    }
    kn_ctx_free(ctx);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int flags = data[0];
    data++;
    size--;
    if (flags & 0x20) text_readers(data, size);
    const char *path = kn_fuzz_path(".csv");
    if (kn_fuzz_write(path, data, size) != 0) return 0;
    static const char delims[4] = {',', '\t', ';', 0};
    kn_csv_opts o = {delims[flags & 3], (flags >> 2) & 1, (flags >> 3) & 3};
    kn_ctx *ctx = kn_ctx_new();
    kn_csv c;
    if (kn_csv_read(ctx, path, &o, &c) == KN_OK) {
        if (c.nrows < 1 || c.ncols < 1 || (o.header && !c.header)) abort();
        for (int64_t r = 0; r < c.nrows; r++) {
            if (c.line[r] < 1 || (r && c.line[r] <= c.line[r - 1])) abort(); /* a lone CR ends a line too */
            for (int j = 0; j < c.ncols; j++) {
                int64_t off = c.cell[r * c.ncols + j];
                if (off < 0 || off >= c.text_len) abort();
                if (strlen(kn_csv_at(&c, r, j)) > (size_t)(c.text_len - off)) abort();
            }
        }
        static const char *const sels[] = {"all", "0", "-1", "1:", ":-1", "0:2,-1", "a", "0,0"};
        for (int k = 0; k < 8; k++) {
            int *cols = NULL, n = 0, ex = c.ncols - 1;
            kn_ctx_clear(ctx);
            if (kn_csv_select(ctx, &c, sels[k], &ex, k & 1, "features", &cols, &n) != KN_OK) continue;
            if (n < 1 || n > c.ncols) abort();
            for (int j = 0; j < n; j++)
                if (cols[j] < 0 || cols[j] >= c.ncols) abort();
            float *x = NULL;
            if (kn_csv_numbers(ctx, &c, cols, n, &x) == KN_OK) {
                kn_table t = {0};
                kn_shape s = kn_shape1(n);
                if (kn_table_add(ctx, &t, "features", KN_FIELD_INPUT, KN_F32, &s, c.nrows, x) != KN_OK) abort();
                kn_norm z;
                char note[256];
                if (kn_norm_fit(ctx, &t.fields[0], NULL, t.n, k & 1 ? KN_NORM_GLOBAL : KN_NORM_PER_FEATURE, &z, note, sizeof note) ==
                    KN_OK) {
                    for (int64_t i = 0; i < z.count; i++)
                        if (!(z.std[i] > 0)) abort();
                    char *str = kn_norm_to_string(&z);
                    kn_norm w;
                    if (!str || kn_norm_from_string(ctx, str, &w) != KN_OK) abort();
                    if (memcmp(w.mean, z.mean, (size_t)z.count * 8) || memcmp(w.std, z.std, (size_t)z.count * 8)) abort();
                    kn_norm_free(&w);
                    free(str);
                    if (kn_norm_apply(ctx, &z, t.fields[0].data, t.n, n) != KN_OK) abort();
                    kn_norm_free(&z);
                }
                kn_table a, b;
                if (kn_table_split(ctx, &t, 0.25, 7, &a, &b) == KN_OK) {
                    if (a.n + b.n != t.n) abort();
                    kn_table_free(&a);
                    kn_table_free(&b);
                }
                kn_table_free(&t);
            }
            free(cols);
        }
        int32_t *y = NULL;
        kn_classmap m;
        kn_ctx_clear(ctx);
        if (kn_csv_labels(ctx, &c, c.ncols - 1, &y, &m) == KN_OK) {
            if (m.n < 1 || m.n > c.nrows) abort();
            for (int64_t r = 0; r < c.nrows; r++) {
                if (y[r] < 0 || y[r] >= m.n) abort();
                if (strcmp(m.names[y[r]], kn_csv_at(&c, r, c.ncols - 1))) abort();
            }
            char *s = kn_classmap_to_string(&m);
            kn_classmap m2;
            if (!s || kn_classmap_from_string(ctx, s, &m2) != KN_OK || m2.n != m.n) abort();
            kn_classmap_free(&m2);
            free(s);
            free(y);
            kn_classmap_free(&m);
        }
        kn_csv_free(&c);
    }
    unlink(path);
    kn_ctx_free(ctx);
    return 0;
}
