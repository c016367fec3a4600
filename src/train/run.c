/* kiln — a training run: the step loop with crash-safe checkpoints, bit-exact resume,
 * stop on request (SIGINT/SIGTERM via kn_request_stop), versions kept for rollback.
 *
 * Run directory:  .lock (flock: one process at a time)  config.ini  metrics.jsonl  model.safetensors
 *                 checkpoints/step-<N>.safetensors (last K)  first.safetensors
 *                 best.safetensors  epoch-<E>.safetensors (optional)
 * A training checkpoint holds parameters, BatchNorm statistics, optimizer moments and,
 * in its metadata, the position (step, epoch, batch in epoch), the seed from which every
 * random stream is derived (data order: seed+epoch; dropout: seed+step), the epoch's
 * running loss, the best validation loss, the length of metrics.jsonl, and the config;
 * and what else decides the bits: threads, micro-batch, each convolution's algorithm.
 * A resume takes those from the checkpoint (from first.safetensors before the first step
 * checkpoint; from config.ini, which holds --seed/--threads, before first). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend/cpu/isa.h"
#include "config/config.h"
#include "train/checkpoint.h"
#include "train/guard.h"
#include "train/health.h"
#include "train/plan.h"
#include "train/state.h"
#include "train/trainer.h"

static volatile sig_atomic_t g_stop = 0;
void kn_request_stop(int signo) { g_stop = signo; }
int kn_stop_requested(void) { return g_stop; }

void kn_train_options_init(kn_train_options *o) {
    memset(o, 0, sizeof *o);
    o->seed = -1;
    o->progress = -1;
}

/* ---------------- small helpers ---------------- */
static int mkdirs(kn_ctx *ctx, const char *path) {
    char tmp[4096];
    kn_strlcpy(tmp, path, sizeof tmp);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return kn_err(ctx, KN_ERR_IO, "cannot create directory '%s': %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return kn_err(ctx, KN_ERR_IO, "cannot create directory '%s': %s", tmp, strerror(errno));
    return KN_OK;
}

static int write_text(kn_ctx *ctx, const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(errno));
    int bad = fputs(text, f) < 0;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(e));
    }
    return KN_OK;
}

static void fmt_time(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, n, "--:--"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) { h ^= (unsigned char)*s; h *= 1099511628211ULL; }
    return h;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

typedef struct {
    kn_job *job;
    kn_optimizer *opt;
    const kn_settings *st;
    const char *cfg_text;
    char ckpt_dir[2300];
    double write_seconds; /* total time spent writing checkpoints */
    int nwrites;
} run_ctx;

/* "LAYER=ALGORITHM;..." for the nodes of the training graph that chose an algorithm
 * (conv2d: direct or winograd). Recorded in training checkpoints: a resume that runs
 * another algorithm (another kiln version or CPU) is correct but not bit-identical. */
static void algorithms_of(const kn_graph *g, char *buf, size_t n) {
    size_t len = 0;
    buf[0] = 0;
    for (int k = 0; k < g->nn && len < n; k++) {
        const kn_node *nd = &g->n[k];
        if (!nd->impl[0]) continue;
        int w = snprintf(buf + len, n - len, "%s%s=%s", len ? ";" : "", nd->layer, nd->impl);
        if (w < 0 || (size_t)w >= n - len) {
            buf[len] = 0; /* no partial item */
            break;
        }
        len += (size_t)w;
    }
}

static int save_state(kn_ctx *ctx, run_ctx *R, const char *path, const kn_train_state *s) {
    kn_store *store = &R->job->model.store;
    kn_optimizer *o = R->opt;
    int nmom = o->v ? 2 : 1;
    kn_ckpt_tensor_in *ex = calloc((size_t)store->n * 2 + 1, sizeof *ex);
    char (*names)[128] = calloc((size_t)store->n * 2 + 1, sizeof *names);
    if (!ex || !names) { free(ex); free(names); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    int nex = 0;
    for (int i = 0; i < store->n; i++) {
        const kn_store_entry *e = &store->e[i];
        if (e->is_state) continue;
        for (int k = 0; k < nmom; k++) {
            snprintf(names[nex], sizeof names[nex], "optimizer.%s.%s", k ? "v" : "m", e->name);
            ex[nex].name = names[nex];
            ex[nex].shape = e->shape;
            ex[nex].data = (k ? o->v : o->m) + e->offset;
            nex++;
        }
    }
    char algos[4096], isa[256];
    algorithms_of(R->job->model.train, algos, sizeof algos);
    kn_isa_path(isa, sizeof isa);
    kn_ckpt_record rec = {.kind = "train", .s = *s, .seed = R->st->seed, .optimizer_t = o->t,
                          .optimizer_kind = (int64_t)o->c.kind, .config_hash = fnv1a(R->cfg_text),
                          .data_mean = (double)R->job->mean, .data_std = (double)R->job->std,
                          .threads = kn_get_threads(), .micro_batch = R->job->model.batch,
                          .algorithms = algos, .isa_path = isa, .config = R->cfg_text};
    char v[KN_CKPT_MAX_FIELDS][64];
    kn_ckpt_meta meta[KN_CKPT_MAX_FIELDS];
    int nmeta = kn_ckpt_record_meta(&rec, v, meta);
    double t0 = kn_now_seconds();
    int rc = kn_ckpt_save(ctx, path, store, ex, nex, meta, nmeta);
    R->write_seconds += kn_now_seconds() - t0;
    R->nwrites++;
    free(ex);
    free(names);
    return rc;
}

/* Keys whose values differ between two config texts: "section.key: 'a' -> 'b'; ..." */
static int config_diff(kn_ctx *ctx, const char *old_text, const char *new_text, char *out, size_t n) {
    kn_config *a = NULL, *b = NULL;
    out[0] = 0;
    if (kn_config_parse_string(ctx, "checkpoint config", old_text, &a) || kn_config_parse_string(ctx, "current config", new_text, &b)) {
        kn_config_free(a);
        kn_config_free(b);
        snprintf(out, n, "(the checkpoint's config does not parse)");
        return 1;
    }
    int ndiff = 0;
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        const kn_config *x = pass ? b : a, *y = pass ? a : b;
        for (int i = 0; i < x->nsec; i++) {
            const kn_cfg_section *sx = &x->sec[i], *sy = kn_cfg_find(y, sx->name);
            for (int j = 0; j < sx->nkv; j++) {
                const kn_cfg_kv *kx = &sx->kv[j], *ky = kn_cfg_get(sy, kx->key);
                if (!strcmp(sx->name, "train") && (!strcmp(kx->key, "budget") || !strcmp(kx->key, "fit") || !strcmp(kx->key, "threads")))
                    continue; /* not a change of the run: the memory budget, fitting, threads (warned about) */
                if (ky && strcmp(kx->value, ky->value) == 0) continue;
                if (pass == 1 && ky) continue; /* already reported in pass 0 */
                const char *ov = pass ? "(absent)" : kx->value, *nv = pass ? kx->value : (ky ? ky->value : "(absent)");
                if (k < n) k += (size_t)snprintf(out + k, n - k, "%s%s.%s: '%s' -> '%s'", ndiff ? "; " : "", sx->name, kx->key, ov, nv);
                ndiff++;
            }
        }
    }
    kn_config_free(a);
    kn_config_free(b);
    kn_ctx_clear(ctx);
    return ndiff;
}

/* Warn when the checkpoint's run chose other algorithms than this one (an older
 * checkpoint without the record ran every convolution direct). */
static void check_algorithms(const kn_ckpt *c, const run_ctx *R, const char *path) {
    const char *then = kn_ckpt_meta_get(c, "algorithms");
    char now[4096];
    algorithms_of(R->job->model.train, now, sizeof now);
    const char *p = now;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[256];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
        char *eq = strchr(item, '=');
        if (eq) {
            *eq = 0;
            const char *algo = eq + 1, *was = "direct";
            char key[260];
            snprintf(key, sizeof key, "%s=", item);
            const char *at = then ? strstr(then, key) : NULL;
            while (at && at != then && at[-1] != ';') at = strstr(at + 1, key);
            char prev[32] = "";
            if (at) {
                snprintf(prev, sizeof prev, "%s", at + strlen(key));
                prev[strcspn(prev, ";")] = 0;
                was = prev;
            }
            if (strcmp(was, algo) != 0)
                fprintf(stderr, "kiln: warning: layer '%s' runs the %s convolution where the run of %s used %s "
                                "(its config, kiln version or CPU differed): training continues correctly but not "
                                "bit-identically to an uninterrupted run; set algorithm = %s on [%s] to match it\n",
                        item, algo, path, was, was, item);
        }
        p += len + (end ? 1 : 0);
    }
}

/* Load a training checkpoint into the job and optimizer. config_error is set when the
 * failure is a config mismatch (not a bad file). */
