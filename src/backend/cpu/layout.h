/* kiln — activation memory layouts on the CPU backend.
 *
 * Every tensor's *meaning* is the one its shape says (NCHW for 4-D activations), and
 * every op's semantics are defined on that. On the CPU backend, a 4-D float activation
 * whose channel count is a multiple of the block B may instead be *stored* channel-
 * blocked, oneDNN's nChw{B}c: element (n, c, h, w) at
 *     ((n * C/B + c/B) * H*W + h*W + w) * B + c%B
 * (B = 16 with AVX-512, 8 with AVX2). Convolutions run fastest on that layout, and the
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

/* The channel block of this CPU (16: AVX-512, 8: AVX2, 0: none or blocking off). */
int kn_cpu_block(void);
/* Tests: turn blocked layouts off (0) or back on (1) for graphs planned afterwards. */
void kn_cpu_set_blocking(int on);
/* 0: plain; otherwise the block size B of the value's nChw{B}c layout. */
int kn_layout(const kn_graph *g, int vid);

/* 8-lane vectors for the blocked kernels (GCC vector extensions: AVX-512/AVX2 with
 * -march=native, SSE otherwise). A block of B channels is B/8 such vectors. */
typedef float kn_v8f __attribute__((vector_size(32)));
typedef int32_t kn_v8i __attribute__((vector_size(32)));
typedef double kn_v8d __attribute__((vector_size(64)));
static inline kn_v8f kn_ld8(const float *p) {
    kn_v8f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline void kn_st8(float *p, kn_v8f v) { __builtin_memcpy(p, &v, sizeof v); }
static inline kn_v8i kn_ld8i(const int32_t *p) {
    kn_v8i v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
static inline void kn_st8i(int32_t *p, kn_v8i v) { __builtin_memcpy(p, &v, sizeof v); }
static inline kn_v8d kn_cvt8(kn_v8f v) { return __builtin_convertvector(v, kn_v8d); }
static inline kn_v8f kn_splat8(float x) { return (kn_v8f){x, x, x, x, x, x, x, x}; }
/* select: m ? a : b, m a lane mask (all ones or zeros, from a comparison) */
static inline kn_v8f kn_sel8(kn_v8i m, kn_v8f a, kn_v8f b) { return (kn_v8f)((m & (kn_v8i)a) | (~m & (kn_v8i)b)); }
/* max(v, 0) like relu: NaN gives 0 */
static inline kn_v8f kn_relu8(kn_v8f v) { return (kn_v8f)((v > kn_splat8(0.0f)) & (kn_v8i)v); }

/* Copy between a plain NCHW tensor and its nChw{B}c form (C % B == 0), in parallel. */
void kn_to_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S, int B);
void kn_from_blocked(float *restrict dst, const float *restrict src, int64_t N, int64_t C, int64_t S, int B);

#endif
