/* kiln — records and the list of metric sinks (sink.h). */
#include "train/sinks/sink.h"

#include <string.h>

static kn_metric_value *add(kn_record *r, const char *name, kn_mv_kind kind) {
    if (r->n >= KN_RECORD_MAX) return NULL; /* records are made by kiln's code with fixed fields */
    kn_metric_value *v = &r->v[r->n++];
    memset(v, 0, sizeof *v);
    v->name = name;
    v->kind = kind;
    return v;
}

void kn_rec_begin(kn_record *r, const char *event) {
    r->event = event;
    r->n = 0;
}
void kn_rec_int(kn_record *r, const char *name, int64_t x) {
    kn_metric_value *v = add(r, name, KN_MV_INT);
    if (v) v->i = x;
}
void kn_rec_num(kn_record *r, const char *name, kn_mv_kind kind, double x) {
    kn_metric_value *v = add(r, name, kind);
    if (v) v->x = x;
}
void kn_rec_str(kn_record *r, const char *name, const char *s) {
    kn_metric_value *v = add(r, name, KN_MV_STR);
    if (v) v->s = s;
}
void kn_rec_raw(kn_record *r, const char *name, const char *json) {
    kn_metric_value *v = add(r, name, KN_MV_RAW);
    if (v) v->s = json;
}

int kn_sinks_add(kn_sinks *ss, kn_sink s) {
    if (ss->n >= KN_MAX_SINKS) return KN_ERR_INVALID;
    ss->s[ss->n++] = s;
    return KN_OK;
}

void kn_sinks_write(kn_sinks *ss, const kn_record *r) {
    for (int i = 0; i < ss->n; i++) ss->s[i].ops->write(&ss->s[i], r);
}

void kn_sinks_flush(kn_sinks *ss) {
    for (int i = 0; i < ss->n; i++) ss->s[i].ops->flush(&ss->s[i]);
}

int64_t kn_sinks_mark(kn_sinks *ss) {
    int64_t pos = -1;
    for (int i = 0; i < ss->n; i++) {
        if (!ss->s[i].ops->mark) { ss->s[i].ops->flush(&ss->s[i]); continue; }
        int64_t p = ss->s[i].ops->mark(&ss->s[i]);
        if (pos < 0) pos = p;
    }
    return pos;
}

void kn_sinks_rewind(kn_sinks *ss, int64_t pos) {
    for (int i = 0; i < ss->n; i++)
        if (ss->s[i].ops->rewind) ss->s[i].ops->rewind(&ss->s[i], pos);
}

FILE *kn_sinks_jsonl_file(const kn_sinks *ss) { return ss->jsonl; }

void kn_sinks_close(kn_sinks *ss) {
    for (int i = 0; i < ss->n; i++) ss->s[i].ops->close(&ss->s[i]);
    memset(ss, 0, sizeof *ss);
}
