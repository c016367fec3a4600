/* kiln — the memory plan of a run, before anything big is allocated.
 *
 * Because the graph is planned statically, the bytes a run needs are known before
 * step 1: the arena (planned peak of the train and eval graphs, which share it), the
 * parameter store, the optimizer moments, the data sets held in memory, the loader
 * buffers and a measured constant for the process itself (binary, libraries,
 * oneDNN, thread stacks). kn_plan_make computes them from a config without loading
 * the data (it reads the IDX headers and the small label files) and without
 * allocating the arena or the store; kn_plan_for_training prints the summary before
 * step 1, refuses a run whose predicted peak exceeds the memory budget, and with
 * train.fit picks the largest micro-batch that fits (gradients are accumulated over
 * micro-batches up to the requested batch, see kn_accum).
 *
 * Accounting, all in bytes, every buffer written in full when allocated (so resident):
 *   arena        max(train arena, eval arena)             (kn_model_alloc)
 *   store        parameters + gradients + state            (kn_store_alloc)
 *   optimizer    1 (SGD) or 2 (Adam, AdamW) floats per parameter
 *   accumulation with micro-batches: a gradient sum and a full-batch input buffer
 *   datasets     images + labels of the train and test IDX files (whole files,
 *                limit_train/limit_test only shorten the epoch)
 *   loaders      sample orders, split indices, prefetch ring buffers, label buffers
 *   guard/health the guard's in-memory snapshot ([guard] enabled), the health checks'
 *                parameter copy ([health] every) and the leakage check's hash table
 *   baseline     the resident size of the process with nothing of the above,
 *                measured (KN_RSS_*, docs/PERFORMANCE.md, bench/mem_rss.py) */
#ifndef KN_PLAN_H
#define KN_PLAN_H

#include <stdio.h>

#include "graph/graph.h"
#include "train/step.h" /* kn_accum: gradient accumulation over micro-batches */
#include "train/trainer.h"

/* Measured resident size of `kiln train` without arena, store, optimizer, data,
 * loader or guard buffers: binary, libc, libgomp, oneDNN (code, JIT kernels), zlib,
 * thread stacks and malloc bookkeeping. bench/mem_rss.py prints, for each run, the
 * baseline it implies (measured peak minus every other predicted part): 9.5 to
 * 10.4 MiB for the MLP example (Fashion-MNIST or a small synthetic set, 2 to 30 steps),
 * about 1.2 MiB more per convolution layer (oneDNN JIT kernels of its forward,
 * backward-data, backward-weights and evaluation primitives), ~30 KiB per extra
 * thread. The constants take the upper end. See docs/PERFORMANCE.md. */
#define KN_RSS_BASELINE_BYTES ((size_t)10445 * 1024)
#define KN_RSS_PER_CONV_BYTES ((size_t)1229 * 1024)
#define KN_RSS_PER_THREAD_BYTES ((size_t)32 * 1024)
/* The prediction is an upper bound: at least the measured peak and at most 5% above it
 * on the avx512 and the avx2 paths (tests/test_rss.c, bench/mem_rss.py). Below
 * AVX-512, oneDNN's sgemm-based kernels (more of libdnnl's code, per-thread packing
 * buffers, the worker threads' malloc arenas) add 2.3-2.8 MiB for the examples at
 * batch 64-512 on two threads: the CPU backend's rss_extra() (backend/backend.h,
 * 3 MiB below AVX-512: backend/cpu/cpu_backend.c). The measured peak varies by ~1%
 * between identical runs (thread timing): every prediction carries KN_RSS_MARGIN of
 * its sum on top (folded into "baseline"). Both hold with the kiln command's fixed
 * malloc thresholds (kn_malloc_policy, backend/cpu/cpus.h). */
#define KN_RSS_MARGIN 0.015

/* train.budget, train.fit, train.micro_batch (read by kn_settings_read). */
int kn_plan_read_settings(kn_ctx *ctx, const kn_config *cfg, kn_settings *st);

/* "64M", "1.5G", "65536", "512k" (K, M, G, T are powers of 1024; an optional
 * trailing "B" or "iB" is accepted). Returns 0 on success. */
int kn_parse_size(const char *s, size_t *out);
/* "64.0 MiB" */
const char *kn_size_str(size_t bytes, char *buf, size_t n);

/* Memory available to this process: the cgroup limit minus the cgroup's other use
 * (v2 memory.max / memory.current, v1 memory.limit_in_bytes / usage_in_bytes, both
 * less inactive file cache), or MemAvailable from /proc/meminfo, the smaller one.
 * `what` says where it came from. 0 if none could be read. */
size_t kn_mem_available(char *what, size_t n);

typedef struct {
    size_t arena, store_params, store_grads, store_state, optimizer, accumulation, datasets, loaders, guard,
        baseline, total;
} kn_mem_parts;

typedef struct {
    /* what was planned */
    int64_t batch, micro_batch, accum_steps, eval_batch;
    int threads;
    int channels, height, width, nclasses;
    int64_t ntrain, nval, ntest;        /* samples used per epoch (train, validation, test) */
    int64_t nparam, nstate;
    int opt_floats;                     /* optimizer floats per parameter */
    int has_batchnorm, nconv;
    /* graphs */
    size_t train_arena, train_used, train_naive, train_saved;
    size_t eval_arena, eval_naive;
    /* with recomputation in the config: the training arena and saved bytes the same
     * plan has without it (0 when nothing is recomputed or that plan failed) */
    size_t train_arena_norec, train_saved_norec, total_norec;
    kn_layer_stats *layers;
    int nlayers;
    kn_mem_parts mem;
    /* budget (kn_plan_for_training / kiln plan --budget) */
    size_t budget;
    char budget_source[96];
    int fits;
    int64_t largest_batch;              /* largest batch (one micro-batch) that fits; 0: none; -1: not searched */
} kn_mem_plan;

/* Plan a run of cfg with settings st at graph batch micro_batch (the optimizer step
 * covers st->batch samples) and evaluation batch eval_batch. Allocates no tensors. */
int kn_plan_make(kn_ctx *ctx, const kn_config *cfg, const kn_settings *st, int64_t micro_batch, int64_t eval_batch,
                 kn_mem_plan *p);
void kn_plan_free(kn_mem_plan *p);

/* Per-layer table (per_layer) and summary, as `kiln plan` prints it. */
void kn_plan_print(const kn_mem_plan *p, FILE *f, int per_layer);
/* The same as JSON (malloc'ed string). */
char *kn_plan_json(const kn_mem_plan *p);
/* One line naming the biggest consumers, e.g. "arena 120.0 MiB (...), datasets 54.9 MiB, ..." */
void kn_plan_consumers(const kn_mem_plan *p, char *buf, size_t n);

/* Budget: st->mem_budget, else kn_mem_available(). Plans the run; with st->mem_fit,
 * the largest micro-batch dividing st->batch that fits (and, if needed, a smaller
 * evaluation batch). Prints the summary to out (may be NULL). Returns KN_ERR_NOMEM
 * with a message naming the biggest consumers and the largest batch that fits when
 * the predicted peak exceeds the budget. On success st->micro_batch and
 * st->eval_batch are what the run must use and *p (if not NULL) holds the plan. */
int kn_plan_for_training(kn_ctx *ctx, const kn_config *cfg, kn_settings *st, FILE *out, kn_mem_plan *p);

/* `kiln plan`: read the settings from cfg (overrides applied), plan against the
 * budget and print the per-layer table and summary (or JSON) to out. */
int kn_plan_command(kn_ctx *ctx, const kn_config *cfg, int json, FILE *out);


#endif