static int load_state(kn_ctx *ctx, run_ctx *R, const char *path, kn_train_state *s, int allow_change, int *config_error) {
    *config_error = 0;
    kn_ckpt *c = NULL;
    int rc = kn_ckpt_open(ctx, path, &c);
    if (rc) return rc;
    const char *kind = kn_ckpt_meta_get(c, "kind");
    const char *ctext = kn_ckpt_meta_get(c, "config");
    if (!kind || strcmp(kind, "train") != 0 || !ctext) {
        kn_ckpt_close(c);
        return kn_err(ctx, KN_ERR_FORMAT, "%s: not a kiln training checkpoint (no training state in its metadata)", path);
    }
    kn_ckpt_record rec;
    memset(&rec, 0, sizeof rec);
    if ((rc = kn_ckpt_record_read(ctx, c, &rec))) {
        kn_ckpt_close(c);
        return rc;
    }
    *s = rec.s;
    int64_t t = rec.optimizer_t, okind = rec.optimizer_kind;
    /* a checkpoint of another model is a bad file (skipped); a changed config of the
     * same model is the user's decision (refused unless allowed) */
    kn_store *store = &R->job->model.store;
    if ((rc = kn_ckpt_load_store(ctx, c, store))) { kn_ckpt_close(c); return rc; }
    if (strcmp(ctext, R->cfg_text) != 0) {
        char diff[1500];
        int nd = config_diff(ctx, ctext, R->cfg_text, diff, sizeof diff);
        if (nd > 0 && !allow_change) {
            kn_ckpt_close(c);
            *config_error = 1;
            return kn_err(ctx, KN_ERR_CONFIG, "the config differs from the one %s was trained with: %s. Resume with the original config, or pass --allow-config-change to continue with the new one",
                          path, diff);
        }
    }
    check_algorithms(c, R, path);
    char isa_msg[768];
    if (kn_isa_check_resume(kn_ckpt_meta_get(c, "isa_path"), path, isa_msg, sizeof isa_msg))
        fprintf(stderr, "kiln: warning: %s\n", isa_msg);
    kn_optimizer *o = R->opt;
    int same_kind = okind == (int64_t)o->c.kind;
    memset(o->m, 0, (size_t)o->n * sizeof(float));
    if (o->v) memset(o->v, 0, (size_t)o->n * sizeof(float));
    o->t = same_kind ? t : 0;
    for (int i = 0; same_kind && i < store->n; i++) {
        const kn_store_entry *e = &store->e[i];
        if (e->is_state) continue;
        for (int k = 0; k < (o->v ? 2 : 1); k++) {
            char nm[160];
            snprintf(nm, sizeof nm, "optimizer.%s.%s", k ? "v" : "m", e->name);
            const float *d;
            kn_shape sh;
            if ((rc = kn_ckpt_get(ctx, c, nm, &d, &sh))) { kn_ckpt_close(c); return rc; }
            if (!kn_shape_eq(&sh, &e->shape)) {
                kn_ckpt_close(c);
                return kn_err(ctx, KN_ERR_FORMAT, "%s: optimizer state '%s' has the wrong shape", path, nm);
            }
            memcpy((k ? o->v : o->m) + e->offset, d, (size_t)e->numel * sizeof(float));
        }
    }
    kn_ckpt_close(c);
    return KN_OK;
}


/* ---------------- guard: snapshots, events ---------------- */
typedef struct {
    float *param, *state, *m, *v;
    int64_t t;
    kn_train_state S;
    int valid;
} snapshot;

/* Two snapshots: `anchor`, where the current learning-rate phase began (the start of
 * the run or the last rollback target), and `recent`, the newest one taken after a quiet
 * stretch. A failure soon after the anchor (guard.trust_steps) goes back to the anchor:
 * the states between were produced by a learning rate that has just proved too large. */
typedef struct {
    float *x;                          /* non-NULL when the guard is on */
    float *state_before;               /* BatchNorm statistics before the step */
    snapshot anchor, recent;
    int64_t nparam, nstate;
} guard_buf;

static int snap_alloc(snapshot *sn, int64_t nparam, int64_t nstate, int adam) {
    sn->param = kn_aligned_alloc((size_t)nparam * sizeof(float));
    sn->state = kn_aligned_alloc((size_t)nstate * sizeof(float));
    sn->m = kn_aligned_alloc((size_t)nparam * sizeof(float));
    sn->v = adam ? kn_aligned_alloc((size_t)nparam * sizeof(float)) : NULL;
    return sn->param && sn->state && sn->m && (!adam || sn->v);
}

static void snap_free(snapshot *sn) {
    kn_aligned_free(sn->param);
    kn_aligned_free(sn->state);
    kn_aligned_free(sn->m);
    kn_aligned_free(sn->v);
}

static int guard_alloc(kn_ctx *ctx, guard_buf *G, kn_model *m, kn_optimizer *o, int64_t xnum) {
    G->nparam = m->store.nparam;
    G->nstate = m->store.nstate;
    (void)xnum;
    G->x = kn_aligned_alloc(KN_ALIGN);
    G->state_before = kn_aligned_alloc((size_t)G->nstate * sizeof(float));
    int ok = snap_alloc(&G->anchor, G->nparam, G->nstate, o->v != NULL) &&
             snap_alloc(&G->recent, G->nparam, G->nstate, o->v != NULL);
    if (!G->x || !G->state_before || !ok)
        return kn_err(ctx, KN_ERR_NOMEM, "cannot allocate the guard's snapshots (%.1f MiB); set guard.enabled = false",
                      (double)G->nparam * 24.0 / 1048576.0);
    return KN_OK;
}

static void guard_free(guard_buf *G) {
    kn_aligned_free(G->x);
    kn_aligned_free(G->state_before);
    snap_free(&G->anchor);
    snap_free(&G->recent);
    memset(G, 0, sizeof *G);
}

static void snapshot_take(guard_buf *G, snapshot *sn, kn_model *m, kn_optimizer *o, const kn_train_state *S) {
    memcpy(sn->param, m->store.param, (size_t)G->nparam * sizeof(float));
    memcpy(sn->state, m->store.state, (size_t)G->nstate * sizeof(float));
    memcpy(sn->m, o->m, (size_t)G->nparam * sizeof(float));
    if (o->v) memcpy(sn->v, o->v, (size_t)G->nparam * sizeof(float));
    sn->t = o->t;
    sn->S = *S;
    sn->valid = 1;
}

static void snapshot_restore(guard_buf *G, const snapshot *sn, kn_model *m, kn_optimizer *o, kn_train_state *S) {
    memcpy(m->store.param, sn->param, (size_t)G->nparam * sizeof(float));
    memcpy(m->store.state, sn->state, (size_t)G->nstate * sizeof(float));
    memcpy(o->m, sn->m, (size_t)G->nparam * sizeof(float));
    if (o->v) memcpy(o->v, sn->v, (size_t)G->nparam * sizeof(float));
    o->t = sn->t;
    *S = sn->S;
}

static void snapshot_copy(guard_buf *G, snapshot *dst, const snapshot *src) {
    memcpy(dst->param, src->param, (size_t)G->nparam * sizeof(float));
    memcpy(dst->state, src->state, (size_t)G->nstate * sizeof(float));
    memcpy(dst->m, src->m, (size_t)G->nparam * sizeof(float));
    if (src->v) memcpy(dst->v, src->v, (size_t)G->nparam * sizeof(float));
    dst->t = src->t;
    dst->S = src->S;
    dst->valid = src->valid;
}

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

static void guard_event(FILE *mf, int64_t step, const char *kind, const char *action, const kn_diag_report *rep,
                        const char *msg, double lr_scale) {
    fprintf(mf, "{\"event\":\"guard\",\"step\":%lld,\"kind\":\"%s\",\"action\":\"%s\",\"lr_scale\":%.9g", (long long)step,
            kind, action, lr_scale);
    if (rep && rep->found) {
        fprintf(mf, ",\"op\":");
        json_str(mf, rep->op);
        fprintf(mf, ",\"layer\":");
        json_str(mf, rep->layer);
        fprintf(mf, ",\"tensor\":");
        json_str(mf, rep->tensor);
        fprintf(mf, ",\"phase\":\"%s\"", rep->backward ? "backward" : "forward");
    }
    fprintf(mf, ",\"message\":");
    json_str(mf, msg);
    fprintf(mf, "}\n");
    fflush(mf);
}

/* exact duplicates of evaluation images in the training set */
static void leakage_report(kn_job *job, FILE *mf, FILE *out) {
    kn_ctx *ctx = kn_ctx_new();
    if (!ctx) return;
    struct { const char *name; const kn_dataset *ds; const int64_t *idx; int64_t n; } sets[2] = {
        {"test", &job->test_ds, NULL, job->test_ds.n}, {"validation", &job->train_ds, job->val_idx, job->nval}};
    for (int k = 0; k < (job->val_loader ? 2 : 1); k++) {
        kn_leak_report r;
        if (kn_leakage_check(ctx, &job->train_ds, job->train_idx, job->ntrain, sets[k].ds, sets[k].idx, sets[k].n, &r) != KN_OK) {
            if (out) fprintf(stderr, "kiln: warning: leakage check failed: %s\n", kn_ctx_message(ctx));
            kn_ctx_clear(ctx);
            continue;
        }
        fprintf(mf, "{\"event\":\"leakage\",\"set\":\"%s\",\"duplicates\":%lld,\"examples\":[", sets[k].name, (long long)r.count);
        for (int i = 0; i < r.nexamples; i++)
            fprintf(mf, "%s[%lld,%lld]", i ? "," : "", (long long)r.examples[i][0], (long long)r.examples[i][1]);
        fprintf(mf, "]}\n");
        if (out && r.count > 0) {
            fprintf(out, "leakage: %lld %s sample(s) also appear, byte for byte, in the training set (e.g.", (long long)r.count, sets[k].name);
            for (int i = 0; i < r.nexamples && i < 3; i++)
                fprintf(out, "%s %s #%lld = train #%lld", i ? "," : "", sets[k].name, (long long)r.examples[i][1], (long long)r.examples[i][0]);
            fprintf(out, ")\n");
        } else if (out) {
            fprintf(out, "leakage: no %s sample appears in the training set\n", sets[k].name);
        }
    }
    kn_ctx_free(ctx);
}

