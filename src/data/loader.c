/* kiln — batch loader: seeded per-epoch shuffles, normalisation to float32 NCHW, and an
 * optional prefetch thread filling a ring of preallocated batch buffers.
 *
 * Prefetch protocol (all shared fields guarded by mu):
 *   - The producer takes the lock, and if the current epoch has a batch left to make and
 *     a free slot, reserves the slot (busy = 1), releases the lock and fills it. It then
 *     relocks and publishes the slot only if the epoch generation has not changed.
 *   - kn_loader_start_epoch waits until the producer is not busy (it never reads `order`
 *     outside a busy period), then rebuilds `order`, empties the ring and bumps the
 *     generation, all under the lock.
 * The batch contents come from the same fill function in both modes, so prefetched
 * batches are bit-identical to synchronous ones. */
#define _POSIX_C_SOURCE 200809L
#include "data/data.h"
#include "data/source.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *x;
    uint32_t *y;
    int count;
    int64_t batch; /* index within the epoch, for sanity */
} kn_slot;

struct kn_loader {
    const kn_dataset *ds;
    const kn_field *xf, *yf; /* table mode (ds NULL) */
    size_t yelems;           /* target elements per sample (4 bytes each) */
    int64_t *indices; /* copy of cfg->indices, or NULL */
    int64_t n;        /* samples per epoch */
    int batch;
    int shuffle, drop_last;
    uint64_t seed;
    int64_t nbatches;
    size_t elems; /* C*H*W */
    float lut[256];
    float mean, std;
    int64_t *order; /* n positions (into indices or the dataset) */

    /* consumer side */
    int started;
    int64_t next_batch; /* next batch handed out by kn_loader_next */

    /* prefetch */
    int depth; /* 0: synchronous */
    kn_slot *ring;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv_prod; /* producer waits: work / free slot / stop */
    pthread_cond_t cv_cons; /* consumer and start_epoch wait: filled slot / not busy */
    int thread_ok, sync_ok;
    int stop;
    int active;          /* an epoch has been started */
    uint64_t gen;        /* bumped by each start_epoch */
    int64_t prod_next;   /* next batch the producer makes */
    int head, filled;    /* ring: first filled slot, number filled */
    int busy;            /* producer is filling a slot outside the lock */
};

static void make_order(kn_loader *L, int64_t epoch) {
    for (int64_t i = 0; i < L->n; i++) L->order[i] = i;
    if (!L->shuffle) return;
    kn_rng r;
    kn_rng_seed(&r, kn_mix64(L->seed ^ kn_mix64((uint64_t)epoch + 1)));
    for (int64_t i = L->n - 1; i > 0; i--) {
        int64_t j = (int64_t)kn_rng_below(&r, (uint64_t)i + 1);
        int64_t t = L->order[i];
        L->order[i] = L->order[j];
        L->order[j] = t;
    }
}

/* Sample i of the batch that starts at position start of the current order. */
static void fill_one(const kn_loader *L, int64_t start, int64_t i, float *x, uint32_t *y) {
    const size_t E = L->elems;
    int64_t pos = L->order[start + i];
    int64_t s = L->indices ? L->indices[pos] : pos;
    if (!L->ds) { /* a table: copied as it is */
        memcpy(x + (size_t)i * E, (const float *)L->xf->data + (size_t)s * E, E * sizeof *x);
        memcpy(y + (size_t)i * L->yelems, (const uint32_t *)L->yf->data + (size_t)s * L->yelems, L->yelems * sizeof *y);
        return;
    }
    const uint8_t *src = L->ds->images + (size_t)s * E;
    float *dst = x + (size_t)i * E;
    /* the same float expression as the table (lut[v]), computed in vectors */
    const float mean = L->mean, sd = L->std;
#pragma omp simd
    for (size_t k = 0; k < E; k++) dst[k] = ((float)src[k] / 255.0f - mean) / sd;
    y[i] = (uint32_t)L->ds->labels[s];
}

/* Fill batch b of the current order into x, y; pads a short batch with zeros.
 * par: called from the consumer's thread (synchronous loader), which shares the images
 * out among the OpenMP team; the prefetch thread fills alone, outside any OpenMP region
 * (a team of its own would take cores from the step). Each value is computed the same
 * way either way. */
static int fill_batch(const kn_loader *L, int64_t b, float *x, uint32_t *y, int par) {
    int64_t start = b * L->batch;
    int64_t cnt = L->n - start;
    if (cnt > L->batch) cnt = L->batch;
    if (cnt < 0) cnt = 0;
    const size_t E = L->elems;
    if (par && (size_t)cnt * E > 65536 && omp_get_max_threads() > 1) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < cnt; i++) fill_one(L, start, i, x, y);
    } else {
        for (int64_t i = 0; i < cnt; i++) fill_one(L, start, i, x, y);
    }
    if (cnt < L->batch) {
        memset(x + (size_t)cnt * E, 0, (size_t)(L->batch - cnt) * E * sizeof *x);
        memset(y + (size_t)cnt * L->yelems, 0, (size_t)(L->batch - cnt) * L->yelems * sizeof *y);
    }
    return (int)cnt;
}

