/* kiln — what every CPU kernel file (src/backend/cpu/kernels/) includes: the backend
 * interface's kernel signature, the instruction-set paths, and the macros that compile
 * an op's kernels once per path and register them by op id. */
#ifndef KN_CPU_KERNELS_H
#define KN_CPU_KERNELS_H

#include "backend/backend.h"
#include "backend/cpu/isa.h"

/* ---- per-ISA kernel entry points ----
 * A kernel file declares each forward/backward pair once,
 *     KN_ISA_KERNELS(bn, bn_forward, bn_backward)
 * and registers it for each op it serves with
 *     KN_CPU_OP(batchnorm, bn, bn_prepare, NULL)
 * which defines kn_cpu_k_batchnorm, the kn_kernels that backend/cpu/registry.c files
 * under KN_OP_BATCHNORM. In the variant compiles (KN_ISA_SUFFIX defined by CMake:
 * __avx2, __avx512) the file only exports the pair as kn_isa_bn__avx2 (and the
 * registration becomes an unused static); in the baseline compile the entry points
 * switch on the graph's path. */
typedef struct {
    void (*forward)(const kn_node *n, kn_rt *rt);
    void (*backward)(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout);
} kn_isa_kernels;

#define KN_ISA_CAT_(a, b) a##b
#define KN_ISA_CAT(a, b) KN_ISA_CAT_(a, b)

#if defined(KN_ISA_SUFFIX)
#define KN_ISA_KERNELS(tag, f, b) const kn_isa_kernels KN_ISA_CAT(kn_isa_##tag, KN_ISA_SUFFIX) = {f, b};
#define KN_ISA_FWD(tag) NULL
#define KN_ISA_BWD(tag) NULL
#define KN_CPU_OP(opname, tag, prep, rel) \
    static const kn_kernels __attribute__((unused)) kn_cpu_k_##opname##_variant = {prep, rel, NULL, NULL};
#elif defined(KN_ISA_NATIVE)
#define KN_ISA_KERNELS(tag, f, b)                                                                         \
    static void kn_isa_##tag##_fwd(const kn_node *n, kn_rt *rt) { f(n, rt); }                            \
    static void kn_isa_##tag##_bwd(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        b(n, rt, din, dout);                                                                              \
    }
#define KN_ISA_FWD(tag) kn_isa_##tag##_fwd
#define KN_ISA_BWD(tag) kn_isa_##tag##_bwd
#define KN_CPU_OP(opname, tag, prep, rel) \
    const kn_kernels kn_cpu_k_##opname = {prep, rel, KN_ISA_FWD(tag), KN_ISA_BWD(tag)};
#else
#define KN_ISA_KERNELS(tag, f, b)                                                                         \
    extern const kn_isa_kernels kn_isa_##tag##__avx2, kn_isa_##tag##__avx512;                            \
    static void kn_isa_##tag##_fwd(const kn_node *n, kn_rt *rt) {                                         \
        switch (rt->g->isa) {                                                                             \
        case KN_ISA_AVX512: kn_isa_##tag##__avx512.forward(n, rt); return;                                \
        case KN_ISA_AVX2: kn_isa_##tag##__avx2.forward(n, rt); return;                                    \
        default: f(n, rt); return;                                                                        \
        }                                                                                                 \
    }                                                                                                     \
    static void kn_isa_##tag##_bwd(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        switch (rt->g->isa) {                                                                             \
        case KN_ISA_AVX512: kn_isa_##tag##__avx512.backward(n, rt, din, dout); return;                    \
        case KN_ISA_AVX2: kn_isa_##tag##__avx2.backward(n, rt, din, dout); return;                        \
        default: b(n, rt, din, dout); return;                                                             \
        }                                                                                                 \
    }
#define KN_ISA_FWD(tag) kn_isa_##tag##_fwd
#define KN_ISA_BWD(tag) kn_isa_##tag##_bwd
#define KN_CPU_OP(opname, tag, prep, rel) \
    const kn_kernels kn_cpu_k_##opname = {prep, rel, KN_ISA_FWD(tag), KN_ISA_BWD(tag)};
#endif

#endif
