/* kiln — the CPU backend: the interface table (backend/backend.h) over the per-ISA
 * kernels (backend/cpu/kernels/, registered by op id in registry.c), oneDNN
 * (dnnl_glue.c), the instruction-set choice (isa.c) and the channel-blocked layouts
 * (layout.c). */
#include "backend/cpu/cpu_backend.h"

#include <string.h>

#include "backend/cpu/isa.h"
#include "backend/cpu/layout.h"

/* Below AVX-512, oneDNN's sgemm-based kernels (more of libdnnl's code, per-thread
 * packing buffers, the worker threads' malloc arenas) hold 2.3-2.8 MiB more for the
 * examples at batch 64-512 on two threads (train/plan.h, docs/PERFORMANCE.md). */
#define KN_RSS_AVX2_BYTES ((size_t)3072 * 1024)

static void cpu_graph_init(kn_graph *g) { g->isa = kn_isa_select(); }

static void cpu_graph_free(kn_graph *g) {
    if (g->bctx_free && g->bctx) g->bctx_free(g->bctx);
    g->bctx = NULL;
}

static void *cpu_alloc(size_t bytes) { return kn_aligned_alloc(bytes); }
static void cpu_release(void *p) { kn_aligned_free(p); }

static void cpu_memset(const kn_graph *g, void *dst, int byte, size_t bytes) {
    (void)g;
    memset(dst, byte, bytes);
}

static void cpu_copy(const kn_graph *g, void *dst, const void *src, size_t bytes) {
    (void)g;
    memcpy(dst, src, bytes);
}

/* Small sums run serially without entering a parallel region: a region that runs on
 * one thread (an `if` clause false) makes libgomp allocate a team descriptor. a == 1 is
 * the plain sum (the gradient sums: the same bits as y += x). */
static void cpu_axpy(const kn_graph *g, float *restrict y, float a, const float *restrict x, int64_t n) {
    (void)g;
    if (a == 1.0f) {
        if (n <= 32768) {
            for (int64_t i = 0; i < n; i++) y[i] += x[i];
            return;
        }
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) y[i] += x[i];
        return;
    }
    if (n <= 32768) {
        for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
        return;
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static const kn_kernels *cpu_kernels(const kn_op *op) { return op ? kn_cpu_kernels((int)op->id) : NULL; }

static int cpu_supports_op(const kn_graph *g, const kn_node *n, int need_backward) {
    (void)g;
    const kn_kernels *k = cpu_kernels(n->op);
    return k && k->forward && (!need_backward || k->backward);
}

static size_t cpu_rss_extra(void) { return kn_isa_select() < KN_ISA_AVX512 ? KN_RSS_AVX2_BYTES : 0; }

const kn_backend_iface kn_backend_cpu = {
    .name = "cpu",
    .graph_init = cpu_graph_init,
    .graph_free = cpu_graph_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .memset = cpu_memset,
    .copy = cpu_copy,
    .axpy = cpu_axpy,
    .kernels = cpu_kernels,
    .supports_op = cpu_supports_op,
    .layout = kn_layout,
    .path = kn_isa_path,
    .check_resume = kn_isa_check_resume,
    .rss_extra = cpu_rss_extra,
};
