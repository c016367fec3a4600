/* kiln — typed data sources: arrays read from IDX (every element type) and NumPy .npy
 * files, CSV/TSV tables (libcsv), a table of named per-sample tensors, seeded splits,
 * normalisation statistics and class mappings that round-trip through checkpoint
 * metadata strings. Nothing here knows about graphs, models or the trainer: a later
 * step wires kn_table into the model builder (named inputs) and the loader.
 *
 * Ownership: every struct that holds memory has a *_free function that frees it and
 * zeroes the struct; on error every output is left zeroed (safe to free). Errors name
 * the file (and line, row, column where they apply), what was expected and what to do. */
#ifndef KN_DATA_SOURCE_H
#define KN_DATA_SOURCE_H

#include "core/core.h"

/* The largest data file kiln reads (after gunzip), and the largest array in it. */
#define KN_DATA_MAX_BYTES ((int64_t)1 << 34)

/* ---------------- arrays read from files ---------------- */
typedef enum { KN_EL_U8, KN_EL_I8, KN_EL_I16, KN_EL_I32, KN_EL_I64, KN_EL_F32, KN_EL_F64 } kn_eltype;
const char *kn_eltype_name(kn_eltype t); /* "uint8", "int8", ..., "float64" */
size_t kn_eltype_size(kn_eltype t);

/* An N-D array (1 to KN_MAX_DIMS dimensions, each at least 1 unless the format allows
 * 0, e.g. an empty .npy), in the host's byte order. dims[0] is the sample count. */
typedef struct {
    kn_eltype type;
    int nd;
    int64_t dims[KN_MAX_DIMS];
    int64_t numel;  /* prod(dims) */
    void *data;     /* malloc'ed, numel * kn_eltype_size(type) bytes */
} kn_array;
void kn_array_free(kn_array *a);

/* An IDX file of any element type the format defines: 0x08 u8, 0x09 i8, 0x0B i16,
 * 0x0C i32, 0x0D f32, 0x0E f64 (big-endian on disk), 1 to 5 dimensions, gzip or not.
 * The same checks as kn_idx_load (magic, dimensions >= 1, truncation, trailing bytes,
 * gzip trailer); the data is at most KN_DATA_MAX_BYTES. */
int kn_idx_read(kn_ctx *ctx, const char *path, kn_array *out);
/* Write an IDX file of element type t (big-endian; gzip if gz). Tests and tools. */
int kn_idx_write_typed(kn_ctx *ctx, const char *path, kn_eltype t, int nd, const int64_t *dims, const void *data,
                       int gz);

/* A NumPy .npy file (format versions 1.0, 2.0 and 3.0), gzip or not: dtype '<f4',
 * '<f8', '<i4', '<i8', '|u1' (any other dtype is an error naming it), C order (fortran_order True is an error), shape of 1 to 5 dimensions (a
 * 0-d array is an error), the data exactly prod(shape) elements. */
int kn_npy_read(kn_ctx *ctx, const char *path, kn_array *out);
/* Write a .npy file (version 1.0) of a float32, float64, int32, int64 or uint8 array. */
int kn_npy_write(kn_ctx *ctx, const char *path, const kn_array *a);

/* ---------------- class mapping ----------------
 * Labels as written in a file (strings: "malignant", "2", "class_0") mapped to class
 * indices 0..n-1 in a stated, deterministic order: if every label is a number, by
 * numeric value; otherwise by byte order (strcmp), as scikit-learn's LabelEncoder. */
typedef struct {
    int n;          /* classes */
    char **names;   /* n malloc'ed strings: names[k] is the label of class k */
} kn_classmap;
void kn_classmap_free(kn_classmap *m);
/* Class of `label`, -1 if unknown. */
int kn_classmap_find(const kn_classmap *m, const char *label);
/* A JSON array of the names (malloc'ed), e.g. ["benign","malignant"], for checkpoint
 * metadata; kn_classmap_from_string reads it back (errors say what is wrong). */
