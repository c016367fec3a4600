/* kiln — data: IDX files (plain or gzip, via zlib), datasets, seeded shuffling,
 * batching and a prefetch thread. Nothing here knows about graphs. */
#ifndef KN_DATA_H
#define KN_DATA_H

#include "core/core.h"

/* An IDX file of unsigned bytes (type 0x08), 1 to 4 dimensions. */
typedef struct {
    int nd;
    int64_t dims[4];
    uint8_t *data; /* malloc'ed, prod(dims) bytes */
} kn_idx;

/* Load an IDX file, gzip-compressed or not (detected from content). Errors name the
 * path and say what is wrong: missing file, unreadable, bad magic, unsupported
 * element type, truncated data (expected N bytes, found M), trailing garbage,
 * corrupt gzip stream. */
int kn_idx_load(kn_ctx *ctx, const char *path, kn_idx *out);
/* The header only (dimensions), with every check kn_idx_load makes of it (magic, type,
 * 1 to 4 dimensions each at least 1, at most 2^31 bytes in all): what the planner uses
 * before loading the data. */
int kn_idx_peek(kn_ctx *ctx, const char *path, int *nd, int64_t dims[4]);
void kn_idx_free(kn_idx *x);
/* Write an IDX u8 file (gzip-compressed if gz != 0). Used by tests and tools. */
int kn_idx_write(kn_ctx *ctx, const char *path, int nd, const int64_t *dims, const uint8_t *data,
                 int gz);

/* An image-classification dataset held in memory as bytes. */
typedef struct {
    int64_t n;         /* samples */
    int channels, rows, cols;
    int nclasses;      /* max label + 1 */
    uint8_t *images;   /* n * channels*rows*cols */
    uint8_t *labels;   /* n */
} kn_dataset;

/* Load images + labels IDX pair; checks that counts match and labels < 256. */
int kn_dataset_load(kn_ctx *ctx, const char *images_path, const char *labels_path,
                    kn_dataset *out);
void kn_dataset_free(kn_dataset *d);
/* Every one of the n labels is below nclasses (the model's class count), else an error
 * naming the labels file, the first sample (0-based) with a label out of range, and how
 * many there are. */
int kn_labels_check(kn_ctx *ctx, const char *path, const uint8_t *labels, int64_t n, int nclasses);
/* The same for a loaded dataset (its first d->n samples); on success d->nclasses becomes
 * nclasses (the data may hold fewer classes than the model has outputs). */
int kn_dataset_check_labels(kn_ctx *ctx, kn_dataset *d, const char *labels_path, int nclasses);
/* Mean and standard deviation of all pixel values scaled to [0,1]. */
void kn_dataset_stats(const kn_dataset *d, double *mean, double *std);
/* The same over the n samples idx[0..n-1] (idx NULL: samples 0..n-1), e.g. the
 * training split only, so that validation images do not leak into normalisation. */
void kn_dataset_stats_subset(const kn_dataset *d, const int64_t *idx, int64_t n, double *mean, double *std);
/* Seeded split: a permutation of 0..n-1 from `seed`; the first n - nval go to
 * train, the rest to validation. Arrays malloc'ed. */
int kn_dataset_split(kn_ctx *ctx, int64_t n, int64_t nval, uint64_t seed, int64_t **train_idx,
                     int64_t *ntrain, int64_t **val_idx, int64_t *nval_out);

/* Batches from a dataset (or a subset given by indices), normalised to
 * (x/255 - mean)/std as float32 NCHW, labels as int32.
 * The order of epoch e is a Fisher-Yates shuffle seeded from (seed, e): it depends only
 * on the seed and the epoch number, so a run can resume mid-epoch from (epoch, batch).
 * With prefetch, a background thread prepares the next batches into a ring of
 * buffers allocated at creation (no allocation per batch). */
typedef struct kn_loader kn_loader;
struct kn_table; /* data/source.h */

typedef struct {
    const kn_dataset *ds;
    const int64_t *indices; /* NULL: all samples */
    int64_t n;              /* number of indices (ignored if indices == NULL) */
    int batch;
    int shuffle;
    int drop_last;          /* training: drop the last incomplete batch */
    uint64_t seed;
    float mean, std;
    int prefetch;           /* 0: synchronous; >0: ring depth */
    /* Instead of ds: a table (data/source.h) whose float32 field x_field is the input and
     * whose field y_field the target (int32 class labels or float32 values; any per-sample
     * shape), both copied as they are (a table is normalised when it is loaded). */
    const struct kn_table *table;
    int x_field, y_field;
} kn_loader_config;

int kn_loader_create(kn_ctx *ctx, const kn_loader_config *cfg, kn_loader **out);
/* Batches per epoch. */
int64_t kn_loader_batches(const kn_loader *L);
/* Start epoch `epoch` at batch `first_batch` (0 normally; >0 when resuming). */
void kn_loader_start_epoch(kn_loader *L, int64_t epoch, int64_t first_batch);
/* Copy the next batch into x (batch*C*H*W floats, or batch * the table input's elements)
 * and y (batch int32 labels, or batch * the table target's 4-byte elements). Returns the
 * number of samples in it (== batch except possibly the last one when !drop_last; the
 * rest is zero), 0 at the end of the epoch. */
int kn_loader_next(kn_loader *L, float *x, void *y);
/* Elements per sample of x and y. */
int64_t kn_loader_x_elems(const kn_loader *L);
int64_t kn_loader_y_elems(const kn_loader *L);
void kn_loader_free(kn_loader *L);

#endif
