/* kiln — memory plan of a run, budget check, micro-batch fit, gradient accumulation.
 * See plan.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/plan.h"

#include "backend/backend.h"

#include <cJSON.h>
#include <oneapi/dnnl/dnnl.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "config/config.h"
#include "data/data.h"

/* ---------------- settings ---------------- */
int kn_parse_size(const char *s, size_t *out) {
    if (!s) return -1;
    while (isspace((unsigned char)*s)) s++;
    if (!isdigit((unsigned char)*s) && *s != '.') return -1;
    char *end;
    double v = strtod(s, &end);
    if (end == s || !(v >= 0) || !isfinite(v)) return -1;
    while (isspace((unsigned char)*end)) end++;
    double mul = 1;
    switch (*end) {
    case 'k': case 'K': mul = 1024.0; end++; break;
    case 'm': case 'M': mul = 1048576.0; end++; break;
    case 'g': case 'G': mul = 1073741824.0; end++; break;
    case 't': case 'T': mul = 1099511627776.0; end++; break;
    default: break;
    }
    if (mul > 1 && *end == 'i') end++;
    if (*end == 'B' || (*end == 'b' && mul > 1)) end++;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return -1;
    double b = v * mul;
    if (b >= 9.2e18) return -1;
    *out = (size_t)llround(b);
    return 0;
}

const char *kn_size_str(size_t b, char *buf, size_t n) {
    if (b >= (size_t)1 << 30) snprintf(buf, n, "%.2f GiB", (double)b / 1073741824.0);
    else if (b >= (size_t)1 << 20) snprintf(buf, n, "%.1f MiB", (double)b / 1048576.0);
    else if (b >= 1024) snprintf(buf, n, "%.1f KiB", (double)b / 1024.0);
    else snprintf(buf, n, "%zu B", b);
    return buf;
}

int kn_plan_read_settings(kn_ctx *ctx, const kn_config *cfg, kn_settings *st) {
    const kn_cfg_section *t = kn_cfg_find(cfg, "train");
    int rc;
    const char *b = NULL;
    st->mem_budget = 0;
    if ((rc = kn_cfg_str(ctx, cfg, t, "budget", NULL, &b))) return rc;
    if (b && kn_parse_size(b, &st->mem_budget) != 0) {
        char w[256];
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] budget = '%s': expected a size such as 512M, 2G or 1.5G (K, M, G are powers of 1024)",
                      kn_cfg_where(cfg, t, "budget", w, sizeof w), b);
    }
    if ((rc = kn_cfg_bool(ctx, cfg, t, "fit", 0, &st->mem_fit))) return rc;
    if ((rc = kn_cfg_int(ctx, cfg, t, "micro_batch", 0, 0, 1 << 20, &st->micro_batch))) return rc;
    if (st->micro_batch > 0 && st->batch % st->micro_batch != 0) {
        char w[256];
        return kn_err(ctx, KN_ERR_CONFIG, "%s: [train] micro_batch = %lld must divide data.batch_size = %lld",
                      kn_cfg_where(cfg, t, "micro_batch", w, sizeof w), (long long)st->micro_batch, (long long)st->batch);
    }
    return KN_OK;
}

/* ---------------- memory available ---------------- */
static int read_u64(const char *path, unsigned long long *v) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[64] = {0};
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok || !isdigit((unsigned char)buf[0])) return -1; /* "max" */
    *v = strtoull(buf, NULL, 10);
    return 0;
}

static unsigned long long stat_key(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    unsigned long long v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ' ') { v = strtoull(line + kl + 1, NULL, 10); break; }
    fclose(f);
    return v;
}

size_t kn_mem_available(char *what, size_t n) {
    size_t best = 0;
    snprintf(what, n, "unknown");
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            unsigned long long kb;
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                best = (size_t)kb * 1024;
                snprintf(what, n, "MemAvailable");
            }
        }
        fclose(f);
    }
    /* cgroup v2, then v1 (the process's own group is mounted at the root in a container) */
    static const char *const lim[] = {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    static const char *const cur[] = {"/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"};
    static const char *const stat[] = {"/sys/fs/cgroup/memory.stat", "/sys/fs/cgroup/memory/memory.stat"};
    static const char *const inact[] = {"inactive_file", "total_inactive_file"};
    for (int i = 0; i < 2; i++) {
        unsigned long long l, c;
        if (read_u64(lim[i], &l) || l >= (1ULL << 60)) continue;
        if (read_u64(cur[i], &c)) c = 0;
        unsigned long long in = stat_key(stat[i], inact[i]);
        c = c > in ? c - in : 0;
        size_t avail = l > c ? (size_t)(l - c) : 0;
        if (!best || avail < best) {
            best = avail;
            snprintf(what, n, "cgroup memory limit %.1f MiB less %.1f MiB in use", (double)l / 1048576.0,
                     (double)c / 1048576.0);
        }
        break;
    }
    return best;
}