char *kn_classmap_to_string(const kn_classmap *m);
int kn_classmap_from_string(kn_ctx *ctx, const char *s, kn_classmap *out);

/* ---------------- tables of named per-sample tensors ---------------- */
#define KN_FIELD_NAME 32
#define KN_MAX_CLASSES (1 << 24) /* class labels 0 .. 2^24-1 */
#define KN_MAX_FIELDS 8

typedef enum { KN_FIELD_INPUT = 0, KN_FIELD_CLASS, KN_FIELD_REAL } kn_field_kind;

/* One named tensor per sample: n samples of `sample_shape` (nd 0: a scalar) of dtype
 * KN_F32 or KN_I32, stored sample after sample (row-major). A class-label field
 * (kind KN_FIELD_CLASS, KN_I32, e.g. shape () for one label per sample or (T,) for one
 * label per position) holds values 0..nclasses-1 and may carry the mapping from the
 * file's labels; a regression target is a KN_FIELD_REAL KN_F32 field. */
typedef struct {
    char name[KN_FIELD_NAME];   /* "image", "features", "label", "target", ... */
    kn_field_kind kind;
    kn_dtype dtype;             /* KN_F32 or KN_I32 */
    kn_shape sample_shape;
    int64_t sample_numel;       /* prod(sample_shape) (1 for a scalar) */
    void *data;                 /* malloc'ed, n * sample_numel elements; owned by the table */
    int nclasses;               /* class fields: number of classes (max label + 1 or the mapping's n) */
    kn_classmap classes;        /* class fields read from text labels: the mapping (n 0 if none) */
    char **column_names;        /* CSV fields: sample_numel column names (or NULL) */
} kn_field;

typedef struct kn_table {
    int64_t n;                  /* samples (rows) */
    int nfields;
    kn_field fields[KN_MAX_FIELDS];
} kn_table;

void kn_table_free(kn_table *t);
/* Add a field; the table takes ownership of `data` (also on error, when it is freed).
 * The first field sets t->n; later ones must have the same n (else an error naming
 * both fields). Names are unique, at most KN_FIELD_NAME-1 characters. */
int kn_table_add(kn_ctx *ctx, kn_table *t, const char *name, kn_field_kind kind, kn_dtype dtype,
                 const kn_shape *sample_shape, int64_t n, void *data);
/* Field by name, NULL if absent. */
kn_field *kn_table_field(kn_table *t, const char *name);
/* A field from an array: dims[0] samples of shape dims[1..]; converted to dtype:
 * integers to KN_I32 (an int64 outside the int32 range is an error naming the element),
 * anything to KN_F32 (a float64 that does not fit a float32, or any non-finite value, is
 * an error naming the element). `path` names the file in messages. The array is freed. */
int kn_table_add_array(kn_ctx *ctx, kn_table *t, const char *path, const char *name, kn_field_kind kind,
                       kn_dtype dtype, kn_array *a);
/* Move every field of `b` into `a` (features from one file, targets from another, paired
 * row by row); a different sample count is an error naming both files and both counts.
 * b is left empty; on error both are freed. */
int kn_table_pair(kn_ctx *ctx, kn_table *a, const char *a_path, kn_table *b, const char *b_path);
/* The rows idx[0..n-1] of t as a new table (copies; class mappings copied too). */
int kn_table_subset(kn_ctx *ctx, const kn_table *t, const int64_t *idx, int64_t n, kn_table *out);

/* Seeded split for any source (kn_dataset_split semantics: a permutation of 0..n-1 from
 * seed, the first n - floor(fraction * n) go to the first part, the rest to the second,
 * each sorted). fraction in [0, 1); also used for the train/test split of a single-file
 * source (fraction = test_split) and for validation (fraction = validation_split). */
