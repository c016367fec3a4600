/* kiln — checkpoints in the safetensors format (8-byte little-endian header length,
 * JSON header, raw little-endian data, offsets contiguous to the end of the file).
 * Non-tensor state goes in "__metadata__" as strings, with "format": "pt", a CRC-32
 * of the whole file ("kiln_file_crc32", the first metadata entry: it covers the
 * metadata too) and one of the data section ("kiln_crc32", what older kiln checks).
 * Written atomically: temporary file in the same directory, fsync, rename, fsync of
 * the directory. See docs/FORMATS.md. */
#ifndef KN_CHECKPOINT_H
#define KN_CHECKPOINT_H

#include "graph/graph.h"

/* Every file kiln writes starts its header with these bytes, then the 8 hex digits of
 * the CRC-32 (zlib) of the whole file computed with those 8 digits as ASCII '0'. */
#define KN_FILE_CRC_PREFIX "{\"__metadata__\":{\"kiln_file_crc32\":\""

typedef struct {
    const char *name;
    kn_shape shape;
    const float *data;
} kn_ckpt_tensor_in;

typedef struct {
    const char *key;
    const char *value;
} kn_ckpt_meta;

/* Write every store entry (parameters and states) plus `extra` tensors, with the
 * given metadata, atomically to `path`. */
int kn_ckpt_save(kn_ctx *ctx, const char *path, const kn_store *s, const kn_ckpt_tensor_in *extra, int nextra,
                 const kn_ckpt_meta *meta, int nmeta);

/* fsync the directory that holds path, so that a rename or link in it is durable. */
void kn_fsync_parent(const char *path);

typedef struct kn_ckpt kn_ckpt;
/* Read and verify a checkpoint: structure, offsets, dtypes, and the CRC-32 when present.
 * Errors name the path and what is wrong (truncated, corrupt header, checksum mismatch).
 * Nothing in the file is trusted: every number is checked to be a whole number in range
 * before use, sizes are computed with overflow checks, and the tensors must tile the
 * data section (no gap, no overlap). Any safetensors dtype is accepted; only F32
 * tensors are readable (kn_ckpt_count/name/get), the others are listed apart. */
int kn_ckpt_open(kn_ctx *ctx, const char *path, kn_ckpt **out);
/* The same from a buffer holding the whole file; `path` only names it in messages. */
int kn_ckpt_open_mem(kn_ctx *ctx, const char *path, const unsigned char *buf, size_t size, kn_ckpt **out);
void kn_ckpt_close(kn_ckpt *c);
/* Metadata string or NULL. */
const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key);
/* Tensor by name: F32 data (aligned copy owned by c) and shape; KN_ERR_FORMAT if absent. */
int kn_ckpt_get(kn_ctx *ctx, const kn_ckpt *c, const char *name, const float **data, kn_shape *shape);
/* The F32 tensors. */
int kn_ckpt_count(const kn_ckpt *c);
const char *kn_ckpt_name(const kn_ckpt *c, int i);
/* Tensors of other dtypes (e.g. PyTorch's I64 num_batches_tracked): name, dtype, shape. */
int kn_ckpt_other_count(const kn_ckpt *c);
const char *kn_ckpt_other(const kn_ckpt *c, int i, const char **dtype, kn_shape *shape);
/* What was verified: 2 the whole file (metadata included), 1 the data section only (a
 * checkpoint of kiln 0.1.0 before the whole-file CRC), 0 nothing (not written by kiln). */
int kn_ckpt_checksum(const kn_ckpt *c);
/* Copy every store entry from the checkpoint; names and shapes must match. */
int kn_ckpt_load_store(kn_ctx *ctx, const kn_ckpt *c, kn_store *s);
/* --init-from: kn_ckpt_load_store, and every other tensor in the file must be one the
 * model can do without: kiln's optimizer state (optimizer.m.*, optimizer.v.*) or
 * PyTorch BatchNorm's integer counter *.num_batches_tracked; any other is an error
 * naming it (a tensor read and ignored would hide a model mismatch). */
int kn_ckpt_load_init(kn_ctx *ctx, const kn_ckpt *c, kn_store *s);

/* Metadata values, validated: missing, not a number in the strict sense (decimal
 * integer / strtod syntax, nothing after it) or outside [min, max] is an error naming
 * the file, the key and the value. NaN is never in range. */
int kn_ckpt_meta_i64(kn_ctx *ctx, const kn_ckpt *c, const char *key, int64_t min, int64_t max, int64_t *out);
int kn_ckpt_meta_u64(kn_ctx *ctx, const kn_ckpt *c, const char *key, uint64_t max, uint64_t *out);
int kn_ckpt_meta_f64(kn_ctx *ctx, const kn_ckpt *c, const char *key, double min, double max, double *out);
/* The same with the range kiln allows for its own keys (docs/FORMATS.md, e.g. epoch
 * 0..1000000, optimizer_kind 0..2, guard_lr_scale in (0, 1]); a key it does not know
 * gets 0..2^53 (integers) or any finite value (numbers). */
int kn_ckpt_meta_int(kn_ctx *ctx, const kn_ckpt *c, const char *key, int64_t *out);
int kn_ckpt_meta_num(kn_ctx *ctx, const kn_ckpt *c, const char *key, double *out);
/* Every training-state key of a kiln training checkpoint ("kind" = "train"), each
 * checked against kn_ckpt_meta_limits: what `kiln resume` reads. */
int kn_ckpt_check_train_meta(kn_ctx *ctx, const kn_ckpt *c);

#endif