/* ---------------- data shapes without loading the images ---------------- */
static int peek_idx(kn_ctx *ctx, const char *path, int *nd, int64_t dims[4]) {
    return kn_idx_peek(ctx, path, nd, dims); /* the reader's own header checks */
}

typedef struct {
    int64_t ntrain_file, ntest_file;
    int channels, rows, cols, nclasses;
    /* a typed source: the sample description, elements per sample of input and target,
     * and the bytes the tables hold */
    int typed;
    kn_data_desc desc;
    int64_t xelems, yelems;
    size_t table_bytes;
} data_info;

static int labels_max(kn_ctx *ctx, const char *path, int64_t n_expected, const char *images, int *maxl) {
    kn_idx lb;
    int rc = kn_idx_load(ctx, path, &lb);
    if (rc) return rc;
    if (lb.nd != 1 || lb.dims[0] != n_expected) {
        long long nl = lb.nd == 1 ? (long long)lb.dims[0] : -1;
        kn_idx_free(&lb);
        return kn_err(ctx, KN_ERR_FORMAT, "%s: images file has %lld samples but labels file has %lld (%s); the two files do not belong together",
                      images, (long long)n_expected, nl, path);
    }
    for (int64_t i = 0; i < lb.dims[0]; i++)
        if (lb.data[i] > *maxl) *maxl = lb.data[i];
    kn_idx_free(&lb);
    return KN_OK;
}

/* Labels beyond the model's classes (kn_model_classes) are an error naming the labels
 * file and the sample; the class count is then the model's. */
static int labels_fit(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, data_info *d) {
    int k = kn_model_classes(cfg), rc = KN_OK;
    const char *paths[2] = {st->train_labels, st->test_labels};
    const int64_t lim[2] = {st->limit_train, st->limit_test};
    for (int i = 0; k > 0 && i < 2 && !rc; i++) {
        kn_idx lb;
        if ((rc = kn_idx_load(ctx, paths[i], &lb))) break;
        int64_t n = lim[i] > 0 && lim[i] < lb.dims[0] ? lim[i] : lb.dims[0];
        rc = kn_labels_check(ctx, paths[i], lb.data, n, k);
        kn_idx_free(&lb);
    }
    if (!rc && k > 0) d->nclasses = k;
    return rc;
}

static int data_peek(kn_ctx *ctx, const kn_settings *st, data_info *d) {
    int nd, rc, maxl = 0;
    int64_t dims[4];
    memset(d, 0, sizeof *d);
    if ((rc = peek_idx(ctx, st->train_images, &nd, dims))) return rc;
    if (nd != 3 && nd != 4)
        return kn_err(ctx, KN_ERR_FORMAT, "%s: images IDX file has %d dimensions; expected 3 (N,rows,cols) or 4 (N,C,H,W)",
                      st->train_images, nd);
    d->ntrain_file = dims[0];
    d->channels = nd == 3 ? 1 : (int)dims[1];
    d->rows = (int)dims[nd - 2];
    d->cols = (int)dims[nd - 1];
    if ((rc = labels_max(ctx, st->train_labels, d->ntrain_file, st->train_images, &maxl))) return rc;
    if ((rc = peek_idx(ctx, st->test_images, &nd, dims))) return rc;
    d->ntest_file = dims[0];
    if ((rc = labels_max(ctx, st->test_labels, d->ntest_file, st->test_images, &maxl))) return rc;
    d->nclasses = maxl + 1;
    return KN_OK;
}

/* A typed source is read to know its shapes (a CSV's columns are known only then), with
 * the checks the run makes: the same job_open code path (trainer.c) builds the tables. */
static int data_peek_typed(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, data_info *d) {
    memset(d, 0, sizeof *d);
    d->typed = 1;
    kn_settings s2 = *st;
    s2.batch = 1; /* only the description is needed: a model of batch 1 */
    s2.micro_batch = 0;
    s2.eval_batch = 1;
    kn_job j;
    int rc = kn_job_open(ctx, cfg, &s2, 0, &j);
    if (!rc) {
        d->desc = j.desc;
        d->ntrain_file = j.train_t.n;
        d->ntest_file = j.test_t.n;
        d->nclasses = j.desc.target_real ? 0 : j.desc.nclasses;
        d->xelems = j.train_t.fields[j.x_field].sample_numel;
        d->yelems = j.train_t.fields[j.y_field].sample_numel;
        d->table_bytes = (size_t)(d->ntrain_file + d->ntest_file) * (size_t)(d->xelems + d->yelems) * 4;
    }
    kn_job_close(&j);
    return rc;
}

/* ---------------- the plan ---------------- */
static size_t al(size_t b) { return kn_alloc_footprint(b); }