typedef struct {
    int64_t step;
    char name[64];
} ck_entry;
static int cmp_ck_desc(const void *a, const void *b) {
    const ck_entry *x = a, *y = b;
    return x->step < y->step ? 1 : x->step > y->step ? -1 : 0;
}

/* step-N checkpoints in dir, newest first. Returns count (malloc'ed list in *out). */
static int list_step_ckpts(const char *dir, ck_entry **out) {
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0, cap = 0;
    ck_entry *v = NULL;
    struct dirent *de;
    while ((de = readdir(d))) {
        long long st;
        char tail[32];
        if (sscanf(de->d_name, "step-%lld.safetens%31s", &st, tail) != 2 || strcmp(tail, "ors") != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            ck_entry *nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[n].step = st;
        kn_strlcpy(v[n].name, de->d_name, sizeof v[n].name);
        n++;
    }
    closedir(d);
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_ck_desc);
    *out = v;
    return n;
}

static void remove_dead_temps(const char *dir);

static void prune(run_ctx *R) {
    ck_entry *v;
    int n = list_step_ckpts(R->ckpt_dir, &v);
    for (int i = R->st->ckpt_keep_last; i < n; i++) {
        char p[2600];
        snprintf(p, sizeof p, "%s/%s", R->ckpt_dir, v[i].name);
        unlink(p);
    }
    free(v);
    remove_dead_temps(R->ckpt_dir); /* temporaries of a process killed while writing */
}

/* Save step checkpoint (and prune). Returns rc; on failure with on_error=continue,
 * prints a warning and returns KN_OK. */
static int checkpoint(kn_ctx *ctx, run_ctx *R, const kn_train_state *s, const char *also_as, int quiet) {
    char p[2600];
    snprintf(p, sizeof p, "%s/step-%09lld.safetensors", R->ckpt_dir, (long long)s->step);
    int rc = save_state(ctx, R, p, s);
    if (!rc && also_as) {
        /* the same bytes under a second name: a hard link, made atomically */
        char q[2600], t[2700];
        snprintf(q, sizeof q, "%s/%s", R->ckpt_dir, also_as);
        snprintf(t, sizeof t, "%s.tmp.%ld", q, (long)getpid());
        unlink(t);
        if (link(p, t) != 0 || rename(t, q) != 0) {
            unlink(t);
            rc = save_state(ctx, R, q, s);
        }
    }
    if (rc) {
        if (R->st->ckpt_on_error == 1) {
            fprintf(stderr, "kiln: warning: %s; training continues (checkpoint.on_error = continue)\n", kn_ctx_message(ctx));
            kn_ctx_clear(ctx);
            return KN_OK;
        }
        ck_entry *v;
        int n = list_step_ckpts(R->ckpt_dir, &v);
        char last[2600] = "none";
        if (n > 0) snprintf(last, sizeof last, "%s/%s", R->ckpt_dir, v[0].name);
        free(v);
        kn_err_prefix(ctx, "checkpoint at step %lld failed: ", (long long)s->step);
        char tail[2800];
        snprintf(tail, sizeof tail, "; training stopped cleanly, earlier checkpoints are intact (newest: %s); free space and run 'kiln resume' (or set checkpoint.on_error = continue)", last);
        size_t l = strlen(ctx->msg);
        kn_strlcpy(ctx->msg + l, tail, sizeof ctx->msg - l);
        return rc;
    }
    prune(R);
    (void)quiet;
    return KN_OK;
}

/* Parse "RUN_DIR[:first|best|last|STEP]" or a file path into a checkpoint path. */
static int resolve_init_from(kn_ctx *ctx, const char *spec, char *out, size_t n) {
    if (file_exists(spec)) { kn_strlcpy(out, spec, n); return KN_OK; }
    char dir[2048], sel[64] = "last";
    kn_strlcpy(dir, spec, sizeof dir);
    char *colon = strrchr(dir, ':');
    if (colon) { kn_strlcpy(sel, colon + 1, sizeof sel); *colon = 0; }
    char cdir[2300];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", dir);
    if (!strcmp(sel, "first") || !strcmp(sel, "best")) {
        snprintf(out, n, "%s/%s.safetensors", cdir, sel);
    } else {
        ck_entry *v;
        int cnt = list_step_ckpts(cdir, &v), found = -1;
        char *end;
        long long want = strtoll(sel, &end, 10);
        int is_num = *sel && !*end;
        if (!is_num && strcmp(sel, "last") != 0) {
            free(v);
            return kn_err(ctx, KN_ERR_INVALID, "--init-from '%s': expected RUN_DIR[:first|best|last|STEP] or a checkpoint file", spec);
        }
        for (int i = 0; i < cnt && found < 0; i++)
            if (!is_num || v[i].step == want) found = i;
        if (found < 0) {
            free(v);
            return kn_err(ctx, KN_ERR_IO, "--init-from '%s': no %s checkpoint in %s", spec, is_num ? "such step" : "step", cdir);
        }
        snprintf(out, n, "%s/%s", cdir, v[found].name);
        free(v);
    }
    if (!file_exists(out)) return kn_err(ctx, KN_ERR_IO, "--init-from '%s': %s does not exist", spec, out);
    return KN_OK;
}

/* ---------------- the run directory: lock, temporaries, what it holds ---------------- */

/* An exclusive lock on RUN/.lock (flock: the kernel releases it when its holder exits or
 * dies, so a killed run never blocks its resume). The file names the holder. */
static int lock_run_dir(kn_ctx *ctx, const char *run_dir, const char *verb, int *fd_out) {
    char p[2200];
    snprintf(p, sizeof p, "%s/.lock", run_dir);
    *fd_out = -1;
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return kn_err(ctx, KN_ERR_IO, "cannot create the lock file '%s': %s", p, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char holder[512] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        close(fd);
        if (e == EWOULDBLOCK)
            return kn_err(ctx, KN_ERR_IO, "run directory '%s' is in use by another kiln process (%s); wait for it to finish, "
                                          "stop it, or choose another --run-dir",
                          run_dir, holder[0] ? holder : "holder unknown");
        return kn_err(ctx, KN_ERR_IO, "cannot lock '%s': %s", p, strerror(e));
    }
    char host[256] = "?", when[64] = "?", text[700];
    if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = 0;
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tmv);
    int len = snprintf(text, sizeof text, "PID %ld on host %s, kiln %s, started %s\n", (long)getpid(), host, verb, when);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) { /* the lock holds without the note */ }
    *fd_out = fd;
    return KN_OK;
}

/* Remove NAME.tmp.PID files left in dir by processes that are gone (never another live
 * process's, and the caller holds the run directory's lock). */
static void remove_dead_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *t = strstr(de->d_name, ".tmp.");
        if (!t) continue;
        char *end;
        long pid = strtol(t + 5, &end, 10);
        if (*end || pid <= 0) continue;
        if (pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue; /* alive */
        char p[2600];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        unlink(p);
    }
    closedir(d);
}

/* What a run directory holds, read before the job is built: the newest training
 * checkpoint that opens (step-N, else first), its config text and what decides its bits. */
typedef struct {
    int found;          /* a training checkpoint opened */
    int nckpt;          /* step-N files present (good or not) */
    int has_first;
    char *config;       /* the checkpoint's config text, else config.ini's (malloc'ed), or NULL */
    int64_t step;
    int have_seed;
    uint64_t seed;
    int threads;        /* 0: not recorded */
    int64_t micro;      /* 0: not recorded */
    char *algorithms;   /* "LAYER=ALGORITHM;..." (malloc'ed) or NULL */
} run_peek;

static void peek_free(run_peek *pk) {
    free(pk->config);
    free(pk->algorithms);
    memset(pk, 0, sizeof *pk);
}