int kn_split_indices(kn_ctx *ctx, int64_t n, double fraction, uint64_t seed, int64_t **first, int64_t *nfirst,
                     int64_t **second, int64_t *nsecond);
/* t split into two tables by kn_split_indices. */
int kn_table_split(kn_ctx *ctx, const kn_table *t, double fraction, uint64_t seed, kn_table *first, kn_table *second);

/* ---------------- normalisation ----------------
 * Statistics of a KN_F32 field over a subset of samples (the training split only), in
 * double: per feature (one mean/std per element of the sample shape), per channel (one
 * per index of the sample shape's first axis, over the rest: images (C,H,W)) or global
 * (one over everything). Population std (divide by the count, as scikit-learn's
 * StandardScaler); a std of 0 (a constant feature) becomes 1, and the note says which. */
typedef enum { KN_NORM_NONE = 0, KN_NORM_PER_FEATURE, KN_NORM_PER_CHANNEL, KN_NORM_GLOBAL } kn_norm_kind;
typedef struct {
    kn_norm_kind kind;
    int64_t count;      /* number of (mean, std) pairs */
    int64_t inner;      /* elements per pair and sample: 1 per feature, H*W per channel */
    double *mean, *std; /* count each, malloc'ed */
} kn_norm;
void kn_norm_free(kn_norm *z);
/* Fit on the samples idx[0..n-1] of f (idx NULL: 0..n-1); n >= 1. note (may be NULL)
 * gets "" or a sentence about constant features. */
int kn_norm_fit(kn_ctx *ctx, const kn_field *f, const int64_t *idx, int64_t n, kn_norm_kind kind, kn_norm *out,
                char *note, size_t note_size);
/* x = (x - mean) / std over n samples of `sample_numel` floats (a field's data or a
 * batch): the statistics must fit the sample size (else an error). */
int kn_norm_apply(kn_ctx *ctx, const kn_norm *z, float *x, int64_t n, int64_t sample_numel);
/* "per_feature;3;1.5,2.25,...;0.5,1,..." (kind; count; means; stds; each %.17g, so that
 * kn_norm_from_string gives back the same doubles bit for bit). malloc'ed. */
char *kn_norm_to_string(const kn_norm *z);
int kn_norm_from_string(kn_ctx *ctx, const char *s, kn_norm *out);
const char *kn_norm_kind_name(kn_norm_kind k); /* "none", "per_feature", "per_channel", "global" */

/* ---------------- CSV / TSV ---------------- */
typedef struct {
    char delimiter;       /* ',', '\t', ';', '|', ...; 0: whitespace (runs of blanks and tabs are one separator,
                             leading and trailing blanks ignored) */
    int header;           /* 1: the first row (after skip_lines) names the columns */
    int64_t skip_lines;   /* physical lines skipped before anything is parsed (a preamble) */
} kn_csv_opts;

/* A CSV file as a grid of text cells. Empty lines are skipped; quoted fields may hold
 * delimiters, quotes ("") and newlines; every row has the same number of fields. */
typedef struct {
    const char *path;     /* borrowed */
    int64_t nrows;        /* data rows (the header not counted) */
    int ncols;
    char **header;        /* ncols names (header = 1) or NULL */
    int64_t *line;        /* nrows: 1-based line in the file where each row starts */
    int64_t *cell;        /* nrows * ncols offsets into text */
    char *text;           /* the cells, each NUL-terminated */
    int64_t text_len, text_cap;
} kn_csv;
int kn_csv_read(kn_ctx *ctx, const char *path, const kn_csv_opts *o, kn_csv *out);
/* The same on text in memory (`name` stands for the path in messages). */
int kn_csv_parse(kn_ctx *ctx, const char *name, const char *text, int64_t len, const kn_csv_opts *o, kn_csv *out);
void kn_csv_free(kn_csv *c);
static inline const char *kn_csv_at(const kn_csv *c, int64_t row, int col) { return c->text + c->cell[row * c->ncols + col]; }