static void plan_process(kn_mem_plan *p, const kn_settings *st, const data_info *d) {
    kn_mem_parts *m = &p->mem;
    size_t elems = d->typed ? (size_t)d->xelems : (size_t)d->channels * (size_t)d->rows * (size_t)d->cols;
    const size_t yel = d->typed ? (size_t)d->yelems : 1;
    m->arena = al(p->train_arena > p->eval_arena ? p->train_arena : p->eval_arena);
    m->store_params = al((size_t)p->nparam * 4);
    m->store_grads = al((size_t)p->nparam * 4);
    m->store_state = al((size_t)p->nstate * 4);
    m->optimizer = (size_t)p->opt_floats * al((size_t)p->nparam * 4);
    m->accumulation = p->accum_steps > 1 ? al((size_t)p->nparam * 4) + al((size_t)p->batch * elems * 4) : 0;
    m->datasets = d->typed ? d->table_bytes : (size_t)d->ntrain_file * (elems + 1) + (size_t)d->ntest_file * (elems + 1);
    size_t loaders = 0;
    int64_t ntr = p->ntrain + p->nval;
    if (p->nval > 0) loaders += (size_t)ntr * 8 + (size_t)p->nval * 8 * 2 + (size_t)p->ntrain * 8; /* split + copies */
    loaders += (size_t)p->ntrain * 8 + (size_t)p->nval * 8 + (size_t)p->ntest * 8;             /* orders */
    loaders += (size_t)st->prefetch * (al((size_t)p->batch * elems * 4) + al((size_t)p->batch * yel * 4));
    loaders += ((size_t)p->batch + (size_t)p->eval_batch) * yel * 4; /* label buffers */
    m->loaders = loaders;
    /* guard_policy.c: the guard's BatchNorm statistics before the step and two snapshots
     * (parameters, state, optimizer moments; the batch itself is not copied: the
     * loader reproduces it for a replay), the health checks' copy of the parameters
     * and the leakage check's hash table (16 bytes per training sample, freed before
     * step 1 but part of the peak) */
    m->guard = 0;
    if (st->guard_enabled)
        m->guard += 3 * al((size_t)p->nstate * 4) + 2 * (size_t)(1 + p->opt_floats) * al((size_t)p->nparam * 4);
    if (st->health_every > 0) m->guard += (size_t)(p->nparam + 1) * 4;
    if (st->leakage_check) m->guard += (size_t)p->ntrain * 16;
    m->baseline = KN_RSS_BASELINE_BYTES + (size_t)p->nconv * KN_RSS_PER_CONV_BYTES +
                  (size_t)(p->threads > 1 ? p->threads - 1 : 0) * KN_RSS_PER_THREAD_BYTES;
    /* what the backend's libraries hold beside the plan (the CPU below AVX-512: oneDNN's
     * sgemm driver, more of libdnnl's text, per-thread packing buffers and malloc arenas:
     * measured) */
    m->baseline += kn_backend_get(KN_BACKEND_CPU)->rss_extra();
    size_t sum = m->arena + m->store_params + m->store_grads + m->store_state + m->optimizer + m->accumulation +
                 m->datasets + m->loaders + m->guard + m->baseline;
    /* an upper bound: the measured peak varies by a few MiB from run to run */
    m->baseline += (size_t)((double)sum * KN_RSS_MARGIN);
    m->total = sum + (size_t)((double)sum * KN_RSS_MARGIN);
}

