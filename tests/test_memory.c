/* The memory plan against measurement, on the two Fashion-MNIST example models:
 *  - arena high-water mark: the arena is filled with a sentinel pattern, one training
 *    step (and, after refilling, one evaluation pass) runs, and the highest 4-byte
 *    word that changed is found; it must equal the planned peak (max over tensors of
 *    offset + bytes written) at batch 64 and 512;
 *  - liveness reuse: the CNN's planned peak at batch 512 is at least 40% below the
 *    naive total (every tensor its own buffer);
 *  - recomputation of the CNN's conv blocks ([model] recompute = two blocks) keeps
 *    fewer activation bytes for backward and gives bit-identical parameter gradients
 *    and BatchNorm running statistics.
 * Random images and labels stand in for the data set (the plan does not depend on
 * pixel values). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "nn/model.h"
#include "train/plan.h"
#include "train/trainer.h"
#include "testutil.h"

static const uint32_t SENTINEL = 0x7FA5A5A5u; /* a NaN no kernel writes */

static void fill_sentinel(void *arena, size_t bytes) {
    uint32_t *w = arena;
    for (size_t i = 0; i < bytes / 4; i++) w[i] = SENTINEL;
}

/* one past the highest byte of the highest 4-byte word that is not the sentinel */
static size_t high_water(const void *arena, size_t bytes) {
    const uint32_t *w = arena;
    for (size_t i = bytes / 4; i > 0; i--)
        if (w[i - 1] != SENTINEL) return i * 4;
    return 0;
}

static kn_config *load(kn_ctx *ctx, const char *rel, const char *const *sets) {
    kn_config *cfg = NULL;
    if (kn_config_load(ctx, kn_test_src(rel), &cfg) != KN_OK) return NULL;
    for (int i = 0; sets && sets[i]; i++)
        if (kn_config_set(ctx, cfg, sets[i]) != KN_OK) { kn_config_free(cfg); return NULL; }
    return cfg;
}

static int build(kn_ctx *ctx, const kn_config *cfg, int64_t batch, kn_model *m) {
    kn_settings st;
    int rc = kn_settings_read(ctx, cfg, &st);
    if (rc) return rc;
    rc = kn_model_build(ctx, cfg, batch, st.eval_batch, 1, 28, 28, 10, m);
    if (rc) return rc;
    kn_model_init(m, 1);
    return KN_OK;
}

static void fill_batch(kn_model *m, kn_graph *g, int x, int64_t n, int with_labels, uint64_t seed) {
    kn_rng r;
    kn_rng_seed(&r, seed);
    float *xp = kn_ptr(g, x);
    for (int64_t i = 0; i < kn_numel(g, x); i++) xp[i] = (float)kn_rng_normal(&r);
    if (with_labels) {
        int32_t *y = malloc((size_t)n * sizeof *y);
        for (int64_t i = 0; i < n; i++) y[i] = (int32_t)kn_rng_below(&r, 10);
        if (g == m->eval) kn_model_set_eval_targets(m, y); /* the eval graph's loss and metrics read them */
        else kn_model_set_targets(m, y);
        free(y);
    }
}

static void case_hwm(const char *rel, int64_t batch) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = load(ctx, rel, NULL);
    kn_model m;
    memset(&m, 0, sizeof m);
    int ok = cfg && build(ctx, cfg, batch, &m) == KN_OK;
    CHECK(ok, "%s batch %lld: %s", rel, (long long)batch, kn_ctx_message(ctx));
    if (ok) {
        kn_rt rt = {0};
        rt.seed = 5;
        /* training step */
        fill_sentinel(m.arena, m.arena_bytes);
        fill_batch(&m, m.train, m.x_train, batch, 1, 11);
        kn_model_forward_backward(&m, &rt);
        size_t hw = high_water(m.arena, m.arena_bytes);
        CHECK(hw == m.train->arena_used, "%s batch %lld: train arena high-water mark %zu, planned %zu", rel,
              (long long)batch, hw, m.train->arena_used);
        /* evaluation pass, in the same (shared) arena */
        fill_sentinel(m.arena, m.arena_bytes);
        fill_batch(&m, m.eval, m.x_eval, m.eval_batch, 1, 12);
        kn_g_forward(m.eval, &rt);
        size_t he = high_water(m.arena, m.arena_bytes);
        CHECK(he == m.eval->arena_used, "%s: eval arena high-water mark %zu, planned %zu", rel, he, m.eval->arena_used);
        printf("%-32s batch %4lld: train arena planned %10zu measured %10zu (naive %10zu, %.1f%% less); eval planned %10zu measured %10zu\n",
               rel, (long long)batch, m.train->arena_used, hw, m.train->naive_bytes,
               100.0 * (1.0 - (double)m.train->arena_bytes / (double)m.train->naive_bytes), m.eval->arena_used, he);
        if (batch == 512 && strstr(rel, "cnn"))
            CHECK(m.train->arena_bytes * 10 <= m.train->naive_bytes * 6,
                  "CNN batch 512: planned peak %zu is not 40%% below the naive total %zu", m.train->arena_bytes,
                  m.train->naive_bytes);
    }
    kn_model_free(&m);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
}

/* Gradients and running statistics after two steps. */
typedef struct {
    float *grad, *state;
    int64_t ng, ns;
    size_t saved, arena;
} grads;

