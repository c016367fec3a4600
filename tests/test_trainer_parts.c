/* Unit tests of the trainer's parts (src/optim, src/train):
 *  - gradient clipping (kn_clip_grad_norm, the one implementation) against the closed
 *    form: g * (float)(max / (norm + 1e-6)) when the norm is over the limit, g unchanged
 *    otherwise, and what it returns;
 *  - the training checkpoint's field table (state.c): a record written and read back is
 *    bit-exact (infinities, NaN, 2^53, negative best_step), the metadata keys and text
 *    are kiln 0.1's, and a missing or out-of-range field is an error naming it. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "testutil.h"
#include "train/state.h"

static void test_clip(void) {
    /* [3, 4, 0, 12]: norm 13 */
    float g[4] = {3, 4, 0, 12};
    double norm = kn_global_norm(g, 4);
    CHECK(norm == 13.0, "global norm %.17g", norm);
    double after = kn_clip_grad_norm(g, 4, norm, 6.5);
    float c = (float)(6.5 / (13.0 + 1e-6));
    CHECK(after == 6.5, "returns the limit when it clips: %g", after);
    CHECK(g[0] == 3 * c && g[1] == 4 * c && g[2] == 0 && g[3] == 12 * c, "scaled by (float)(max/(norm+1e-6)): %.9g %.9g %.9g",
          (double)g[0], (double)g[1], (double)g[3]);
    CHECK(fabs(kn_global_norm(g, 4) - 6.5) < 1e-5, "new norm %.9g", kn_global_norm(g, 4));
    /* under the limit: untouched, the norm returned */
    float h[2] = {0.3f, 0.4f};
    after = kn_clip_grad_norm(h, 2, kn_global_norm(h, 2), 1.0);
    CHECK(h[0] == 0.3f && h[1] == 0.4f && fabs(after - 0.5) < 1e-7, "under the limit: %g %g -> %g", (double)h[0], (double)h[1], after);
    /* a non-finite norm never scales (coef is not < 1) */
    float z[2] = {1, 2};
    after = kn_clip_grad_norm(z, 2, NAN, 1.0);
    CHECK(z[0] == 1 && z[1] == 2 && isnan(after), "NaN norm: untouched");
    /* kn_clip_grad: the norm computed first, the norm before clipping returned */
    float w[3] = {0, 0, 10};
    double before = kn_clip_grad(w, 3, 1.0);
    CHECK(before == 10.0 && w[2] == 10.0f * (float)(1.0 / (10.0 + 1e-6)), "kn_clip_grad: %g, %.9g", before, (double)w[2]);
    /* a large vector (the parallel loop) gives the same bits as the scalar formula */
    int64_t n = 200000;
    float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
    for (int64_t i = 0; i < n; i++) a[i] = b[i] = (float)((i % 97) - 48) * 0.01f;
    double na = kn_global_norm(a, n);
    kn_clip_grad_norm(a, n, na, 1.0);
    float cc = (float)(1.0 / (na + 1e-6));
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= a[i] == b[i] * cc;
    CHECK(same, "parallel clip = closed form");
    free(a);
    free(b);
}

static kn_ctx *ctx;

/* Save a record's metadata (without field `drop`, or with `key` = `value`) with an empty store. */
static int save_meta(const char *path, const kn_ckpt_record *r, const char *drop, const char *key, const char *value) {
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int n = kn_ckpt_record_meta(r, v, meta), k = 0;
    for (int i = 0; i < n; i++) {
        if (drop && !strcmp(meta[i].key, drop)) continue;
        meta[k] = meta[i];
        if (key && !strcmp(meta[k].key, key)) meta[k].value = value;
        k++;
    }
    kn_store st;
    memset(&st, 0, sizeof st);
    kn_ctx_clear(ctx);
    return kn_ckpt_save(ctx, path, &st, NULL, 0, meta, k);
}

static int read_back(const char *path, kn_ckpt_record *out) {
    kn_ckpt *c = NULL;
    kn_ctx_clear(ctx);
    memset(out, 0, sizeof *out);
    int rc = kn_ckpt_open(ctx, path, &c);
    if (!rc) rc = kn_ckpt_check_train_meta(ctx, c);
    if (!rc) rc = kn_ckpt_record_read(ctx, c, out);
    kn_ckpt_close(c);
    return rc;
}