int kn_plan_make(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int64_t micro_batch, int64_t eval_batch,
                 kn_mem_plan *p) {
    memset(p, 0, sizeof *p);
    p->largest_batch = -1;
    int rc;
    data_info d;
    if ((rc = kn_model_check_config(ctx, cfg))) return rc;
    if (st->typed) {
        if ((rc = data_peek_typed(ctx, cfg, st, &d))) return rc;
    } else {
        if ((rc = data_peek(ctx, st, &d))) return rc;
        if ((rc = labels_fit(ctx, cfg, st, &d))) return rc;
        kn_data_desc_image(&d.desc, d.channels, d.rows, d.cols, d.nclasses);
    }
    p->batch = st->batch;
    p->micro_batch = micro_batch > 0 ? micro_batch : st->batch;
    p->accum_steps = p->batch / p->micro_batch;
    p->eval_batch = eval_batch > 0 ? eval_batch : st->eval_batch;
    p->threads = kn_get_threads();
    p->channels = d.channels;
    p->height = d.rows;
    p->width = d.cols;
    p->nclasses = d.nclasses;
    int64_t ntr = st->limit_train > 0 && st->limit_train < d.ntrain_file ? st->limit_train : d.ntrain_file;
    p->nval = (int64_t)floor(st->val_split * (double)ntr);
    p->ntrain = ntr - p->nval;
    p->ntest = st->limit_test > 0 && st->limit_test < d.ntest_file ? st->limit_test : d.ntest_file;
    p->opt_floats = st->opt.kind == KN_OPT_SGD ? 1 : 2;
    kn_model m;
    rc = kn_model_plan_desc(ctx, cfg, p->micro_batch, p->eval_batch, &d.desc, &m);
    if (rc) { kn_model_free(&m); return rc; }
    p->nparam = m.store.nparam;
    p->nstate = m.store.nstate;
    p->train_arena = m.train->arena_bytes;
    p->train_used = m.train->arena_used;
    p->train_naive = m.train->naive_bytes;
    p->train_saved = kn_g_saved_bytes(m.train);
    p->eval_arena = m.eval->arena_bytes;
    p->eval_naive = m.eval->naive_bytes;
    for (int k = 0; k < m.train->nn; k++)
    {
        if (kn_op_has(m.train->n[k].op, KN_OPF_BATCHNORM)) p->has_batchnorm = 1; /* fused variants too */
        if (kn_op_has(m.train->n[k].op, KN_OPF_CONV)) p->nconv++;
    }
    p->nlayers = kn_g_layer_stats(m.train, &p->layers);
    kn_model_free(&m);
    if (p->nlayers < 0) { p->nlayers = 0; return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
    plan_process(p, st, &d);
    return KN_OK;
}

void kn_plan_free(kn_mem_plan *p) {
    free(p->layers);
    p->layers = NULL;
    p->nlayers = 0;
}

/* ---------------- reports ---------------- */
typedef struct { const char *name; size_t bytes; } part;

static int parts_of(const kn_mem_plan *p, part *out) {
    const kn_mem_parts *m = &p->mem;
    part all[] = {{"arena", m->arena},
                  {"parameters", m->store_params},
                  {"gradients", m->store_grads},
                  {"state", m->store_state},
                  {"optimizer", m->optimizer},
                  {"accumulation", m->accumulation},
                  {"datasets", m->datasets},
                  {"loaders", m->loaders},
                  {"guard/health", m->guard},
                  {"baseline", m->baseline}};
    int n = (int)(sizeof all / sizeof all[0]);
    memcpy(out, all, sizeof all);
    return n;
}

void kn_plan_consumers(const kn_mem_plan *p, char *buf, size_t n) {
    part pa[16];
    int np = parts_of(p, pa);
    for (int i = 0; i < np; i++) /* largest first */
        for (int j = i + 1; j < np; j++)
            if (pa[j].bytes > pa[i].bytes) { part t = pa[i]; pa[i] = pa[j]; pa[j] = t; }
    size_t k = 0;
    buf[0] = 0;
    for (int i = 0; i < 3 && i < np && k < n; i++) {
        char s[32];
        kn_size_str(pa[i].bytes, s, sizeof s);
        if (!strcmp(pa[i].name, "arena")) {
            /* which graph, and its biggest saved activations */
            int tr = p->train_arena >= p->eval_arena;
            k += (size_t)snprintf(buf + k, n - k, "%sarena %s (%s graph at batch %lld", i ? ", " : "", s,
                                  tr ? "training" : "evaluation", (long long)(tr ? p->micro_batch : p->eval_batch));
            if (tr && p->nlayers > 0 && k < n) {
                int best = -1;
                for (int r = 0; r < p->nlayers; r++)
                    if (best < 0 || p->layers[r].saved_bytes > p->layers[best].saved_bytes) best = r;
                char s2[32];
                k += (size_t)snprintf(buf + k, n - k, "; activations kept for backward %s, most by '%s' %s",
                                      kn_size_str(p->train_saved, s, sizeof s), p->layers[best].layer,
                                      kn_size_str(p->layers[best].saved_bytes, s2, sizeof s2));
            }
            if (k < n) k += (size_t)snprintf(buf + k, n - k, ")");
        } else {
            k += (size_t)snprintf(buf + k, n - k, "%s%s %s", i ? ", " : "", pa[i].name, s);
        }
    }
}

static void hs(size_t b, char *buf, size_t n) { /* compact: 1.5M */
    if (b == 0) snprintf(buf, n, "0");
    else if (b >= (size_t)1 << 30) snprintf(buf, n, "%.2fG", (double)b / 1073741824.0);
    else if (b >= (size_t)1 << 20) snprintf(buf, n, "%.1fM", (double)b / 1048576.0);
    else if (b >= 1024) snprintf(buf, n, "%.1fK", (double)b / 1024.0);
    else snprintf(buf, n, "%zuB", b);
}

static const char *bn_note(const kn_mem_plan *p, char *buf, size_t n) {
    buf[0] = 0;
    if (p->accum_steps > 1 && p->has_batchnorm)
        snprintf(buf, n, "BatchNorm normalises each micro-batch of %lld with that micro-batch's own statistics and updates its running statistics once per micro-batch (%lld times per step); results differ slightly from an unsplit batch of %lld",
                 (long long)p->micro_batch, (long long)p->accum_steps, (long long)p->batch);
    return buf;
}

void kn_plan_print(const kn_mem_plan *p, FILE *f, int per_layer) {
    char a[32], b[32], c[32], d[32], e[32], g[32], sh[64];
    if (per_layer) {
        fprintf(f, "%-14s %-16s %10s %10s %10s %9s %9s %9s %9s %9s\n", "layer", "output", "params", "fwd MFLOP",
                "bwd MFLOP", "params B", "grads B", "optim B", "saved B", "scratch B");
        for (int i = 0; i < p->nlayers; i++) {
            const kn_layer_stats *L = &p->layers[i];
            hs(L->param_bytes, a, sizeof a);
            hs(L->grad_bytes, b, sizeof b);
            hs(L->grad_bytes * (size_t)p->opt_floats, c, sizeof c);
            hs(L->saved_bytes, d, sizeof d);
            hs(L->scratch_bytes, e, sizeof e);
            char name[80];
            snprintf(name, sizeof name, "%s%s%s", L->layer, L->recompute ? "*" : "",
                     !strcmp(L->impl, "winograd") ? " (wino)" : "");
            fprintf(f, "%-14s %-16s %10lld %10.2f %10.2f %9s %9s %9s %9s %9s\n", name, kn_shape_str(&L->out, sh, sizeof sh),
                    (long long)L->params, L->flops_fwd / 1e6, L->flops_bwd / 1e6, a, b, c, d, e);
        }
        int anyr = 0;
        for (int i = 0; i < p->nlayers; i++) anyr |= p->layers[i].recompute;
        if (anyr) fprintf(f, "* recomputed in backward: activations not kept, forward FLOPs counted again in bwd\n");
        int anyw = 0;
        for (int i = 0; i < p->nlayers; i++) anyw |= !strcmp(p->layers[i].impl, "winograd");
        if (anyw)
            fprintf(f, "(wino): a Winograd convolution (conv2d algorithm = auto or winograd); its FLOPs are counted "
                       "as for the direct algorithm\n");
        fprintf(f, "\n");
    }
    const kn_mem_parts *m = &p->mem;
    if (p->accum_steps > 1)
        fprintf(f, "batch %lld as %lld micro-batches of %lld (gradients accumulated), eval batch %lld, %lld parameters, %d threads\n",
                (long long)p->batch, (long long)p->accum_steps, (long long)p->micro_batch, (long long)p->eval_batch,
                (long long)p->nparam, p->threads);
    else
        fprintf(f, "batch %lld, eval batch %lld, %lld parameters, %d threads\n", (long long)p->batch,
                (long long)p->eval_batch, (long long)p->nparam, p->threads);
    double red = p->train_naive ? 100.0 * (1.0 - (double)p->train_arena / (double)p->train_naive) : 0;
    fprintf(f, "train graph: arena planned peak %s, naive total %s (%.0f%% less); activations kept for backward %s\n",
            kn_size_str(p->train_arena, a, sizeof a), kn_size_str(p->train_naive, b, sizeof b), red,
            kn_size_str(p->train_saved, c, sizeof c));
    fprintf(f, "eval graph:  arena planned peak %s, naive total %s; one arena of %s serves both\n",
            kn_size_str(p->eval_arena, a, sizeof a), kn_size_str(p->eval_naive, b, sizeof b),
            kn_size_str(m->arena, c, sizeof c));
    fprintf(f, "predicted peak resident memory: %s = arena %s + parameters/gradients/state %s + optimizer %s",
            kn_size_str(m->total, a, sizeof a), kn_size_str(m->arena, b, sizeof b),
            kn_size_str(m->store_params + m->store_grads + m->store_state, c, sizeof c),
            kn_size_str(m->optimizer, d, sizeof d));
    if (m->accumulation) fprintf(f, " + accumulation %s", kn_size_str(m->accumulation, a, sizeof a));
    fprintf(f, " + datasets %s + loaders %s", kn_size_str(m->datasets, e, sizeof e), kn_size_str(m->loaders, g, sizeof g));
    if (m->guard) fprintf(f, " + guard/health %s", kn_size_str(m->guard, a, sizeof a));
    fprintf(f, " + baseline %s\n", kn_size_str(m->baseline, a, sizeof a));
    if (p->budget) {
        fprintf(f, "budget: %s (%s): %s", kn_size_str(p->budget, a, sizeof a), p->budget_source,
                p->fits ? "fits" : "does NOT fit");
        if (!p->fits && p->largest_batch > 0) fprintf(f, "; the largest batch that fits is %lld", (long long)p->largest_batch);
        if (!p->fits && p->largest_batch == 0) fprintf(f, "; no batch size fits");
        fprintf(f, "\n");
    }
    char note[512];
    if (bn_note(p, note, sizeof note)[0]) fprintf(f, "note: %s\n", note);
    if (p->train_arena_norec) {
        if (p->train_arena < p->train_arena_norec && m->total < p->total_norec)
            fprintf(f, "recomputation: training arena %s instead of %s, activations kept %s instead of %s; "
                       "predicted peak %s instead of %s\n",
                    kn_size_str(p->train_arena, a, sizeof a), kn_size_str(p->train_arena_norec, b, sizeof b),
                    kn_size_str(p->train_saved, c, sizeof c), kn_size_str(p->train_saved_norec, d, sizeof d),
                    kn_size_str(m->total, e, sizeof e), kn_size_str(p->total_norec, g, sizeof g));
        else if (p->train_arena < p->train_arena_norec && p->eval_arena >= p->train_arena_norec)
            fprintf(f, "note: recomputation lowers the training arena (%s instead of %s; activations kept %s instead "
                       "of %s) but not the predicted peak: the evaluation graph's arena (%s at eval batch %lld) is "
                       "larger; a smaller data.eval_batch_size lets it count\n",
                    kn_size_str(p->train_arena, a, sizeof a), kn_size_str(p->train_arena_norec, b, sizeof b),
                    kn_size_str(p->train_saved, c, sizeof c), kn_size_str(p->train_saved_norec, d, sizeof d),
                    kn_size_str(p->eval_arena, e, sizeof e), (long long)p->eval_batch);
        else if (p->train_arena < p->train_arena_norec)
            fprintf(f, "note: recomputation lowers the training arena (%s instead of %s; activations kept %s instead "
                       "of %s) but not the predicted peak (%s either way: the arena is allocated in 2 MiB pages)\n",
                    kn_size_str(p->train_arena, a, sizeof a), kn_size_str(p->train_arena_norec, b, sizeof b),
                    kn_size_str(p->train_saved, c, sizeof c), kn_size_str(p->train_saved_norec, d, sizeof d),
                    kn_size_str(m->total, e, sizeof e));
        else
            fprintf(f, "note: recomputation %s: training arena %s with it, %s without, though it keeps %s of "
                       "activations instead of %s (%s); recompute fewer or other blocks, or none\n",
                    p->train_arena > p->train_arena_norec ? "raises the planned peak" : "does not lower the planned peak",
                    kn_size_str(p->train_arena, a, sizeof a), kn_size_str(p->train_arena_norec, b, sizeof b),
                    kn_size_str(p->train_saved, c, sizeof c), kn_size_str(p->train_saved_norec, d, sizeof d),
                    p->train_arena > p->train_arena_norec
                        ? "a recomputed block holds all its forward outputs at once in backward"
                        : "the peak is at a step that recomputation does not relieve");
    }
}

char *kn_plan_json(const kn_mem_plan *p) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "batch", (double)p->batch);
    cJSON_AddNumberToObject(o, "micro_batch", (double)p->micro_batch);
    cJSON_AddNumberToObject(o, "accumulation_steps", (double)p->accum_steps);
    cJSON_AddNumberToObject(o, "eval_batch", (double)p->eval_batch);
    cJSON_AddNumberToObject(o, "threads", p->threads);
    cJSON_AddNumberToObject(o, "parameters", (double)p->nparam);
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    for (int i = 0; i < p->nlayers; i++) {
        const kn_layer_stats *L = &p->layers[i];
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "name", L->layer);
        cJSON *sh = cJSON_AddArrayToObject(l, "output");
        for (int k = 0; k < L->out.nd; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)L->out.d[k]));
        cJSON_AddNumberToObject(l, "params", (double)L->params);
        cJSON_AddNumberToObject(l, "flops_fwd", L->flops_fwd);
        cJSON_AddNumberToObject(l, "flops_bwd", L->flops_bwd);
        cJSON_AddNumberToObject(l, "param_bytes", (double)L->param_bytes);
        cJSON_AddNumberToObject(l, "grad_bytes", (double)L->grad_bytes);
        cJSON_AddNumberToObject(l, "optimizer_bytes", (double)(L->grad_bytes * (size_t)p->opt_floats));
        cJSON_AddNumberToObject(l, "saved_bytes", (double)L->saved_bytes);
        cJSON_AddNumberToObject(l, "scratch_bytes", (double)L->scratch_bytes);
        cJSON_AddBoolToObject(l, "recompute", L->recompute);
        if (L->impl[0]) cJSON_AddStringToObject(l, "algorithm", L->impl);
        cJSON_AddItemToArray(ls, l);
    }
    cJSON *t = cJSON_AddObjectToObject(o, "train_graph");
    cJSON_AddNumberToObject(t, "arena_peak_bytes", (double)p->train_arena);
    cJSON_AddNumberToObject(t, "arena_used_bytes", (double)p->train_used);
    cJSON_AddNumberToObject(t, "naive_bytes", (double)p->train_naive);
    cJSON_AddNumberToObject(t, "saved_activation_bytes", (double)p->train_saved);
    if (p->train_arena_norec) {
        cJSON_AddNumberToObject(t, "arena_peak_bytes_without_recompute", (double)p->train_arena_norec);
        cJSON_AddNumberToObject(t, "saved_activation_bytes_without_recompute", (double)p->train_saved_norec);
        cJSON_AddNumberToObject(t, "predicted_total_without_recompute", (double)p->total_norec);
    }
    cJSON *e = cJSON_AddObjectToObject(o, "eval_graph");
    cJSON_AddNumberToObject(e, "arena_peak_bytes", (double)p->eval_arena);
    cJSON_AddNumberToObject(e, "naive_bytes", (double)p->eval_naive);
    cJSON_AddNumberToObject(o, "arena_peak_bytes", (double)p->mem.arena);
    cJSON_AddNumberToObject(o, "naive_bytes", (double)p->train_naive);
    cJSON *pr = cJSON_AddObjectToObject(o, "process");
    part pa[16];
    int np = parts_of(p, pa);
    for (int i = 0; i < np; i++) cJSON_AddNumberToObject(pr, pa[i].name, (double)pa[i].bytes);
    cJSON_AddNumberToObject(pr, "total", (double)p->mem.total);
    cJSON_AddNumberToObject(o, "predicted_peak_rss_bytes", (double)p->mem.total);
    if (p->budget) {
        cJSON *b = cJSON_AddObjectToObject(o, "budget");
        cJSON_AddNumberToObject(b, "bytes", (double)p->budget);
        cJSON_AddStringToObject(b, "source", p->budget_source);
        cJSON_AddBoolToObject(b, "fits", p->fits);
        if (p->largest_batch >= 0) cJSON_AddNumberToObject(b, "largest_batch", (double)p->largest_batch);
    }
    char note[512];
    if (bn_note(p, note, sizeof note)[0]) cJSON_AddStringToObject(o, "note", note);
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}

