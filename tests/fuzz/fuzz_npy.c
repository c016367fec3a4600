/* Fuzz harness: the NumPy .npy reader (versions 1.0-3.0; plain or gzip, told from the
 * content), the conversion of an array into a table field, and the writer's round trip.
 * Input: one flags byte, then the file. flags & 1: as class labels (int32) rather than
 * features (float32); flags & 2: also per-feature normalisation statistics. */
#include "fuzz_common.h"

#include "data/source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int flags = data[0];
    data++;
    size--;
    const char *path = kn_fuzz_path(".npy"), *out = kn_fuzz_path(".out.npy");
    if (kn_fuzz_write(path, data, size) != 0) return 0;
    kn_ctx *ctx = kn_ctx_new();
    kn_array a;
    if (kn_npy_read(ctx, path, &a) == KN_OK) {
        if (a.nd < 1 || a.nd > KN_MAX_DIMS || !a.data) abort();
        int64_t n = 1;
        for (int i = 0; i < a.nd; i++) {
            if (a.dims[i] < 1) abort();
            n *= a.dims[i];
        }
        if (n != a.numel) abort();
        /* the writer's file reads back as the same array */
        if (kn_npy_write(ctx, out, &a) == KN_OK) {
            kn_array b;
            if (kn_npy_read(ctx, out, &b) != KN_OK) abort();
            if (b.type != a.type || b.nd != a.nd || b.numel != a.numel ||
                memcmp(a.data, b.data, (size_t)a.numel * kn_eltype_size(a.type)))
                abort();
            kn_array_free(&b);
            unlink(out);
        }
        kn_table t = {0};
        const int lab = flags & 1;
        if (kn_table_add_array(ctx, &t, path, lab ? "label" : "features", lab ? KN_FIELD_CLASS : KN_FIELD_INPUT, lab ? KN_I32 : KN_F32,
                               &a) == KN_OK) {
            if (t.n < 1 || t.nfields != 1 || (lab && t.fields[0].nclasses < 1)) abort();
            kn_norm z;
            if (!lab && (flags & 2) && kn_norm_fit(ctx, &t.fields[0], NULL, t.n, KN_NORM_PER_FEATURE, &z, NULL, 0) == KN_OK) {
                for (int64_t i = 0; i < z.count; i++)
                    if (!(z.std[i] > 0)) abort();
                kn_norm_free(&z);
            }
        }
        if (a.data) abort(); /* kn_table_add_array always takes the array */
        kn_table_free(&t);
    }
    unlink(path);
    kn_ctx_free(ctx);
    return 0;
}