static void test_fields(void) {
    char path[1200];
    snprintf(path, sizeof path, "%s/rec.safetensors", kn_test_tmpdir("test_trainer_parts"));
    kn_ckpt_record r;
    memset(&r, 0, sizeof r);
    kn_train_state_init(&r.s);
    r.kind = "train";
    r.s.step = (int64_t)1 << 53;
    r.s.epoch = 7;
    r.s.batch_in_epoch = 3;
    r.s.ep_loss_sum = NAN;
    r.s.ep_steps = 3;
    r.s.metrics_bytes = 12345;
    r.s.lr_scale = 0.1 * 0.1;
    r.s.guard_events = 2;
    r.s.bad_epochs = 1;
    r.seed = UINT64_MAX;
    r.optimizer_t = 99;
    r.optimizer_kind = 2;
    r.config_hash = 0xabcULL;
    r.data_mean = (double)0.2860402f;
    r.data_std = (double)0.3530239f;
    r.threads = 2;
    r.micro_batch = 32;
    r.algorithms = "conv1=winograd";
    r.isa_path = "kiln test";
    r.config = "[train]\nepochs = 1\n";
    /* the keys and their order: kiln 0.1's (run.c save_state) */
    static const char *const keys[] = {"kind", "step", "epoch", "batch_in_epoch", "seed", "optimizer_t", "epoch_loss_sum",
                                       "epoch_steps", "best_val_loss", "best_step", "metrics_bytes", "config_hash",
                                       "optimizer_kind", "guard_lr_scale", "guard_events", "bad_epochs", "data_mean",
                                       "data_std", "threads", "micro_batch", "algorithms", "isa_path", "config", NULL};
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int n = kn_ckpt_record_meta(&r, v, meta), i = 0;
    for (; keys[i]; i++) CHECK(i < n && !strcmp(meta[i].key, keys[i]), "key %d: %s, expected %s", i, i < n ? meta[i].key : "-", keys[i]);
    CHECK(n == i, "%d fields, expected %d", n, i);
    CHECK(!strcmp(meta[1].value, "9007199254740992") && !strcmp(meta[8].value, "inf") && !strcmp(meta[9].value, "-1") &&
              !strcmp(meta[11].value, "0000000000000abc") && !strcmp(meta[4].value, "18446744073709551615") &&
              !strcmp(meta[13].value, "0.010000000000000002"),
          "text forms: %s %s %s %s %s %s", meta[1].value, meta[8].value, meta[9].value, meta[11].value, meta[4].value, meta[13].value);
    CHECK(save_meta(path, &r, NULL, NULL, NULL) == KN_OK, "save: %s", kn_ctx_message(ctx));
    kn_ckpt_record b;
    CHECK(read_back(path, &b) == KN_OK, "read: %s", kn_ctx_message(ctx));
    CHECK(b.s.step == r.s.step && b.s.epoch == 7 && b.s.batch_in_epoch == 3 && isnan(b.s.ep_loss_sum) && b.s.ep_steps == 3 &&
              b.s.best_val == INFINITY && b.s.best_step == -1 && b.s.metrics_bytes == 12345 && b.s.lr_scale == r.s.lr_scale &&
              b.s.guard_events == 2 && b.s.bad_epochs == 1 && b.optimizer_t == 99 && b.optimizer_kind == 2,
          "round trip");
    /* every restored field missing, then out of range: an error that names it */
    for (const kn_state_field *f = kn_ckpt_fields; f->key; f++) {
        if (!(f->flags & KN_FIELD_RESTORE)) continue;
        char want[128];
        CHECK(save_meta(path, &r, f->key, NULL, NULL) == KN_OK, "save without %s", f->key);
        snprintf(want, sizeof want, "metadata '%s' is missing", f->key);
        CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), want), "without %s: %s", f->key, kn_ctx_message(ctx));
        const char *bad = f->type == KN_FIELD_F64 ? (f->fmin > 0 ? "0" : "1e999x") : f->imin < 0 ? "-2" : "-1";
        CHECK(save_meta(path, &r, NULL, f->key, bad) == KN_OK, "save with %s = %s", f->key, bad);
        snprintf(want, sizeof want, "metadata '%s' = '%s' is", f->key, bad);
        CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), want), "%s = %s: %s", f->key, bad, kn_ctx_message(ctx));
    }
    /* an optional checked field out of range fails the training-metadata check */
    CHECK(save_meta(path, &r, NULL, "threads", "5000") == KN_OK, "save");
    CHECK(read_back(path, &b) == KN_ERR_FORMAT && strstr(kn_ctx_message(ctx), "'threads' = '5000' is out of range"), "threads: %s",
          kn_ctx_message(ctx));
    /* and may be absent */
    CHECK(save_meta(path, &r, "threads", NULL, NULL) == KN_OK && read_back(path, &b) == KN_OK, "no threads: %s", kn_ctx_message(ctx));
}

int main(void) {
    ctx = kn_ctx_new();
    test_clip();
    test_fields();
    kn_ctx_free(ctx);
    return kn_test_finish("test_trainer_parts");
}