/* ---------------- budget and fit ---------------- */
/* Probing other batch sizes creates oneDNN primitives (prepare computes their scratch
 * sizes); the primitive cache would keep their JIT code, about a MiB per probed model,
 * resident for the rest of the run. Probes run with the cache off. */
static int probe_cache_off(void) {
    int c = -1;
    if (dnnl_get_primitive_cache_capacity(&c) != dnnl_success) return -1;
    dnnl_set_primitive_cache_capacity(0);
    return c;
}
static void probe_cache_on(int c) {
    if (c >= 0) dnnl_set_primitive_cache_capacity(c);
}

/* Predicted total at graph batch b (optimizer batch b too) and eval batch e; 0 when
 * it cannot be planned (e.g. BatchNorm with one sample). */
static size_t total_at(const kn_config *cfg, const kn_settings *st, int64_t b, int64_t micro, int64_t e) {
    kn_ctx *c = kn_ctx_new();
    kn_settings s2 = *st;
    s2.batch = b;
    kn_mem_plan q;
    size_t t = 0;
    if (c && kn_plan_make(c, cfg, &s2, micro, e, &q) == KN_OK) t = q.mem.total;
    kn_plan_free(&q);
    kn_ctx_free(c);
    return t;
}

/* Largest batch b in [1, hi] (unsplit) whose prediction fits; 0 if none. The
 * prediction grows with the batch, so a binary search. */
