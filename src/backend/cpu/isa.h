/* kiln — the instruction set of kiln's own CPU kernels, chosen at run time.
 *
 * A portable build (the default) compiles every kernel file of src/backend/cpu/kernels/
 * three times: for baseline x86-64 (SSE2), for x86-64-v3 (AVX2, FMA, BMI2: "avx2") and
 * for x86-64-v4 (AVX-512 F/BW/CD/DQ/VL: "avx512"). Each graph picks one of them when it
 * is created (the CPU backend's graph_init stores kn_isa_select() in g->isa, fixed for
 * the graph's life) and each op's forward/backward entry point (backend/cpu/kernels.h)
 * switches on it: the choice is per graph, made once, and no process-wide variable is
 * written. What decides it:
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

#endif
