/* kiln — the instruction set of kiln's own CPU kernels, chosen at run time.
 *
 * A portable build (the default) compiles every kernel file of src/ops/ three times:
 * for baseline x86-64 (SSE2), for x86-64-v3 (AVX2, FMA, BMI2: "avx2") and for
 * x86-64-v4 (AVX-512 F/BW/CD/DQ/VL: "avx512"). Each graph picks one of them when it is
 * created (kn_g_new stores kn_isa_select() in g->isa, fixed for the graph's life) and
 * each op's forward/backward entry point switches on it: the choice is per graph, made
 * once, and no process-wide variable is written. What decides it:
 *   - the CPU (__builtin_cpu_supports; libgcc's CPU model is filled once at start-up
 *     and read-only afterwards), and
 *   - a cap from the environment, read each time: KN_MAX_ISA, else ONEDNN_MAX_CPU_ISA,
 *     else DNNL_MAX_CPU_ISA (oneDNN's own variables, so one setting caps both). Values
 *     as oneDNN spells them, any case: avx512 / avx512_core..., avx2 / avx2_vnni,
 *     avx / sse41 / sse2 / x86-64 (the baseline), all (no cap). When only KN_MAX_ISA
 *     is set, kiln passes the same cap to oneDNN (dnnl_set_max_cpu_isa) before it
 *     creates its engine.
 * A capped path gives the same results as that machine class would: the channel block
 * of the convolution layouts follows the path (16 for avx512, 8 for avx2, none on the
 * baseline), and oneDNN picks its kernels for the same cap.
 *
 * -DKN_NATIVE=ON instead compiles everything once with -march=native: one path, named
 * "native" (the cap still sets the layout block and oneDNN's ISA).
 *
 * kiln's kernels have no reassociation (ISO C mode keeps -ffp-contract=off, no
 * -ffast-math), so their results are the same bits on every path; what differs between
 * paths is oneDNN's arithmetic (its convolution and GEMM kernels and their blocking)
 * and the channel block. kn_isa_path names both; checkpoints record it. */
#ifndef KN_ISA_H
#define KN_ISA_H

#include <stddef.h>

#include "graph/graph.h"

typedef enum { KN_ISA_BASE = 0, KN_ISA_AVX2 = 1, KN_ISA_AVX512 = 2, KN_NUM_ISA } kn_isa;

/* The best path this CPU runs, capped by the environment (see above). */
kn_isa kn_isa_select(void);
/* The best this CPU runs, without any cap. */
kn_isa kn_isa_cpu(void);
/* "x86-64", "avx2", "avx512" */
const char *kn_isa_name(kn_isa isa);
/* The channel block of blocked activation layouts on that path: 16, 8, or 0 (none). */
int kn_isa_block(kn_isa isa);
/* The environment's cap (KN_NUM_ISA - 1 when none) and the variable that set it (NULL
 * when none). A value kiln does not understand sets no cap and *bad names it. */
kn_isa kn_isa_env_cap(const char **var, const char **bad);
/* What decides the bits of a step on this machine now, e.g.
 * "kiln avx512 (x86-64-v4 kernels), oneDNN avx512_core_amx" or "kiln avx2 (x86-64-v3
 * kernels), oneDNN avx2". Written into buf (>= 160 bytes advised); returns buf. Asks
 * oneDNN for its effective ISA (after which oneDNN takes no other cap). Recorded in
 * training checkpoints (metadata "isa_path"), printed by `kiln --version`. */
const char *kn_isa_path(char *buf, size_t n);
/* "capped by KN_MAX_ISA=avx2", a note on a value that is not understood, or "". */
const char *kn_isa_cap_note(char *buf, size_t n);
/* Resume: when `then` (a checkpoint's isa_path; NULL for a checkpoint without one: no
 * check) differs from this process's path, writes a warning naming both and what it
 * means into msg and returns 1. */
int kn_isa_check_resume(const char *then, const char *path, char *msg, size_t n);
/* Apply KN_MAX_ISA to oneDNN when oneDNN's own variables are unset (backend/cpu/dnnl_glue.c,
 * before the engine is created). */
void kn_isa_cap_onednn(void);

/* ---- per-ISA kernel entry points (used by the op files, src/ops/) ----
 * An op file declares each forward/backward pair once,
 *     KN_ISA_KERNELS(bn, bn_forward, bn_backward)
 * uses KN_ISA_FWD(bn) / KN_ISA_BWD(bn) in its kernels entry and defines its ops with
 * KN_OP_DEF(kn_op_batchnorm) = {...}. In the variant compiles (KN_ISA_SUFFIX defined by
 * CMake: __avx2, __avx512) the file only exports that pair as kn_isa_bn__avx2 and its op
 * structs become unused statics; in the baseline compile the entry points switch on the
 * graph's path. */
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
#define KN_OP_DEF(name) static const kn_op __attribute__((unused)) KN_ISA_CAT(name, KN_ISA_SUFFIX)
#elif defined(KN_ISA_NATIVE)
#define KN_ISA_KERNELS(tag, f, b)                                                                         \
    static void kn_isa_##tag##_fwd(const kn_node *n, kn_rt *rt) { f(n, rt); }                            \
    static void kn_isa_##tag##_bwd(const kn_node *n, kn_rt *rt, float *const *din, const float *const *dout) { \
        b(n, rt, din, dout);                                                                              \
    }
#define KN_ISA_FWD(tag) kn_isa_##tag##_fwd
#define KN_ISA_BWD(tag) kn_isa_##tag##_bwd
#define KN_OP_DEF(name) const kn_op name
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
#define KN_OP_DEF(name) const kn_op name
#endif

#endif