static int64_t largest_batch(const kn_config *cfg, const kn_settings *st, int64_t hi, size_t budget) {
    int64_t lo = 0; /* fits (0: none known) */
    int64_t up = hi + 1; /* does not fit */
    while (up - lo > 1) {
        int64_t mid = lo + (up - lo) / 2;
        size_t t = total_at(cfg, st, mid, mid, st->eval_batch < mid ? st->eval_batch : mid);
        if (t && t <= budget) lo = mid;
        else up = mid;
    }
    return lo;
}

/* With recomputation in the plan: plan the same run with every layer's recompute off
 * and keep its training arena, so the report can say whether recomputing pays. A
 * block's recomputation keeps fewer activations but must hold the whole block's
 * forward outputs at once in backward; where the block's kept activations were
 * already few (fused ops, in-place gradients), that can raise the peak. */
static void recompute_check(const kn_config *cfg, const kn_settings *st, kn_mem_plan *p) {
    int anyr = 0;
    for (int i = 0; i < p->nlayers; i++) anyr |= p->layers[i].recompute;
    if (!anyr) return;
    kn_ctx *c = kn_ctx_new();
    kn_config *off = kn_cfg_clone(cfg);
    int ok = c && off;
    for (int k = 0; ok && k < off->nsec; k++) {
        if (kn_is_reserved_section(off->sec[k].name)) continue;
        char kv[256];
        ok = snprintf(kv, sizeof kv, "%s.recompute=false", off->sec[k].name) < (int)sizeof kv &&
             kn_config_set(c, off, kv) == KN_OK;
    }
    kn_mem_plan q;
    if (ok && kn_plan_make(c, off, st, p->micro_batch, p->eval_batch, &q) == KN_OK) {
        p->train_arena_norec = q.train_arena;
        p->train_saved_norec = q.train_saved;
        p->total_norec = q.mem.total;
    }
    if (ok) kn_plan_free(&q);
    kn_config_free(off);
    kn_ctx_free(c);
}

