/* kiln — metric sinks: every record of a training run (step, epoch, guard event,
 * warning, leakage, early stop, test, checkpoint time) goes to every sink the same way.
 * A record is an event name and a list of named values; each value says how it is
 * written as text (so the JSON-lines sink gives the exact bytes of kiln 0.1's
 * metrics.jsonl) and a numeric sink (TensorBoard: tag = event/name, scalar = value)
 * takes the numbers and ignores the rest. A sink is a table of functions over its own
 * state: write, flush, and for a sink that is a file the run can cut back (metrics.jsonl
 * is cut to its length at the checkpoint a run resumes from, or rolled back to with the
 * guard) mark and rewind. Sinks are called by the trainer's parts, never from a kernel
 * or the guard's checks (guard.c).
 *
 * Today: jsonl.c (metrics.jsonl). The per-layer health records are written by health.c
 * into the JSON-lines file itself (kn_sinks_jsonl_file); turning them into records is
 * the next step for a TensorBoard sink. */
#ifndef KN_SINK_H
#define KN_SINK_H

#include <stdint.h>
#include <stdio.h>

#include "core/core.h"

typedef enum {
    KN_MV_INT,  /* integer */
    KN_MV_G9,   /* %.9g */
    KN_MV_F6,   /* %.6f */
    KN_MV_F3,   /* %.3f */
    KN_MV_STR,  /* a string (JSON-escaped) */
    KN_MV_RAW,  /* JSON text as it is (an array) */
} kn_mv_kind;

typedef struct {
    const char *name;
    kn_mv_kind kind;
    int64_t i;
    double x;
    const char *s;
} kn_metric_value;

#define KN_RECORD_MAX 16
typedef struct {
    const char *event;
    int n;
    kn_metric_value v[KN_RECORD_MAX];
} kn_record;

void kn_rec_begin(kn_record *r, const char *event);
void kn_rec_int(kn_record *r, const char *name, int64_t v);
void kn_rec_num(kn_record *r, const char *name, kn_mv_kind kind, double v);
void kn_rec_str(kn_record *r, const char *name, const char *s);
void kn_rec_raw(kn_record *r, const char *name, const char *json);

typedef struct kn_sink kn_sink;
typedef struct {
    const char *name;
    void (*write)(kn_sink *s, const kn_record *r);
    void (*flush)(kn_sink *s);
    /* optional: a position to rewind to (flushes first); -1 when not a file */
    int64_t (*mark)(kn_sink *s);
    int (*rewind)(kn_sink *s, int64_t pos);
    void (*close)(kn_sink *s);
} kn_sink_ops;
struct kn_sink {
    const kn_sink_ops *ops;
    void *state;
};

#define KN_MAX_SINKS 4
typedef struct {
    kn_sink s[KN_MAX_SINKS];
    int n;
    FILE *jsonl; /* the JSON-lines file, for writers of their own lines (health.c) */
} kn_sinks;

/* The JSON-lines sink on path: a new file, or (resume_bytes >= 0) the file of a resumed
 * run cut back to resume_bytes (never extended: a shorter file stays as it is). */
int kn_sink_jsonl_open(kn_ctx *ctx, const char *path, int64_t resume_bytes, kn_sink *out, FILE **file);

int kn_sinks_add(kn_sinks *ss, kn_sink s);
void kn_sinks_write(kn_sinks *ss, const kn_record *r);
void kn_sinks_flush(kn_sinks *ss);
/* The position of the JSON-lines file after a flush (the metrics_bytes of a checkpoint). */
int64_t kn_sinks_mark(kn_sinks *ss);
/* Cut the file sinks back to a mark (the guard's rollback). */
void kn_sinks_rewind(kn_sinks *ss, int64_t pos);
FILE *kn_sinks_jsonl_file(const kn_sinks *ss);
void kn_sinks_close(kn_sinks *ss);

#endif
