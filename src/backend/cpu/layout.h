/* kiln — activation memory layouts on the CPU backend.
 *
 * Every tensor's *meaning* is the one its shape says (NCHW for 4-D activations), and
 * every op's semantics are defined on that. On the CPU backend, a 4-D float activation
 * whose channel count is a multiple of the block B may instead be *stored* channel-
 * blocked, oneDNN's nChw{B}c: element (n, c, h, w) at
 *     ((n * C/B + c/B) * H*W + h*W + w) * B + c%B
 * (B = 16 on the avx512 path, 8 on the avx2 path: backend/cpu/isa.h). Convolutions run fastest on that layout, and the
 * channel-wise ops around them (BatchNorm, ReLU, max-pool) vectorise over its B
 * contiguous channels, so keeping activations blocked from one convolution to the next
 * saves a reorder per tensor and pass.
 *
 * The layout of a value is a pure function of the planned graph (kn_layout): a
 * convolution's output is blocked when every op that reads it accepts a blocked input
 * — a convolution, a reshape/flatten (which converts back to the plain order), or a
 * layout-preserving op (batchnorm, batchnorm_relu, relu, maxpool2d) whose own output
 * can be blocked by the same rule — and it is not read by the caller (kept values and
 * the loss are always plain). A layout-preserving op's output has its input's layout.
 * Everything else is plain. The gradient of a value has the value's layout. Graph
 * inputs, parameters and everything the trainer, checkpoints and tests see are plain.
 *
 * Ops read the decision at prepare time and keep it in attribute slot
 * KN_ATTR_LAYOUT (no op uses that slot for a setting). */
#ifndef KN_LAYOUT_H
#define KN_LAYOUT_H

#include "graph/graph.h"

#define KN_ATTR_LAYOUT 15

/* The channel block of the path a graph created now would take (16: avx512, 8: avx2,
 * 0: baseline x86-64 or KN_BLOCKED_LAYOUT=0): see backend/cpu/isa.h. */
int kn_cpu_block(void);
/* The channel block of graph g's path (g->isa), 0 when blocking is off (g->blocking = 0,
 * kn_model_opts.blocked_layout = 0, or KN_BLOCKED_LAYOUT=0). */
int kn_g_block(const kn_graph *g);
/* 0: plain; otherwise the block size B of the value's nChw{B}c layout. */
int kn_layout(const kn_graph *g, int vid);

/* 8-lane vectors for the blocked kernels (GCC vector extensions), as macros: no
 * function takes or returns a vector by value, so the kernels compile to the same
 * code, without -Wpsabi ABI warnings, for every instruction set (AVX-512 and AVX2 in
 * the per-ISA compiles of src/ops, SSE2 pairs in the baseline one). A block of B
 * channels is B/8 such vectors. The _u types are the unaligned, may-alias views that
 * loads and stores go through. */
typedef float kn_v8f __attribute__((vector_size(32)));
typedef int32_t kn_v8i __attribute__((vector_size(32)));
typedef double kn_v8d __attribute__((vector_size(64)));
typedef float kn_v8f_u __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t kn_v8i_u __attribute__((vector_size(32), aligned(4), may_alias));
#define kn_ld8(p) (*(const kn_v8f_u *)(const void *)(p))
#define kn_st8(p, v) ((void)(*(kn_v8f_u *)(void *)(p) = (v)))
#define kn_ld8i(p) (*(const kn_v8i_u *)(const void *)(p))
#define kn_st8i(p, v) ((void)(*(kn_v8i_u *)(void *)(p) = (v)))
#define kn_cvt8(v) __builtin_convertvector((v), kn_v8d)
#define kn_splat8(x) ((kn_v8f){(x), (x), (x), (x), (x), (x), (x), (x)})
/* select: m ? a : b, m a lane mask (all ones or zeros, from a comparison) */
#define kn_sel8(m, a, b) ((kn_v8f)(((m) & (kn_v8i)(a)) | (~(m) & (kn_v8i)(b))))
/* max(v, 0) like relu: NaN gives 0 */
#define kn_relu8(v) ((kn_v8f)(((v) > kn_splat8(0.0f)) & (kn_v8i)(v)))

/* Copy between a plain NCHW tensor and its nChw{B}c form (C % B == 0), in parallel.
 * Inline so that the per-ISA compile of the op calling it vectorises it for its path. */
static inline void kn_to_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S,
                                 int B) {
    const int64_t CB = C / B;
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 65536)
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *s = src + (n * C + cb * B) * S;
            float *d = dst + (n * CB + cb) * S * B;
            for (int64_t k = 0; k < S; k++)
#pragma omp simd
                for (int l = 0; l < B; l++) d[k * B + l] = s[l * S + k];
        }
}

static inline void kn_from_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S,
                                   int B) {
    const int64_t CB = C / B;
#pragma omp parallel for collapse(2) schedule(static) if (N * C * S > 65536)
    for (int64_t n = 0; n < N; n++)
        for (int64_t cb = 0; cb < CB; cb++) {
            const float *s = src + (n * CB + cb) * S * B;
            float *d = dst + (n * C + cb * B) * S;
            for (int l = 0; l < B; l++)
#pragma omp simd
                for (int64_t k = 0; k < S; k++) d[l * S + k] = s[k * B + l];
        }
}

#endif
