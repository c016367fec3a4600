/* kiln — kn_inspect: a checkpoint's tensors, shapes, statistics and metadata. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train/checkpoint.h"

int kn_inspect(kn_ctx *ctx, const char *path, const char *dump, FILE *out) {
    kn_ckpt *c = NULL;
    int rc = kn_ckpt_open(ctx, path, &c);
    if (rc) return rc;
    if (dump) {
        const float *d;
        kn_shape sh;
        if ((rc = kn_ckpt_get(ctx, c, dump, &d, &sh)) == KN_OK) {
            int64_t n = kn_shape_numel(&sh);
            for (int64_t i = 0; i < n; i++) fprintf(out, "%.9g\n", (double)d[i]);
        }
        kn_ckpt_close(c);
        return rc;
    }
    static const char *const crc_says[] = {"absent (not written by kiln)", "ok (crc32 of the data verified; metadata not covered: an older kiln wrote it)",
                                           "ok (crc32 of the whole file verified)"};
    fprintf(out, "%s: safetensors, %d tensors, checksum %s\n", path, kn_ckpt_count(c) + kn_ckpt_other_count(c),
            crc_says[kn_ckpt_checksum(c)]);
    fprintf(out, "%-48s %-18s %10s %12s %12s %12s\n", "tensor", "shape", "elements", "min", "max", "mean");
    for (int i = 0; i < kn_ckpt_count(c); i++) {
        const float *d;
        kn_shape sh;
        kn_ckpt_get(ctx, c, kn_ckpt_name(c, i), &d, &sh);
        int64_t n = kn_shape_numel(&sh);
        double mn = INFINITY, mx = -INFINITY, sum = 0;
        for (int64_t k = 0; k < n; k++) {
            if (d[k] < mn) mn = d[k];
            if (d[k] > mx) mx = d[k];
            sum += d[k];
        }
        char s[64];
        fprintf(out, "%-48s %-18s %10lld %12.5g %12.5g %12.5g\n", kn_ckpt_name(c, i), kn_shape_str(&sh, s, sizeof s),
                (long long)n, n ? mn : 0.0, n ? mx : 0.0, n ? sum / (double)n : 0.0);
    }
    for (int i = 0; i < kn_ckpt_other_count(c); i++) {
        const char *dt;
        kn_shape sh;
        const char *nm = kn_ckpt_other(c, i, &dt, &sh);
        char s[64];
        fprintf(out, "%-48s %-18s %10lld   (%s: not read by kiln)\n", nm, kn_shape_str(&sh, s, sizeof s), (long long)kn_shape_numel(&sh), dt);
    }
    static const char *const keys[] = {"kind", "kiln_version", "step", "epoch", "batch_in_epoch", "seed",
                                       "optimizer_t", "best_val_loss", "best_step", "config_hash", "algorithms",
                                       "isa_path", "kiln_crc32", "kiln_file_crc32", NULL};
    fprintf(out, "metadata:\n");
    for (int i = 0; keys[i]; i++) {
        const char *v = kn_ckpt_meta_get(c, keys[i]);
        if (v) fprintf(out, "  %-16s %s\n", keys[i], v);
    }
    if (kn_ckpt_meta_get(c, "config")) fprintf(out, "  %-16s (%zu bytes of INI text)\n", "config", strlen(kn_ckpt_meta_get(c, "config")));
    kn_ckpt_close(c);
    return KN_OK;
}
