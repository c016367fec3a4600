/* kiln — the training state and its checkpoint record, described by one table of named
 * fields (name, type, offset, range). The table decides what a training checkpoint's
 * metadata holds (keys, order, text form), what a resume reads back, and how each value
 * is validated when read (kn_ckpt_meta_int/num and kn_ckpt_check_train_meta in
 * checkpoint.c use its ranges). Keys and text forms are those of kiln 0.1: every
 * checkpoint written before still loads (docs/FORMATS.md). */
#ifndef KN_STATE_H
#define KN_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "train/checkpoint.h"

/* Where a run is and what the next step depends on besides the tensors. */
typedef struct {
    int64_t step, epoch, batch_in_epoch;
    double ep_loss_sum;
    int64_t ep_steps;
    double best_val;
    int64_t best_step;
    int64_t metrics_bytes; /* length of metrics.jsonl at this state */
    double lr_scale;       /* guard: multiplier on the schedule after rollbacks */
    int64_t guard_events;  /* guard: events so far */
    int64_t bad_epochs;    /* epochs since the best validation loss */
} kn_train_state;

/* The state before the first step. */
void kn_train_state_init(kn_train_state *s);

/* Everything a training checkpoint's metadata records: the state, and what else decides
 * the bits of the next step (seed, optimizer count and kind, normalisation, threads,
 * micro-batch, algorithms, instruction set, the config). */
typedef struct {
    const char *kind; /* "train" */
    kn_train_state s;
    uint64_t seed;
    int64_t optimizer_t, optimizer_kind;
    uint64_t config_hash;
    double data_mean, data_std;
    int64_t threads, micro_batch;
    const char *algorithms, *isa_path, *config;
    /* a typed source: the input's normalisation (kn_norm_to_string) and the class names
     * of text labels (kn_classmap_to_string); NULL or "" (then not written) otherwise */
    const char *data_norm, *data_classes;
} kn_ckpt_record;

typedef enum { KN_FIELD_I64, KN_FIELD_U64, KN_FIELD_F64, KN_FIELD_HEX64, KN_FIELD_STR } kn_field_type;

enum {
    KN_FIELD_RESTORE = 1, /* required in a training checkpoint; read back on resume */
    KN_FIELD_CHECK = 2,   /* validated when present (kn_ckpt_check_train_meta) */
    KN_FIELD_NAN_OK = 4,  /* NaN is a valid value (the running loss of a diverged run) */
    KN_FIELD_OMIT_EMPTY = 8, /* a string written only when not empty */
};

typedef struct {
    const char *key;
    kn_field_type type;
    size_t offset; /* in kn_ckpt_record */
    unsigned flags;
    int64_t imin, imax; /* I64 */
    double fmin, fmax;  /* F64 */
    uint64_t umax;      /* U64 */
} kn_state_field;

/* The table, in the order of the metadata, ended by a NULL key. */
extern const kn_state_field kn_ckpt_fields[];
/* The field of a key, or NULL. */
const kn_state_field *kn_ckpt_field(const char *key);

/* The metadata of r, in table order: meta[i] = {key, text}; numbers are written into
 * buf (one 64-byte slot per field), strings point into r. Returns the count. */
#define KN_CKPT_MAX_FIELDS 32
int kn_ckpt_record_meta(const kn_ckpt_record *r, char (*buf)[64], kn_ckpt_meta *meta);

/* Read every KN_FIELD_RESTORE field of a training checkpoint into r, each validated
 * (missing, malformed or out of range: an error naming the file, the key and the value);
 * the other fields of r are left as they are. */
int kn_ckpt_record_read(kn_ctx *ctx, const kn_ckpt *c, kn_ckpt_record *r);

#endif
