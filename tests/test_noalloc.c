/* No allocation inside the step loop.
 *
 * This program replaces malloc, calloc, realloc, free, posix_memalign, aligned_alloc,
 * memalign, valloc and pvalloc (glibc supports replacing them; the replacements count
 * and call glibc's __libc_* functions). A definition in the executable takes precedence
 * for every shared library, so the count covers kiln, oneDNN, libgomp, zlib and libc
 * itself, on every thread. Each allocation and free is attributed to
 *   oneDNN   made while dnnl_primitive_execute runs (the test is linked with
 *            -Wl,--wrap=dnnl_primitive_execute),
 *   libgomp  called directly from libgomp's code (its address range, found with
 *            dl_iterate_phdr),
 *   kiln     anything else: kiln, the loader thread, libc on kiln's behalf.
 *
 * What allocates in a step, and why (all of it freed before the call returns):
 *  - oneDNN's dnnl_primitive_execute (v2.x) turns its argument array into a
 *    std::unordered_map (exec_args_t) and builds an execution context holding another
 *    map: a handful of operator-new blocks of at most ~120 bytes per call. Scratchpads
 *    are user-managed (arena tensors), so no buffer is allocated there.
 *  - oneDNN's sgemm driver, which runs its gemm:jit primitives (on AVX2, where v2.x
 *    has no brgemm matmul: every matmul, and convolutions done as im2col + GEMM such
 *    as a first layer with one input channel), mallocs per-thread packing buffers for
 *    A and B and frees them before the call returns (16,640 bytes for the examples on
 *    AVX2). oneDNN offers no user scratchpad for them. Counted apart (the primitive's
 *    implementation name, asked in the execute wrapper): at most 64 KiB each, the
 *    same number every step, all freed.
 *  - libgomp: a `#pragma omp parallel` region that runs on one thread (its `if`
 *    clause is false for a small tensor, or kiln runs with --threads 1) gets a team
 *    descriptor (~1.5 KiB) that libgomp allocates and frees each time: it caches team
 *    descriptors of two threads or more only.
 *  - kiln itself: nothing.
 *
 *  1. The step, piece by piece as the trainer runs it: loader batch (prefetch thread
 *     on), forward + backward (unsplit, and accumulated over micro-batches), gradient
 *     clipping, optimizer update, for the MLP and the CNN. After warm-up steps, each
 *     further step must make no kiln allocation, and oneDNN's and libgomp's must be
 *     small (<= 4 KiB; sgemm packing <= 64 KiB), the same number every step and all
 *     freed within the step (as
 *     many frees as allocations; frees are not attributed, libgomp frees through tail
 *     calls).
 *  2. The whole of kn_train, in a fresh child process each: runs of 6 and of 14 steps
 *     (same epoch, same everything else) must make the same number of kiln
 *     allocations, so the 8 steps between cost none.
 * Under AddressSanitizer (which owns malloc) the program reports itself skipped. */
#define _GNU_SOURCE
#include <link.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"
#include "data/data.h"
#include "nn/model.h"
#include "optim/optim.h"
#include "testutil.h"
#include "train/plan.h"
#include "train/step.h"
#include "train/trainer.h"

#if defined(__SANITIZE_ADDRESS__)
#define KN_NO_HOOK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KN_NO_HOOK 1
#endif
#endif

enum { SRC_KILN = 0, SRC_DNNL = 1, SRC_GOMP = 2, SRC_GEMM = 3, NSRC = 4 };
static const char *const src_name[NSRC] = {"kiln", "oneDNN", "libgomp", "oneDNN's sgemm (a gemm:jit primitive)"};
/* the largest allocation allowed per source: oneDNN's sgemm driver (the gemm:jit
 * matmul and convolutions, oneDNN's only matmul below AVX-512 in v2.x) packs its
 * operands into per-thread buffers it mallocs and frees in every call (16,640 bytes
 * on AVX2 for the examples); everything else stays within 4 KiB */
static const long src_max[NSRC] __attribute__((unused)) = {0, 4096, 4096, 65536}; /* unused under ASan */
static atomic_int g_on, g_in_dnnl, g_in_gemm;
static atomic_long g_alloc[NSRC], g_free[NSRC], g_max[NSRC], g_bytes[NSRC], g_dnnl_calls;
static uintptr_t g_gomp_lo, g_gomp_hi;

