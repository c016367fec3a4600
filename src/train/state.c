/* kiln — the training checkpoint record as a table of named fields (state.h). */
#include "train/state.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

void kn_train_state_init(kn_train_state *s) {
    memset(s, 0, sizeof *s);
    s->best_val = INFINITY;
    s->best_step = -1;
    s->lr_scale = 1.0;
}

#define P53 ((int64_t)1 << 53)
#define DMAX 1.7976931348623157e308
#define DMIN_POS 4.9406564584124654e-324
#define S_(f) offsetof(kn_ckpt_record, s.f)
#define R_(f) offsetof(kn_ckpt_record, f)
/* Ranges of the training state kiln writes. epoch: train.epochs is at most 1,000,000; a
 * batch index fits the IDX reader's 2^31 samples. The metadata order is this order. */
const kn_state_field kn_ckpt_fields[] = {
    {"kind", KN_FIELD_STR, R_(kind), 0, 0, 0, 0, 0, 0},
    {"step", KN_FIELD_I64, S_(step), KN_FIELD_RESTORE, 0, P53, 0, 0, 0},
    {"epoch", KN_FIELD_I64, S_(epoch), KN_FIELD_RESTORE, 0, 1000000, 0, 0, 0},
    {"batch_in_epoch", KN_FIELD_I64, S_(batch_in_epoch), KN_FIELD_RESTORE, 0, (int64_t)1 << 31, 0, 0, 0},
    {"seed", KN_FIELD_U64, R_(seed), KN_FIELD_CHECK, 0, 0, 0, 0, UINT64_MAX},
    {"optimizer_t", KN_FIELD_I64, R_(optimizer_t), KN_FIELD_RESTORE, 0, P53, 0, 0, 0},
    /* the running loss of a diverged run (guard off) is legitimately NaN or infinite */
    {"epoch_loss_sum", KN_FIELD_F64, S_(ep_loss_sum), KN_FIELD_RESTORE | KN_FIELD_NAN_OK, 0, 0, -INFINITY, INFINITY, 0},
    {"epoch_steps", KN_FIELD_I64, S_(ep_steps), KN_FIELD_RESTORE, 0, (int64_t)1 << 31, 0, 0, 0},
    /* +inf before the first evaluation */
    {"best_val_loss", KN_FIELD_F64, S_(best_val), KN_FIELD_RESTORE, 0, 0, -INFINITY, INFINITY, 0},
    {"best_step", KN_FIELD_I64, S_(best_step), KN_FIELD_RESTORE, -1, P53, 0, 0, 0},
    {"metrics_bytes", KN_FIELD_I64, S_(metrics_bytes), KN_FIELD_RESTORE, 0, P53, 0, 0, 0},
    {"config_hash", KN_FIELD_HEX64, R_(config_hash), 0, 0, 0, 0, 0, 0},
    {"optimizer_kind", KN_FIELD_I64, R_(optimizer_kind), KN_FIELD_RESTORE, 0, 2, 0, 0, 0},
    {"guard_lr_scale", KN_FIELD_F64, S_(lr_scale), KN_FIELD_RESTORE, 0, 0, DMIN_POS, 1.0, 0},
    {"guard_events", KN_FIELD_I64, S_(guard_events), KN_FIELD_RESTORE, 0, P53, 0, 0, 0},
    {"bad_epochs", KN_FIELD_I64, S_(bad_epochs), KN_FIELD_RESTORE, 0, 1000000, 0, 0, 0},
    {"data_mean", KN_FIELD_F64, R_(data_mean), KN_FIELD_CHECK, 0, 0, -3.4028234663852886e38, 3.4028234663852886e38, 0}, /* float32 */
    {"data_std", KN_FIELD_F64, R_(data_std), KN_FIELD_CHECK, 0, 0, 1.1754943508222875e-38, 3.4028234663852886e38, 0},
    {"threads", KN_FIELD_I64, R_(threads), KN_FIELD_CHECK, 0, 1024, 0, 0, 0},
    /* recorded for the resume's micro-batch split (read leniently by the run directory's peek) */
    {"micro_batch", KN_FIELD_I64, R_(micro_batch), 0, 0, P53, 0, 0, 0},
    {"algorithms", KN_FIELD_STR, R_(algorithms), 0, 0, 0, 0, 0, 0},
    {"isa_path", KN_FIELD_STR, R_(isa_path), 0, 0, 0, 0, 0, 0},
    {"data_norm", KN_FIELD_STR, R_(data_norm), KN_FIELD_OMIT_EMPTY, 0, 0, 0, 0, 0},
    {"data_classes", KN_FIELD_STR, R_(data_classes), KN_FIELD_OMIT_EMPTY, 0, 0, 0, 0, 0},
    {"config", KN_FIELD_STR, R_(config), 0, 0, 0, 0, 0, 0},
    {NULL, KN_FIELD_STR, 0, 0, 0, 0, 0, 0, 0}};

const kn_state_field *kn_ckpt_field(const char *key) {
    for (int i = 0; kn_ckpt_fields[i].key; i++)
        if (!strcmp(kn_ckpt_fields[i].key, key)) return &kn_ckpt_fields[i];
    return NULL;
}

#define AT(r, f, T) ((T *)(void *)((char *)(r) + (f)->offset))
#define CAT(r, f, T) ((const T *)(const void *)((const char *)(r) + (f)->offset))

int kn_ckpt_record_meta(const kn_ckpt_record *r, char (*buf)[64], kn_ckpt_meta *meta) {
    int n = 0;
    for (const kn_state_field *f = kn_ckpt_fields; f->key && n < KN_CKPT_MAX_FIELDS; f++, n++) {
        if (f->flags & KN_FIELD_OMIT_EMPTY) {
            const char *s = *(const char *const *)(const void *)((const char *)r + f->offset);
            if (!s || !*s) { n--; continue; }
        }
        meta[n].key = f->key;
        meta[n].value = buf[n];
        switch (f->type) {
        case KN_FIELD_I64: snprintf(buf[n], 64, "%lld", (long long)*CAT(r, f, int64_t)); break;
        case KN_FIELD_U64: snprintf(buf[n], 64, "%llu", (unsigned long long)*CAT(r, f, uint64_t)); break;
        case KN_FIELD_HEX64: snprintf(buf[n], 64, "%016llx", (unsigned long long)*CAT(r, f, uint64_t)); break;
        case KN_FIELD_F64: snprintf(buf[n], 64, "%.17g", *CAT(r, f, double)); break;
        case KN_FIELD_STR: {
            const char *s = *(const char *const *)(const void *)((const char *)r + f->offset);
            meta[n].value = s ? s : "";
            break;
        }
        }
    }
    return n;
}

int kn_ckpt_record_read(kn_ctx *ctx, const kn_ckpt *c, kn_ckpt_record *r) {
    for (const kn_state_field *f = kn_ckpt_fields; f->key; f++) {
        if (!(f->flags & KN_FIELD_RESTORE)) continue;
        int rc = KN_OK;
        if (f->type == KN_FIELD_I64) rc = kn_ckpt_meta_int(ctx, c, f->key, AT(r, f, int64_t));
        else if (f->type == KN_FIELD_F64) rc = kn_ckpt_meta_num(ctx, c, f->key, AT(r, f, double));
        else if (f->type == KN_FIELD_U64) rc = kn_ckpt_meta_u64(ctx, c, f->key, f->umax, AT(r, f, uint64_t));
        else rc = kn_err(ctx, KN_ERR_INTERNAL, "checkpoint field '%s' cannot be restored", f->key);
        if (rc) return rc;
    }
    return KN_OK;
}