/* Plan st's run against its budget; with st->mem_fit the largest micro-batch dividing
 * the batch that fits (with the full eval batch if possible, else an eval batch no
 * larger than the micro-batch). Sets p->budget, fits, largest_batch. */
static int plan_budget(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, kn_mem_plan *p) {
    char src[96];
    size_t budget = st->mem_budget;
    if (budget) snprintf(src, sizeof src, "--budget / train.budget");
    else budget = kn_mem_available(src, sizeof src);
    int64_t micro = st->micro_batch > 0 ? st->micro_batch : st->batch;
    int rc = kn_plan_make(ctx, cfg, st, micro, st->eval_batch, p);
    if (rc) return rc;
    if (budget && p->mem.total > budget && st->mem_fit && st->micro_batch <= 0) {
        int found = 0, cache = probe_cache_off();
        for (int64_t d = st->batch - 1; d >= 1 && !found; d--) {
            if (st->batch % d) continue;
            int64_t evals[2] = {st->eval_batch, st->eval_batch < d ? st->eval_batch : d};
            for (int k = 0; k < 2 && !found; k++) {
                if (k == 1 && evals[1] == evals[0]) continue;
                kn_mem_plan q;
                kn_ctx *c2 = kn_ctx_new();
                if (c2 && kn_plan_make(c2, cfg, st, d, evals[k], &q) == KN_OK && q.mem.total <= budget) {
                    kn_plan_free(p);
                    *p = q;
                    found = 1;
                } else {
                    kn_plan_free(&q);
                }
                kn_ctx_free(c2);
            }
        }
        probe_cache_on(cache);
    }
    recompute_check(cfg, st, p);
    p->budget = budget;
    snprintf(p->budget_source, sizeof p->budget_source, "%s", budget ? src : "no budget known");
    p->fits = !budget || p->mem.total <= budget;
    if (!p->fits) {
        int cache = probe_cache_off();
        p->largest_batch = largest_batch(cfg, st, st->batch, budget);
        probe_cache_on(cache);
    }
    return KN_OK;
}