static void peek_run(const char *run_dir, run_peek *pk) {
    memset(pk, 0, sizeof *pk);
    char cdir[2300], p[2600];
    snprintf(cdir, sizeof cdir, "%s/checkpoints", run_dir);
    ck_entry *v;
    int n = list_step_ckpts(cdir, &v);
    pk->nckpt = n;
    snprintf(p, sizeof p, "%s/first.safetensors", cdir);
    pk->has_first = file_exists(p);
    kn_ctx *c2 = kn_ctx_new();
    for (int i = 0; c2 && i <= n && !pk->found; i++) {
        if (i < n) snprintf(p, sizeof p, "%s/%s", cdir, v[i].name);
        else snprintf(p, sizeof p, "%s/first.safetensors", cdir);
        kn_ckpt *c = NULL;
        if (kn_ckpt_open(c2, p, &c) != KN_OK) { kn_ctx_clear(c2); continue; }
        const char *kind = kn_ckpt_meta_get(c, "kind"), *text = kn_ckpt_meta_get(c, "config");
        if (kind && !strcmp(kind, "train") && text) {
            pk->found = 1;
            pk->config = strdup(text);
            const char *s;
            if ((s = kn_ckpt_meta_get(c, "step"))) pk->step = strtoll(s, NULL, 10);
            if ((s = kn_ckpt_meta_get(c, "seed")) && *s) { pk->have_seed = 1; pk->seed = strtoull(s, NULL, 10); }
            if ((s = kn_ckpt_meta_get(c, "threads"))) pk->threads = (int)strtol(s, NULL, 10);
            if ((s = kn_ckpt_meta_get(c, "micro_batch"))) pk->micro = strtoll(s, NULL, 10);
            if ((s = kn_ckpt_meta_get(c, "algorithms"))) pk->algorithms = strdup(s);
        }
        kn_ckpt_close(c);
    }
    free(v);
    kn_ctx_free(c2);
    if (!pk->found) {
        /* killed before its first checkpoint: the config it was started with */
        snprintf(p, sizeof p, "%s/config.ini", run_dir);
        FILE *f = fopen(p, "rb");
        if (f) {
            char *buf = NULL;
            size_t len = 0, cap = 0, r;
            char chunk[4096];
            while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
                if (len + r + 1 > cap) {
                    cap = 2 * (len + r + 1);
                    char *nb = realloc(buf, cap);
                    if (!nb) { free(buf); buf = NULL; break; }
                    buf = nb;
                }
                memcpy(buf + len, chunk, r);
                len += r;
            }
            fclose(f);
            if (buf) { buf[len] = 0; pk->config = buf; }
        }
    }
}

/* The config text recorded in config.ini and every checkpoint: the config with the
 * command line's --seed and --threads written into [train], so that a resume, even of a
 * run killed before its first checkpoint, runs with the values that decide its bits. */
static char *effective_config_text(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, const kn_train_options *opt) {
    char *text = kn_cfg_to_text(cfg);
    if (!text) { kn_err(ctx, KN_ERR_NOMEM, "out of memory"); return NULL; }
    int set_seed = opt->seed >= 0 && (uint64_t)opt->seed != st->seed, set_threads = opt->threads > 0 && opt->threads != st->threads;
    if (!set_seed && !set_threads) return text;
    kn_config *c = NULL;
    if (kn_config_parse_string(ctx, cfg->path, text, &c) != KN_OK) { free(text); return NULL; }
    char a[64];
    int rc = KN_OK;
    if (set_seed) { snprintf(a, sizeof a, "train.seed=%lld", (long long)opt->seed); rc = kn_config_set(ctx, c, a); }
    if (!rc && set_threads) { snprintf(a, sizeof a, "train.threads=%d", opt->threads); rc = kn_config_set(ctx, c, a); }
    free(text);
    text = rc ? NULL : kn_cfg_to_text(c);
    if (!rc && !text) kn_err(ctx, KN_ERR_NOMEM, "out of memory");
    kn_config_free(c);
    return text;
}

/* best.safetensors is a hard link to the step checkpoint of the lowest validation loss;
 * a kill between writing that checkpoint (which records best_step) and linking leaves it
 * at an older step. Repair it from the resumed state: relink to step-<best_step>. */
static void repair_best(run_ctx *R, const kn_train_state *S, FILE *out) {
    if (S->best_step < 0) return;
    char bp[2600], sp[2600];
    snprintf(bp, sizeof bp, "%s/best.safetensors", R->ckpt_dir);
    snprintf(sp, sizeof sp, "%s/step-%09lld.safetensors", R->ckpt_dir, (long long)S->best_step);
    struct stat bs, ss;
    int have_b = stat(bp, &bs) == 0, have_s = stat(sp, &ss) == 0;
    if (have_b && have_s && bs.st_ino == ss.st_ino && bs.st_dev == ss.st_dev) return;
    long long was = -1;
    if (have_b) {
        kn_ctx *c2 = kn_ctx_new();
        kn_ckpt *c = NULL;
        if (c2 && kn_ckpt_open(c2, bp, &c) == KN_OK) {
            const char *s = kn_ckpt_meta_get(c, "step");
            if (s) was = strtoll(s, NULL, 10);
            kn_ckpt_close(c);
        }
        kn_ctx_free(c2);
        if (was == S->best_step) return; /* a copy (the link failed when it was made) */
    }
    if (!have_s) {
        fprintf(stderr, "kiln: warning: %s is %s, but the run's best is step %lld, whose checkpoint is no longer kept; "
                        "it stays as it is\n", bp, have_b ? "from another step" : "missing", (long long)S->best_step);
        return;
    }
    char t[2700];
    snprintf(t, sizeof t, "%s.tmp.%ld", bp, (long)getpid());
    unlink(t);
    if (link(sp, t) != 0 || rename(t, bp) != 0) {
        fprintf(stderr, "kiln: warning: cannot repair %s (link %s: %s)\n", bp, sp, strerror(errno));
        unlink(t);
        return;
    }
    if (out)
        fprintf(out, "repaired %s: it %s; it is now step %lld (the best validation loss)\n", bp,
                was >= 0 ? "was at an older step" : "was missing", (long long)S->best_step);
}

/* The config to build the job of a resumed run from: where both the checkpoint's config
 * and this one leave a convolution's algorithm to kiln (auto), the algorithm the run
 * used (recorded in the checkpoint), so that another kiln version or CPU that would
 * choose another one still continues bit-identically. NULL: nothing to force. */
static kn_config *config_with_algorithms(const kn_config *cfg, const run_peek *pk) {
    if (!pk->found || !pk->algorithms || !*pk->algorithms) return NULL;
    kn_ctx *c2 = kn_ctx_new();
    char *text = kn_cfg_to_text(cfg);
    kn_config *copy = NULL, *then = NULL;
    int nset = 0;
    if (!c2 || !text || kn_config_parse_string(c2, cfg->path, text, &copy) != KN_OK ||
        kn_config_parse_string(c2, "checkpoint config", pk->config, &then) != KN_OK)
        goto out;
    for (const char *p = pk->algorithms; *p;) {
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[300];
        snprintf(item, sizeof item, "%.*s", (int)(len < sizeof item ? len : sizeof item - 1), p);
        char *eq = strchr(item, '=');
        p += len + (end ? 1 : 0);
        if (!eq) continue;
        *eq = 0;
        const kn_cfg_section *now_sec = kn_cfg_find(copy, item), *then_sec = kn_cfg_find(then, item);
        const kn_cfg_kv *now_kv = now_sec ? kn_cfg_get(now_sec, "algorithm") : NULL;
        const kn_cfg_kv *then_kv = then_sec ? kn_cfg_get(then_sec, "algorithm") : NULL;
        if (!now_sec || (now_kv && strcmp(now_kv->value, "auto")) || (then_kv && strcmp(then_kv->value, "auto"))) continue;
        char a[400];
        snprintf(a, sizeof a, "%s.algorithm=%s", item, eq + 1);
        if (kn_config_set(c2, copy, a) == KN_OK) nset++;
    }
out:
    free(text);
    kn_config_free(then);
    kn_ctx_free(c2);
    if (!nset) { kn_config_free(copy); copy = NULL; }
    return copy;
}

/* runs/NAME, runs/NAME-2, ...: the v-th version of a default run directory */
static void versioned(char *dst, size_t n, const char *base, int v) {
    if (v <= 1) kn_strlcpy(dst, base, n);
    else snprintf(dst, n, "%s-%d", base, v);
}

