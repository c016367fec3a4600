/* kiln — checkpoints in the safetensors format (8-byte little-endian header length,
 * JSON header, raw little-endian data, offsets contiguous to the end of the file).
 * Non-tensor state goes in "__metadata__" as strings, with "format": "pt" and a
 * CRC-32 of the data section ("kiln_crc32"). Written atomically: temporary file in
 * the same directory, fsync, rename, fsync of the directory. See docs/FORMATS.md. */
#ifndef KN_CHECKPOINT_H
#define KN_CHECKPOINT_H

#include "graph/graph.h"

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

typedef struct kn_ckpt kn_ckpt;
/* Read and verify a checkpoint: structure, offsets, dtypes, and the CRC-32 when present.
 * Errors name the path and what is wrong (truncated, corrupt header, checksum mismatch). */
int kn_ckpt_open(kn_ctx *ctx, const char *path, kn_ckpt **out);
void kn_ckpt_close(kn_ckpt *c);
/* Metadata string or NULL. */
const char *kn_ckpt_meta_get(const kn_ckpt *c, const char *key);
/* Tensor by name: F32 data (aligned copy owned by c) and shape; KN_ERR_FORMAT if absent. */
int kn_ckpt_get(kn_ctx *ctx, const kn_ckpt *c, const char *name, const float **data, kn_shape *shape);
int kn_ckpt_count(const kn_ckpt *c);
const char *kn_ckpt_name(const kn_ckpt *c, int i);
/* Copy every store entry from the checkpoint; names and shapes must match. */
int kn_ckpt_load_store(kn_ctx *ctx, const kn_ckpt *c, kn_store *s);

#endif