static void refusal(const kn_mem_plan *p, const kn_config *cfg, const kn_settings *st, char *buf, size_t n) {
    char cons[600], a[32], b[32], lb[256];
    kn_plan_consumers(p, cons, sizeof cons);
    if (p->largest_batch > 0) {
        size_t t = total_at(cfg, st, p->largest_batch, p->largest_batch,
                            st->eval_batch < p->largest_batch ? st->eval_batch : p->largest_batch);
        snprintf(lb, sizeof lb, "the largest batch that fits is %lld (data.batch_size = %lld%s: predicted %s)",
                 (long long)p->largest_batch, (long long)p->largest_batch,
                 st->eval_batch > p->largest_batch ? " and data.eval_batch_size no larger" : "", kn_size_str(t, a, sizeof a));
    } else {
        snprintf(lb, sizeof lb, "no batch size fits: what does not depend on the batch alone needs more");
    }
    snprintf(buf, n, "not enough memory: the run needs %s (predicted peak resident memory at batch %lld%s) but the budget is %s (%s); biggest consumers: %s; %s%s",
             kn_size_str(p->mem.total, a, sizeof a), (long long)p->batch, p->accum_steps > 1 ? " in micro-batches" : "",
             kn_size_str(p->budget, b, sizeof b), p->budget_source, cons, lb,
             st->mem_fit || p->largest_batch <= 0 ? "" : "; or add --fit to accumulate gradients over smaller micro-batches");
}

int kn_plan_for_training(kn_ctx *ctx, const kn_config *cfg, kn_settings *st, FILE *out, kn_mem_plan *res) {
    kn_mem_plan p;
    int rc = plan_budget(ctx, cfg, st, &p);
    if (rc) { kn_plan_free(&p); return rc; }
    if (out) {
        kn_plan_print(&p, out, 0);
        fflush(out);
    }
    if (!p.fits) {
        char msg[1500];
        refusal(&p, cfg, st, msg, sizeof msg);
        kn_plan_free(&p);
        return kn_err(ctx, KN_ERR_NOMEM, "%s", msg);
    }
    st->micro_batch = p.micro_batch;
    st->eval_batch = p.eval_batch;
    if (res) *res = p;
    else kn_plan_free(&p);
    return KN_OK;
}

int kn_plan_command(kn_ctx *ctx, const kn_config *cfg, int json, FILE *out) {
    kn_settings st;
    int rc = kn_settings_read(ctx, cfg, &st);
    if (rc) return rc;
    kn_set_threads(st.threads);
    kn_mem_plan p;
    if ((rc = plan_budget(ctx, cfg, &st, &p))) { kn_plan_free(&p); return rc; }
    if (json) {
        char *s = kn_plan_json(&p);
        if (!s) { kn_plan_free(&p); return kn_err(ctx, KN_ERR_NOMEM, "out of memory"); }
        fprintf(out, "%s\n", s);
        free(s);
    } else {
        kn_plan_print(&p, out, 1);
        if (!p.fits) {
            char msg[1500];
            refusal(&p, cfg, &st, msg, sizeof msg);
            fprintf(out, "%s\n", msg);
        }
    }
    kn_plan_free(&p);
    return KN_OK;
}
