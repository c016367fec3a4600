/* kiln — the JSON-lines metric sink: metrics.jsonl, one record per line,
 * {"event":E,name:value,...} in the record's order (docs/FORMATS.md). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/sinks/sink.h"

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

static void jl_write(kn_sink *s, const kn_record *r) {
    FILE *f = s->state;
    fprintf(f, "{\"event\":");
    json_str(f, r->event);
    for (int i = 0; i < r->n; i++) {
        const kn_metric_value *v = &r->v[i];
        fprintf(f, ",\"%s\":", v->name);
        switch (v->kind) {
        case KN_MV_INT: fprintf(f, "%lld", (long long)v->i); break;
        case KN_MV_G9: fprintf(f, "%.9g", v->x); break;
        case KN_MV_F6: fprintf(f, "%.6f", v->x); break;
        case KN_MV_F3: fprintf(f, "%.3f", v->x); break;
        case KN_MV_STR: json_str(f, v->s); break;
        case KN_MV_RAW: fputs(v->s ? v->s : "null", f); break;
        }
    }
    fprintf(f, "}\n");
}

static void jl_flush(kn_sink *s) { fflush(s->state); }

static int64_t jl_mark(kn_sink *s) {
    fflush(s->state);
    return (int64_t)ftell(s->state);
}

static int jl_rewind(kn_sink *s, int64_t pos) {
    FILE *f = s->state;
    fflush(f);
    if (ftruncate(fileno(f), (off_t)pos) != 0) return KN_ERR_IO;
    fseek(f, 0, SEEK_END);
    return KN_OK;
}

static void jl_close(kn_sink *s) {
    if (s->state) fclose(s->state);
    s->state = NULL;
}

static const kn_sink_ops k_jsonl = {"jsonl", jl_write, jl_flush, jl_mark, jl_rewind, jl_close};

int kn_sink_jsonl_open(kn_ctx *ctx, const char *path, int64_t resume_bytes, kn_sink *out, FILE **file) {
    FILE *f;
    if (resume_bytes >= 0) {
        struct stat msb; /* cut back, never extend (a file shorter than recorded stays as it is) */
        if (stat(path, &msb) == 0 && msb.st_size > resume_bytes && truncate(path, (off_t)resume_bytes) != 0 && errno != ENOENT)
            return kn_err(ctx, KN_ERR_IO, "cannot truncate '%s': %s", path, strerror(errno));
        f = fopen(path, "a");
    } else {
        f = fopen(path, "w");
    }
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    out->ops = &k_jsonl;
    out->state = f;
    if (file) *file = f;
    return KN_OK;
}
