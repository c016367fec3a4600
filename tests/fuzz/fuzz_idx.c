/* Fuzz harness: the IDX reader (plain and gzip: the format is told from the content,
 * so gzip seeds let the fuzzer mutate compressed streams), the header-only peek the
 * planner uses, and a dataset made of the input as images or as labels.
 * The typed reader (kn_idx_read: every element type) reads the same file; for an
 * unsigned-byte file it must agree with kn_idx_load, and what it reads writes back
 * (kn_idx_write_typed) and reads again as the same array.
 * Input: one flags byte, then the file. flags & 1: load it as the labels of a fixed
 * 2-image set; otherwise as images with fixed labels. */
#include "fuzz_common.h"

#include "data/data.h"
#include "data/source.h"

/* the typed reader: agrees with the u8 one, round-trips through the writer */
static void typed(kn_ctx *ctx, const char *path, const kn_idx *u8, int u8ok) {
    kn_array a;
    kn_ctx_clear(ctx);
    if (kn_idx_read(ctx, path, &a) != KN_OK) {
        if (u8ok) abort(); /* every u8 file kn_idx_load reads is a typed IDX file too */
        return;
    }
    if (a.nd < 1 || a.nd > KN_MAX_DIMS) abort();
    int64_t n = 1;
    for (int i = 0; i < a.nd; i++) n *= a.dims[i];
    if (n != a.numel) abort();
    if (u8ok && (a.type != KN_EL_U8 || a.nd != u8->nd || memcmp(a.data, u8->data, (size_t)n))) abort();
    const char *out = kn_fuzz_path(".out.idx");
    if (kn_idx_write_typed(ctx, out, a.type, a.nd, a.dims, a.data, 0) == KN_OK) {
        kn_array b;
        if (kn_idx_read(ctx, out, &b) != KN_OK || b.type != a.type || b.numel != a.numel ||
            memcmp(a.data, b.data, (size_t)n * kn_eltype_size(a.type)))
            abort();
        kn_array_free(&b);
        unlink(out);
    }
    kn_table t = {0};
    kn_ctx_clear(ctx);
    kn_table_add_array(ctx, &t, path, "image", KN_FIELD_INPUT, KN_F32, &a);
    kn_table_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int flags = data[0];
    data++;
    size--;
    const char *path = kn_fuzz_path(".idx"), *img_path = kn_fuzz_path(".img.idx"), *lab_path = kn_fuzz_path(".lab.idx");
    if (kn_fuzz_write(path, data, size) != 0) return 0;
    kn_ctx *ctx = kn_ctx_new();
    kn_idx x;
    int nd = 0;
    int64_t dims[4];
    int prc = kn_idx_peek(ctx, path, &nd, dims);
    kn_ctx_clear(ctx);
    int u8ok = kn_idx_load(ctx, path, &x) == KN_OK;
    typed(ctx, path, &x, u8ok);
    if (u8ok) {
        /* what the peek said is what the load found */
        if (prc != KN_OK || nd != x.nd) abort();
        int64_t total = 1;
        for (int i = 0; i < x.nd; i++) {
            if (dims[i] != x.dims[i] || x.dims[i] < 1) abort();
            total *= x.dims[i];
        }
        unsigned s = 0;
        for (int64_t i = 0; i < total; i++) s += x.data[i];
        if (s == 0xFFFFFFFFu) fputc(0, stderr);
        kn_idx_free(&x);
    }
    kn_ctx_clear(ctx);
    /* as one half of a dataset: images 2x2x2 with labels 0,1 / labels of 2 images */
    static const uint8_t img[8] = {0, 1, 2, 3, 4, 5, 6, 7}, lab[2] = {0, 1};
    int64_t dimg[3] = {2, 2, 2}, dlab[1] = {2};
    static int fixed; /* the other half, written once */
    if (!fixed) fixed = kn_idx_write(ctx, img_path, 3, dimg, img, 0) == KN_OK && kn_idx_write(ctx, lab_path, 1, dlab, lab, 0) == KN_OK;
    kn_dataset ds;
    if (flags & 1) {
        if (kn_dataset_load(ctx, img_path, path, &ds) == KN_OK) {
            if (kn_dataset_check_labels(ctx, &ds, path, 10) == KN_OK && ds.nclasses != 10) abort();
            kn_dataset_free(&ds);
        }
    } else {
        if (kn_dataset_load(ctx, path, lab_path, &ds) == KN_OK) {
            double mean, sd;
            kn_dataset_stats(&ds, &mean, &sd);
            kn_dataset_free(&ds);
        }
    }
    unlink(path);
    kn_ctx_free(ctx);
    return 0;
}