/* ---------------- the run ---------------- */
int kn_train(kn_ctx *ctx, const kn_config *cfg, const kn_train_options *opt, kn_train_result *res) {
    kn_train_options defopt;
    if (!opt) { kn_train_options_init(&defopt); opt = &defopt; }
    kn_train_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    kn_settings st;
    int rc = kn_settings_read(ctx, cfg, &st);
    if (rc) return rc;
    FILE *out = opt->quiet ? NULL : stdout;
    int bar = opt->progress >= 0 ? opt->progress : isatty(fileno(stdout));
    kn_job job;
    memset(&job, 0, sizeof job);
    kn_accum acc;
    memset(&acc, 0, sizeof acc);
    kn_optimizer o = {0};
    FILE *mf = NULL;
    int32_t *y = NULL;
    run_ctx R = {0};
    guard_buf G = {0};
    kn_health *H = NULL;
    int early_stopped = 0, lock_fd = -1;
    char path[2600];
    run_peek pk;
    memset(&pk, 0, sizeof pk);
    /* the config text this run records: with --seed / --threads written in */
    char *cfg_text = effective_config_text(ctx, cfg, &st, opt);
    if (!cfg_text) return kn_ctx_code(ctx) ? kn_ctx_code(ctx) : KN_ERR_NOMEM;
    if (opt->seed >= 0) st.seed = (uint64_t)opt->seed;
    if (opt->threads > 0) st.threads = opt->threads;

    char base[2048], run_dir[2100];
    int explicit_dir = opt->run_dir || st.run_dir[0];
    if (opt->run_dir) kn_strlcpy(base, opt->run_dir, sizeof base);
    else if (st.run_dir[0]) kn_strlcpy(base, st.run_dir, sizeof base);
    else {
        const char *b = strrchr(cfg->path, '/');
        b = b ? b + 1 : cfg->path;
        char stem[256];
        kn_strlcpy(stem, b, sizeof stem);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem) *dot = 0;
        snprintf(base, sizeof base, "runs/%s", stem);
    }

    /* The run directory: locked for the whole run. A default directory (runs/NAME) that
     * holds a run of another config, or checkpoints that --init-from would be ignored
     * for, is left alone: the new run goes to runs/NAME-2 (-3, ...). An explicit one is
     * refused instead (or, with --allow-config-change, continued with the new config). */
    char moved[1800] = "";
    for (int v = 1;; v++) {
        versioned(run_dir, sizeof run_dir, base, v);
        if (v > 9999) { rc = kn_err(ctx, KN_ERR_IO, "%s: too many versions of this run directory", base); goto done; }
        struct stat sb;
        if (!opt->resume_only && stat(run_dir, &sb) != 0) break; /* a new directory: made after the plan (a refused run makes none) */
        if ((rc = lock_run_dir(ctx, run_dir, opt->resume_only ? "resume" : "train", &lock_fd))) goto done;
        peek_free(&pk);
        peek_run(run_dir, &pk);
        if (opt->resume_only || !pk.config) break; /* resume, or a new directory */
        char diff[1500];
        int nd = config_diff(ctx, pk.config, cfg_text, diff, sizeof diff);
        if (nd == 0 && pk.found && pk.have_seed && pk.seed != st.seed) {
            snprintf(diff, sizeof diff, "train.seed: '%llu' -> '%llu'", (unsigned long long)pk.seed, (unsigned long long)st.seed);
            nd = 1;
        }
        int init_conflict = opt->init_from && (pk.found || pk.nckpt > 0);
        if ((nd == 0 || opt->allow_config_change) && !init_conflict) break;
        if (explicit_dir) {
            if (init_conflict)
                rc = kn_err(ctx, KN_ERR_INVALID, "--init-from %s: the run directory %s already holds checkpoints of a run (step %lld), "
                                                 "which train would continue instead of starting from those weights; choose a new "
                                                 "--run-dir for the new run (or leave --run-dir out: kiln then starts runs/NAME-2)",
                            opt->init_from, run_dir, (long long)pk.step);
            else
                rc = kn_err(ctx, KN_ERR_CONFIG, "the config differs from the one the run in %s was started with: %s. Resume with the "
                                                "original config, pass --allow-config-change to continue this run with the new one, "
                                                "or choose another --run-dir for a new run",
                            run_dir, diff);
            goto done;
        }
        if (!moved[0]) {
            if (init_conflict) snprintf(moved, sizeof moved, "%.500s holds checkpoints of a run (--init-from starts a new one)", base);
            else snprintf(moved, sizeof moved, "%.500s holds a run of another config (%.1200s)", base, diff);
        }
        close(lock_fd);
        lock_fd = -1;
    }
    if (moved[0]) fprintf(stderr, "kiln: %s: this run goes to %s (pass --run-dir to choose the directory)\n", moved, run_dir);

    /* what decides the bits comes from the checkpoint: seed, threads, micro-batch split */
    int64_t forced_micro = 0;
    if (pk.found) {
        if (opt->resume_only && pk.have_seed) st.seed = pk.seed;
        if (pk.threads > 0 && opt->threads > 0 && opt->threads != pk.threads)
            fprintf(stderr, "kiln: warning: --threads %d differs from the %d thread(s) the run was trained with: training "
                            "continues correctly but not bit-identically to an uninterrupted run (kiln gives the same bits "
                            "for the same thread count); leave --threads out to keep %d\n",
                    opt->threads, pk.threads, pk.threads);
        else if (pk.threads > 0) st.threads = pk.threads;
        if (pk.micro > 0 && st.micro_batch == 0 && pk.micro <= st.batch && st.batch % pk.micro == 0) forced_micro = st.micro_batch = pk.micro;
    }
    kn_set_threads(st.threads);

    /* the memory plan, before anything big is allocated: print its summary, refuse a
     * run whose predicted peak exceeds the budget, or (train.fit) choose the micro-batch */
    rc = kn_plan_for_training(ctx, cfg, &st, out, NULL);
    if (rc == KN_ERR_NOMEM && forced_micro && st.mem_fit) {
        kn_ctx_clear(ctx);
        st.micro_batch = 0;
        rc = kn_plan_for_training(ctx, cfg, &st, out, NULL);
        if (!rc && st.micro_batch != forced_micro)
            fprintf(stderr, "kiln: warning: the run's micro-batch of %lld does not fit this budget; continuing with micro-batches of %lld: "
                            "correct, but not bit-identical to an uninterrupted run\n",
                    (long long)forced_micro, (long long)st.micro_batch);
    }
    if (rc) goto done;
    if (lock_fd < 0 && ((rc = mkdirs(ctx, run_dir)) || (rc = lock_run_dir(ctx, run_dir, "train", &lock_fd)))) goto done;
    {
        kn_config *jcfg = config_with_algorithms(cfg, &pk);
        rc = kn_job_open(ctx, jcfg ? jcfg : cfg, &st, 1, &job);
        if (rc && jcfg) { /* the run's algorithm does not run here: this CPU's choice (warned about below) */
            kn_ctx_clear(ctx);
            kn_job_close(&job);
            rc = kn_job_open(ctx, cfg, &st, 1, &job);
        }
        kn_config_free(jcfg);
        if (rc) goto done;
    }
    kn_model *m = &job.model;

    int64_t steps_per_epoch = kn_loader_batches(job.train_loader);
    int64_t total_steps = steps_per_epoch * st.epochs;
    if (st.max_steps > 0 && st.max_steps < total_steps) total_steps = st.max_steps;
    st.opt.total_steps = total_steps;
    if ((rc = kn_opt_init(ctx, &o, &st.opt, m->store.nparam))) goto done;
    kn_model_init(m, st.seed);

    R.job = &job;
    R.opt = &o;
    R.st = &st;
    R.cfg_text = cfg_text;
    snprintf(R.ckpt_dir, sizeof R.ckpt_dir, "%s/checkpoints", run_dir);
    if ((rc = mkdirs(ctx, R.ckpt_dir))) goto done;
    remove_dead_temps(R.ckpt_dir); /* left by a killed run (we hold the lock) */
    remove_dead_temps(run_dir);

    /* resume from the newest good checkpoint, if any */
    kn_train_state S;
    kn_train_state_init(&S);
    int resumed = 0;
    {
        ck_entry *v;
        int n = list_step_ckpts(R.ckpt_dir, &v), nbad = 0;
        for (int i = 0; i <= n && !resumed; i++) {
            /* no step checkpoint yet: the state before the first update */
            if (i == n) {
                snprintf(path, sizeof path, "%s/first.safetensors", R.ckpt_dir);
                if (n > 0 || !file_exists(path)) break;
            } else {
                snprintf(path, sizeof path, "%s/%s", R.ckpt_dir, v[i].name);
            }
            int cfg_err = 0;
            kn_train_state T;
            if (load_state(ctx, &R, path, &T, opt->allow_config_change, &cfg_err) == KN_OK) {
                S = T;
                resumed = 1;
                if (out && i == n) fprintf(out, "resuming from %s (step 0: no step checkpoint had been written yet)\n", path);
                else if (out) fprintf(out, "resuming from %s (step %lld, epoch %lld)\n", path, (long long)S.step, (long long)S.epoch + 1);
            } else if (cfg_err) {
                free(v);
                rc = KN_ERR_CONFIG;
                goto done;
            } else {
                fprintf(stderr, "kiln: warning: skipping unusable checkpoint: %s\n", kn_ctx_message(ctx));
                kn_ctx_clear(ctx);
                nbad += i < n;
            }
        }
        free(v);
        if (!resumed && nbad > 0) {
            rc = kn_err(ctx, KN_ERR_FORMAT, "no usable checkpoint in %s: all %d are damaged or from another model (see the warnings above); move them away to start afresh",
                        R.ckpt_dir, nbad);
            goto done;
        }
        if (!resumed && opt->resume_only && out)
            fprintf(out, "no checkpoint in %s yet (the run stopped before its first): starting from step 0 with the run's "
                         "config.ini, which gives the same bits as an uninterrupted run\n", R.ckpt_dir);
    }
    if (resumed) repair_best(&R, &S, out);
    if (!resumed && opt->init_from) {
        char ip[2600];
        kn_ckpt *c = NULL;
        if ((rc = resolve_init_from(ctx, opt->init_from, ip, sizeof ip))) goto done;
        if ((rc = kn_ckpt_open(ctx, ip, &c))) goto done;
        rc = kn_ckpt_load_init(ctx, c, &m->store);
        kn_ckpt_close(c);
        if (rc) goto done;
        if (out) fprintf(out, "initialised from %s\n", ip);
    }
    res->resumed = resumed;

    snprintf(path, sizeof path, "%s/config.ini", run_dir);
    if ((rc = write_text(ctx, path, cfg_text))) goto done;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (resumed) {
        struct stat msb; /* cut back, never extend (a file shorter than recorded stays as it is) */
        if (stat(path, &msb) == 0 && msb.st_size > S.metrics_bytes && truncate(path, S.metrics_bytes) != 0 && errno != ENOENT) {
            rc = kn_err(ctx, KN_ERR_IO, "cannot truncate '%s': %s", path, strerror(errno));
            goto done;
        }
        mf = fopen(path, "a");
    } else {
        mf = fopen(path, "w");
    }
    if (!mf) { rc = kn_err(ctx, KN_ERR_IO, "cannot write '%s': %s", path, strerror(errno)); goto done; }
    kn_overfit OF; /* the overfitting warning, its state rebuilt from the epochs logged so far */
    kn_overfit_init(&OF, st.warn_worse_epochs);
    if (resumed) kn_overfit_replay(&OF, path);

    if (out) {
        /* parameters, batch, threads and memory are in the plan summary above: once */
        fprintf(out, "kiln %s: %s — %lld steps/epoch, %lld epochs\n", KILN_VERSION, cfg->path, (long long)steps_per_epoch,
                (long long)st.epochs);
        fprintf(out, "data: %lld training samples, %lld %s samples\n", (long long)job.ntrain,
                (long long)(job.val_loader ? job.nval : job.test_ds.n), job.val_loader ? "validation" : "test (used for validation)");
        fprintf(out, "run directory: %s\n", run_dir);
        fflush(out);
    }
    if (!resumed) {
        /* the model before the first update: version "first" */
        snprintf(path, sizeof path, "%s/first.safetensors", R.ckpt_dir);
        if ((rc = save_state(ctx, &R, path, &S))) {
            size_t l = strlen(ctx->msg);
            snprintf(ctx->msg + l, sizeof ctx->msg - l, "; nothing is lost (no step was trained yet): free space and run 'kiln resume %s'",
                     run_dir);
            goto done;
        }
    }

    /* the loader fills a whole batch: the graph input, or with micro-batches a buffer
     * that kn_accum_step feeds to the graph one micro-batch at a time */
    if ((rc = kn_accum_init(ctx, &acc, m, st.batch))) goto done;
    float *x = acc.x;
    int64_t xnum = acc.batch * acc.sample_floats;
    y = malloc((size_t)st.batch * sizeof(int32_t));
    if (!y) { rc = kn_err(ctx, KN_ERR_NOMEM, "out of memory"); goto done; }
    /* guard buffers: the batch and the BatchNorm statistics before the step (for the
     * replay), and an in-memory snapshot of the whole training state (for rollback) */
    if (st.guard_enabled && (rc = guard_alloc(ctx, &G, m, &o, xnum))) goto done;
    if (st.health_every > 0 && (rc = kn_health_create(ctx, m, st.health_every, &H))) goto done;
    if (st.leakage_check) leakage_report(&job, mf, out);
    kn_spike spike = {{0}, 0, 0};
    kn_collapse C; /* guard: a collapsed run (see guard.h) */
    kn_collapse_init(&C, m->loss_kind == KN_LOSS_CE && st.guard_collapse_checks > 0
                             ? kn_label_entropy(job.train_ds.labels, job.train_idx, job.ntrain, m->nclasses) : NAN,
                     st.guard_collapse_checks);
    kn_rt rt = {0};
    rt.seed = st.seed;
    double t0 = kn_now_seconds(), last_ckpt_t = t0;
    double vloss = NAN, vacc = NAN, last_loss = NAN;
    int64_t start_step = S.step, retries = 0, spikes_since_snapshot = 0, rate_s0 = -1;
    double rate_t0 = 0;
    if (G.x) { fflush(mf); S.metrics_bytes = ftell(mf); snapshot_take(&G, &G.anchor, m, &o, &S); }
    while (S.epoch < st.epochs && S.step < total_steps) {
        kn_loader_start_epoch(job.train_loader, S.epoch, S.batch_in_epoch);
        double ep_t0 = kn_now_seconds(), win_t0 = ep_t0;
        int64_t win_steps = 0;
        int restart = 0;
        while (S.step < total_steps && S.batch_in_epoch < steps_per_epoch && kn_loader_next(job.train_loader, x, y) > 0) {
            kn_model_set_targets(m, y);
            rt.step = S.step;
            if (G.x) memcpy(G.state_before, m->store.state, (size_t)m->store.nstate * sizeof(float));
            int health_now = H && acc.steps == 1 && kn_health_due(H, S.step); /* not in micro-batches */
            float loss = health_now ? kn_health_forward_backward(H, m, &rt) : kn_accum_step(&acc, m, &rt, y);
            double gnorm = 0;
            int need_norm = G.x || st.opt.clip_norm > 0;
            if (need_norm) gnorm = kn_global_norm(m->store.grad, m->store.nparam);
            int nonfinite = G.x && (!isfinite(loss) || !isfinite(gnorm));
            double med_now = G.x ? kn_spike_median(&spike) : NAN;
            int exploding = G.x && !nonfinite && st.guard_explode_factor > 0 && spike.n >= 16 &&
                            gnorm > st.guard_explode_factor * med_now;
            char cmsg[1024];
            int collapsed = G.x && !nonfinite && !exploding && health_now && kn_collapse_check(&C, H, S.step, loss, cmsg, sizeof cmsg);
            if (!health_now) kn_collapse_add_loss(&C, loss);
            const char *gkind = nonfinite ? "nonfinite" : exploding ? "exploding" : "collapse";
            if (nonfinite || exploding || collapsed) {
                kn_diag_report rep;
                memset(&rep, 0, sizeof rep);
                rep.step = S.step;
                char msg[3000];
                if (nonfinite) {
                    /* explain: replay this step op by op from the state before it */
                    /* the same batch again: its order is a function of (seed, epoch), so the
                     * loader can produce it again (and then continues after it) */
                    memcpy(m->store.state, G.state_before, (size_t)m->store.nstate * sizeof(float));
                    kn_loader_start_epoch(job.train_loader, S.epoch, S.batch_in_epoch);
                    kn_loader_next(job.train_loader, x, y);
                    kn_accum_load(&acc, m, y, 0); /* with micro-batches: the first one */
                    kn_diagnose(m->train, &rt, &rep);
                    kn_diag_format(&rep, msg, sizeof msg);
                } else if (collapsed) {
                    snprintf(msg, sizeof msg, "%s; %s", cmsg,
                             C.last_healthy < 0 ? "no health check of this run was healthy, so there is no good state to return to and a "
                                                  "smaller learning rate cannot help: change the initialisation, use leaky_relu, BatchNorm "
                                                  "or residual connections"
                                                : "it followed a healthy stretch, so the updates were too large for the network: kiln rolls "
                                                  "back to a state before the collapse with a smaller learning rate");
                } else {
                    snprintf(msg, sizeof msg,
                             "step %lld: exploding gradients: the global gradient norm %.4g is %.0fx its running median %.4g "
                             "(guard.explode_factor = %g); NaN usually follows",
                             (long long)S.step, gnorm, gnorm / med_now, med_now, st.guard_explode_factor);
                }
                memcpy(m->store.state, G.state_before, (size_t)m->store.nstate * sizeof(float));
                S.guard_events++;
                const char *action = st.guard_policy == 0 ? "skip" : st.guard_policy == 1 ? "rollback" : "stop";
                if (st.guard_policy == 1 && retries >= st.guard_max_retries) action = "stop";
                if (collapsed && st.guard_policy == 1 && C.last_healthy < 0) action = "stop";
                if (bar && out) fprintf(out, "\n");
                fprintf(stderr, "kiln: guard: %s\n", msg);
                if (!strcmp(action, "stop")) {
                    guard_event(mf, S.step, gkind, action, &rep, msg, S.lr_scale);
                    rc = kn_err(ctx, KN_ERR_INVALID, "training stopped by the %s guard (%s): %s; the last checkpoint in %s is good",
                                collapsed ? "collapse" : "non-finite",
                                st.guard_policy == 2 ? "guard.policy = stop"
                                : collapsed && C.last_healthy < 0 ? "nothing healthy to roll back to"
                                                                   : "retry limit guard.max_retries reached after rollbacks",
                                msg, R.ckpt_dir);
                    goto done;
                }
                if (health_now) kn_health_discard(H);
                if (!strcmp(action, "skip")) {
                    fprintf(stderr, "kiln: guard: skipping this batch (no update)\n");
                    guard_event(mf, S.step, gkind, action, &rep, msg, S.lr_scale);
                    S.step++;
                    S.batch_in_epoch++;
                    continue;
                }
                /* rollback, with a smaller learning rate: to the anchor if the failure
                 * came soon after it, else to the recent snapshot (the new anchor) */
                int64_t bad_step = S.step, events = S.guard_events;
                double scale = S.lr_scale * st.guard_lr_factor;
                if (G.recent.valid && S.step - G.anchor.S.step >= st.guard_trust_steps &&
                    (!collapsed || G.recent.S.step <= C.last_healthy)) {
                    snapshot_copy(&G, &G.anchor, &G.recent);
                    retries = 0;
                }
                snapshot_restore(&G, &G.anchor, m, &o, &S);
                G.recent.valid = 0;
                S.lr_scale = scale;
                S.guard_events = events;
                retries++;
                fflush(mf);
                if (ftruncate(fileno(mf), S.metrics_bytes) == 0) fseek(mf, 0, SEEK_END);
                fprintf(stderr, "kiln: guard: rolled back from step %lld to step %lld; learning rate x%g (retry %lld of %lld)\n",
                        (long long)bad_step, (long long)S.step, S.lr_scale, (long long)retries, (long long)st.guard_max_retries);
                guard_event(mf, bad_step, gkind, action, &rep, msg, S.lr_scale);
                fflush(mf);
                S.metrics_bytes = ftell(mf);
                /* the anchor now carries the new learning rate and the event */
                G.anchor.S.metrics_bytes = S.metrics_bytes;
                G.anchor.S.lr_scale = S.lr_scale;
                G.anchor.S.guard_events = S.guard_events;
                spike.n = spike.pos = 0;     /* the median restarts with the new learning rate */
                spikes_since_snapshot = 0;
                kn_collapse_reset(&C, S.step);
                kn_health_reset_history(H);
                restart = 1;
                break;
            }
            if (G.x) {
                double med = kn_spike_median(&spike);
                if (spike.n >= 16 && gnorm > st.guard_spike_factor * med) {
                    char msg[512];
                    double limit = st.guard_spike_factor * med;
                    snprintf(msg, sizeof msg, "step %lld: gradient norm %.4g is %.1fx the running median %.4g%s", (long long)S.step,
                             gnorm, gnorm / med, med, st.guard_auto_clip ? "; clipped to the limit" : " (guard.auto_clip = true would clip it)");
                    fprintf(stderr, "%skiln: warning: %s\n", bar && out ? "\n" : "", msg);
                    guard_event(mf, S.step, "grad_spike", st.guard_auto_clip ? "clip" : "warn", NULL, msg, S.lr_scale);
                    spikes_since_snapshot++;
                    if (st.guard_auto_clip) gnorm = kn_clip_grad_norm(m->store.grad, m->store.nparam, gnorm, limit);
                }
                kn_spike_add(&spike, gnorm);
            }
            if (st.opt.clip_norm > 0) kn_clip_grad_norm(m->store.grad, m->store.nparam, gnorm, st.opt.clip_norm);
            double lr = kn_opt_lr(&st.opt, S.step) * S.lr_scale;
            kn_opt_step(&o, m->store.param, m->store.grad, lr);
            if (health_now) {
                kn_health_set_lr_scale(H, st.opt.lr > 0 ? lr / st.opt.lr : 1.0);
                if (bar && out) fprintf(out, "\n");
                kn_health_after_update(H, m, S.step + 1, mf, out ? stderr : NULL);
            }
            S.step++;
            S.batch_in_epoch++;
            S.ep_steps++;
            S.ep_loss_sum += loss;
            win_steps++;
            last_loss = loss;
            int log_now = S.step % st.log_every == 0;
            if (log_now) fprintf(mf, "{\"event\":\"step\",\"step\":%lld,\"epoch\":%lld,\"loss\":%.9g,\"lr\":%.9g}\n",
                                 (long long)S.step, (long long)S.epoch, (double)loss, lr);
            if (rate_s0 < 0) { rate_t0 = kn_now_seconds(); rate_s0 = S.step; }
            if (out && (bar || log_now)) {
                double now = kn_now_seconds();
                double sps = (double)(win_steps * st.batch) / (now - win_t0 + 1e-9);
                /* the ETA from the steps after this process's first (which pays the one-time
                 * set-up of kernels and memory), once a few are measured; --:-- before */
                double eta = S.step - rate_s0 >= 3 ? (double)(total_steps - S.step) * (now - rate_t0) / (double)(S.step - rate_s0) : -1;
                char etas[32];
                fmt_time(eta, etas, sizeof etas);
                if (bar) {
                    if (log_now || win_steps == 1 || S.step == total_steps || S.batch_in_epoch % 10 == 0) {
                        int w = 24, filled = (int)((double)w * (double)S.batch_in_epoch / (double)steps_per_epoch);
                        char b[32];
                        for (int i = 0; i < w; i++) b[i] = i < filled ? '#' : '.';
                        b[w] = 0;
                        fprintf(out, "\repoch %lld/%lld [%s] %lld/%lld loss %.4f %.0f samples/s ETA %s   ",
                                (long long)S.epoch + 1, (long long)st.epochs, b, (long long)S.batch_in_epoch,
                                (long long)steps_per_epoch, (double)loss, sps, etas);
                        fflush(out);
                    }
                } else {
                    fprintf(out, "epoch %lld/%lld step %lld/%lld loss %.4f lr %.3g %.0f samples/s ETA %s\n",
                            (long long)S.epoch + 1, (long long)st.epochs, (long long)S.batch_in_epoch,
                            (long long)steps_per_epoch, (double)loss, lr, sps, etas);
                    fflush(out);
                }
                if (log_now) { win_t0 = now; win_steps = 0; }
            }
            /* no snapshot after a gradient spike until the next rollback: a rollback
             * lands before the first sign of the instability, not in its aftermath */
            if (G.x && S.step % st.guard_snapshot_every == 0 && spikes_since_snapshot == 0) {
                fflush(mf);
                S.metrics_bytes = ftell(mf);
                snapshot_take(&G, &G.recent, m, &o, &S);
            }
            if (opt->hook) opt->hook(opt->hook_arg, "step", S.step);
            int stop = kn_stop_requested();
            int end_of_epoch = S.batch_in_epoch == steps_per_epoch;
            double now = kn_now_seconds();
            int due = (st.ckpt_every_steps > 0 && S.step % st.ckpt_every_steps == 0) ||
                      (st.ckpt_every_seconds > 0 && now - last_ckpt_t >= st.ckpt_every_seconds);
            if (stop || (due && !end_of_epoch && S.step < total_steps)) {
                fflush(mf);
                S.metrics_bytes = ftell(mf);
                if ((rc = checkpoint(ctx, &R, &S, NULL, !out))) goto done;
                last_ckpt_t = kn_now_seconds();
                if (stop) {
                    if (bar && out) fprintf(out, "\n");
                    const char *sig = stop == SIGINT ? "SIGINT (Ctrl-C)" : stop == SIGTERM ? "SIGTERM" : "a stop request";
                    fprintf(stderr, "kiln: stopped by %s after step %lld; checkpoint %s/step-%09lld.safetensors written.\n"
                                    "kiln: continue with: kiln resume %s\n",
                            sig, (long long)S.step, R.ckpt_dir, (long long)S.step, run_dir);
                    res->stopped_by_signal = stop;
                    res->steps = S.step;
                    rc = kn_err(ctx, KN_ERR_INTERRUPTED, "stopped by %s at step %lld; resume with: kiln resume %s", sig,
                                (long long)S.step, run_dir);
                    goto done;
                }
            }
        }
        if (restart) continue;
        if (S.batch_in_epoch < steps_per_epoch) break; /* max_steps reached mid-epoch */
        if (bar && out) fprintf(out, "\n");
        if (opt->hook) opt->hook(opt->hook_arg, "eval", S.step);
        kn_evaluate(m, job.val_loader ? job.val_loader : job.test_loader, st.seed, &vloss, &vacc);
        if (opt->hook) opt->hook(opt->hook_arg, "eval_done", S.step);
        double secs = kn_now_seconds() - ep_t0;
        double tl = S.ep_steps ? S.ep_loss_sum / (double)S.ep_steps : NAN;
        fprintf(mf, "{\"event\":\"epoch\",\"epoch\":%lld,\"step\":%lld,\"train_loss\":%.9g,\"val_loss\":%.9g,\"val_accuracy\":%.6f,\"gap\":%.9g,\"seconds\":%.3f}\n",
                (long long)S.epoch + 1, (long long)S.step, tl, vloss, vacc, vloss - tl, secs);
        if (out) {
            fprintf(out, "epoch %lld/%lld done in %.1fs: train loss %.4f, validation loss %.4f (gap %+.4f), validation accuracy %.2f%%\n",
                    (long long)S.epoch + 1, (long long)st.epochs, secs, tl, vloss, vloss - tl, 100.0 * vacc);
            fflush(out);
        }
        int is_best = vloss < S.best_val;
        if (is_best) { S.best_val = vloss; S.best_step = S.step; S.bad_epochs = 0; }
        else S.bad_epochs++;
        char ofmsg[768];
        if (kn_overfit_epoch(&OF, tl, vloss, ofmsg, sizeof ofmsg)) {
            fprintf(stderr, "kiln: warning: %s\n", ofmsg);
            fprintf(mf, "{\"event\":\"warning\",\"step\":%lld,\"kind\":\"overfitting\",\"message\":", (long long)S.step);
            json_str(mf, ofmsg);
            fprintf(mf, "}\n");
        }
        S.epoch++;
        S.batch_in_epoch = 0;
        S.ep_steps = 0;
        S.ep_loss_sum = 0;
        fflush(mf);
        S.metrics_bytes = ftell(mf);
        if ((rc = checkpoint(ctx, &R, &S, is_best ? "best.safetensors" : NULL, !out))) goto done;
        if (st.ckpt_keep_epochs) {
            snprintf(path, sizeof path, "%s/epoch-%04lld.safetensors", R.ckpt_dir, (long long)S.epoch);
            if ((rc = save_state(ctx, &R, path, &S))) goto done;
        }
        last_ckpt_t = kn_now_seconds();
        if (G.x && spikes_since_snapshot == 0) snapshot_take(&G, &G.recent, m, &o, &S);
        if (st.early_stopping > 0 && S.bad_epochs >= st.early_stopping && S.epoch < st.epochs) {
            /* stop and go back to the best weights */
            char bp[2600];
            snprintf(bp, sizeof bp, "%s/best.safetensors", R.ckpt_dir);
            kn_ckpt *bc = NULL;
            if ((rc = kn_ckpt_open(ctx, bp, &bc))) goto done;
            rc = kn_ckpt_load_store(ctx, bc, &m->store);
            kn_ckpt_close(bc);
            if (rc) goto done;
            if (out) fprintf(out, "early stopping: validation loss has not improved for %lld epochs; restored the best model (step %lld, validation loss %.4f)\n",
                             (long long)S.bad_epochs, (long long)S.best_step, S.best_val);
            fprintf(mf, "{\"event\":\"early_stop\",\"step\":%lld,\"best_step\":%lld,\"best_val_loss\":%.9g}\n", (long long)S.step,
                    (long long)S.best_step, S.best_val);
            early_stopped = 1;
            break;
        }
    }
    if (S.batch_in_epoch > 0 && !early_stopped) { /* ended mid-epoch (max_steps): keep the position */
        fflush(mf);
        S.metrics_bytes = ftell(mf);
        if ((rc = checkpoint(ctx, &R, &S, NULL, !out))) goto done;
    }
    res->seconds = kn_now_seconds() - t0;
    res->steps = S.step;
    res->final_train_loss = last_loss;
    res->val_loss = vloss;
    res->val_accuracy = vacc;
    if (opt->hook) opt->hook(opt->hook_arg, "test", S.step);
    kn_evaluate(m, job.test_loader, st.seed, &res->test_loss, &res->test_accuracy);
    fprintf(mf, "{\"event\":\"test\",\"step\":%lld,\"test_loss\":%.9g,\"test_accuracy\":%.6f}\n", (long long)S.step,
            res->test_loss, res->test_accuracy);
    fprintf(mf, "{\"event\":\"checkpoint_time\",\"writes\":%d,\"seconds\":%.6f,\"train_seconds\":%.6f}\n", R.nwrites,
            R.write_seconds, res->seconds);
    {
        char steps_s[32];
        snprintf(steps_s, sizeof steps_s, "%lld", (long long)S.step);
        char mean_s[64], std_s[64];
        snprintf(mean_s, sizeof mean_s, "%.17g", (double)job.mean);
        snprintf(std_s, sizeof std_s, "%.17g", (double)job.std);
        kn_ckpt_meta meta[5] = {{"config", cfg_text}, {"step", steps_s}, {"kind", "model"}, {"data_mean", mean_s}, {"data_std", std_s}};
        snprintf(path, sizeof path, "%s/model.safetensors", run_dir);
        if (opt->hook) opt->hook(opt->hook_arg, "model", S.step);
        if ((rc = kn_ckpt_save(ctx, path, &m->store, NULL, 0, meta, 5))) goto done;
    }
    if (out) {
        if (S.step == start_step && resumed) fprintf(out, "training was already complete (step %lld)\n", (long long)S.step);
        fprintf(out, "test: loss %.4f, accuracy %.2f%% (%lld samples) after %lld steps in %.1fs\n", res->test_loss,
                100.0 * res->test_accuracy, (long long)job.test_ds.n, (long long)S.step, res->seconds);
        fprintf(out, "model saved to %s/model.safetensors; checkpoints in %s\n", run_dir, R.ckpt_dir);
    }