static int run_grads(const char *const *sets, grads *out) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = load(ctx, "examples/fashion_mnist_cnn.ini", sets);
    kn_model m;
    memset(&m, 0, sizeof m);
    int ok = cfg && build(ctx, cfg, 64, &m) == KN_OK;
    CHECK(ok, "recompute case: %s", kn_ctx_message(ctx));
    if (ok) {
        kn_rt rt = {0};
        rt.seed = 5;
        for (int s = 0; s < 2; s++) {
            fill_sentinel(m.arena, m.arena_bytes);
            fill_batch(&m, m.train, m.x_train, 64, 1, 21 + (uint64_t)s);
            rt.step = s;
            kn_model_forward_backward(&m, &rt);
        }
        out->ng = m.store.nparam;
        out->ns = m.store.nstate;
        out->grad = malloc((size_t)out->ng * sizeof(float));
        out->state = malloc((size_t)out->ns * sizeof(float));
        memcpy(out->grad, m.store.grad, (size_t)out->ng * sizeof(float));
        memcpy(out->state, m.store.state, (size_t)out->ns * sizeof(float));
        out->saved = kn_g_saved_bytes(m.train);
        out->arena = m.train->arena_bytes;
    }
    kn_model_free(&m);
    kn_config_free(cfg);
    kn_ctx_free(ctx);
    return ok ? 0 : -1;
}

static void case_recompute(void) {
    static const char *const rec[] = {"conv1.block=conv_block1", "bn1.block=conv_block1", "relu1.block=conv_block1",
                                      "pool1.block=conv_block1", "conv2.block=conv_block2", "bn2.block=conv_block2",
                                      "relu2.block=conv_block2", "pool2.block=conv_block2",
                                      "model.recompute=conv_block1, conv_block2", NULL};
    grads a = {0}, b = {0};
    if (run_grads(NULL, &a) || run_grads(rec, &b)) goto out;
    CHECK(b.saved < a.saved, "recomputation keeps %zu activation bytes, without %zu", b.saved, a.saved);
    printf("CNN batch 64: activations kept for backward %zu -> %zu bytes with the conv blocks recomputed (arena %zu -> %zu)\n",
           a.saved, b.saved, a.arena, b.arena);
    CHECK(a.ng == b.ng && !memcmp(a.grad, b.grad, (size_t)a.ng * sizeof(float)),
          "parameter gradients differ with recomputation");
    int64_t nd = 0;
    double worst = 0;
    for (int64_t i = 0; i < a.ng && a.ng == b.ng; i++)
        if (a.grad[i] != b.grad[i]) {
            nd++;
            double d = (double)a.grad[i] - (double)b.grad[i];
            if (d < 0) d = -d;
            if (d > worst) worst = d;
        }
    if (nd) printf("  %lld gradients differ, worst by %g\n", (long long)nd, worst);
    CHECK(a.ns == b.ns && !memcmp(a.state, b.state, (size_t)a.ns * sizeof(float)),
          "BatchNorm running statistics differ with recomputation");
out:
    free(a.grad);
    free(a.state);
    free(b.grad);
    free(b.state);
}

/* Blocks of 4 MiB or more take whole 2 MiB pages (huge pages), smaller ones 64-byte
 * multiples; the plan predicts with the same rounding (kn_alloc_footprint), so its
 * process arena is the larger graph arena rounded up to 2 MiB. */
static void case_footprint(void) {
    const size_t MiB = 1u << 20;
    CHECK(kn_alloc_footprint(100) == 128 && kn_alloc_footprint(0) == 64 && kn_alloc_footprint(4 * MiB - 1) == 4 * MiB &&
              kn_alloc_footprint(4 * MiB + 1) == 6 * MiB && kn_alloc_footprint(7 * MiB) == 8 * MiB,
          "kn_alloc_footprint: 100 -> %zu, 4 MiB + 1 -> %zu", kn_alloc_footprint(100), kn_alloc_footprint(4 * MiB + 1));
    void *p = kn_aligned_alloc(5 * MiB), *q = kn_aligned_alloc(100);
    CHECK(p && q && (uintptr_t)p % (2 * MiB) == 0 && (uintptr_t)q % 64 == 0, "alignment: %p %p", p, q);
    kn_aligned_free(p);
    kn_aligned_free(q);
    kn_ctx *ctx = kn_ctx_new();
    const char *sets[] = {"data.batch_size=512", NULL};
    kn_config *cfg = load(ctx, "examples/fashion_mnist_cnn.ini", sets);
    kn_settings st;
    kn_mem_plan pl;
    int ok = cfg && kn_settings_read(ctx, cfg, &st) == KN_OK && kn_plan_make(ctx, cfg, &st, 512, st.eval_batch, &pl) == KN_OK;
    CHECK(ok, "plan: %s", kn_ctx_message(ctx));
    if (ok) {
        size_t big = pl.train_arena > pl.eval_arena ? pl.train_arena : pl.eval_arena;
        CHECK(pl.mem.arena % (2 * MiB) == 0 && pl.mem.arena >= big && pl.mem.arena - big < 2 * MiB,
              "predicted arena %zu for graph arenas of %zu / %zu bytes: not rounded to 2 MiB pages", pl.mem.arena,
              pl.train_arena, pl.eval_arena);
        kn_plan_free(&pl);
    }
    kn_config_free(cfg);
    kn_ctx_free(ctx);
}

int main(void) {
    const char *quick = getenv("KN_SANITIZED");
    case_footprint();
    case_hwm("examples/fashion_mnist_mlp.ini", 64);
    case_hwm("examples/fashion_mnist_mlp.ini", 512);
    case_hwm("examples/fashion_mnist_cnn.ini", 64);
    if (!quick) case_hwm("examples/fashion_mnist_cnn.ini", 512); /* ~1 s of convolutions; skipped under ASan */
    case_recompute();
    return kn_test_finish("test_memory");
}
