/* kiln — data input: a file read as plain bytes or as a gzip stream (told from its
 * first two bytes), with every gzip member's trailer verified. Shared by the IDX, CSV
 * and .npy readers. Internal to src/data. */
#ifndef KN_DATA_INPUT_H
#define KN_DATA_INPUT_H

#include <stdio.h>
#include <zlib.h>

#include "core/core.h"

/* zlib's gzread is not used for reading: when the compressed data ends exactly at the
 * end of the file (a gzip file whose 8-byte trailer was cut off), gzread reports a
 * clean end of file and the CRC-32 and length are never checked. Here inflate() must
 * reach Z_STREAM_END for every member (it verifies the trailer there), members may be
 * concatenated (as gzip allows), and anything else after the last one is an error. */
typedef struct {
    FILE *f;
    const char *path; /* borrowed: must outlive the kn_in */
    int gz;           /* 1: gzip (magic 1f 8b) */
    int zinit;
    int ended;        /* gzip: the last member ended cleanly (no more input) */
    int cut;          /* gzip: the input ended inside a member */
    z_stream z;
    unsigned char in[1 << 16];
} kn_in;

/* Open `path`. A missing file is an error naming it; `missing_hint` (may be NULL) is
 * appended to that message in parentheses (e.g. which package provides the file). */
int kn_in_open(kn_ctx *ctx, kn_in *s, const char *path, const char *missing_hint);
/* Read up to len bytes; returns bytes read (short only at the end of the data) or -1 on
 * an error (message in ctx, code in *rc). s->cut tells a gzip stream that ended early. */
int64_t kn_in_read(kn_ctx *ctx, kn_in *s, uint8_t *buf, int64_t len, int *rc);
void kn_in_close(kn_in *s);

/* The whole content of `path` (after gunzip), at most max_bytes bytes (more is an
 * error naming the limit). *data is malloc'ed, size *n plus one NUL byte (so that text
 * can be parsed in place); *gz tells whether it was compressed (may be NULL). A gzip
 * stream cut short or followed by garbage is an error. */
int kn_in_slurp(kn_ctx *ctx, const char *path, int64_t max_bytes, uint8_t **data, int64_t *n, int *gz);

#endif