done:
    if (mf) fclose(mf);
    if (lock_fd >= 0) close(lock_fd); /* releases the run directory */
    peek_free(&pk);
    free(y);
    kn_accum_free(&acc);
    free(cfg_text);
    guard_free(&G);
    kn_health_free(H);
    kn_opt_free(&o);
    kn_job_close(&job);
    return rc;
}

int kn_resume(kn_ctx *ctx, const char *run_dir, const kn_train_options *opt, kn_train_result *res) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.ini", run_dir);
    if (!file_exists(p)) {
        struct stat sb;
        if (stat(run_dir, &sb) != 0) return kn_err(ctx, KN_ERR_IO, "cannot resume '%s': %s", run_dir, strerror(errno));
        return kn_err(ctx, KN_ERR_IO, "cannot resume '%s': it holds no config.ini (is it a kiln run directory? A run stopped before "
                                      "it wrote config.ini had not begun: start it again with kiln train CONFIG --run-dir %s)",
                      run_dir, run_dir);
    }
    kn_config *cfg = NULL;
    int rc = kn_config_load(ctx, p, &cfg);
    if (rc) return rc;
    kn_train_options o;
    if (opt) o = *opt;
    else kn_train_options_init(&o);
    /* a memory budget is not a change of the run (its micro-batch split is kept) */
    char a[1100];
    if (!rc && o.budget) {
        snprintf(a, sizeof a, "train.budget=%s", o.budget);
        rc = kn_config_set(ctx, cfg, a);
    }
    if (!rc && o.fit) rc = kn_config_set(ctx, cfg, "train.fit=true");
    if (rc) { kn_config_free(cfg); return rc; }
    o.run_dir = run_dir;
    o.resume_only = 1;
    rc = kn_train(ctx, cfg, &o, res);
    kn_config_free(cfg);
    return rc;
}