/* Columns chosen by a selection string, in the order given: comma-separated items, each
 * a 0-based index, a negative index (-1 the last column), a range "a:b" (b excluded; a
 * or b may be left out, negative allowed, Python-style), a header name, or "all". A
 * column listed in `exclude` (n_exclude entries, may be 0) is left out of ranges and
 * "all" ("all but the target"), and naming it explicitly is an error. No column twice.
 * *cols is malloc'ed. `what` names the key in messages ("features"). */
int kn_csv_select(kn_ctx *ctx, const kn_csv *c, const char *sel, const int *exclude, int n_exclude, const char *what,
                  int **cols, int *ncols);
/* The chosen columns as float32, rows x ncols; a missing or non-numeric cell is an error
 * naming file:line, row and column (number and name). *out malloc'ed. */
int kn_csv_numbers(kn_ctx *ctx, const kn_csv *c, const int *cols, int ncols, float **out);
/* One column as class labels 0..K-1 (kn_classmap order); *labels malloc'ed (nrows). */
int kn_csv_labels(kn_ctx *ctx, const kn_csv *c, int col, int32_t **labels, kn_classmap *map);

/* ---------------- a [data] source described in a config ---------------- */
typedef enum { KN_SRC_IDX = 0, KN_SRC_CSV, KN_SRC_NPY } kn_source_kind;
typedef enum { KN_TARGET_CLASS = 0, KN_TARGET_REAL } kn_target_kind;

#define KN_SPEC_PATH 4096
#define KN_SPEC_SEL 1024
typedef struct {
    kn_source_kind kind;
    char path[KN_SPEC_PATH];          /* features (and, for CSV without targets_path, the targets) */
    char targets_path[KN_SPEC_PATH];  /* "" : targets come from `path` */
    char test_path[KN_SPEC_PATH];     /* "" : the test set is split off (test_split) */
    char test_targets_path[KN_SPEC_PATH];
    kn_csv_opts csv;                  /* delimiter, header, skip_lines (CSV) */
    char features[KN_SPEC_SEL];       /* CSV column selection; "" = all but the target */
    char target[KN_SPEC_SEL];         /* CSV column selection of the target; "" = the last column */
    kn_target_kind target_kind;       /* class (labels mapped to 0..K-1) or real (regression) */
    double test_split;                /* fraction held out for test (single-file sources) */
    double validation_split;          /* fraction of the training part held out for validation */
    uint64_t split_seed;
    kn_norm_kind normalize;
    char input_name[KN_FIELD_NAME];   /* name of the features field: "features" (CSV, npy) or "image" (IDX) */
    char target_name[KN_FIELD_NAME];  /* "label" (class) or "target" (real) */
} kn_source_spec;

/* Read a [data] section that has `source = ...` into a spec, with every value checked
 * (messages FILE:LINE: [data] key = 'value': expected ...), unknown keys and keys that
 * do not apply to the source (`delimiter` with source = npy) are errors. Relative
 * paths are taken relative to base_dir (NULL: as they are). */
int kn_source_spec_read(kn_ctx *ctx, const kn_config *cfg, const char *section, const char *base_dir,
                        kn_source_spec *out);
/* A spec with the defaults (source kind given). */
void kn_source_spec_default(kn_source_spec *s, kn_source_kind kind);
/* Load what a spec describes: a table with the input field and the target field.
 * test: the test set (from test_path, or split off by test_split from the same file
 * with split_seed); both tables hold all their rows (validation is split off later
 * with kn_split_indices(validation_split, split_seed) on train). test may be NULL
 * (then nothing is split off); with neither test_path nor test_split, *test is empty
 * (n 0, no fields). IDX images of 3 dimensions (N, rows, cols) get one channel axis:
 * samples (1, rows, cols), as kn_dataset_load reads them. */
int kn_source_load(kn_ctx *ctx, const kn_source_spec *s, kn_table *train, kn_table *test);

#endif