/* oneDNN's execute, counted apart (the test is linked with --wrap) */
dnnl_status_t __real_dnnl_primitive_execute(const_dnnl_primitive_t p, dnnl_stream_t s, int nargs,
                                            const dnnl_exec_arg_t *args);
dnnl_status_t __wrap_dnnl_primitive_execute(const_dnnl_primitive_t p, dnnl_stream_t s, int nargs,
                                            const dnnl_exec_arg_t *args) {
    atomic_fetch_add(&g_in_dnnl, 1);
    if (atomic_load(&g_on)) atomic_fetch_add(&g_dnnl_calls, 1);
    const_dnnl_primitive_desc_t pd = NULL;
    const char *impl = NULL;
    int gemm = dnnl_primitive_get_primitive_desc(p, &pd) == dnnl_success &&
               dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
               strstr(impl, "gemm:jit") != NULL;
    if (gemm) atomic_fetch_add(&g_in_gemm, 1);
    dnnl_status_t st = __real_dnnl_primitive_execute(p, s, nargs, args);
    if (gemm) atomic_fetch_sub(&g_in_gemm, 1);
    atomic_fetch_sub(&g_in_dnnl, 1);
    return st;
}

static int find_gomp(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "libgomp")) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        g_gomp_lo = info->dlpi_addr + ph->p_vaddr;
        g_gomp_hi = g_gomp_lo + ph->p_memsz;
    }
    return 1;
}

static inline int source(void *ra) {
    if (atomic_load(&g_in_gemm)) return SRC_GEMM;
    if (atomic_load(&g_in_dnnl)) return SRC_DNNL;
    uintptr_t a = (uintptr_t)ra;
    return a >= g_gomp_lo && a < g_gomp_hi ? SRC_GOMP : SRC_KILN;
}

