/* kiln — the instruction set of kiln's kernels, chosen at run time. See isa.h. */
#include "backend/cpu/isa.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

kn_isa kn_isa_cpu(void) {
    __builtin_cpu_init(); /* idempotent; libgcc already ran it at start-up */
    /* the level names ("x86-64-v3") are GCC-only; these features are what both GCC and
     * clang (the fuzz build) can ask, and every CPU that has them has the rest of its level
     * (LZCNT, MOVBE, F16C with AVX2+FMA+BMI2; AVX-512 F/BW/CD/DQ/VL for v4) */
    const int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    const int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512vl");
    if (v4) return KN_ISA_AVX512;
    if (v3) return KN_ISA_AVX2;
    return KN_ISA_BASE;
}

/* A cap in oneDNN's spelling (or kiln's): KN_NUM_ISA for "all", -1 when not understood. */
static int parse_cap(const char *v) {
    if (!strcasecmp(v, "all")) return KN_NUM_ISA - 1;
    if (!strncasecmp(v, "avx512", 6)) return KN_ISA_AVX512;
    if (!strncasecmp(v, "avx2", 4)) return KN_ISA_AVX2;
    if (!strcasecmp(v, "avx") || !strcasecmp(v, "sse41") || !strcasecmp(v, "sse2") || !strcasecmp(v, "x86-64") ||
        !strcasecmp(v, "baseline"))
        return KN_ISA_BASE;
    return -1;
}

kn_isa kn_isa_env_cap(const char **var, const char **bad) {
    static const char *const vars[] = {"KN_MAX_ISA", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"};
    if (var) *var = NULL;
    if (bad) *bad = NULL;
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(vars[i]);
        if (!v || !*v) continue;
        int c = parse_cap(v);
        if (c < 0) {
            if (bad && !*bad) *bad = vars[i];
            continue;
        }
        if (var) *var = vars[i];
        return (kn_isa)c;
    }
    return (kn_isa)(KN_NUM_ISA - 1);
}

kn_isa kn_isa_select(void) {
    kn_isa cpu = kn_isa_cpu(), cap = kn_isa_env_cap(NULL, NULL);
    return cap < cpu ? cap : cpu;
}

const char *kn_isa_name(kn_isa isa) {
    switch (isa) {
    case KN_ISA_AVX512: return "avx512";
    case KN_ISA_AVX2: return "avx2";
    default: return "x86-64";
    }
}

int kn_isa_block(kn_isa isa) { return isa == KN_ISA_AVX512 ? 16 : isa == KN_ISA_AVX2 ? 8 : 0; }

void kn_isa_cap_onednn(void) {
    const char *v = getenv("KN_MAX_ISA");
    int c = v ? parse_cap(v) : -1;
    const char *dv = getenv("ONEDNN_MAX_CPU_ISA") ? getenv("ONEDNN_MAX_CPU_ISA") : getenv("DNNL_MAX_CPU_ISA");
    if (dv) { /* oneDNN reads its own variable; kiln's kernels follow KN_MAX_ISA first */
        int dc = parse_cap(dv);
        if (c >= 0 && dc >= 0 && dc != c)
            fprintf(stderr, "kiln: warning: KN_MAX_ISA=%s caps kiln's kernels but oneDNN follows its own variable (%s): the two "
                            "run different instruction sets, a mix no machine has; set one variable, or both to the same\n",
                    v, dv);
        return;
    }
    if (c < 0 || c == KN_NUM_ISA - 1) return;
    /* oneDNN takes a cap once, before its first kernel: kn_dnnl_ctx_of calls this first */
    dnnl_set_max_cpu_isa(c == KN_ISA_AVX2 ? dnnl_cpu_isa_avx2 : dnnl_cpu_isa_sse41);
}

static const char *onednn_isa_name(dnnl_cpu_isa_t i) {
    switch ((int)i) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
    }
}

const char *kn_isa_path(char *buf, size_t n) {
    const kn_isa isa = kn_isa_select();
    kn_isa_cap_onednn();
#ifdef KN_ISA_NATIVE
    snprintf(buf, n, "kiln native (-march=native kernels, %s layout), oneDNN %s", kn_isa_name(isa),
             onednn_isa_name(dnnl_get_effective_cpu_isa()));
#else
    snprintf(buf, n, "kiln %s (%s kernels), oneDNN %s", kn_isa_name(isa),
             isa == KN_ISA_AVX512 ? "x86-64-v4" : isa == KN_ISA_AVX2 ? "x86-64-v3" : "x86-64",
             onednn_isa_name(dnnl_get_effective_cpu_isa()));
#endif
    return buf;
}

const char *kn_isa_cap_note(char *buf, size_t n) {
    const char *var, *bad;
    kn_isa_env_cap(&var, &bad);
    buf[0] = 0;
    if (var) snprintf(buf, n, "capped by %s=%.40s", var, getenv(var));
    else if (bad)
        snprintf(buf, n, "%s=%.40s is not understood and sets no cap: use avx512, avx2, x86-64 or all", bad,
                 getenv(bad));
    return buf;
}

int kn_isa_check_resume(const char *then, const char *path, char *msg, size_t n) {
    char now[256];
    if (n) msg[0] = 0; /* no warning: an empty message */
    kn_isa_path(now, sizeof now);
    if (!then || !strcmp(then, now)) return 0;
    snprintf(msg, n,
             "%s was written on the ISA path '%.200s', this process runs '%.200s' (another CPU, a cap such as "
             "KN_MAX_ISA, or another build): training continues correctly but not bit-identically to an "
             "uninterrupted run; run it where (or capped as) it started to get the same bits",
             path, then, now);
    return 1;
}
