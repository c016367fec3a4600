#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE /* madvise(MADV_HUGEPAGE) */
#include "core/core.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* ---------- context ---------- */
kn_ctx *kn_ctx_new(void) { return calloc(1, sizeof(kn_ctx)); }
void kn_ctx_free(kn_ctx *ctx) { free(ctx); }
const char *kn_ctx_message(const kn_ctx *ctx) { return ctx && ctx->code ? ctx->msg : ""; }
int kn_ctx_code(const kn_ctx *ctx) { return ctx ? ctx->code : KN_OK; }
void kn_ctx_clear(kn_ctx *ctx) {
    if (ctx) { ctx->code = KN_OK; ctx->msg[0] = 0; }
}

int kn_err(kn_ctx *ctx, int code, const char *fmt, ...) {
    if (!ctx) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->msg, sizeof ctx->msg, fmt, ap);
    va_end(ap);
    ctx->code = code;
    return code;
}

void kn_err_prefix(kn_ctx *ctx, const char *fmt, ...) {
    if (!ctx) return;
    char pre[512], old[sizeof ctx->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, ctx->msg, sizeof old);
    size_t lp = strlen(pre), lo = strlen(old);
    if (lp >= sizeof ctx->msg) lp = sizeof ctx->msg - 1;
    if (lp + lo >= sizeof ctx->msg) lo = sizeof ctx->msg - 1 - lp;
    memcpy(ctx->msg, pre, lp);
    memcpy(ctx->msg + lp, old, lo);
    ctx->msg[lp + lo] = 0;
}

/* ---------- shapes ---------- */
size_t kn_dtype_size(kn_dtype t) { return t == KN_U8 ? 1 : 4; }

kn_shape kn_shape1(int64_t a) { kn_shape s = {1, {a}}; return s; }
kn_shape kn_shape2(int64_t a, int64_t b) { kn_shape s = {2, {a, b}}; return s; }
kn_shape kn_shape4(int64_t a, int64_t b, int64_t c, int64_t d) {
    kn_shape s = {4, {a, b, c, d}};
    return s;
}
int64_t kn_shape_numel(const kn_shape *s) {
    if (s->nd < 0 || s->nd > KN_MAX_DIMS) return -1;
    int64_t n = 1;
    for (int i = 0; i < s->nd; i++)
        if (s->d[i] < 0 || kn_mul_ovf(n, s->d[i], &n)) return -1;
    return n;
}
int kn_shape_check(kn_ctx *ctx, const kn_shape *s, int64_t min_dim, size_t elem_size, const char *what,
                   int64_t *numel_out) {
    char sh[160];
    if (s->nd < 0 || s->nd > KN_MAX_DIMS)
        return kn_err(ctx, KN_ERR_SHAPE, "%s has %d dimensions (at most %d)", what, s->nd, KN_MAX_DIMS);
    for (int i = 0; i < s->nd; i++)
        if (s->d[i] < min_dim)
            return kn_err(ctx, KN_ERR_SHAPE, "%s has shape %s: dimension %d is %lld (it must be at least %lld)", what,
                          kn_shape_str(s, sh, sizeof sh), i, (long long)s->d[i], (long long)min_dim);
    int64_t n = 1, bytes = 0;
    int ovf = 0;
    for (int i = 0; i < s->nd && !ovf; i++) ovf = kn_mul_ovf(n, s->d[i], &n);
    if (!ovf) ovf = kn_mul_ovf(n, (int64_t)elem_size, &bytes);
    if (ovf || bytes > KN_MAX_BYTES) {
        double e = 1;
        for (int i = 0; i < s->nd; i++) e *= (double)s->d[i];
        return kn_err(ctx, KN_ERR_SHAPE, "%s has shape %s: %.4g elements (%.4g bytes), more than kiln's limit of 2^48 "
                      "bytes (256 TiB) for one tensor", what, kn_shape_str(s, sh, sizeof sh), e, e * (double)elem_size);
    }
    if (numel_out) *numel_out = n;
    return KN_OK;
}
bool kn_shape_eq(const kn_shape *a, const kn_shape *b) {
    if (a->nd != b->nd) return false;
    for (int i = 0; i < a->nd; i++)
        if (a->d[i] != b->d[i]) return false;
    return true;
}
const char *kn_shape_str(const kn_shape *s, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int i = 0; i < s->nd && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)s->d[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

/* ---------- memory ---------- */
/* Large blocks (4 MiB or more: the arena, the parameter store, optimizer moments,
 * snapshots, ...) are 2 MiB-aligned, rounded up to 2 MiB and marked for
 * transparent huge pages where the kernel offers them on request (THP "madvise" mode,
 * Debian's default): the step's streaming passes over tens of MiB of activations then
 * miss the TLB 512x less often. The zero fill touches every page once, here, at plan
 * time. A kernel without THP ignores the advice. */
#define KN_HUGE ((size_t)2 << 20)
size_t kn_alloc_footprint(size_t bytes) {
    if (bytes == 0) bytes = KN_ALIGN;
    const size_t align = bytes >= 2 * KN_HUGE ? KN_HUGE : KN_ALIGN;
    if (bytes > SIZE_MAX - align) return 0;
    return kn_align_up(bytes, align);
}
void *kn_aligned_alloc(size_t bytes) {
    const size_t size = kn_alloc_footprint(bytes);
    if (size == 0) return NULL;
    const int huge = size >= 2 * KN_HUGE;
    void *p = NULL;
    if (posix_memalign(&p, huge ? KN_HUGE : KN_ALIGN, size) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    if (huge) (void)madvise(p, size, MADV_HUGEPAGE);
#endif
    memset(p, 0, size);
    return p;
}
void kn_aligned_free(void *p) { free(p); }

/* ---------- rng ---------- */
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
void kn_rng_seed(kn_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&x);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
uint64_t kn_rng_next(kn_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return res;
}
double kn_rng_uniform(kn_rng *r) { return (double)(kn_rng_next(r) >> 11) * 0x1.0p-53; }
double kn_rng_normal(kn_rng *r) {
    double u1 = kn_rng_uniform(r), u2 = kn_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
uint64_t kn_rng_below(kn_rng *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = kn_rng_next(r); while (x >= lim);
    return x % n;
}

/* ---------- threads ---------- */
/* Per thread, like OpenMP's nthreads ICV that it mirrors (omp_set_num_threads sets the
 * calling thread's): two trainings on two threads each run with their own count. */
static _Thread_local int g_threads = 0;
void kn_set_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    g_threads = n;
    omp_set_dynamic(0);
    omp_set_num_threads(n);
}
int kn_get_threads(void) { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

double kn_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
void kn_strlcpy(char *dst, const char *src, size_t n) {
    if (!n) return;
    size_t l = strlen(src);
    if (l >= n) l = n - 1;
    memcpy(dst, src, l);
    dst[l] = 0;
}