#ifndef KN_NO_HOOK
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static inline void note(size_t n, void *ra) {
    if (!atomic_load_explicit(&g_on, memory_order_relaxed)) return;
    int k = source(ra);
    atomic_fetch_add(&g_alloc[k], 1);
    atomic_fetch_add(&g_bytes[k], (long)n);
    long m = atomic_load(&g_max[k]);
    while ((long)n > m && !atomic_compare_exchange_weak(&g_max[k], &m, (long)n)) {}
}
#define RA __builtin_return_address(0)
void *malloc(size_t n) { note(n, RA); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { note(a * b, RA); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { note(n, RA); return __libc_realloc(p, n); }
void free(void *p) {
    if (p && atomic_load_explicit(&g_on, memory_order_relaxed)) atomic_fetch_add(&g_free[source(RA)], 1);
    __libc_free(p);
}
void *memalign(size_t al, size_t n) { note(n, RA); return __libc_memalign(al, n); }
void *aligned_alloc(size_t al, size_t n) { note(n, RA); return __libc_memalign(al, n); }
void *valloc(size_t n) { note(n, RA); return __libc_memalign(4096, n); }
void *pvalloc(size_t n) { note(n, RA); return __libc_memalign(4096, (n + 4095) & ~(size_t)4095); }
int posix_memalign(void **out, size_t al, size_t n) {
    note(n, RA);
    void *p = __libc_memalign(al, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
#endif

static void counting(int on) { atomic_store(&g_on, on); }
static void reset(void) {
    for (int k = 0; k < NSRC; k++) {
        atomic_store(&g_alloc[k], 0);
        atomic_store(&g_free[k], 0);
        atomic_store(&g_max[k], 0);
        atomic_store(&g_bytes[k], 0);
    }
    atomic_store(&g_dnnl_calls, 0);
}

/* ---------- 1. the step, piece by piece ---------- */
static void make_ds(kn_dataset *d, int n) {
    memset(d, 0, sizeof *d);
    d->n = n;
    d->channels = 1;
    d->rows = d->cols = 28;
    d->nclasses = 10;
    d->images = malloc((size_t)n * 784);
    d->labels = malloc((size_t)n);
    kn_rng r;
    kn_rng_seed(&r, 3);
    for (int i = 0; i < n * 784; i++) d->images[i] = (uint8_t)kn_rng_below(&r, 256);
    for (int i = 0; i < n; i++) d->labels[i] = (uint8_t)kn_rng_below(&r, 10);
}

static void case_step(const char *rel, int64_t batch, int64_t micro, double clip) {
    kn_ctx *ctx = kn_ctx_new();
    kn_config *cfg = NULL;
    kn_dataset ds;
    make_ds(&ds, 8 * (int)batch);
    kn_model m;
    memset(&m, 0, sizeof m);
    kn_optimizer o = {0};
    kn_loader *L = NULL;
    kn_trainer tr;
    memset(&tr, 0, sizeof tr);
    int ok = kn_config_load(ctx, kn_test_src(rel), &cfg) == KN_OK &&
             kn_model_build(ctx, cfg, micro, 100, 1, 28, 28, 10, &m) == KN_OK;
    kn_opt_config oc;
    kn_opt_defaults(&oc);
    oc.kind = KN_OPT_ADAM;
    oc.lr = 1e-3;
    oc.clip_norm = clip;
    ok = ok && kn_opt_init(ctx, &o, &oc, m.store.nparam) == KN_OK;
    kn_loader_config lc = {0};
    lc.ds = &ds;
    lc.batch = (int)batch;
    lc.shuffle = 1;
    lc.drop_last = 1;
    lc.seed = 1;
    lc.mean = 0.3f;
    lc.std = 0.3f;
    lc.prefetch = 2;
    ok = ok && kn_loader_create(ctx, &lc, &L) == KN_OK && kn_trainer_init(ctx, &tr, &m, &o, batch, 1, clip) == KN_OK;
    CHECK(ok, "%s: %s", rel, kn_ctx_message(ctx));
    if (ok) {
        kn_model_init(&m, 1);
        kn_loader_start_epoch(L, 0, 0);
        long first[NSRC] = {0};
        (void)first;
        (void)src_name;
        for (int s = 0; s < 8; s++) {
            if (s >= 3) { reset(); counting(1); }
            /* the trainer's step (src/train/step.c): batch, forward + backward (accumulated),
             * clipping, update, with its stage timings */
            int got = kn_trainer_next_batch(&tr, L);
            kn_trainer_step(&tr, s, kn_opt_lr(&oc, s), NULL);
            float loss = tr.loss;
            counting(0);
            CHECK(got == batch && loss == loss, "%s: step %d: batch %d, loss %g", rel, s, got, (double)loss);
            if (s < 3) continue;
#ifndef KN_NO_HOOK
            CHECK(g_alloc[SRC_KILN] == 0, "%s: step %d: %ld allocations (%ld bytes) by kiln", rel, s,
                  (long)g_alloc[SRC_KILN], (long)g_bytes[SRC_KILN]);
            /* frees are not attributed reliably (libgomp frees a team through tail calls),
             * so the balance is over all sources: nothing allocated in a step outlives it */
            long na = 0, nf = 0;
            for (int k = 0; k < NSRC; k++) na += g_alloc[k], nf += g_free[k];
            CHECK(na == nf, "%s: step %d: %ld allocations but %ld frees", rel, s, na, nf);
            for (int k = SRC_DNNL; k < NSRC; k++) {
                CHECK(g_max[k] <= src_max[k], "%s: step %d: a %ld-byte allocation by %s (at most %ld allowed)", rel, s,
                      (long)g_max[k], src_name[k], src_max[k]);
                if (s == 3) first[k] = g_alloc[k];
                CHECK(g_alloc[k] == first[k], "%s: step %d: %ld allocations by %s, %ld at step 3", rel, s,
                      (long)g_alloc[k], src_name[k], first[k]);
            }
#endif
        }
        printf("%-32s batch %3lld (micro-batches of %3lld), per step: kiln %ld allocations; transient: oneDNN execute %ld "
               "(%ld calls, largest %ld B), oneDNN sgemm packing %ld (largest %ld B), libgomp one-thread teams %ld "
               "(largest %ld B)\n",
               rel, (long long)batch, (long long)micro, (long)g_alloc[SRC_KILN], (long)g_alloc[SRC_DNNL],
               (long)g_dnnl_calls, (long)g_max[SRC_DNNL], (long)g_alloc[SRC_GEMM], (long)g_max[SRC_GEMM],
               (long)g_alloc[SRC_GOMP], (long)g_max[SRC_GOMP]);
    }
    kn_trainer_free(&tr);
    kn_loader_free(L);
    kn_opt_free(&o);
    kn_model_free(&m);
    kn_config_free(cfg);
    kn_dataset_free(&ds);
    kn_ctx_free(ctx);
}

/* ---------- 2. the whole trainer, in a child process ---------- */
static long train_allocs(const char *dir, int steps, const char *micro) {
    int fd[2];
    if (pipe(fd) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        kn_ctx *ctx = kn_ctx_new();
        kn_config *cfg = NULL;
        char s[1400];
        int rc = kn_config_load(ctx, kn_test_src("examples/fashion_mnist_cnn.ini"), &cfg);
        /* validation_split = 0: both runs stay inside the first epoch (16 steps), whose end
         * (validation pass, epoch checkpoint) allocates */
        const char *sets[] = {"data.batch_size=32", "data.eval_batch_size=64", "train.epochs=1", "data.validation_split=0",
                              "train.log_every=1000", "health.every=0", "checkpoint.every_seconds=0", micro};
        for (int i = 0; !rc && i < (int)(sizeof sets / sizeof sets[0]); i++)
            if (sets[i]) rc = kn_config_set(ctx, cfg, sets[i]);
        snprintf(s, sizeof s, "data.dir=%s/data", dir);
        if (!rc) rc = kn_config_set(ctx, cfg, s);
        snprintf(s, sizeof s, "train.max_steps=%d", steps);
        if (!rc) rc = kn_config_set(ctx, cfg, s);
        kn_train_options o;
        kn_train_options_init(&o);
        o.quiet = 1;
        o.threads = 2;
        snprintf(s, sizeof s, "%s/run%d%s", dir, steps, micro ? "m" : "");
        o.run_dir = s;
        kn_train_result r;
        reset();
        counting(1);
        if (!rc) rc = kn_train(ctx, cfg, &o, &r);
        counting(0);
        long v[2] = {rc ? -1 : (long)atomic_load(&g_alloc[SRC_KILN]), (long)r.steps};
        if (rc) fprintf(stderr, "kn_train: %s\n", kn_ctx_message(ctx));
        if (write(fd[1], v, sizeof v) != (ssize_t)sizeof v) _exit(2);
        _exit(0);
    }
    close(fd[1]);
    long v[2] = {-1, -1};
    if (read(fd[0], v, sizeof v) != (ssize_t)sizeof v) v[0] = -1;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(v[1] == steps, "the run made %ld steps, not %d", v[1], steps);
    return v[0];
}

static void case_train(const char *micro) {
    const char *dir = kn_test_tmpdir("test_noalloc");
    kn_test_make_images(dir, "data", 512, 28, 28);
    long a = train_allocs(dir, 6, micro), b = train_allocs(dir, 14, micro);
    printf("kn_train (CNN, batch 32%s): %ld kiln allocations in a 6-step run, %ld in a 14-step run\n",
           micro ? ", micro-batches of 8" : "", a, b);
    CHECK(a > 0 && b > 0, "a run failed (%ld, %ld)", a, b);
#ifndef KN_NO_HOOK
    CHECK(a == b, "8 more steps made %ld more allocations", b - a);
#endif
}

int main(void) {
    dl_iterate_phdr(find_gomp, NULL);
#ifdef KN_NO_HOOK
    printf("test_noalloc: skipped (the sanitizer owns malloc)\n");
    return 0;
#endif
    if (getenv("KN_SANITIZED")) { /* the plain build runs it; nothing to learn twice */
        printf("test_noalloc: skipped under the sanitizer run\n");
        return 0;
    }
    case_train(NULL);
    case_train("train.micro_batch=8");
    case_step("examples/fashion_mnist_mlp.ini", 64, 64, 0.0);
    case_step("examples/fashion_mnist_mlp.ini", 64, 16, 1.0);
    case_step("examples/fashion_mnist_cnn.ini", 32, 32, 1.0);
    case_step("examples/fashion_mnist_cnn.ini", 32, 8, 0.0);
    return kn_test_finish("test_noalloc");
}
