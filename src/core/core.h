/* kiln — core internals: error context, shapes, dtypes, aligned memory, RNG.
 * Every module includes this. Nothing here knows about graphs or layers. */
#ifndef KN_CORE_H
#define KN_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* ---------- error context ---------- */
struct kn_ctx {
    int code;          /* kn_status of the last error, KN_OK if none */
    char msg[2048];    /* one human-readable message: what, where, what to do */
};

/* Set the context's error (printf-style) and return `code`. Never exits. */
int kn_err(kn_ctx *ctx, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend "prefix" to the current message (used to add file:line, layer name). */
void kn_err_prefix(kn_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------- dtypes and shapes ---------- */
typedef enum { KN_F32 = 0, KN_I32 = 1, KN_U8 = 2 } kn_dtype;
size_t kn_dtype_size(kn_dtype t);

#define KN_MAX_DIMS 5
typedef struct {
    int nd;
    int64_t d[KN_MAX_DIMS];
} kn_shape;

kn_shape kn_shape1(int64_t a);
kn_shape kn_shape2(int64_t a, int64_t b);
kn_shape kn_shape4(int64_t a, int64_t b, int64_t c, int64_t d);
/* Product of the dimensions; -1 if nd is out of range, a dimension is negative or the
 * product overflows int64 (never undefined behaviour). Shapes inside a graph or a
 * parameter store were checked with kn_shape_check when they were made. */
int64_t kn_shape_numel(const kn_shape *s);
/* KN_OK if every dimension is at least `min_dim` (0 or 1) and numel * elem_size is at
 * most KN_MAX_BYTES; *numel_out (may be NULL) gets the element count. Otherwise an
 * error naming `what` and the shape. */
int kn_shape_check(kn_ctx *ctx, const kn_shape *s, int64_t min_dim, size_t elem_size, const char *what,
                   int64_t *numel_out);
bool kn_shape_eq(const kn_shape *a, const kn_shape *b);
/* Writes "[64,32,28,28]" into buf; returns buf. */
const char *kn_shape_str(const kn_shape *s, char *buf, size_t n);

/* ---------- checked size arithmetic ----------
 * Every size kiln computes from input (a config, a data file's header, a checkpoint)
 * goes through these: true (nonzero) means the result overflowed and *r is unusable. */
static inline bool kn_mul_ovf(int64_t a, int64_t b, int64_t *r) { return __builtin_mul_overflow(a, b, r); }
static inline bool kn_add_ovf(int64_t a, int64_t b, int64_t *r) { return __builtin_add_overflow(a, b, r); }
static inline bool kn_mulz_ovf(size_t a, size_t b, size_t *r) { return __builtin_mul_overflow(a, b, r); }
static inline bool kn_addz_ovf(size_t a, size_t b, size_t *r) { return __builtin_add_overflow(a, b, r); }
/* The largest tensor, parameter store or arena kiln plans: 2^48 bytes (256 TiB), far
 * beyond any machine's memory, so a plan that passes never overflows when its parts
 * (a few dozen such sizes, times small factors) are added up. */
#define KN_MAX_BYTES ((int64_t)1 << 48)

/* ---------- memory ---------- */
#define KN_ALIGN 64
void *kn_aligned_alloc(size_t bytes); /* zero-filled, KN_ALIGN-aligned; NULL on failure */
/* The bytes kn_aligned_alloc(bytes) actually takes (and touches): rounded up to KN_ALIGN,
 * or to 2 MiB for blocks of 4 MiB or more (huge pages); 0 if that overflows. */
size_t kn_alloc_footprint(size_t bytes);
void kn_aligned_free(void *p);
static inline size_t kn_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* ---------- random numbers ----------
 * xoshiro256** seeded through splitmix64: small state (copied into checkpoints),
 * identical sequence on every machine. */
typedef struct { uint64_t s[4]; } kn_rng;
void kn_rng_seed(kn_rng *r, uint64_t seed);
uint64_t kn_rng_next(kn_rng *r);
double kn_rng_uniform(kn_rng *r);              /* [0,1) */
double kn_rng_normal(kn_rng *r);               /* N(0,1), Box-Muller */
uint64_t kn_rng_below(kn_rng *r, uint64_t n);  /* [0,n), unbiased */
/* Stateless counter-based hash to a uniform float in [0,1): same value for the same
 * (seed, counter) whatever the thread count. Used by dropout. */
static inline uint64_t kn_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline float kn_hash_uniform(uint64_t seed, uint64_t counter) {
    return (float)(kn_mix64(seed ^ kn_mix64(counter)) >> 40) * (1.0f / 16777216.0f);
}

/* ---------- threads ----------
 * One pool: OpenMP's, which oneDNN (built with the OMP runtime) also uses, so the
 * two never oversubscribe. kn_set_threads sets the count for both, for the calling
 * thread (OpenMP's count is per thread): a training on another thread sets its own. */
void kn_set_threads(int n);
int kn_get_threads(void);

/* ---------- misc ---------- */
double kn_now_seconds(void); /* monotonic */
/* Safe string copy that always terminates. */
void kn_strlcpy(char *dst, const char *src, size_t n);

#endif