static void *producer(void *arg) {
    kn_loader *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        if (L->stop) break;
        if (L->active && L->prod_next < L->nbatches && L->filled < L->depth) {
            int slot = (L->head + L->filled) % L->depth;
            int64_t b = L->prod_next;
            uint64_t g = L->gen;
            L->busy = 1;
            pthread_mutex_unlock(&L->mu);
            kn_slot *s = &L->ring[slot];
            s->count = fill_batch(L, b, s->x, s->y, 0);
            s->batch = b;
            pthread_mutex_lock(&L->mu);
            L->busy = 0;
            if (g == L->gen) {
                L->filled++;
                L->prod_next++;
            }
            pthread_cond_broadcast(&L->cv_cons);
            continue;
        }
        pthread_cond_wait(&L->cv_prod, &L->mu);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

int kn_loader_create(kn_ctx *ctx, const kn_loader_config *cfg, kn_loader **out) {
    *out = NULL;
    const kn_dataset *ds = cfg->ds;
    const kn_table *tb = cfg->table;
    if (tb) {
        if (ds) return kn_err(ctx, KN_ERR_INVALID, "data loader: a dataset and a table given (one of them)");
        if (tb->n <= 0 || cfg->x_field < 0 || cfg->x_field >= tb->nfields || cfg->y_field < 0 || cfg->y_field >= tb->nfields ||
            tb->fields[cfg->x_field].dtype != KN_F32)
            return kn_err(ctx, KN_ERR_INVALID, "data loader: an empty table, or no float32 input field and target field in it");
    } else if (!ds || !ds->images || !ds->labels || ds->n <= 0) {
        return kn_err(ctx, KN_ERR_INVALID, "data loader: no dataset (or an empty one) given");
    }
    const int64_t nsamples = tb ? tb->n : ds->n;
    if (cfg->batch < 1)
        return kn_err(ctx, KN_ERR_INVALID, "data loader: batch size %d; it must be at least 1",
                      cfg->batch);
    if (!tb && (!(cfg->std > 0.0f) || !isfinite(cfg->std) || !isfinite(cfg->mean)))
        return kn_err(ctx, KN_ERR_INVALID,
                      "data loader: normalisation mean %g, std %g; std must be a positive number",
                      (double)cfg->mean, (double)cfg->std);
    if (cfg->prefetch < 0 || cfg->prefetch > 1024)
        return kn_err(ctx, KN_ERR_INVALID, "data loader: prefetch depth %d; use 0 to 1024",
                      cfg->prefetch);
    int64_t n = cfg->indices ? cfg->n : nsamples;
    if (n < 0) return kn_err(ctx, KN_ERR_INVALID, "data loader: %lld indices", (long long)n);
    if (cfg->indices)
        for (int64_t i = 0; i < n; i++)
            if (cfg->indices[i] < 0 || cfg->indices[i] >= nsamples)
                return kn_err(ctx, KN_ERR_INVALID,
                              "data loader: index %lld at position %lld is outside the dataset "
                              "(0..%lld)",
                              (long long)cfg->indices[i], (long long)i, (long long)nsamples - 1);

    kn_loader *L = calloc(1, sizeof *L);
    if (!L) return kn_err(ctx, KN_ERR_NOMEM, "data loader: out of memory");
    L->ds = ds;
    L->n = n;
    L->batch = cfg->batch;
    L->shuffle = cfg->shuffle;
    L->drop_last = cfg->drop_last;
    L->seed = cfg->seed;
    if (tb) {
        L->xf = &tb->fields[cfg->x_field];
        L->yf = &tb->fields[cfg->y_field];
        L->elems = (size_t)L->xf->sample_numel;
        L->yelems = (size_t)L->yf->sample_numel;
    } else {
        L->elems = (size_t)ds->channels * (size_t)ds->rows * (size_t)ds->cols;
        L->yelems = 1;
    }
    L->nbatches = cfg->drop_last ? n / cfg->batch : (n + cfg->batch - 1) / cfg->batch;
    for (int v = 0; v < 256; v++) L->lut[v] = ((float)v / 255.0f - cfg->mean) / cfg->std;
    L->mean = cfg->mean;
    L->std = cfg->std;
    L->depth = cfg->prefetch;
    int rc = KN_OK;

    L->order = malloc((size_t)(n > 0 ? n : 1) * sizeof *L->order);
    if (!L->order) goto nomem;
    if (cfg->indices) {
        L->indices = malloc((size_t)(n > 0 ? n : 1) * sizeof *L->indices);
        if (!L->indices) goto nomem;
        if (n) memcpy(L->indices, cfg->indices, (size_t)n * sizeof *L->indices);
    }
    if (L->depth > 0) {
        L->ring = calloc((size_t)L->depth, sizeof *L->ring);
        if (!L->ring) goto nomem;
        for (int i = 0; i < L->depth; i++) {
            L->ring[i].x = kn_aligned_alloc((size_t)L->batch * L->elems * sizeof(float));
            L->ring[i].y = kn_aligned_alloc((size_t)L->batch * L->yelems * sizeof(uint32_t));
            if (!L->ring[i].x || !L->ring[i].y) goto nomem;
        }
        if (pthread_mutex_init(&L->mu, NULL) != 0) goto sync_fail;
        if (pthread_cond_init(&L->cv_prod, NULL) != 0) {
            pthread_mutex_destroy(&L->mu);
            goto sync_fail;
        }
        if (pthread_cond_init(&L->cv_cons, NULL) != 0) {
            pthread_cond_destroy(&L->cv_prod);
            pthread_mutex_destroy(&L->mu);
            goto sync_fail;
        }
        L->sync_ok = 1;
        if (pthread_create(&L->thread, NULL, producer, L) != 0) {
            rc = kn_err(ctx, KN_ERR_INTERNAL, "data loader: cannot start the prefetch thread");
            goto fail;
        }
        L->thread_ok = 1;
    }
    *out = L;
    return KN_OK;

sync_fail:
    rc = kn_err(ctx, KN_ERR_INTERNAL, "data loader: cannot create a mutex or condition variable");
    goto fail;
nomem:
    rc = kn_err(ctx, KN_ERR_NOMEM, "data loader: out of memory for %d batch buffers of %d samples",
                L->depth, L->batch);
fail:
    kn_loader_free(L);
    return rc;
}

int64_t kn_loader_batches(const kn_loader *L) { return L->nbatches; }

void kn_loader_start_epoch(kn_loader *L, int64_t epoch, int64_t first_batch) {
    if (first_batch < 0) first_batch = 0;
    if (first_batch > L->nbatches) first_batch = L->nbatches;
    if (L->depth == 0) {
        make_order(L, epoch);
        L->next_batch = first_batch;
        L->started = 1;
        return;
    }
    pthread_mutex_lock(&L->mu);
    L->gen++; /* an in-flight fill is discarded when it finishes */
    while (L->busy) pthread_cond_wait(&L->cv_cons, &L->mu);
    make_order(L, epoch);
    L->head = 0;
    L->filled = 0;
    L->prod_next = first_batch;
    L->next_batch = first_batch;
    L->active = 1;
    L->started = 1;
    pthread_cond_signal(&L->cv_prod);
    pthread_mutex_unlock(&L->mu);
}

int64_t kn_loader_x_elems(const kn_loader *L) { return (int64_t)L->elems; }
int64_t kn_loader_y_elems(const kn_loader *L) { return (int64_t)L->yelems; }

int kn_loader_next(kn_loader *L, float *x, void *yv) {
    uint32_t *y = yv;
    if (!L->started) kn_loader_start_epoch(L, 0, 0);
    if (L->depth == 0) {
        if (L->next_batch >= L->nbatches) return 0;
        return fill_batch(L, L->next_batch++, x, y, 1);
    }
    pthread_mutex_lock(&L->mu);
    if (L->next_batch >= L->nbatches) {
        pthread_mutex_unlock(&L->mu);
        return 0;
    }
    while (L->filled == 0) pthread_cond_wait(&L->cv_cons, &L->mu);
    kn_slot *s = &L->ring[L->head];
    int cnt = s->count;
    memcpy(x, s->x, (size_t)L->batch * L->elems * sizeof *x);
    memcpy(y, s->y, (size_t)L->batch * L->yelems * sizeof *y);
    L->head = (L->head + 1) % L->depth;
    L->filled--;
    L->next_batch++;
    pthread_cond_signal(&L->cv_prod);
    pthread_mutex_unlock(&L->mu);
    return cnt;
}

void kn_loader_free(kn_loader *L) {
    if (!L) return;
    if (L->thread_ok) {
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_signal(&L->cv_prod);
        pthread_mutex_unlock(&L->mu);
        pthread_join(L->thread, NULL);
    }
    if (L->sync_ok) {
        pthread_cond_destroy(&L->cv_cons);
        pthread_cond_destroy(&L->cv_prod);
        pthread_mutex_destroy(&L->mu);
    }
    if (L->ring) {
        for (int i = 0; i < L->depth; i++) {
            kn_aligned_free(L->ring[i].x);
            kn_aligned_free(L->ring[i].y);
        }
        free(L->ring);
    }
    free(L->order);
    free(L->indices);
    free(L);
}