/* ---------------- inspect ---------------- */
int kn_inspect(kn_ctx *ctx, const char *path, const char *dump, FILE *out) {
    kn_ckpt *c = NULL;
    int rc = kn_ckpt_open(ctx, path, &c);
    if (rc) return rc;
    if (dump) {
        const float *d;
        kn_shape sh;
        if ((rc = kn_ckpt_get(ctx, c, dump, &d, &sh)) == KN_OK) {
            int64_t n = kn_shape_numel(&sh);
            for (int64_t i = 0; i < n; i++) fprintf(out, "%.9g\n", (double)d[i]);
        }
        kn_ckpt_close(c);
        return rc;
    }
    static const char *const crc_says[] = {"absent (not written by kiln)", "ok (crc32 of the data verified; metadata not covered: an older kiln wrote it)",
                                           "ok (crc32 of the whole file verified)"};
    fprintf(out, "%s: safetensors, %d tensors, checksum %s\n", path, kn_ckpt_count(c) + kn_ckpt_other_count(c),
            crc_says[kn_ckpt_checksum(c)]);
    fprintf(out, "%-48s %-18s %10s %12s %12s %12s\n", "tensor", "shape", "elements", "min", "max", "mean");
    for (int i = 0; i < kn_ckpt_count(c); i++) {
        const float *d;
        kn_shape sh;
        kn_ckpt_get(ctx, c, kn_ckpt_name(c, i), &d, &sh);
        int64_t n = kn_shape_numel(&sh);
        double mn = INFINITY, mx = -INFINITY, sum = 0;
        for (int64_t k = 0; k < n; k++) {
            if (d[k] < mn) mn = d[k];
            if (d[k] > mx) mx = d[k];
            sum += d[k];
        }
        char s[64];
        fprintf(out, "%-48s %-18s %10lld %12.5g %12.5g %12.5g\n", kn_ckpt_name(c, i), kn_shape_str(&sh, s, sizeof s),
                (long long)n, n ? mn : 0.0, n ? mx : 0.0, n ? sum / (double)n : 0.0);
    }
    for (int i = 0; i < kn_ckpt_other_count(c); i++) {
        const char *dt;
        kn_shape sh;
        const char *nm = kn_ckpt_other(c, i, &dt, &sh);
        char s[64];
        fprintf(out, "%-48s %-18s %10lld   (%s: not read by kiln)\n", nm, kn_shape_str(&sh, s, sizeof s), (long long)kn_shape_numel(&sh), dt);
    }
    static const char *const keys[] = {"kind", "kiln_version", "step", "epoch", "batch_in_epoch", "seed",
                                       "optimizer_t", "best_val_loss", "best_step", "config_hash", "algorithms",
                                       "isa_path", "kiln_crc32", "kiln_file_crc32", NULL};
    fprintf(out, "metadata:\n");
    for (int i = 0; keys[i]; i++) {
        const char *v = kn_ckpt_meta_get(c, keys[i]);
        if (v) fprintf(out, "  %-16s %s\n", keys[i], v);
    }
    if (kn_ckpt_meta_get(c, "config")) fprintf(out, "  %-16s (%zu bytes of INI text)\n", "config", strlen(kn_ckpt_meta_get(c, "config")));
    kn_ckpt_close(c);
    return KN_OK;
}
